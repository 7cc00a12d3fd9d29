use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONNECTION};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

use super::signed::{ContextSigner, MAX_REUSED_PATH};
use crate::config_error::ConfigError;
use crate::context::{AuthContext, HeaderSlot, PlainValues};

#[derive(Debug, Clone)]
pub(crate) struct HeaderNames {
    pub(crate) user_id: HeaderName,
    pub(crate) roles: HeaderName,
    pub(crate) scopes: HeaderName,
    pub(crate) tenant: HeaderName,
    pub(crate) issuer: HeaderName,
    pub(crate) request_id: HeaderName,
    pub(crate) claims: HeaderName,
    pub(crate) context: HeaderName,
}

/// The propagation rules, shared by every clone of the service.
#[derive(Debug)]
pub(crate) struct Propagator {
    names: HeaderNames,
    /// Every owned name (lowercase, `-` form) stripped from inbound requests, the request id
    /// header included (it is re-inserted after validation).
    owned: Vec<HeaderName>,
    /// The [`length_bit`]s of the owned names.
    owned_lengths: u64,
    /// The [`length_bit`]s of every name [`Propagator::scan`] looks for: the owned ones,
    /// `Authorization` and `DPoP` (unless kept) and `Connection`.
    scan_lengths: u64,
    /// Top-level claims forwarded in the claims header and the signed context.
    forward_claims: Vec<String>,
    keep_authorization: bool,
    sensitive: bool,
    /// Whether the plain context headers (`x-user-id`, ...) are sent.
    plain_headers: bool,
    /// Mints the signed context, when configured.
    signer: Option<ContextSigner>,
}

/// The propagation options that are not header names.
#[derive(Debug)]
pub(crate) struct Options {
    pub(crate) forward_claims: Vec<String>,
    pub(crate) keep_authorization: bool,
    pub(crate) sensitive: bool,
    pub(crate) plain_headers: bool,
    pub(crate) signer: Option<ContextSigner>,
}

/// The longest client request id kept.
const MAX_REQUEST_ID: usize = 128;

impl Propagator {
    pub(crate) fn new(
        names: HeaderNames,
        also_strip: Vec<HeaderName>,
        options: Options,
    ) -> Result<Self, ConfigError> {
        let owned = vec![
            names.user_id.clone(),
            names.roles.clone(),
            names.scopes.clone(),
            names.tenant.clone(),
            names.issuer.clone(),
            names.claims.clone(),
            names.context.clone(),
            names.request_id.clone(),
        ];
        for (i, a) in owned.iter().enumerate() {
            if owned[..i]
                .iter()
                .any(|b| normalize_eq(a.as_str(), b.as_str()))
            {
                return Err(ConfigError::invalid(format!(
                    "header name {:?} is configured for two context values; give each value its own header",
                    a.as_str()
                )));
            }
        }
        let mut owned = owned;
        owned.extend(also_strip);
        if options.forward_claims.iter().any(String::is_empty) {
            return Err(ConfigError::invalid(
                "forward_claims contains an empty claim name",
            ));
        }
        let owned_lengths = owned
            .iter()
            .fold(0, |bits, name| bits | length_bit(name.as_str().len()));
        let scan_lengths = owned_lengths
            | length_bit(CONNECTION.as_str().len())
            | if options.keep_authorization {
                0
            } else {
                length_bit(AUTHORIZATION.as_str().len())
                    | length_bit(crate::dpop::DPOP.as_str().len())
            };
        Ok(Propagator {
            names,
            owned,
            owned_lengths,
            scan_lengths,
            forward_claims: options.forward_claims,
            keep_authorization: options.keep_authorization,
            sensitive: options.sensitive,
            plain_headers: options.plain_headers,
            signer: options.signer,
        })
    }

    /// The request id header's name.
    pub(crate) fn request_id_name(&self) -> &HeaderName {
        &self.names.request_id
    }

    /// Removes every owned inbound header (and `Authorization` unless kept), then inserts
    /// the request id and the context's values. Returns the request id forwarded.
    #[cfg(test)]
    pub(crate) fn apply(&self, headers: &mut HeaderMap, ctx: Option<&AuthContext>) -> HeaderValue {
        self.apply_to(&http::Method::GET, "/", headers, ctx)
    }

