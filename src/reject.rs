//! Rejections and how they are rendered: HTTP with RFC 6750 challenges and a JSON body, or a
//! gRPC Trailers-Only response.
//!
//! | kind | HTTP | `WWW-Authenticate` | gRPC |
//! |---|---|---|---|
//! | [`MissingCredential`](RejectionKind::MissingCredential) | 401 | `Bearer realm="…"` | 16 UNAUTHENTICATED |
//! | [`InvalidToken`](RejectionKind::InvalidToken) | 401 | `Bearer realm="…", error="invalid_token", error_description="…"` | 16 UNAUTHENTICATED |
//! | [`InvalidRequest`](RejectionKind::InvalidRequest) | 400 | `Bearer realm="…", error="invalid_request", error_description="…"` | 3 INVALID_ARGUMENT |
//! | [`InsufficientScope`](RejectionKind::InsufficientScope) | 403 | `Bearer realm="…", error="insufficient_scope", error_description="…", scope="…"` | 7 PERMISSION_DENIED |
//! | [`Forbidden`](RejectionKind::Forbidden) | 403 | `Bearer realm="…", error="insufficient_scope", error_description="…"` | 7 PERMISSION_DENIED |
//! | [`KeysUnavailable`](RejectionKind::KeysUnavailable) | 503 + `Retry-After` | none | 14 UNAVAILABLE |
//! | [`AuthorizerUnavailable`](RejectionKind::AuthorizerUnavailable) | 503 + `Retry-After` | none | 14 UNAVAILABLE |
//! | [`MethodNotAllowed`](RejectionKind::MethodNotAllowed) | 405 + `Allow` | none | 12 UNIMPLEMENTED |
//!
//! Descriptions are fixed texts chosen by this crate: they never contain the token, a secret
//! or any other client input.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, Request, Response, StatusCode};

/// What went wrong, at the granularity of the wire contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum RejectionKind {
    /// No credential on a route that requires one.
    #[error("missing credential")]
    MissingCredential,
    /// The request is malformed (two `Authorization` headers, bad scheme syntax).
    #[error("invalid request")]
    InvalidRequest,
    /// The credential is bad: malformed, expired, wrongly signed, wrong issuer or audience.
    #[error("invalid token")]
    InvalidToken,
    /// Authenticated, but scopes the route needs are missing.
    #[error("insufficient scope")]
    InsufficientScope,
    /// Authenticated, but the policy denies the request for another reason (roles, claims).
    #[error("forbidden")]
    Forbidden,
    /// Verification keys cannot be had right now (identity provider down, nothing cached).
    #[error("keys unavailable")]
    KeysUnavailable,
    /// The policy cannot be decided right now (an external authorizer is unreachable or too
    /// slow): fail closed.
    #[error("authorizer unavailable")]
    AuthorizerUnavailable,
    /// The path is routed, but its route does not take the request's method
    /// ([`RouteTable`](crate::authorize::RouteTable)): 405 with `Allow`.
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl RejectionKind {
    /// The HTTP status of this kind.
    pub const fn http_status(self) -> StatusCode {
        match self {
            RejectionKind::MissingCredential | RejectionKind::InvalidToken => {
                StatusCode::UNAUTHORIZED
            }
            RejectionKind::InvalidRequest => StatusCode::BAD_REQUEST,
            RejectionKind::InsufficientScope | RejectionKind::Forbidden => StatusCode::FORBIDDEN,
            RejectionKind::KeysUnavailable | RejectionKind::AuthorizerUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RejectionKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// The gRPC status code of this kind.
    pub const fn grpc_code(self) -> u8 {
        match self {
            RejectionKind::MissingCredential | RejectionKind::InvalidToken => 16,
            RejectionKind::InvalidRequest => 3,
            RejectionKind::InsufficientScope | RejectionKind::Forbidden => 7,
            RejectionKind::KeysUnavailable | RejectionKind::AuthorizerUnavailable => 14,
            RejectionKind::MethodNotAllowed => 12,
        }
    }

    /// The RFC 6750 `error` code, when the challenge carries one.
    pub const fn error_code(self) -> Option<&'static str> {
        match self {
            RejectionKind::MissingCredential
            | RejectionKind::KeysUnavailable
            | RejectionKind::AuthorizerUnavailable
            | RejectionKind::MethodNotAllowed => None,
            RejectionKind::InvalidRequest => Some("invalid_request"),
            RejectionKind::InvalidToken => Some("invalid_token"),
            RejectionKind::InsufficientScope | RejectionKind::Forbidden => {
                Some("insufficient_scope")
            }
        }
    }

    /// The code used in the JSON body's `error` member.
    pub const fn body_code(self) -> &'static str {
        match self {
            RejectionKind::MissingCredential => "missing_credential",
            RejectionKind::InvalidRequest => "invalid_request",
            RejectionKind::InvalidToken => "invalid_token",
            // The body names the same RFC 6750 code as the challenge.
            RejectionKind::InsufficientScope | RejectionKind::Forbidden => "insufficient_scope",
            RejectionKind::KeysUnavailable | RejectionKind::AuthorizerUnavailable => {
                "temporarily_unavailable"
            }
            RejectionKind::MethodNotAllowed => "method_not_allowed",
        }
    }

    const fn default_description(self) -> &'static str {
        match self {
            RejectionKind::MissingCredential => "authentication required",
            RejectionKind::InvalidRequest => "malformed authorization request",
            RejectionKind::InvalidToken => "the access token is invalid",
            RejectionKind::InsufficientScope => "the access token lacks a required scope",
            RejectionKind::Forbidden => "access to this resource is denied",
            RejectionKind::KeysUnavailable => "verification keys are temporarily unavailable",
            RejectionKind::AuthorizerUnavailable => {
                "the authorization service is temporarily unavailable"
            }
            RejectionKind::MethodNotAllowed => "the route does not allow this method",
        }
    }
}

