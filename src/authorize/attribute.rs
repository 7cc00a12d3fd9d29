//! Attribute rules (ABAC): claim predicates and comparisons over the caller, the request and
//! the environment.

use std::borrow::Cow;
use std::fmt;
use std::future::{Ready, ready};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderName;
use serde_json::Value;

use super::{Decision, PolicyEvaluator};
use crate::clock::Clock;
use crate::context::AuthContext;
use crate::credential::RequestHead;

/// The address of the client that opened the connection. Hosts insert it into the request
/// extensions (the gateway example does); [`client_ip`] rules and the Rego input read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub SocketAddr);

/// An attribute of the caller, the request or the environment, compared by an
/// [`AttributeRule`]. Built by [`claim`], [`subject`], [`tenant`], [`issuer`], [`method`],
/// [`path`], [`path_param`], [`header`] and [`client_ip`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Attribute {
    /// A claim of the caller, by dotted path (`"realm_access.roles"`).
    Claim(String),
    /// The caller's subject (`sub`).
    Subject,
    /// The caller's issuer (`iss`).
    Issuer,
    /// The caller's tenant (the configured tenant claim).
    Tenant,
    /// The request method (`"GET"`).
    Method,
    /// The request path, without the query.
    Path,
    /// A path parameter captured by routing, percent-decoded.
    PathParam(String),
    /// A request header; absent when the header is missing, repeated or not visible ASCII.
    Header(HeaderName),
    /// The client's IP address, from the [`ClientAddr`] extension.
    ClientIp,
}

/// A caller claim by dotted path.
pub fn claim(path: impl Into<String>) -> Attribute {
    Attribute::Claim(path.into())
}

/// The caller's subject (`sub`).
pub fn subject() -> Attribute {
    Attribute::Subject
}

/// The caller's issuer (`iss`).
pub fn issuer() -> Attribute {
    Attribute::Issuer
}

/// The caller's tenant.
pub fn tenant() -> Attribute {
    Attribute::Tenant
}

/// The request method.
pub fn method() -> Attribute {
    Attribute::Method
}

/// The request path.
pub fn path() -> Attribute {
    Attribute::Path
}

/// A path parameter captured by routing (`{user_id}` → `path_param("user_id")`).
pub fn path_param(name: impl Into<String>) -> Attribute {
    Attribute::PathParam(name.into())
}

/// A request header.
pub fn header(name: HeaderName) -> Attribute {
    Attribute::Header(name)
}

/// The client's IP address ([`ClientAddr`] extension).
pub fn client_ip() -> Attribute {
    Attribute::ClientIp
}

/// What an attribute is compared with: a literal JSON value or another attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A literal.
    Value(Value),
    /// Another attribute of the same request.
    Attribute(Attribute),
}

impl From<Attribute> for Operand {
    fn from(attribute: Attribute) -> Self {
        Operand::Attribute(attribute)
    }
}

macro_rules! operand_from_value {
    ($($t:ty),*) => {$(
        impl From<$t> for Operand {
            fn from(value: $t) -> Self {
                Operand::Value(Value::from(value))
            }
        }
    )*};
}
operand_from_value!(&str, String, bool, i64, u64, Value);

#[derive(Debug, Clone, PartialEq)]
enum Test {
    Equals(Operand),
    OneOf(Arc<[Value]>),
    Contains(Operand),
    Exists,
    InNetwork(Arc<[IpNet]>),
}

/// A comparison of one [`Attribute`]: equals, one of, contains, exists, in network.
///
/// Missing attributes never match: a rule about a claim denies callers without the claim
/// (and requests without a caller, which then get 401).
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeRule {
    attribute: Attribute,
    test: Test,
    reason: &'static str,
}

impl Attribute {
    fn rule(self, test: Test) -> AttributeRule {
        let reason = match self {
            Attribute::Claim(_) | Attribute::Subject | Attribute::Issuer | Attribute::Tenant => {
                "a required claim is missing or does not match"
            }
            _ => "the request does not satisfy an access rule",
        };
        AttributeRule {
            attribute: self,
            test,
            reason,
        }
    }

