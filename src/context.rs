//! [`AuthContext`]: who the caller is, as established by the authenticate layer.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::keys::KeyFingerprint;

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CredentialKind {
    /// A signed JWT, verified locally.
    Jwt,
    /// An opaque token, checked by token introspection (RFC 7662).
    Introspected,
    /// An API key.
    ApiKey,
    /// A context forwarded by a gateway in plain headers (see
    /// [`TrustedContextLayer`](crate::TrustedContextLayer)); the original credential kind
    /// is not known.
    Forwarded,
}

impl CredentialKind {
    /// A short lowercase name (`jwt`, `introspected`, `api_key`).
    pub const fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Jwt => "jwt",
            CredentialKind::Introspected => "introspected",
            CredentialKind::ApiKey => "api_key",
            CredentialKind::Forwarded => "forwarded",
        }
    }
}

/// The authenticated caller: subject, issuer, roles, scopes, tenant, expiry and claims.
///
/// The authenticate layer inserts it into the request extensions; everything after it
/// (policies, context propagation, handlers) reads it from there. It never holds the raw
/// token. Cloning is a reference-count increment.
///
/// ```
/// use tower_gatekeeper::{AuthContext, CredentialKind};
///
/// let ctx = AuthContext::builder(CredentialKind::Jwt)
///     .subject("user-123")
///     .roles(["clerk", "admin"])
///     .scopes(["orders:read"])
///     .tenant("acme")
///     .claim("email", "u@example.test")
///     .build();
/// assert_eq!(ctx.subject(), Some("user-123"));
/// assert!(ctx.has_role("admin"));
/// assert!(ctx.has_scope("orders:read"));
///
/// #[derive(serde::Deserialize)]
/// struct Claims { email: String }
/// assert_eq!(ctx.claims::<Claims>().unwrap().email, "u@example.test");
/// ```
#[derive(Clone)]
pub struct AuthContext {
    inner: Arc<Inner>,
}

struct Inner {
    kind: CredentialKind,
    subject: Option<String>,
    issuer: Option<String>,
    roles: Vec<String>,
    scopes: Vec<String>,
    tenant: Option<String>,
    expires_at: Option<SystemTime>,
    key_id: Option<String>,
    /// The material of the key that verified the credential (JWTs verified by this crate).
    key_fingerprint: Option<KeyFingerprint>,
    claims: Claims,
    /// The plain propagation header values, built the first time a context is propagated
    /// and shared by every later request served with this context (a cache hit reuses
    /// them instead of joining roles and scopes and copying strings again).
    header_values: OnceLock<PlainValues>,
}

impl AuthContext {
    /// Starts building a context for a caller authenticated by `kind`.
    pub fn builder(kind: CredentialKind) -> AuthContextBuilder {
        AuthContextBuilder {
            inner: Inner {
                kind,
                subject: None,
                issuer: None,
                roles: Vec::new(),
                scopes: Vec::new(),
                tenant: None,
                expires_at: None,
                key_id: None,
                key_fingerprint: None,
                claims: Claims::from_map(Map::new()),
                header_values: OnceLock::new(),
            },
        }
    }

    /// How the caller authenticated.
    pub fn credential_kind(&self) -> CredentialKind {
        self.inner.kind
    }

    /// The subject (`sub`), when the credential names one.
    pub fn subject(&self) -> Option<&str> {
        self.inner.subject.as_deref()
    }

    /// The issuer (`iss`) that vouched for the caller.
    pub fn issuer(&self) -> Option<&str> {
        self.inner.issuer.as_deref()
    }

    /// The caller's roles, from the configured roles claim.
    pub fn roles(&self) -> &[String] {
        &self.inner.roles
    }

    /// The caller's OAuth2 scopes (`scope`, space-separated, or `scp`).
    pub fn scopes(&self) -> &[String] {
        &self.inner.scopes
    }

    /// The caller's tenant, from the configured tenant claim.
    pub fn tenant(&self) -> Option<&str> {
        self.inner.tenant.as_deref()
    }