/// Why a request was not let through. Opaque: use [`kind`](Rejection::kind) and the accessors.
///
/// The authenticate and authorize services insert the `Rejection` into the extensions of the
/// response they return, so outer layers (tracing, metrics) can tell reasons apart.
#[derive(Clone, thiserror::Error)]
#[error("{kind}: {description}")]
pub struct Rejection {
    kind: RejectionKind,
    description: Cow<'static, str>,
    scope: Option<Arc<str>>,
    retry_after: Option<Duration>,
    allow: Option<HeaderValue>,
    dpop: Option<Arc<DpopChallenge>>,
    #[source]
    source: Option<Arc<dyn StdError + Send + Sync>>,
}

impl fmt::Debug for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejection")
            .field("kind", &self.kind)
            .field("description", &self.description)
            .field("scope", &self.scope)
            .field("retry_after", &self.retry_after)
            .field("allow", &self.allow)
            .field("dpop", &self.dpop)
            .field("source", &self.source)
            .finish()
    }
}

impl Rejection {
    /// A rejection of `kind` with its default description.
    pub fn new(kind: RejectionKind) -> Self {
        Rejection {
            kind,
            description: Cow::Borrowed(kind.default_description()),
            scope: None,
            retry_after: None,
            allow: None,
            dpop: None,
            source: None,
        }
    }

    /// No credential was presented.
    pub fn missing_credential() -> Self {
        Self::new(RejectionKind::MissingCredential)
    }

    /// The credential is invalid; `description` is a fixed text (never client input).
    pub fn invalid_token(description: &'static str) -> Self {
        Self::new(RejectionKind::InvalidToken).with_description(description)
    }

    /// The request is malformed; `description` is a fixed text (never client input).
    pub fn invalid_request(description: &'static str) -> Self {
        Self::new(RejectionKind::InvalidRequest).with_description(description)
    }

    /// Verification keys are unavailable; clients may retry after `retry_after`.
    pub fn keys_unavailable(retry_after: Duration) -> Self {
        let mut rejection = Self::new(RejectionKind::KeysUnavailable);
        rejection.retry_after = Some(retry_after);
        rejection
    }

    /// The policy could not be decided (an external authorizer is down or too slow);
    /// `description` is a fixed text. Clients may retry after `retry_after`.
    pub fn authorizer_unavailable(description: &'static str, retry_after: Duration) -> Self {
        let mut rejection = Self::new(RejectionKind::AuthorizerUnavailable);
        rejection.description = Cow::Borrowed(description);
        rejection.retry_after = Some(retry_after);
        rejection
    }

    /// The route does not take the request's method; `allow` is the `Allow` header value
    /// (the methods it takes, comma-separated). See
    /// [`RouteTable::lookup`](crate::authorize::RouteTable::lookup).
    pub fn method_not_allowed(allow: HeaderValue) -> Self {
        let mut rejection = Self::new(RejectionKind::MethodNotAllowed);
        rejection.allow = Some(allow);
        rejection
    }