    /// Matches when the attribute equals `other` (a literal or another attribute).
    ///
    /// Strings compare exactly; a JSON number or boolean claim equals its JSON text
    /// (`42` equals the path parameter `"42"`); arrays and objects equal only equal JSON.
    pub fn equals(self, other: impl Into<Operand>) -> AttributeRule {
        self.rule(Test::Equals(other.into()))
    }

    /// Matches when the attribute equals one of `values`.
    pub fn one_of<I, V>(self, values: I) -> AttributeRule
    where
        I: IntoIterator<Item = V>,
        V: Into<Value>,
    {
        self.rule(Test::OneOf(values.into_iter().map(Into::into).collect()))
    }

    /// Matches when the attribute (an array claim; a single value counts as a one-element
    /// array) has an element equal to `other`.
    pub fn contains(self, other: impl Into<Operand>) -> AttributeRule {
        self.rule(Test::Contains(other.into()))
    }

    /// Matches when the attribute is present.
    pub fn exists(self) -> AttributeRule {
        self.rule(Test::Exists)
    }

    /// Matches when the attribute is an IP address inside one of `networks` (CIDR such as
    /// `"10.0.0.0/8"` or `"::1/128"`, or a plain address).
    ///
    /// # Errors
    ///
    /// [`InvalidNetwork`] naming the first entry that is not an address or CIDR.
    pub fn in_networks<I, S>(self, networks: I) -> Result<AttributeRule, InvalidNetwork>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nets = networks
            .into_iter()
            .map(|s| IpNet::parse(s.as_ref()).ok_or_else(|| InvalidNetwork(s.as_ref().into())))
            .collect::<Result<Arc<[IpNet]>, _>>()?;
        Ok(self.rule(Test::InNetwork(nets)))
    }
}

/// A network given to [`Attribute::in_networks`] is not an IP address or CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or CIDR network (e.g. \"10.0.0.0/8\")")]
pub struct InvalidNetwork(String);

/// Matches when the claim at dotted `path` equals `value`.
///
/// ```
/// use tower_gatekeeper::{AuthContext, CredentialKind, PolicyEvaluator};
/// use tower_gatekeeper::authorize::claim_equals;
/// # let req = http::Request::new(());
/// # let head = tower_gatekeeper::credential::RequestHead::of(&req);
///
/// let verified = claim_equals("email_verified", true);
/// let ctx = AuthContext::builder(CredentialKind::Jwt).claim("email_verified", true).build();
/// assert!(verified.decide_now(Some(&ctx), &head).unwrap().is_allow());
/// ```
pub fn claim_equals(path: impl Into<String>, value: impl Into<Value>) -> AttributeRule {
    claim(path).equals(Operand::Value(value.into()))
}

/// Matches when the claim at dotted `path` (an array, or a single value) contains `value`.
pub fn claim_contains(path: impl Into<String>, value: impl Into<Value>) -> AttributeRule {
    claim(path).contains(Operand::Value(value.into()))
}

/// Matches when the claim at dotted `path` equals one of `values`.
pub fn claim_one_of<I, V>(path: impl Into<String>, values: I) -> AttributeRule
where
    I: IntoIterator<Item = V>,
    V: Into<Value>,
{
    claim(path).one_of(values)
}

impl AttributeRule {
    /// Sets the fixed, client-safe reason of a denial.
    #[must_use]
    pub fn reason(mut self, reason: &'static str) -> Self {
        self.reason = reason;
        self
    }