    /// As [`apply`](Self::apply), for a request with `method` and `path` (which the signed
    /// context is bound to).
    pub(crate) fn apply_to(
        &self,
        method: &http::Method,
        path: &str,
        headers: &mut HeaderMap,
        ctx: Option<&AuthContext>,
    ) -> HeaderValue {
        let present = self.scan(headers);
        // Read the client's request id before stripping it with the other owned names, so
        // that underscore spellings and duplicates never survive next to the one we send.
        // Its header is owned: without any owned name present, there is none to read.
        let request_id = if present & OWNED != 0 {
            self.request_id(headers)
        } else {
            new_request_id()
        };
        self.strip(headers, present);
        headers.insert(self.names.request_id.clone(), request_id.clone());
        if let Some(ctx) = ctx {
            self.inject(headers, ctx, &request_id, method, path);
        }
        request_id
    }

    fn is_owned(&self, name: &str) -> bool {
        self.owned
            .iter()
            .chain((!self.keep_authorization).then_some(&AUTHORIZATION))
            .chain((!self.keep_authorization).then_some(&crate::dpop::DPOP))
            .any(|owned| normalize_eq(name, owned.as_str()))
    }

    /// Which of the names [`strip`](Self::strip) acts on the request has, as [`OWNED`],
    /// [`AUTHORIZATION_FOUND`], [`DPOP_FOUND`] and [`CONNECTION_FOUND`] bits: one pass over
    /// the request's names (a handful), each ruled out by its length first, instead of a
    /// hash lookup per name that is usually absent.
    fn scan(&self, headers: &HeaderMap) -> u8 {
        let mut present = 0;
        for name in headers.keys() {
            let name = name.as_str();
            if self.scan_lengths & length_bit(name.len()) == 0 {
                continue;
            }
            present |= if !self.keep_authorization && name == AUTHORIZATION.as_str() {
                AUTHORIZATION_FOUND
            } else if !self.keep_authorization && name == crate::dpop::DPOP.as_str() {
                DPOP_FOUND
            } else if name == CONNECTION.as_str() {
                CONNECTION_FOUND
            } else if self.is_owned(name) {
                OWNED
            } else {
                0
            };
        }
        present
    }

    /// Removes what [`scan`](Self::scan) found `present`.
    fn strip(&self, headers: &mut HeaderMap, present: u8) {
        // The DPoP proof goes with the access token it proves (RFC 9449): neither is for
        // the upstream (unless kept: then `scan` reports neither).
        if present & AUTHORIZATION_FOUND != 0 {
            headers.remove(AUTHORIZATION);
        }
        if present & DPOP_FOUND != 0 {
            headers.remove(crate::dpop::DPOP);
        }
        if present & OWNED == 0 {
            if present & CONNECTION_FOUND != 0 {
                self.strip_connection_tokens(headers);
            }
            return;
        }
        // A scan of the names the request has (a handful) rather than a removal per owned
        // name: header names are lowercase already, and `is_owned` also catches the spellings
        // with `_` or `.` for `-` (which CGI-style servers fold into the same variable). Names
        // of a length no owned name has are passed over at once; each owned name found (rare:
        // a client's request id, a spoofing attempt) is removed and the scan starts again.
        while let Some(name) = headers
            .keys()
            .find(|name| {
                self.owned_lengths & length_bit(name.as_str().len()) != 0
                    && self.is_owned(name.as_str())
            })
            .cloned()
        {
            headers.remove(name);
        }
        if present & CONNECTION_FOUND != 0 {
            self.strip_connection_tokens(headers);
        }
    }