    /// Scopes are missing; `missing` goes into the challenge's `scope` parameter.
    pub fn insufficient_scope<I, S>(missing: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut scope = String::new();
        for s in missing {
            let s = s.as_ref();
            // RFC 6750 §3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
            if s.is_empty() || !s.bytes().all(is_scope_token_char) {
                continue;
            }
            if !scope.is_empty() {
                scope.push(' ');
            }
            scope.push_str(s);
        }
        let mut rejection = Self::new(RejectionKind::InsufficientScope);
        rejection.scope = (!scope.is_empty()).then(|| Arc::from(scope));
        rejection
    }

    /// The policy denied the request for a reason other than scopes.
    pub fn forbidden(description: &'static str) -> Self {
        Self::new(RejectionKind::Forbidden).with_description(description)
    }

    /// Replaces the description with another fixed text.
    #[must_use]
    pub fn with_description(mut self, description: &'static str) -> Self {
        self.description = Cow::Borrowed(description);
        self
    }

    /// Attaches the underlying error, for logs and outer layers. It is never rendered.
    #[must_use]
    pub fn with_source<E>(mut self, source: E) -> Self
    where
        E: StdError + Send + Sync + 'static,
    {
        self.source = Some(Arc::new(source));
        self
    }

    /// Adds a `DPoP` challenge (RFC 9449 §7.1) to this rejection: the response then carries
    /// `WWW-Authenticate: DPoP algs="…"` (with the error code, when this rejection has one,
    /// or `dpop_error`), beside the `Bearer` challenge unless Bearer is refused, and the
    /// `DPoP-Nonce` header when a nonce is given. [`DpopAuthenticator`](crate::dpop::DpopAuthenticator)
    /// adds it to its rejections; other code rarely needs to.
    #[must_use]
    pub fn with_dpop_challenge(mut self, challenge: DpopChallenge) -> Self {
        self.dpop = Some(Arc::new(challenge));
        self
    }

    /// The `DPoP` challenge, when there is one.
    pub fn dpop_challenge(&self) -> Option<&DpopChallenge> {
        self.dpop.as_deref()
    }

    /// What went wrong.
    pub fn kind(&self) -> RejectionKind {
        self.kind
    }

    /// The fixed, client-safe description.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The missing scopes, space-separated, when the policy named them.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// How long clients should wait before retrying (503 only).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The `Allow` header value (405 only).
    pub fn allow(&self) -> Option<&HeaderValue> {
        self.allow.as_ref()
    }

    /// Renders this rejection with the given realm, for `protocol`.
    pub fn to_response(&self, realm: &str, protocol: Protocol) -> Response<Bytes> {
        match protocol {
            Protocol::Http => self.http_response(realm),
            Protocol::Grpc => self.grpc_response(),
        }
    }

    fn http_response(&self, realm: &str) -> Response<Bytes> {
        let error = self
            .dpop
            .as_ref()
            .and_then(|d| d.error)
            .map_or(self.kind.body_code(), DpopError::as_str);
        let body = serde_json::json!({
            "error": error,
            "error_description": self.description(),
        });
        let mut response = Response::new(Bytes::from(body.to_string()));
        *response.status_mut() = self.kind.http_status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let bearer = self.dpop.as_ref().is_none_or(|d| d.bearer);
        if bearer && let Some(challenge) = self.challenge(realm) {
            headers.insert(WWW_AUTHENTICATE, challenge);
        }
        if let Some(dpop) = &self.dpop {
            if let Some(challenge) = self.dpop_challenge_value(realm, dpop) {
                headers.append(WWW_AUTHENTICATE, challenge);
            }
            if let Some(nonce) = &dpop.nonce {
                headers.insert(DPOP_NONCE, nonce.clone());
            }
        }
        if let Some(allow) = &self.allow {
            headers.insert(ALLOW, allow.clone());
        }
        self.insert_retry_after(headers);
        response
    }

    /// The RFC 6750 `WWW-Authenticate` challenge, or `None` for 503 and 405.
    pub fn challenge(&self, realm: &str) -> Option<HeaderValue> {
        if matches!(
            self.kind,
            RejectionKind::KeysUnavailable
                | RejectionKind::AuthorizerUnavailable
                | RejectionKind::MethodNotAllowed
        ) {
            return None;
        }
        let mut value = String::with_capacity(96);
        value.push_str("Bearer realm=\"");
        push_quoted_safe(&mut value, realm);
        value.push('"');
        // A proof or nonce problem belongs to the DPoP challenge; Bearer then only names
        // the realm.
        let code = match &self.dpop {
            Some(dpop) if dpop.error.is_some() => None,
            _ => self.kind.error_code(),
        };
        if let Some(code) = code {
            value.push_str(", error=\"");
            value.push_str(code);
            value.push_str("\", error_description=\"");
            push_quoted_safe(&mut value, self.description());
            value.push('"');
        }
        if let Some(scope) = &self.scope {
            value.push_str(", scope=\"");
            value.push_str(scope);
            value.push('"');
        }
        HeaderValue::from_str(&value).ok()
    }