    /// When the credential expires.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.inner.expires_at
    }

    /// The `kid` of the key that verified the credential, when it had one.
    pub fn key_id(&self) -> Option<&str> {
        self.inner.key_id.as_deref()
    }

    /// The fingerprint of the key that verified the credential, when this crate verified it.
    pub(crate) fn key_fingerprint(&self) -> Option<&KeyFingerprint> {
        self.inner.key_fingerprint.as_ref()
    }

    /// Keeps at most `max_roles` roles and `max_scopes` scopes (the first ones), for
    /// [`Limits`](crate::limits::Limits). Returns whether anything was dropped.
    pub(crate) fn truncate_lists(&mut self, max_roles: usize, max_scopes: usize) -> bool {
        let i = &*self.inner;
        if i.roles.len() <= max_roles && i.scopes.len() <= max_scopes {
            return false;
        }
        self.inner = Arc::new(Inner {
            kind: i.kind,
            subject: i.subject.clone(),
            issuer: i.issuer.clone(),
            roles: i.roles.iter().take(max_roles).cloned().collect(),
            scopes: i.scopes.iter().take(max_scopes).cloned().collect(),
            tenant: i.tenant.clone(),
            expires_at: i.expires_at,
            key_id: i.key_id.clone(),
            key_fingerprint: i.key_fingerprint,
            claims: i.claims.clone(),
            header_values: OnceLock::new(),
        });
        true
    }

    /// The same context with `issuer` as its issuer.
    pub(crate) fn with_issuer(&self, issuer: &str) -> AuthContext {
        let i = &*self.inner;
        AuthContext {
            inner: Arc::new(Inner {
                kind: i.kind,
                subject: i.subject.clone(),
                issuer: Some(issuer.to_owned()),
                roles: i.roles.clone(),
                scopes: i.scopes.clone(),
                tenant: i.tenant.clone(),
                expires_at: i.expires_at,
                key_id: i.key_id.clone(),
                key_fingerprint: i.key_fingerprint,
                claims: i.claims.clone(),
                header_values: OnceLock::new(),
            }),
        }
    }

    /// The plain propagation header values of this context, built by `init` on first use.
    pub(crate) fn header_values(
        &self,
        init: impl FnOnce(&AuthContext) -> PlainValues,
    ) -> &PlainValues {
        self.inner.header_values.get_or_init(|| init(self))
    }

    /// Whether another handle (e.g. a token cache) shares this context, so that work cached
    /// inside it may be reused by later requests. A hint only: it decides whether to keep
    /// derived values, never what they are.
    pub(crate) fn is_shared(&self) -> bool {
        Arc::strong_count(&self.inner) > 1
    }

    /// Checks that this identity can be forwarded exactly by
    /// [`ContextPropagationLayer`](crate::ContextPropagationLayer): the rules every
    /// authenticator of this crate applies before it admits a caller (a custom
    /// [`Authenticator`](crate::Authenticator) should apply them too).
    ///
    /// - the subject and the issuer, when present, are non-empty visible ASCII (spaces
    ///   inside, none at either end): their headers carry them verbatim;
    /// - the tenant, roles and scopes contain no control characters (non-ASCII text and
    ///   separators are carried percent-encoded, see [`crate::propagate`]).
    ///
    /// ```
    /// use tower_gatekeeper::{AuthContext, CredentialKind};
    ///
    /// let ok = AuthContext::builder(CredentialKind::Jwt).subject("alice").tenant("acmé").build();
    /// assert!(ok.check_forwardable().is_ok());
    /// let bad = AuthContext::builder(CredentialKind::Jwt).subject("alice\r\nx-admin: 1").build();
    /// assert!(bad.check_forwardable().is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// [`IdentityError`] naming the value that cannot be forwarded.
    pub fn check_forwardable(&self) -> Result<(), IdentityError> {
        let i = &*self.inner;
        if i.subject
            .as_deref()
            .is_some_and(|s| !is_exact_header_text(s))
        {
            return Err(IdentityError::Unrepresentable("sub"));
        }
        if i.issuer
            .as_deref()
            .is_some_and(|s| !is_exact_header_text(s))
        {
            return Err(IdentityError::Unrepresentable("iss"));
        }
        if i.tenant.as_deref().is_some_and(has_control) {
            return Err(IdentityError::Unrepresentable("tenant"));
        }
        if i.roles.iter().any(|r| has_control(r)) {
            return Err(IdentityError::Unrepresentable("roles"));
        }
        if i.scopes.iter().any(|s| has_control(s)) {
            return Err(IdentityError::Unrepresentable("scopes"));
        }
        Ok(())
    }

    /// Whether the caller has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.inner.roles.iter().any(|r| r == role)
    }

    /// Whether the caller has `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.inner.scopes.iter().any(|s| s == scope)
    }

    /// All claims, as a JSON object.
    ///
    /// A context made from a verified JWT keeps its claims as the JSON text the token
    /// carried; the first call parses it (once per context, shared by its clones), later
    /// calls return the same map.
    pub fn claims_map(&self) -> &Map<String, Value> {
        self.inner.claims.map()
    }

    /// One claim by dotted path (`"realm_access.roles"`), or `None` when absent.
    ///
    /// A path segment selects a member of an object; a top-level name that itself contains
    /// a dot (as some identity providers use, e.g. `"https://example.test/roles"`) is found
    /// first as a whole.
    pub fn claim(&self, path: &str) -> Option<&Value> {
        claim_at_path(self.claims_map(), path)
    }

    /// The claims deserialized into `T`.
    ///
    /// # Errors
    ///
    /// [`ClaimsError`] when the claims do not fit `T`.
    ///
    /// Claims kept as JSON text (a verified JWT's) are deserialized from that text directly,
    /// without building the map of [`claims_map`](Self::claims_map).
    pub fn claims<T: DeserializeOwned>(&self) -> Result<T, ClaimsError> {
        match &self.inner.claims.json {
            Some(json) => serde_json::from_str(json).map_err(ClaimsError),
            None => T::deserialize(self.inner.claims.map()).map_err(ClaimsError),
        }
    }

    /// Whether the claims map exists (built, or parsed from the text).
    #[cfg(test)]
    pub(crate) fn claims_parsed(&self) -> bool {
        self.inner.claims.map.get().is_some()
    }

    /// The heap the claims hold or will hold once parsed: the kept JSON text plus the
    /// estimated `serde_json` tree ([`member_bytes`]), for weighing cached contexts.
    pub(crate) fn claims_heap_bytes(&self) -> usize {
        let claims = &self.inner.claims;
        match &claims.json {
            Some(json) => json.capacity() + claims.tree_bytes,
            None => map_bytes(claims.map()),
        }
    }
}