    /// `Connection: x-user-id` asks the next HTTP/1.1 hop to drop that header as hop-by-hop:
    /// a client could make a proxy behind this layer remove the context it injects. Owned
    /// names are taken out of `Connection` (RFC 9110 §7.6.1), other tokens are kept.
    fn strip_connection_tokens(&self, headers: &mut HeaderMap) {
        let listed = headers.get_all(CONNECTION).iter().any(|value| {
            value.to_str().map_or(true, |v| {
                v.split(',').any(|token| self.is_owned(token.trim()))
            })
        });
        if !listed {
            return;
        }
        let kept: Vec<String> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty() && !self.is_owned(&t.to_ascii_lowercase()))
            .map(str::to_owned)
            .collect();
        headers.remove(CONNECTION);
        if !kept.is_empty()
            && let Ok(value) = HeaderValue::from_str(&kept.join(", "))
        {
            headers.insert(CONNECTION, value);
        }
    }

    /// The client's request id when there is exactly one, well-formed; else a new UUID.
    fn request_id(&self, headers: &HeaderMap) -> HeaderValue {
        let name = &self.names.request_id;
        let mut values = headers.get_all(name).iter();
        if let (Some(value), None) = (values.next(), values.next())
            && is_request_id(value.as_bytes())
        {
            return value.clone();
        }
        new_request_id()
    }

    fn inject(
        &self,
        headers: &mut HeaderMap,
        ctx: &AuthContext,
        request_id: &HeaderValue,
        method: &http::Method,
        path: &str,
    ) {
        if self.plain_headers {
            self.inject_plain(headers, ctx);
        }
        if let Some(signer) = &self.signer
            && let Some(value) = self.signed_context(signer, ctx, request_id, method, path)
        {
            headers.insert(self.names.context.clone(), value);
        }
    }

    /// The signed context for this request: reused when one was minted for the same cached
    /// identity, method and path and more than half its lifetime remains, else minted (and
    /// kept for reuse when the identity is cached).
    fn signed_context(
        &self,
        signer: &ContextSigner,
        ctx: &AuthContext,
        request_id: &HeaderValue,
        method: &http::Method,
        path: &str,
    ) -> Option<HeaderValue> {
        let now = signer.now();
        // Only a context something else holds (a token cache) is an identity worth keeping
        // contexts for; one built for this request alone is never seen again.
        let reuse = signer
            .reuse()
            .filter(|_| ctx.is_shared() && path.len() <= MAX_REUSED_PATH)
            .map(|reuse| (reuse, ctx.header_values(plain_values).identity));
        if let Some((reuse, identity)) = reuse
            && let Some(value) = reuse.get(identity, method, path, now)
        {
            return Some(value);
        }
        let claims = self.selected_claims(ctx);
        let token = match signer.mint(ctx, claims, request_id, method, path, now) {
            Ok(token) => token,
            Err(error) => {
                // Fail closed: without the header, verifying services reject the request.
                tracing::warn!(%error, "signed context not minted");
                return None;
            }
        };
        let Some(mut value) = header_value(&token) else {
            not_header_safe(&self.names.context);
            return None;
        };
        value.set_sensitive(self.sensitive);
        if let Some((reuse, identity)) = reuse {
            reuse.insert(
                identity,
                method,
                path,
                value.clone(),
                signer.reuse_until(now),
            );
        }
        Some(value)
    }

    /// The reused signed contexts (tests).
    #[cfg(test)]
    pub(crate) fn context_reuse(&self) -> Option<&super::signed::ContextReuse> {
        self.signer.as_ref().and_then(ContextSigner::reuse)
    }

    /// The allow-listed claims present in the context.
    fn selected_claims(&self, ctx: &AuthContext) -> Map<String, Value> {
        if self.forward_claims.is_empty() {
            return Map::new();
        }
        let claims = ctx.claims_map();
        self.forward_claims
            .iter()
            .filter_map(|name| claims.get(name).map(|v| (name.clone(), v.clone())))
            .collect()
    }

    fn inject_plain(&self, headers: &mut HeaderMap, ctx: &AuthContext) {
        let names = &self.names;
        let owned;
        let values = if ctx.is_shared() {
            // Built once per context: a cached context (a cache hit) reuses them.
            ctx.header_values(plain_values)
        } else {
            // A context only this request holds: build the values for it alone.
            owned = plain_values(ctx);
            &owned
        };
        let slots = [
            (&names.user_id, &values.subject),
            (&names.issuer, &values.issuer),
            (&names.roles, &values.roles),
            (&names.scopes, &values.scopes),
            (&names.tenant, &values.tenant),
        ];
        if let Some((name, _)) = slots
            .iter()
            .find(|(_, slot)| matches!(slot, HeaderSlot::Unsafe))
        {
            // All or nothing: never an identity with one part missing. The authenticators
            // of this crate refuse such contexts (`AuthContext::check_forwardable`); only a
            // context built elsewhere gets here.
            tracing::warn!(
                header = name.as_str(),
                "context value cannot be forwarded exactly; no identity header sent"
            );
            return;
        }
        for (name, slot) in slots {
            if let HeaderSlot::Value(value) = slot {
                let mut value = value.clone();
                value.set_sensitive(self.sensitive);
                headers.insert(name.clone(), value);
            }
        }
        let selected = self.selected_claims(ctx);
        if !selected.is_empty() {
            let json = Value::Object(selected).to_string();
            self.insert(headers, &names.claims, &URL_SAFE_NO_PAD.encode(json));
        }
    }

    fn insert(&self, headers: &mut HeaderMap, name: &HeaderName, value: &str) {
        match header_value(value) {
            Some(mut value) => {
                value.set_sensitive(self.sensitive);
                headers.insert(name.clone(), value);
            }
            None => not_header_safe(name),
        }
    }
}