    /// The `DPoP` challenge of RFC 9449 §7.1: `DPoP algs="…"`, then the error and its
    /// description when there is one.
    fn dpop_challenge_value(&self, realm: &str, dpop: &DpopChallenge) -> Option<HeaderValue> {
        if matches!(
            self.kind,
            RejectionKind::KeysUnavailable
                | RejectionKind::AuthorizerUnavailable
                | RejectionKind::MethodNotAllowed
                | RejectionKind::InsufficientScope
                | RejectionKind::Forbidden
        ) {
            return None;
        }
        let mut value = String::with_capacity(128);
        value.push_str("DPoP realm=\"");
        push_quoted_safe(&mut value, realm);
        value.push_str("\", algs=\"");
        value.push_str(&dpop.algs);
        value.push('"');
        let code = dpop.error.map(DpopError::as_str).or(match self.kind {
            RejectionKind::InvalidToken => Some("invalid_token"),
            RejectionKind::InvalidRequest => Some("invalid_request"),
            _ => None,
        });
        if let Some(code) = code {
            value.push_str(", error=\"");
            value.push_str(code);
            value.push_str("\", error_description=\"");
            push_quoted_safe(&mut value, self.description());
            value.push('"');
        }
        HeaderValue::from_str(&value).ok()
    }

    fn insert_retry_after(&self, headers: &mut HeaderMap) {
        if let Some(after) = self.retry_after {
            let secs = after.as_secs().max(1);
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
    }

    fn grpc_response(&self) -> Response<Bytes> {
        // Trailers-Only: HTTP 200, status in the headers, empty body (as tonic's
        // `Status::into_http`).
        let mut response = Response::new(Bytes::new());
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(
            "grpc-status",
            HeaderValue::from(u16::from(self.kind.grpc_code())),
        );
        let message =
            percent_encoding::utf8_percent_encode(self.description(), GRPC_MESSAGE).to_string();
        if let Ok(value) = HeaderValue::from_str(&message) {
            headers.insert("grpc-message", value);
        }
        self.insert_retry_after(headers);
        response
    }
}

/// The `DPoP-Nonce` response header (RFC 9449 §8).
pub const DPOP_NONCE: http::HeaderName = http::HeaderName::from_static("dpop-nonce");

/// The DPoP-specific error codes of RFC 9449 §7.1 and §9.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DpopError {
    /// The proof is missing, malformed or fails a check of RFC 9449 §4.3.
    InvalidDpopProof,
    /// The proof lacks the server's current nonce (RFC 9449 §9): retry with the one in
    /// `DPoP-Nonce`.
    UseDpopNonce,
}

impl DpopError {
    /// The code, as in the challenge's `error` parameter and the body's `error` member.
    pub const fn as_str(self) -> &'static str {
        match self {
            DpopError::InvalidDpopProof => "invalid_dpop_proof",
            DpopError::UseDpopNonce => "use_dpop_nonce",
        }
    }
}

/// What a rejection's `DPoP` challenge says (RFC 9449 §7.1); see
/// [`Rejection::with_dpop_challenge`].
#[derive(Debug, Clone)]
pub struct DpopChallenge {
    /// The accepted proof algorithms, space-separated (the `algs` parameter).
    pub algs: Arc<str>,
    /// A DPoP-specific error; `None` lets the rejection's kind speak (`invalid_token`,
    /// `invalid_request`, or no error for a missing credential).
    pub error: Option<DpopError>,
    /// Whether the `Bearer` challenge is sent too (Bearer tokens are accepted).
    pub bearer: bool,
    /// A fresh nonce for the `DPoP-Nonce` header.
    pub nonce: Option<HeaderValue>,
}

/// The characters gRPC requires percent-encoded in `grpc-message` (everything outside
/// 0x20..=0x7E, and `%`); like tonic, spaces are encoded too.
const GRPC_MESSAGE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'?')
    .add(b'{')
    .add(b'}');