    /// Whether the rule holds for this request.
    pub fn matches(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> bool {
        let Some(left) = resolve(&self.attribute, ctx, req) else {
            return false;
        };
        match &self.test {
            Test::Exists => true,
            Test::Equals(operand) => {
                resolve_operand(operand, ctx, req).is_some_and(|right| left.equals(&right))
            }
            Test::OneOf(values) => values.iter().any(|v| left.equals(&Resolved::Json(v))),
            Test::Contains(operand) => {
                let Some(right) = resolve_operand(operand, ctx, req) else {
                    return false;
                };
                match &left {
                    Resolved::Json(Value::Array(items)) => {
                        items.iter().any(|item| Resolved::Json(item).equals(&right))
                    }
                    _ => left.equals(&right),
                }
            }
            Test::InNetwork(nets) => left
                .as_str()
                .and_then(|s| s.parse::<IpAddr>().ok())
                .is_some_and(|ip| nets.iter().any(|net| net.contains(ip))),
        }
    }

    /// The decision for this request, synchronously.
    pub fn decide(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Decision {
        if self.matches(ctx, req) {
            Decision::Allow
        } else {
            Decision::deny(self.reason)
        }
    }
}

impl PolicyEvaluator for AttributeRule {
    type Future = Ready<Decision>;

    fn evaluate(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Self::Future {
        ready(self.decide(ctx, req))
    }

    fn decide_now(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Option<Decision> {
        Some(self.decide(ctx, req))
    }
}

/// A resolved attribute value.
#[derive(Debug)]
enum Resolved<'a> {
    Json(&'a Value),
    Str(Cow<'a, str>),
}

impl Resolved<'_> {
    fn as_str(&self) -> Option<&str> {
        match self {
            Resolved::Json(Value::String(s)) => Some(s),
            Resolved::Json(_) => None,
            Resolved::Str(s) => Some(s),
        }
    }

    fn equals(&self, other: &Resolved<'_>) -> bool {
        match (self, other) {
            (Resolved::Json(a), Resolved::Json(b)) => a == b,
            (Resolved::Str(a), Resolved::Str(b)) => a == b,
            (Resolved::Json(j), Resolved::Str(s)) | (Resolved::Str(s), Resolved::Json(j)) => {
                scalar_text_equals(j, s)
            }
        }
    }
}

/// A JSON scalar compared with text: strings by content, numbers and booleans by their JSON
/// text.
fn scalar_text_equals(value: &Value, text: &str) -> bool {
    match value {
        Value::String(s) => s == text,
        Value::Bool(b) => text == if *b { "true" } else { "false" },
        Value::Number(n) => n.to_string() == text,
        _ => false,
    }
}

fn resolve<'a>(
    attribute: &Attribute,
    ctx: Option<&'a AuthContext>,
    req: &RequestHead<'a>,
) -> Option<Resolved<'a>> {
    let text = |s: &'a str| Some(Resolved::Str(Cow::Borrowed(s)));
    match attribute {
        Attribute::Claim(path) => ctx?.claim(path).map(Resolved::Json),
        Attribute::Subject => text(ctx?.subject()?),
        Attribute::Issuer => text(ctx?.issuer()?),
        Attribute::Tenant => text(ctx?.tenant()?),
        Attribute::Method => text(req.method().as_str()),
        Attribute::Path => text(req.uri().path()),
        Attribute::PathParam(name) => {
            let raw = req.path_param(name)?;
            let decoded = percent_encoding::percent_decode_str(raw)
                .decode_utf8()
                .ok()?;
            Some(Resolved::Str(decoded))
        }
        Attribute::Header(name) => {
            let mut values = req.headers().get_all(name).iter();
            let value = values.next()?;
            if values.next().is_some() {
                return None;
            }
            text(value.to_str().ok()?)
        }
        Attribute::ClientIp => {
            let addr = req.extensions().get::<ClientAddr>()?;
            Some(Resolved::Str(Cow::Owned(addr.0.ip().to_string())))
        }
    }
}

fn resolve_operand<'a>(
    operand: &'a Operand,
    ctx: Option<&'a AuthContext>,
    req: &RequestHead<'a>,
) -> Option<Resolved<'a>> {
    match operand {
        Operand::Value(value) => Some(Resolved::Json(value)),
        Operand::Attribute(attribute) => resolve(attribute, ctx, req),
    }
}