fn not_header_safe(name: &HeaderName) {
    tracing::debug!(
        header = name.as_str(),
        "context value not propagated: not header-safe"
    );
}

/// Visible ASCII and spaces only: anything else is left out, never altered.
fn header_value(value: &str) -> Option<HeaderValue> {
    if value.is_empty() || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return None;
    }
    // Shared bytes, so that clones of the value (one per request served from a cached
    // context) are reference counts rather than copies.
    HeaderValue::from_maybe_shared(Bytes::copy_from_slice(value.as_bytes())).ok()
}

/// The plain header values of `ctx`. The subject and issuer are sent verbatim or not at
/// all ([`HeaderSlot::Unsafe`] withholds every identity header); the tenant, each role and
/// each scope are percent-encoded ([`percent_encode`]), and a control character makes them
/// unsafe too.
fn plain_values(ctx: &AuthContext) -> PlainValues {
    fn exact(value: Option<&str>) -> HeaderSlot {
        match value {
            None => HeaderSlot::Absent,
            Some(value) if crate::context::is_exact_header_text(value) => {
                header_value(value).map_or(HeaderSlot::Unsafe, HeaderSlot::Value)
            }
            Some(_) => HeaderSlot::Unsafe,
        }
    }
    fn encoded<'a, I>(items: I, sep: u8) -> HeaderSlot
    where
        I: IntoIterator<Item = &'a str>,
        I::IntoIter: Clone,
    {
        let items = items.into_iter();
        // Sized once: values are usually kept as they are.
        let len = items.clone().map(|i| i.len() + 1).sum();
        let mut out = String::with_capacity(len);
        for item in items.filter(|i| !i.is_empty()) {
            if item.chars().any(char::is_control) {
                return HeaderSlot::Unsafe;
            }
            if !out.is_empty() {
                out.push(char::from(sep));
            }
            percent_encode(item, sep, &mut out);
        }
        if out.is_empty() {
            return HeaderSlot::Absent;
        }
        header_value(&out).map_or(HeaderSlot::Unsafe, HeaderSlot::Value)
    }
    static IDENTITIES: AtomicU64 = AtomicU64::new(0);
    PlainValues {
        identity: IDENTITIES.fetch_add(1, Ordering::Relaxed),
        subject: exact(ctx.subject()),
        issuer: exact(ctx.issuer()),
        roles: encoded(ctx.roles().iter().map(String::as_str), b','),
        scopes: encoded(ctx.scopes().iter().map(String::as_str), b' '),
        // One value, no separator: `%` (encoded anyway) stands in for none.
        tenant: encoded(ctx.tenant(), b'%'),
    }
}