fn is_scope_token_char(b: u8) -> bool {
    b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b)
}

/// Appends `s` for use inside a quoted-string, keeping only characters RFC 6750 allows in
/// `error_description` and `realm` (%x20-21 / %x23-5B / %x5D-7E).
fn push_quoted_safe(out: &mut String, s: &str) {
    out.extend(
        s.chars()
            .filter(|c| matches!(*c as u32, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E)),
    );
}

/// Whether a request speaks gRPC, which decides how rejections are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Plain HTTP: status, `WWW-Authenticate`, JSON body.
    Http,
    /// gRPC (`content-type: application/grpc*`): Trailers-Only response with `grpc-status`.
    Grpc,
}

impl Protocol {
    /// Detects the protocol from the request's `content-type`.
    pub fn of<B>(req: &Request<B>) -> Self {
        Self::of_headers(req.headers())
    }

    /// Detects the protocol from request headers.
    pub fn of_headers(headers: &HeaderMap) -> Self {
        match headers.get(CONTENT_TYPE) {
            Some(ct) if is_grpc_content_type(ct.as_bytes()) => Protocol::Grpc,
            _ => Protocol::Http,
        }
    }
}

fn is_grpc_content_type(ct: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    ct.len() >= GRPC.len()
        && ct[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(ct.get(GRPC.len()), None | Some(b'+' | b';'))
}

/// Builds the response sent for a [`Rejection`]. Implemented for [`DefaultRejection`] and
/// for closures `Fn(&Rejection, Protocol) -> Response<Bytes>`.
///
/// Whatever it returns, the service inserts the `Rejection` into the response extensions.
pub trait RejectionResponse: Clone + Send + Sync + 'static {
    /// The response for `rejection`.
    fn response(&self, rejection: &Rejection, protocol: Protocol) -> Response<Bytes>;
}

impl<F> RejectionResponse for F
where
    F: Fn(&Rejection, Protocol) -> Response<Bytes> + Clone + Send + Sync + 'static,
{
    fn response(&self, rejection: &Rejection, protocol: Protocol) -> Response<Bytes> {
        self(rejection, protocol)
    }
}

/// The wire contract's rendering (see the [module docs](self)), with a configurable realm.
///
/// ```
/// use tower_gatekeeper::reject::{DefaultRejection, Protocol, Rejection, RejectionResponse};
///
/// let response = DefaultRejection::new("orders")
///     .response(&Rejection::missing_credential(), Protocol::Http);
/// assert_eq!(response.status(), 401);
/// assert_eq!(response.headers()["www-authenticate"], r#"Bearer realm="orders""#);
/// ```
#[derive(Debug, Clone)]
pub struct DefaultRejection {
    realm: Arc<str>,
}

impl DefaultRejection {
    /// The realm used when none is configured.
    pub const DEFAULT_REALM: &'static str = "api";

    /// A renderer whose challenges name `realm`.
    pub fn new(realm: &str) -> Self {
        let mut clean = String::with_capacity(realm.len());
        push_quoted_safe(&mut clean, realm);
        DefaultRejection {
            realm: Arc::from(clean),
        }
    }

    /// The realm in challenges.
    pub fn realm(&self) -> &str {
        &self.realm
    }
}

impl Default for DefaultRejection {
    fn default() -> Self {
        DefaultRejection::new(Self::DEFAULT_REALM)
    }
}

impl RejectionResponse for DefaultRejection {
    fn response(&self, rejection: &Rejection, protocol: Protocol) -> Response<Bytes> {
        rejection.to_response(&self.realm, protocol)
    }
}

/// Builds the final response for `rejection`: `renderer`'s response with the rejection in
/// its extensions, the body wrapped as a [`ResponseBody`](crate::body::ResponseBody).
pub(crate) fn render<R, B>(
    renderer: &R,
    rejection: Rejection,
    protocol: Protocol,
) -> Response<crate::body::ResponseBody<B>>
where
    R: RejectionResponse,
{
    tracing::debug!(
        kind = ?rejection.kind(),
        reason = rejection.description(),
        source = rejection.source_text().as_deref(),
        "request rejected"
    );
    let (mut parts, body) = renderer.response(&rejection, protocol).into_parts();
    parts.extensions.insert(rejection);
    Response::from_parts(parts, crate::body::ResponseBody::rejection(body))
}