/// The claims of a context: a map, or the JSON text of a verified token's claims, parsed
/// into a map on first use.
#[derive(Clone)]
struct Claims {
    /// The claims as JSON text: one object, already checked for duplicate member names (a
    /// `String` as decoded, not shrunk into a `Box<str>`: that would copy it again).
    json: Option<String>,
    map: OnceLock<Map<String, Value>>,
    /// With `json`: the estimated heap of `map` once parsed.
    tree_bytes: usize,
}

impl Claims {
    fn from_map(map: Map<String, Value>) -> Self {
        Claims {
            json: None,
            map: OnceLock::from(map),
            tree_bytes: 0,
        }
    }

    fn map(&self) -> &Map<String, Value> {
        self.map.get_or_init(|| {
            // The text was scanned as one JSON object when the token was parsed.
            self.json
                .as_deref()
                .and_then(|json| serde_json::from_str(json).ok())
                .unwrap_or_default()
        })
    }
}

/// The heap of one object member in a `serde_json` map: its name and value, the map's
/// per-entry overhead, and what the value owns (`value_heap`, see [`value_bytes`]).
pub(crate) fn member_bytes(key_len: usize, value_heap: usize) -> usize {
    key_len + size_of::<String>() + size_of::<Value>() + 16 + value_heap
}