/// An IP network (address and prefix length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    fn parse(text: &str) -> Option<IpNet> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
            Some(_) => return None,
        };
        (prefix <= max).then_some(IpNet { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4-mapped IPv6 client (dual-stack listeners) is compared as IPv4.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A rule on the environment's time: an absolute window and/or a daily window in UTC.
/// Built by [`time_window`].
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use tower_gatekeeper::authorize::{PolicyEvaluator, time_window};
/// use tower_gatekeeper::jwt::Clock;
/// # let req = http::Request::new(());
/// # let head = tower_gatekeeper::credential::RequestHead::of(&req);
///
/// // Office hours, 08:00 to 18:00 UTC; the clock is fixed at 1970-01-01 12:00 UTC.
/// let rule = time_window()
///     .daily_utc(8 * 3600, 18 * 3600)
///     .clock(Clock::from_fn(|| UNIX_EPOCH + Duration::from_secs(12 * 3600)));
/// assert!(rule.decide_now(None, &head).unwrap().is_allow());
/// ```
#[derive(Clone)]
pub struct TimeWindow {
    not_before: Option<SystemTime>,
    not_after: Option<SystemTime>,
    daily: Option<(u32, u32)>,
    clock: Clock,
}

/// A time rule that allows always, until narrowed with [`TimeWindow::not_before`],
/// [`TimeWindow::not_after`] or [`TimeWindow::daily_utc`].
pub fn time_window() -> TimeWindow {
    TimeWindow {
        not_before: None,
        not_after: None,
        daily: None,
        clock: Clock::system(),
    }
}

impl TimeWindow {
    /// Denies before `at`.
    #[must_use]
    pub fn not_before(mut self, at: SystemTime) -> Self {
        self.not_before = Some(at);
        self
    }

    /// Denies after `at`.
    #[must_use]
    pub fn not_after(mut self, at: SystemTime) -> Self {
        self.not_after = Some(at);
        self
    }

    /// Allows only from `start` to `end` (seconds since midnight UTC, end exclusive) each
    /// day; a window with `start > end` spans midnight.
    ///
    /// # Panics
    ///
    /// When `start` or `end` exceeds 86 400.
    #[must_use]
    pub fn daily_utc(mut self, start: u32, end: u32) -> Self {
        assert!(start <= 86_400 && end <= 86_400, "seconds of a day");
        self.daily = Some((start, end));
        self
    }

    /// The clock (tests inject a fixed one).
    #[must_use]
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn decide(&self) -> Decision {
        let now = self.clock.now();
        let in_range =
            self.not_before.is_none_or(|t| now >= t) && self.not_after.is_none_or(|t| now <= t);
        let in_day = self.daily.is_none_or(|(start, end)| {
            let secs = now
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| (d.as_secs() % 86_400) as u32);
            if start <= end {
                (start..end).contains(&secs)
            } else {
                secs >= start || secs < end
            }
        });
        if in_range && in_day {
            Decision::Allow
        } else {
            Decision::deny("access is not allowed at this time")
        }
    }
}

impl fmt::Debug for TimeWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeWindow")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("daily", &self.daily)
            .finish_non_exhaustive()
    }
}

impl PolicyEvaluator for TimeWindow {
    type Future = Ready<Decision>;

    fn evaluate(&self, _ctx: Option<&AuthContext>, _req: &RequestHead<'_>) -> Self::Future {
        ready(self.decide())
    }