impl Rejection {
    /// The underlying error's text, for logs. Sources are built by this crate from fixed
    /// texts, never from token content.
    fn source_text(&self) -> Option<String> {
        self.source.as_ref().map(|s| s.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(r: &'a Response<Bytes>, name: &str) -> Option<&'a str> {
        r.headers().get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn http_table() {
        let d = DefaultRejection::new("gw");
        let r = d.response(&Rejection::missing_credential(), Protocol::Http);
        assert_eq!(r.status(), 401);
        assert_eq!(header(&r, "www-authenticate"), Some(r#"Bearer realm="gw""#));
        let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(body["error"], "missing_credential");

        let r = d.response(&Rejection::invalid_token("token expired"), Protocol::Http);
        assert_eq!(r.status(), 401);
        assert_eq!(
            header(&r, "www-authenticate"),
            Some(r#"Bearer realm="gw", error="invalid_token", error_description="token expired""#)
        );
        assert_eq!(header(&r, "content-type"), Some("application/json"));

        let r = d.response(&Rejection::invalid_request("x"), Protocol::Http);
        assert_eq!(r.status(), 400);
        assert!(
            header(&r, "www-authenticate")
                .unwrap()
                .contains(r#"error="invalid_request""#)
        );

        let r = d.response(
            &Rejection::insufficient_scope(["orders:write", "bad\"scope", "a b"]),
            Protocol::Http,
        );
        assert_eq!(r.status(), 403);
        let challenge = header(&r, "www-authenticate").unwrap();
        assert!(challenge.contains(r#"error="insufficient_scope""#));
        assert!(
            challenge.ends_with(r#"scope="orders:write""#),
            "{challenge}"
        );

        let r = d.response(&Rejection::forbidden("role missing"), Protocol::Http);
        assert_eq!(r.status(), 403);
        assert!(!header(&r, "www-authenticate").unwrap().contains("scope=\""));

        let r = d.response(
            &Rejection::keys_unavailable(Duration::from_secs(5)),
            Protocol::Http,
        );
        assert_eq!(r.status(), 503);
        assert_eq!(header(&r, "www-authenticate"), None);
        assert_eq!(header(&r, "retry-after"), Some("5"));
    }

    #[test]
    fn grpc_trailers_only() {
        let d = DefaultRejection::default();
        for (rej, code) in [
            (Rejection::missing_credential(), "16"),
            (Rejection::invalid_token("token expired"), "16"),
            (Rejection::invalid_request("x"), "3"),
            (Rejection::insufficient_scope(["a"]), "7"),
            (Rejection::keys_unavailable(Duration::from_secs(1)), "14"),
        ] {
            let r = d.response(&rej, Protocol::Grpc);
            assert_eq!(r.status(), 200);
            assert_eq!(header(&r, "content-type"), Some("application/grpc"));
            assert_eq!(header(&r, "grpc-status"), Some(code));
            assert!(r.body().is_empty());
        }
        let r = d.response(&Rejection::invalid_token("token expired"), Protocol::Grpc);
        assert_eq!(header(&r, "grpc-message"), Some("token%20expired"));
    }

    #[test]
    fn method_not_allowed_has_allow_and_no_challenge() {
        let d = DefaultRejection::new("gw");
        let rejection = Rejection::method_not_allowed(HeaderValue::from_static("GET, HEAD"));
        let r = d.response(&rejection, Protocol::Http);
        assert_eq!(r.status(), 405);
        assert_eq!(header(&r, "allow"), Some("GET, HEAD"));
        assert_eq!(header(&r, "www-authenticate"), None);
        let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(body["error"], "method_not_allowed");
        assert_eq!(
            body["error_description"],
            "the route does not allow this method"
        );
        let r = d.response(&rejection, Protocol::Grpc);
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "grpc-status"), Some("12"));
        assert_eq!(
            header(&r, "grpc-message"),
            Some("the%20route%20does%20not%20allow%20this%20method")
        );
    }

    #[test]
    fn protocol_detection() {
        let mut h = HeaderMap::new();
        assert_eq!(Protocol::of_headers(&h), Protocol::Http);
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC;x=y",
        ] {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(Protocol::of_headers(&h), Protocol::Grpc, "{ct}");
        }
        for ct in [
            "application/grpc-web",
            "application/grpcx",
            "application/json",
        ] {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(Protocol::of_headers(&h), Protocol::Http, "{ct}");
        }
    }

    #[test]
    fn realm_is_sanitized() {
        let d = DefaultRejection::new("a\"b\\c\r\n");
        assert_eq!(d.realm(), "abc");
    }
}