/// The heap a JSON value owns.
pub(crate) fn value_bytes(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        Value::String(s) => s.len(),
        Value::Array(items) => items
            .iter()
            .map(|v| size_of::<Value>() + value_bytes(v))
            .sum(),
        Value::Object(map) => map_bytes(map),
    }
}

/// The heap the members of a JSON object own.
fn map_bytes(map: &Map<String, Value>) -> usize {
    map.iter()
        .map(|(k, v)| member_bytes(k.len(), value_bytes(v)))
        .sum()
}

/// Why an identity cannot be forwarded exactly; see [`AuthContext::check_forwardable`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The value (`sub`, `iss`, `tenant`, `roles` or `scopes`) contains characters its
    /// header cannot carry exactly.
    #[error(
        "the {0} value cannot be forwarded exactly (control characters, or for sub and iss non-ASCII or spaces at either end)"
    )]
    Unrepresentable(&'static str),
    /// The credential names no subject (a missing or empty `sub`).
    #[error("the credential names no subject")]
    MissingSubject,
}

impl IdentityError {
    /// The fixed, client-safe description used in `error_description`.
    pub fn description(&self) -> &'static str {
        match self {
            IdentityError::Unrepresentable(_) => "identity cannot be forwarded exactly",
            IdentityError::MissingSubject => "token has no subject",
        }
    }
}

/// Non-empty visible ASCII with spaces only inside: what a header value carries verbatim
/// (HTTP strips spaces at either end of a field value, RFC 9110 §5.5).
pub(crate) fn is_exact_header_text(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.iter().all(|b| (0x20..0x7f).contains(b))
        && bytes[0] != b' '
        && bytes[bytes.len() - 1] != b' '
}

/// Whether `value` contains a control character (C0, DEL or C1).
fn has_control(value: &str) -> bool {
    value.chars().any(char::is_control)
}