/// Appends `value` percent-encoded (RFC 3986 §2.1, upper-case hex, of its UTF-8 bytes): every
/// byte that is not visible ASCII, `%` itself, and `sep` (the list separator) become `%XX`;
/// everything else is kept. `acmé` becomes `acm%C3%A9`, `a,b` in a role list `a%2Cb`.
pub(crate) fn percent_encode(value: &str, sep: u8, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value.as_bytes() {
        if (0x21..0x7f).contains(&b) && b != b'%' && b != sep {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

/// Decodes what [`percent_encode`] produced; `None` for a malformed escape or bytes that are
/// not UTF-8.
pub(crate) fn percent_decode(value: &str) -> Option<String> {
    if !value.contains('%') {
        return Some(value.to_owned());
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// [`Propagator::scan`]: an owned name (any spelling) is present.
const OWNED: u8 = 1;
/// [`Propagator::scan`]: `Authorization` is present and not kept.
const AUTHORIZATION_FOUND: u8 = 2;
/// [`Propagator::scan`]: `DPoP` is present and not kept.
const DPOP_FOUND: u8 = 4;
/// [`Propagator::scan`]: `Connection` is present.
const CONNECTION_FOUND: u8 = 8;

/// A new request id: a v4 UUID of OS random bytes.
fn new_request_id() -> HeaderValue {
    let id = uuid::Builder::from_random_bytes(random_16()).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    id.hyphenated().encode_lower(&mut buf);
    // Shared bytes from the start: the value goes into the request and the response, and
    // bytes copied into a `Vec` would be moved into a shared allocation at the first clone.
    HeaderValue::from_maybe_shared(Bytes::from_owner(buf)).expect("uuid is ASCII")
}

/// A bit per name length (lengths from 63 share the last), to rule names out cheaply.
fn length_bit(len: usize) -> u64 {
    1 << len.min(63)
}

/// Whether two header names are the same once case is ignored and `_` and `.` are read as
/// `-`.
pub(crate) fn normalize_eq(a: &str, b: &str) -> bool {
    fn fold(b: u8) -> u8 {
        match b {
            b'_' | b'.' => b'-',
            b => b.to_ascii_lowercase(),
        }
    }
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| fold(x) == fold(y))
}

/// 16 bytes from the operating system's random source, as `Uuid::new_v4` takes, but drawn
/// in batches: each thread keeps a buffer of OS random bytes and refills it with one
/// `getrandom` call per 128 request ids ([`RANDOM_BATCH`] bytes), instead of one system call
/// per request. Every id is still made of bytes the OS produced and no other id uses (the buffer
/// is consumed, never reused), so ids stay as unpredictable as `new_v4`'s.
fn random_16() -> [u8; 16] {
    use std::cell::RefCell;
    thread_local! {
        static POOL: RefCell<RandomPool> = const {
            RefCell::new(RandomPool { bytes: [0; RANDOM_BATCH], next: RANDOM_BATCH })
        };
    }
    POOL.with_borrow_mut(|pool| {
        if pool.next + 16 > RANDOM_BATCH {
            getrandom::fill(&mut pool.bytes).expect("the OS random source failed");
            pool.next = 0;
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&pool.bytes[pool.next..pool.next + 16]);
        // Consumed bytes are wiped: nothing left in memory predicts an id already handed out.
        pool.bytes[pool.next..pool.next + 16].fill(0);
        pool.next += 16;
        out
    })
}

/// Bytes of OS randomness fetched per `getrandom` call (128 request ids).
const RANDOM_BATCH: usize = 2048;

struct RandomPool {
    bytes: [u8; RANDOM_BATCH],
    next: usize,
}

fn is_request_id(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_REQUEST_ID
        && value.iter().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'+' | b'=')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::CredentialKind;

    fn propagator() -> Propagator {
        let layer = crate::propagate::ContextPropagationLayer::builder()
            .forward_claims(["email"])
            .build()
            .unwrap();
        std::sync::Arc::try_unwrap(layer_propagator(layer)).unwrap()
    }

    fn layer_propagator(
        layer: crate::propagate::ContextPropagationLayer,
    ) -> std::sync::Arc<Propagator> {
        use tower_layer::Layer;
        layer.layer(()).into_propagator()
    }

    #[test]
    fn strips_every_spelling() {
        let p = propagator();
        let mut h = HeaderMap::new();
        for name in [
            "x-user-id",
            "x_user_id",
            "x-user_id",
            "X_USER_ID",
            "x-user-roles",
            "x_user_roles",
            "x-user-scopes",
            "x_tenant_id",
            "x-tenant-id",
            "x-auth-claims",
            "x_auth_claims",
            "authorization",
        ] {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("spoof"),
            );
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("spoof2"),
            );
        }
        h.insert("x-other", HeaderValue::from_static("kept"));
        p.apply(&mut h, None);
        let left: Vec<_> = h.keys().map(|k| k.as_str().to_owned()).collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert_eq!(h["x-other"], "kept");
        assert!(h.contains_key("x-request-id"));
        assert!(!h.values().any(|v| v.as_bytes().starts_with(b"spoof")));
    }

    #[test]
    fn injects_context() {
        let p = propagator();
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("req-1"));
        let ctx = AuthContext::builder(CredentialKind::Jwt)
            .subject("u1")
            .issuer("https://idp.example.test")
            .roles(["a", "b,c", "d"])
            .scopes(["s1", "s2"])
            .tenant("t")
            .claim("email", "e@x.test")
            .claim("secret", "no")
            .build();
        p.apply(&mut h, Some(&ctx));
        assert_eq!(h["x-user-id"], "u1");
        assert_eq!(h["x-user-issuer"], "https://idp.example.test");
        assert_eq!(h["x-user-roles"], "a,b%2Cc,d");
        assert_eq!(h["x-user-scopes"], "s1 s2");
        assert_eq!(h["x-tenant-id"], "t");
        assert_eq!(h["x-request-id"], "req-1");
        let claims = URL_SAFE_NO_PAD
            .decode(h["x-auth-claims"].as_bytes())
            .unwrap();
        assert_eq!(claims, br#"{"email":"e@x.test"}"#);
    }

    #[test]
    fn request_id_rules() {
        let p = propagator();
        for (given, kept) in [
            (vec!["abc-123"], true),
            (vec!["has space"], false),
            (vec!["a", "b"], false),
            (vec![], false),
        ] {
            let mut h = HeaderMap::new();
            for g in &given {
                h.append("x-request-id", HeaderValue::from_str(g).unwrap());
            }
            p.apply(&mut h, None);
            assert_eq!(h.get_all("x-request-id").iter().count(), 1);
            assert_eq!(
                h["x-request-id"] == given.first().copied().unwrap_or(""),
                kept
            );
        }
        let mut h = HeaderMap::new();
        h.insert(
            "x-request-id",
            HeaderValue::from_str(&"a".repeat(129)).unwrap(),
        );
        p.apply(&mut h, None);
        assert_eq!(h["x-request-id"].len(), 36);
    }

    #[test]
    fn dots_context_header_and_connection_tokens() {
        let p = propagator();
        let mut h = HeaderMap::new();
        for name in [
            "x.user.id",
            "x-auth-context",
            "x_auth_context",
            "x_request_id",
        ] {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("spoof"),
            );
        }
        h.insert(
            CONNECTION,
            HeaderValue::from_static("keep-alive, X-User-Id, x_tenant_id, x-hop"),
        );
        p.apply(&mut h, None);
        assert!(!h.values().any(|v| v == "spoof"), "{h:?}");
        assert_eq!(h[CONNECTION], "keep-alive, x-hop");
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("x-user-id"));
        p.apply(&mut h, None);
        assert!(h.get(CONNECTION).is_none());
    }

    #[test]
    fn signing_configuration_is_checked() {
        use crate::ContextPropagationLayer;
        use crate::keys::SigningKey;
        use std::time::Duration;
        let no_kid = SigningKey::generate_ed25519().unwrap();
        let err = ContextPropagationLayer::builder()
            .sign_context(no_kid)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("with_kid"), "{err}");
        let key = SigningKey::generate_ed25519().unwrap().with_kid("k");
        for lifetime in [Duration::ZERO, Duration::from_secs(3600)] {
            let err = ContextPropagationLayer::builder()
                .sign_context(key.clone())
                .context_lifetime(lifetime)
                .build()
                .unwrap_err();
            assert!(err.to_string().contains("context_lifetime"), "{err}");
        }
        let err = ContextPropagationLayer::builder()
            .context_header("x-user-id")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("two context values"), "{err}");
        let err = ContextPropagationLayer::builder()
            .context_header("grpc-status")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("reserved"), "{err}");
    }

    #[test]
    fn reused_contexts_are_bounded_under_many_paths() {
        use crate::keys::SigningKey;
        use crate::propagate::signed::{MAX_REUSED_BYTES, MAX_REUSED_CONTEXTS};
        let key = SigningKey::generate_ed25519().unwrap().with_kid("k");
        let layer = crate::propagate::ContextPropagationLayer::builder()
            .sign_context(key)
            .build()
            .unwrap();
        let p = layer_propagator(layer);
        let ctx = AuthContext::builder(CredentialKind::Jwt)
            .subject("u1")
            .roles(["r"])
            .build();
        // Held elsewhere too, as a token cache holds it.
        let _cached = ctx.clone();
        let reuse = p.context_reuse().unwrap();
        let send = |path: &str| {
            let mut h = HeaderMap::new();
            p.apply_to(&http::Method::GET, path, &mut h, Some(&ctx));
            h["x-auth-context"].clone()
        };
        let first = send("/0");
        assert_eq!(send("/0"), first);
        assert_eq!(reuse.len(), 1);
        for i in 1..5_000 {
            send(&format!("/{i}"));
        }
        assert!(reuse.len() as u64 <= MAX_REUSED_CONTEXTS, "{}", reuse.len());
        assert!(reuse.weight() <= MAX_REUSED_BYTES);
        // A path too long to keep: minted every time.
        let before = reuse.len();
        let long = format!("/{}", "x".repeat(2_000));
        assert_ne!(send(&long), send(&long));
        assert_eq!(reuse.len(), before);
    }

    #[test]
    fn unsafe_values_withhold_the_whole_identity() {
        let p = propagator();
        for ctx in [
            AuthContext::builder(CredentialKind::Jwt)
                .subject("ünïcode")
                .roles(["admin"])
                .tenant("t")
                .build(),
            AuthContext::builder(CredentialKind::Jwt)
                .subject("alice")
                .roles(["admin\r\n"])
                .build(),
            AuthContext::builder(CredentialKind::Jwt)
                .subject("alice")
                .issuer("iss\n")
                .build(),
            AuthContext::builder(CredentialKind::Jwt)
                .subject(" alice")
                .build(),
        ] {
            let mut h = HeaderMap::new();
            h.insert("x-user-roles", HeaderValue::from_static("spoof"));
            p.apply(&mut h, Some(&ctx));
            for name in [
                "x-user-id",
                "x-user-issuer",
                "x-user-roles",
                "x-user-scopes",
                "x-tenant-id",
                "x-auth-claims",
            ] {
                assert!(h.get(name).is_none(), "{name} sent for {ctx:?}");
            }
            assert!(ctx.check_forwardable().is_err());
        }
    }

    #[test]
    fn percent_encoding_is_exact_and_reversible() {
        let p = propagator();
        let mut h = HeaderMap::new();
        let ctx = AuthContext::builder(CredentialKind::Jwt)
            .subject("alice")
            .issuer("api-key")
            .roles(["admin user", "100%", "a,b", "é"])
            .scopes(["read", "wr\u{e9}te"])
            .tenant("acmé, inc")
            .build();
        p.apply(&mut h, Some(&ctx));
        assert_eq!(h["x-user-issuer"], "api-key");
        assert_eq!(h["x-user-roles"], "admin%20user,100%25,a%2Cb,%C3%A9");
        assert_eq!(h["x-user-scopes"], "read wr%C3%A9te");
        assert_eq!(h["x-tenant-id"], "acm%C3%A9,%20inc");
        for (original, sep) in [
            ("acmé, inc", b'%'),
            ("a,b", b','),
            ("100%", b','),
            ("", b','),
        ] {
            let mut out = String::new();
            percent_encode(original, sep, &mut out);
            assert_eq!(percent_decode(&out).as_deref(), Some(original));
        }
        for bad in ["%", "%4", "%zz", "%+1", "%C3"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn issuer_header_is_owned_and_configurable() {
        let p = propagator();
        let mut h = HeaderMap::new();
        for name in ["x-user-issuer", "X_USER_ISSUER", "x.user.issuer"] {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("spoof"),
            );
        }
        p.apply(&mut h, None);
        assert!(!h.values().any(|v| v == "spoof"), "{h:?}");
        let layer = crate::propagate::ContextPropagationLayer::builder()
            .issuer_header("x-idp")
            .build()
            .unwrap();
        let p = layer_propagator(layer);
        let mut h = HeaderMap::new();
        h.insert("x-user-issuer", HeaderValue::from_static("kept"));
        h.insert("x_idp", HeaderValue::from_static("spoof"));
        let ctx = AuthContext::builder(CredentialKind::ApiKey)
            .subject("bot")
            .issuer("ci-keys")
            .build();
        p.apply(&mut h, Some(&ctx));
        assert_eq!(h["x-idp"], "ci-keys");
        assert_eq!(h["x-user-issuer"], "kept");
        let err = crate::propagate::ContextPropagationLayer::builder()
            .issuer_header("x-user-id")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("two context values"), "{err}");
    }
}