    fn decide_now(&self, _ctx: Option<&AuthContext>, _req: &RequestHead<'_>) -> Option<Decision> {
        Some(self.decide())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::context::CredentialKind;
    use crate::credential::PathParams;

    fn request() -> http::Request<()> {
        let mut req = http::Request::builder()
            .method("DELETE")
            .uri("/tenants/acme/users/u%7C1?x=1")
            .header("x-api-version", "2")
            .header("x-twice", "a")
            .header("x-twice", "b")
            .body(())
            .unwrap();
        req.extensions_mut().insert(PathParams::from_iter([
            ("tenant", "acme"),
            ("user_id", "u%7C1"),
        ]));
        req.extensions_mut()
            .insert(ClientAddr("10.1.2.3:5555".parse().unwrap()));
        req
    }

    fn caller() -> AuthContext {
        let Value::Object(claims) = json!({
            "sub": "u|1", "level": 3, "email_verified": true,
            "realm_access": {"roles": ["ops", "dev"]}, "groups": "eng",
        }) else {
            unreachable!()
        };
        AuthContext::builder(CredentialKind::Jwt)
            .subject("u|1")
            .tenant("acme")
            .claims(claims)
            .build()
    }

    #[test]
    fn attributes_compare() {
        let req = request();
        let head = RequestHead::of(&req);
        let c = caller();
        let yes = |rule: AttributeRule| assert!(rule.matches(Some(&c), &head), "{rule:?}");
        let no = |rule: AttributeRule| assert!(!rule.matches(Some(&c), &head), "{rule:?}");

        yes(path_param("user_id").equals(subject()));
        yes(path_param("tenant").equals(tenant()));
        no(path_param("tenant").equals(subject()));
        no(path_param("missing").equals(subject()));
        yes(claim_equals("email_verified", true));
        no(claim_equals("email_verified", "true-ish"));
        yes(claim("level").equals(3u64));
        yes(claim_contains("realm_access.roles", "dev"));
        no(claim_contains("realm_access.roles", "admin"));
        yes(claim_contains("groups", "eng"));
        yes(claim_one_of("level", [json!(2), json!(3)]));
        yes(claim("realm_access").exists());
        no(claim("absent").exists());
        yes(method().one_of(["DELETE", "PUT"]));
        yes(path().equals("/tenants/acme/users/u%7C1"));
        yes(header(HeaderName::from_static("x-api-version")).equals("2"));
        yes(header(HeaderName::from_static("x-api-version")).equals(2u64));
        no(header(HeaderName::from_static("x-twice")).exists());
        yes(client_ip().in_networks(["10.0.0.0/8"]).unwrap());
        no(client_ip().in_networks(["10.2.0.0/16", "::1"]).unwrap());
        assert!(client_ip().in_networks(["10.0.0.0/33"]).is_err());
        assert!(client_ip().in_networks(["example.test"]).is_err());

        // Without a caller, caller attributes are missing.
        assert!(!path_param("user_id").equals(subject()).matches(None, &head));
        assert_eq!(
            claim_equals("x", 1).decide(None, &head),
            Decision::deny("a required claim is missing or does not match")
        );
    }

    #[test]
    fn networks() {
        let net = IpNet::parse("192.168.0.0/16").unwrap();
        assert!(net.contains("192.168.255.1".parse().unwrap()));
        assert!(net.contains("::ffff:192.168.1.1".parse().unwrap()));
        assert!(!net.contains("192.169.0.1".parse().unwrap()));
        assert!(
            IpNet::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(IpNet::parse("1.2.3.4/").is_none());
    }

    #[test]
    fn time_windows_use_the_clock() {
        let req = http::Request::new(());
        let head = RequestHead::of(&req);
        let at = |secs: u64| Clock::from_fn(move || UNIX_EPOCH + Duration::from_secs(secs));
        let night = time_window().daily_utc(22 * 3600, 6 * 3600);
        assert!(night.clone().clock(at(23 * 3600)).decide().is_allow());
        assert!(night.clone().clock(at(86_400 + 3600)).decide().is_allow());
        assert!(night.clock(at(12 * 3600)).decide().is_deny());
        let window = time_window()
            .not_before(UNIX_EPOCH + Duration::from_secs(100))
            .not_after(UNIX_EPOCH + Duration::from_secs(200));
        assert!(window.clone().clock(at(99)).decide().is_deny());
        assert!(window.clone().clock(at(150)).decide().is_allow());
        assert!(
            window
                .clock(at(201))
                .decide_now(None, &head)
                .unwrap()
                .is_deny()
        );
    }
}