/// Reads the caller's identity from a claims object, with one rule for every authenticator
/// that maps claims (JWTs, introspection responses), so roles, scopes and tenant read the same
/// whatever credential carried them:
///
/// - subject: `sub`, when a non-empty string;
/// - roles: the claim at the dotted path `roles_claim`: a string is one role, an array gives
///   its string items (other items are ignored: fewer roles, never more);
/// - scopes: `scope` (space-separated), else `scp` (a space-separated string or an array);
/// - tenant: the claim at `tenant_claim`, a non-empty string or a number (an empty string is
///   no tenant).
pub(crate) fn map_identity<C: ClaimSource + ?Sized>(
    mut builder: AuthContextBuilder,
    claims: &C,
    roles_claim: &str,
    tenant_claim: Option<&str>,
) -> AuthContextBuilder {
    fn words(s: &str) -> Vec<String> {
        s.split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }
    let roles = claims
        .at_path(roles_claim)
        .map(string_list)
        .unwrap_or_default();
    let scopes = match (claims.member("scope"), claims.member("scp")) {
        (Some(Value::String(s)), _) | (_, Some(Value::String(s))) => words(s),
        (_, Some(scp @ Value::Array(_))) => string_list(scp),
        _ => Vec::new(),
    };
    builder = builder.roles(roles).scopes(scopes);
    if let Some(Value::String(sub)) = claims.member("sub")
        && !sub.is_empty()
    {
        builder = builder.subject(sub.clone());
    }
    let tenant = tenant_claim
        .and_then(|path| claims.at_path(path))
        .and_then(|v| match v {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
    if let Some(tenant) = tenant {
        builder = builder.tenant(tenant);
    }
    builder
}

/// Where identity mapping reads claims from: a whole claims map, or the members a token
/// scan kept (see `jwt::TokenClaims`).
pub(crate) trait ClaimSource {
    /// A top-level member by name.
    fn member(&self, name: &str) -> Option<&Value>;
    /// A claim by dotted path, as [`claim_at_path`] reads it.
    fn at_path(&self, path: &str) -> Option<&Value>;
}

impl ClaimSource for Map<String, Value> {
    fn member(&self, name: &str) -> Option<&Value> {
        self.get(name)
    }
    fn at_path(&self, path: &str) -> Option<&Value> {
        claim_at_path(self, path)
    }
}

/// Strings from a string (one item) or an array (its string items); other values give none.
fn string_list(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Looks a claim up by dotted path, trying the whole path as one name first.
pub(crate) fn claim_at_path<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut segments = path.split('.');
    let mut current = claims.get(segments.next()?)?;
    for segment in segments {
        current = current.as_object()?.get(segment)?;
    }
    Some(current)
}

impl fmt::Debug for AuthContext {
    /// Shows who the caller is; claim values are left out, as they may be personal data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("AuthContext")
            .field("kind", &inner.kind)
            .field("subject", &inner.subject)
            .field("issuer", &inner.issuer)
            .field("roles", &inner.roles)
            .field("scopes", &inner.scopes)
            .field("tenant", &inner.tenant)
            .field("expires_at", &inner.expires_at)
            .field("claims", &self.claims_map().keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The plain context header values of one [`AuthContext`], as the propagation layer sends
/// them (built there, kept here so that they are built once per context).
#[derive(Debug)]
pub(crate) struct PlainValues {
    /// A number no other context object gets: identifies this one (a cached identity) to
    /// the signed contexts reused for it.
    pub(crate) identity: u64,
    pub(crate) subject: HeaderSlot,
    pub(crate) issuer: HeaderSlot,
    pub(crate) roles: HeaderSlot,
    pub(crate) scopes: HeaderSlot,
    pub(crate) tenant: HeaderSlot,
}

/// One propagated header value (a clone shares the bytes: a reference count, no copy).
#[derive(Debug, Clone)]
pub(crate) enum HeaderSlot {
    /// Nothing to send (the context has no such value).
    Absent,
    /// A value that cannot be carried exactly: no plain identity header is sent.
    Unsafe,
    /// The value to send.
    Value(http::HeaderValue),
}

/// The error returned by [`AuthContext::claims`] when the claims do not fit the asked type.
#[derive(Debug, thiserror::Error)]
#[error("claims do not match the requested type: {0}")]
pub struct ClaimsError(#[source] serde_json::Error);

/// Builds an [`AuthContext`]; see [`AuthContext::builder`].
#[must_use]
pub struct AuthContextBuilder {
    inner: Inner,
}

impl fmt::Debug for AuthContextBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthContextBuilder").finish_non_exhaustive()
    }
}

impl AuthContextBuilder {
    /// Sets the subject.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.inner.subject = Some(subject.into());
        self
    }

    /// Sets the issuer.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.inner.issuer = Some(issuer.into());
        self
    }

    /// Sets the roles.
    pub fn roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.inner.roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the scopes.
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.inner.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the tenant.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.inner.tenant = Some(tenant.into());
        self
    }

    /// Sets the expiry.
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.inner.expires_at = Some(at);
        self
    }

    /// Sets the expiry from a NumericDate (seconds since the epoch).
    pub fn expires_at_unix(self, secs: f64) -> Self {
        match unix_to_system_time(secs) {
            Some(at) => self.expires_at(at),
            None => self,
        }
    }

    /// Sets the id of the key that verified the credential.
    pub fn key_id(mut self, kid: impl Into<String>) -> Self {
        self.inner.key_id = Some(kid.into());
        self
    }

    /// Sets the fingerprint of the key that verified the credential.
    pub(crate) fn key_fingerprint(mut self, fingerprint: KeyFingerprint) -> Self {
        self.inner.key_fingerprint = Some(fingerprint);
        self
    }

    /// Adds one claim.
    pub fn claim(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        let claims = &mut self.inner.claims;
        if claims.json.is_some() {
            // Claims kept as text become a map the claim is added to.
            let map = claims.map().clone();
            *claims = Claims::from_map(map);
        }
        if let Some(map) = claims.map.get_mut() {
            map.insert(name.into(), value.into());
        }
        self
    }

    /// Replaces all claims.
    pub fn claims(mut self, claims: Map<String, Value>) -> Self {
        self.inner.claims = Claims::from_map(claims);
        self
    }

    /// Replaces all claims with `json`, the text of one JSON object already checked for
    /// duplicate member names, parsed on first use; `tree_bytes` estimates its parsed heap.
    pub(crate) fn claims_json(mut self, json: String, tree_bytes: usize) -> Self {
        self.inner.claims = Claims {
            json: Some(json),
            map: OnceLock::new(),
            tree_bytes,
        };
        self
    }

    /// Finishes the context.
    pub fn build(self) -> AuthContext {
        AuthContext {
            inner: Arc::new(self.inner),
        }
    }
}

fn unix_to_system_time(secs: f64) -> Option<SystemTime> {
    if !secs.is_finite() || !(0.0..=1.0e12).contains(&secs) {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dotted_paths() {
        let Value::Object(claims) = json!({
            "realm_access": {"roles": ["a", "b"]},
            "https://example.test/roles": ["x"],
            "flat": 1
        }) else {
            unreachable!()
        };
        let ctx = AuthContext::builder(CredentialKind::Jwt)
            .claims(claims)
            .build();
        assert_eq!(ctx.claim("realm_access.roles"), Some(&json!(["a", "b"])));
        assert_eq!(ctx.claim("https://example.test/roles"), Some(&json!(["x"])));
        assert_eq!(ctx.claim("flat.more"), None);
        assert_eq!(ctx.claim("missing"), None);
        assert_eq!(ctx.claim(""), None);
    }

    #[test]
    fn identity_mapping_rules() {
        let map = |claims: Value| {
            let Value::Object(claims) = claims else {
                unreachable!()
            };
            map_identity(
                AuthContext::builder(CredentialKind::Jwt),
                &claims,
                "realm_access.roles",
                Some("org.tenant"),
            )
            .build()
        };
        let ctx = map(json!({
            "sub": "u", "scope": "a  b", "scp": ["ignored"],
            "realm_access": {"roles": ["r1", 7, "r2"]}, "org": {"tenant": 42},
        }));
        assert_eq!(ctx.subject(), Some("u"));
        assert_eq!(ctx.scopes(), ["a", "b"]);
        assert_eq!(ctx.roles(), ["r1", "r2"]);
        assert_eq!(ctx.tenant(), Some("42"));
        // A string roles claim is one role; `scp` as a string or an array.
        let ctx = map(json!({"sub": 1, "scp": "x y", "realm_access": {"roles": "admin user"}}));
        assert_eq!(ctx.subject(), None);
        assert_eq!(ctx.roles(), ["admin user"]);
        assert_eq!(ctx.scopes(), ["x", "y"]);
        assert_eq!(map(json!({"scp": ["p", 1, "q"]})).scopes(), ["p", "q"]);
        assert_eq!(map(json!({"org": {"tenant": true}})).tenant(), None);
    }

    #[test]
    fn debug_hides_claim_values() {
        let ctx = AuthContext::builder(CredentialKind::Jwt)
            .claim("email", "secret@example.test")
            .build();
        let shown = format!("{ctx:?}");
        assert!(shown.contains("email"));
        assert!(!shown.contains("secret@example.test"));
    }

    #[test]
    fn absurd_expiry_is_ignored() {
        let ctx = AuthContext::builder(CredentialKind::Jwt)
            .expires_at_unix(f64::INFINITY)
            .build();
        assert_eq!(ctx.expires_at(), None);
    }
}
