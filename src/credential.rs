//! Credential extraction from request headers (RFC 6750 §2.1) and the borrowed
//! [`RequestHead`] that authenticators and policies look at.

use http::header::AUTHORIZATION;
use http::{Extensions, HeaderMap, Method, Request, Uri};

use crate::reject::Rejection;

/// A borrowed view of the parts of a request that authentication and policy decisions may
/// read. It never includes the body: no layer of this crate reads or buffers it.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    extensions: &'a Extensions,
    /// Path parameters captured by a [`RouteTable`](crate::authorize::RouteTable) match.
    route_params: Option<&'a matchit::Params<'a, 'a>>,
    /// An access token taken from `Authorization: DPoP …` by
    /// [`DpopAuthenticator`](crate::dpop::DpopAuthenticator), handed to the authenticators it
    /// wraps as if it were a bearer token.
    access_token: Option<&'a str>,
}

impl<'a> RequestHead<'a> {
    /// The head of `req`.
    pub fn of<B>(req: &'a Request<B>) -> Self {
        RequestHead {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            extensions: req.extensions(),
            route_params: None,
            access_token: None,
        }
    }

    /// The head of a request taken apart.
    pub fn from_parts(parts: &'a http::request::Parts) -> Self {
        RequestHead {
            method: &parts.method,
            uri: &parts.uri,
            headers: &parts.headers,
            extensions: &parts.extensions,
            route_params: None,
            access_token: None,
        }
    }

    /// The request method.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The request URI.
    pub fn uri(&self) -> &'a Uri {
        self.uri
    }

    /// The request headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The request extensions.
    pub fn extensions(&self) -> &'a Extensions {
        self.extensions
    }

    /// A path parameter (`{name}` or `{*name}` in the matched pattern), as it appears in the
    /// path (not percent-decoded): captured by the [`RouteTable`](crate::authorize::RouteTable)
    /// that is deciding this request, else read from a
    /// [`PathParams`] extension that the host inserted.
    pub fn path_param(&self, name: &str) -> Option<&'a str> {
        match self.route_params {
            Some(params) => params.get(name),
            None => self.extensions.get::<PathParams>()?.get(name),
        }
    }

    /// Every path parameter, from the route match or else the extension.
    pub(crate) fn path_params(&self) -> Vec<(&'a str, &'a str)> {
        match self.route_params {
            Some(params) => params.iter().collect(),
            None => self
                .extensions
                .get::<PathParams>()
                .map(|p| p.iter().collect())
                .unwrap_or_default(),
        }
    }

    /// The access token set by [`with_access_token`](Self::with_access_token).
    pub(crate) fn access_token(&self) -> Option<&'a str> {
        self.access_token
    }

    /// This head with `token` as its access token, whatever its `Authorization` header says
    /// (the token of a `DPoP` authorization, once its proof is checked).
    pub(crate) fn with_access_token(self, token: &'a str) -> Self {
        RequestHead {
            access_token: Some(token),
            ..self
        }
    }

    /// This head with the path parameters of a route match.
    pub(crate) fn with_route_params(self, params: &'a matchit::Params<'a, 'a>) -> Self {
        RequestHead {
            route_params: Some(params),
            ..self
        }
    }
}

/// Path parameters captured by routing, as a request extension. Also exported as
/// [`authorize::PathParams`](crate::authorize::PathParams).
///
/// A [`RouteTable`](crate::authorize::RouteTable) hands the parameters of its own match to
/// the policies it runs; hosts that route before authorization (axum, the gateway example)
/// insert a `PathParams` so that [`path_param`](crate::authorize::path_param) rules can read
/// them. Values are kept as they appear in the path; rules compare them percent-decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathParams(Vec<(String, String)>);

impl PathParams {
    /// No parameters.
    pub fn new() -> Self {
        PathParams::default()
    }

    /// Adds a parameter.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push((name.into(), value.into()));
    }

    /// A parameter by name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every parameter, in pattern order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for PathParams {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        PathParams(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// The client's TLS certificate, as a request extension.
///
/// Any hyper/axum/tonic server terminating TLS inserts it: after the handshake, it takes the
/// leaf (end-entity) certificate the client presented and inserts
/// `PeerCertificate::from_der(leaf)` into each request's extensions. A proxy that receives the
/// certificate from a trusted fronting proxy does the same after decoding it. Certificate-bound
/// tokens (RFC 8705 §3: `cnf.x5t#S256`) are checked against it; a request without it carries
/// no client certificate.
///
/// The DER bytes are shared (`bytes::Bytes`): cloning is a reference-count increment, so one
/// value per connection can be inserted into every request on it. The SHA-256 thumbprint is
/// computed once, when the value is built.
///
/// ```
/// use http::Request;
/// use tower_gatekeeper::credential::PeerCertificate;
///
/// # let leaf_der: &[u8] = b"\x30\x03\x02\x01\x01";
/// let cert = PeerCertificate::from_der(leaf_der.to_vec());
/// let mut req = Request::new(());
/// req.extensions_mut().insert(cert.clone());
/// assert_eq!(req.extensions().get::<PeerCertificate>().unwrap().der(), leaf_der);
/// // base64url(SHA-256(DER)), no padding: the form of `cnf.x5t#S256`.
/// assert_eq!(cert.sha256_thumbprint().len(), 43);
/// ```
#[derive(Clone)]
pub struct PeerCertificate {
    der: bytes::Bytes,
    thumbprint: std::sync::Arc<str>,
}

impl PeerCertificate {
    /// The certificate whose DER encoding is `der` (the leaf certificate, as rustls'
    /// `peer_certificates()[0]` or openssl's `peer_certificate()` give it). The bytes are not
    /// parsed: the TLS layer has already validated the certificate, or chosen not to.
    pub fn from_der(der: impl Into<bytes::Bytes>) -> Self {
        use base64::Engine as _;
        use sha2::Digest as _;
        let der = der.into();
        let digest = sha2::Sha256::digest(&der);
        let thumbprint = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
        PeerCertificate {
            der,
            thumbprint: thumbprint.into(),
        }
    }

    /// The certificate's DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The certificate's DER encoding as shared bytes.
    pub fn der_bytes(&self) -> &bytes::Bytes {
        &self.der
    }

    /// base64url (no padding) of the SHA-256 of the DER encoding: the value a
    /// certificate-bound token carries in `cnf.x5t#S256` (RFC 8705 §3.1).
    pub fn sha256_thumbprint(&self) -> &str {
        &self.thumbprint
    }
}

impl std::fmt::Debug for PeerCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerCertificate")
            .field("der_len", &self.der.len())
            .field("x5t#S256", &&*self.thumbprint)
            .finish()
    }
}

impl PartialEq for PeerCertificate {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}

impl Eq for PeerCertificate {}

/// The default limit on a bearer token's length (16 KiB).
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Extracts a bearer token from the `Authorization` header (RFC 6750 §2.1).
///
/// - no `Authorization` header, or one with another scheme (`Basic …`): `Ok(None)`, which
///   the authenticate layer answers with a bare `Bearer realm="…"` challenge (RFC 6750 §3.1);
/// - more than one `Authorization` header, `Bearer` without a token, or a token with
///   characters outside `b64token`: `invalid_request` (400);
/// - a token of `b64token` characters with `=` before its end (a padded JWS segment such as
///   `eyJ...==.eyJ...`): `invalid_token` (401). The header is well-formed; the token is not
///   (RFC 6750 §3.1);
/// - a token longer than `max_len`: `invalid_token` (401), before any parsing.
///
/// The scheme is matched case-insensitively; one or more spaces may follow it.
///
/// ```
/// use http::Request;
/// use tower_gatekeeper::credential::{bearer_token, RequestHead};
///
/// let req = Request::builder().header("authorization", "bearer abc.def.ghi").body(()).unwrap();
/// assert_eq!(bearer_token(&RequestHead::of(&req), 16 * 1024).unwrap(), Some("abc.def.ghi"));
/// ```
///
/// # Errors
///
/// A [`Rejection`] of kind `InvalidRequest` or `InvalidToken`, as above.
pub fn bearer_token<'a>(
    head: &RequestHead<'a>,
    max_len: usize,
) -> Result<Option<&'a str>, Rejection> {
    if let Some(token) = head.access_token {
        return Ok(Some(token));
    }
    let mut values = head.headers().get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Rejection::invalid_request(
            "more than one Authorization header",
        ));
    }
    let bytes = value.as_bytes();
    const SCHEME: &[u8] = b"bearer";
    let is_bearer = bytes.len() >= SCHEME.len()
        && bytes[..SCHEME.len()].eq_ignore_ascii_case(SCHEME)
        && matches!(bytes.get(SCHEME.len()), None | Some(b' ' | b'\t'));
    if !is_bearer {
        // Another scheme (or garbage without one): no bearer credential was presented.
        return Ok(None);
    }
    let rest = &bytes[SCHEME.len()..];
    let start = rest.iter().position(|b| *b != b' ').unwrap_or(rest.len());
    if start == 0 && !rest.is_empty() {
        // A tab, not SP, after the scheme.
        return Err(Rejection::invalid_request("malformed Authorization header"));
    }
    let token = &rest[start..];
    if token.is_empty() {
        return Err(Rejection::invalid_request(
            "the Bearer scheme requires a token",
        ));
    }
    if token.len() > max_len {
        return Err(Rejection::invalid_token("token too large"));
    }
    if !is_b64token(token) {
        if token.iter().all(|b| is_b64token_char(*b) || *b == b'=')
            && token.iter().any(|b| *b != b'=')
        {
            // Padding inside the token: the credential syntax is fine, the token is not.
            return Err(Rejection::invalid_token("malformed token"));
        }
        return Err(Rejection::invalid_request("malformed bearer token"));
    }
    // is_b64token admits ASCII only.
    Ok(std::str::from_utf8(token).ok())
}

/// Moves an access token sent as the URI query parameter `name` (RFC 6750 §2.3, usually
/// `access_token`) into an `Authorization: Bearer` header, and removes the parameter from
/// the request's URI, so the authenticators see one kind of credential and nothing after
/// them (upstreams, logs of the path and query) sees the token. Other parameters are kept
/// byte for byte, in order. Returns whether a token was moved.
///
/// [`AuthenticateLayer::query_token`](crate::AuthenticateLayer::query_token) calls this for
/// every request; tokens in the query are never read otherwise.
///
/// ```
/// use http::Request;
/// use tower_gatekeeper::credential::take_query_token;
///
/// let mut req = Request::get("/files/1?access_token=abc.def.ghi&size=2").body(()).unwrap();
/// assert!(take_query_token(&mut req, "access_token").unwrap());
/// assert_eq!(req.uri(), "/files/1?size=2");
/// assert_eq!(req.headers()["authorization"], "Bearer abc.def.ghi");
/// ```
///
/// # Errors
///
/// `invalid_request` (400) when the parameter appears more than once, when the request also
/// has an `Authorization` header (RFC 6750 §3.1: more than one method), or when its value is
/// not valid percent-encoded UTF-8 that fits in a header.
pub fn take_query_token<B>(req: &mut Request<B>, name: &str) -> Result<bool, Rejection> {
    let Some(query) = req.uri().query() else {
        return Ok(false);
    };
    let mut token = None;
    let mut kept = String::with_capacity(query.len());
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let is_token =
            key == name || (key.contains(['%', '+']) && form_decode(key).as_deref() == Some(name));
        if !is_token {
            if !kept.is_empty() {
                kept.push('&');
            }
            kept.push_str(pair);
            continue;
        }
        if token.is_some() {
            return Err(Rejection::invalid_request(
                "more than one access token in the query",
            ));
        }
        token = Some(
            form_decode(value)
                .ok_or_else(|| Rejection::invalid_request("malformed access token parameter"))?,
        );
    }
    let Some(token) = token else {
        return Ok(false);
    };
    if req.headers().contains_key(AUTHORIZATION) {
        return Err(Rejection::invalid_request(
            "access token in both the Authorization header and the query",
        ));
    }
    let value = http::HeaderValue::try_from(format!("Bearer {token}"))
        .map_err(|_| Rejection::invalid_request("malformed access token parameter"))?;
    let path = req.uri().path();
    let path_and_query = if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{kept}")
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|_| Rejection::invalid_request("malformed request target"))?,
    );
    *req.uri_mut() = Uri::from_parts(parts)
        .map_err(|_| Rejection::invalid_request("malformed request target"))?;
    req.headers_mut().insert(AUTHORIZATION, value);
    Ok(true)
}

/// `application/x-www-form-urlencoded` decoding of one name or value: `+` is a space, then
/// percent-escapes; `None` when the result is not UTF-8.
fn form_decode(text: &str) -> Option<String> {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(std::borrow::Cow::into_owned)
}

/// RFC 6750 §2.1: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &[u8]) -> bool {
    let body_len = token.len() - token.iter().rev().take_while(|b| **b == b'=').count();
    // Every request's token goes through here: comparisons without branches, which the
    // compiler turns into vector instructions (many bytes per step).
    body_len > 0
        && token[..body_len]
            .iter()
            .fold(true, |ok, &b| ok & is_b64token_char(b))
}

/// A b64token character other than `=`.
#[inline(always)]
fn is_b64token_char(b: u8) -> bool {
    let lower = b | 0x20;
    (lower.wrapping_sub(b'a') < 26)
        | (b.wrapping_sub(b'0') < 10)
        | (b == b'-')
        | (b == b'.')
        | (b == b'_')
        | (b == b'~')
        | (b == b'+')
        | (b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reject::RejectionKind;

    fn moved(target: &str, name: &str) -> (Result<bool, RejectionKind>, String, Option<String>) {
        let mut req = Request::get(target).body(()).unwrap();
        let result = take_query_token(&mut req, name).map_err(|r| r.kind());
        let auth = req
            .headers()
            .get(AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_owned());
        (result, req.uri().to_string(), auth)
    }

    #[test]
    fn query_tokens_move_into_the_authorization_header() {
        let cases = [
            (
                "/a?access_token=t.u.v",
                Ok(true),
                "/a",
                Some("Bearer t.u.v"),
            ),
            (
                "/a?x=1&access_token=t.u.v&y=%20+",
                Ok(true),
                "/a?x=1&y=%20+",
                Some("Bearer t.u.v"),
            ),
            (
                "/a?access_token=t%2Eu%2Ev",
                Ok(true),
                "/a",
                Some("Bearer t.u.v"),
            ),
            ("/a?access%5Ftoken=t", Ok(true), "/a", Some("Bearer t")),
            // `+` is a space in a query: the token is then malformed for bearer_token.
            ("/a?access_token=a+b", Ok(true), "/a", Some("Bearer a b")),
            ("/a?access_token", Ok(true), "/a", Some("Bearer ")),
            (
                "/a?access_tokens=t&token=u",
                Ok(false),
                "/a?access_tokens=t&token=u",
                None,
            ),
            ("/a", Ok(false), "/a", None),
            ("/a?", Ok(false), "/a?", None),
        ];
        for (target, result, uri, auth) in cases {
            let (got, got_uri, got_auth) = moved(target, "access_token");
            assert_eq!(got, result, "{target}");
            assert_eq!(got_uri, uri, "{target}");
            assert_eq!(got_auth.as_deref(), auth, "{target}");
        }
    }

    #[test]
    fn bad_query_tokens_are_invalid_requests_and_change_nothing() {
        for target in [
            "/a?access_token=t&access_token=t",
            "/a?access_token=%FF",
            "/a?access_token=%0A",
        ] {
            let (got, uri, auth) = moved(target, "access_token");
            assert_eq!(got, Err(RejectionKind::InvalidRequest), "{target}");
            assert_eq!(uri, target);
            assert_eq!(auth, None);
        }
        // RFC 6750 §3.1: more than one method.
        let mut req = Request::get("/a?access_token=t")
            .header(AUTHORIZATION, "Bearer u")
            .body(())
            .unwrap();
        let err = take_query_token(&mut req, "access_token").unwrap_err();
        assert_eq!(err.kind(), RejectionKind::InvalidRequest);
        assert_eq!(req.headers()[AUTHORIZATION], "Bearer u");
        // The moved token then goes through the usual header rules.
        let mut req = Request::get("/a?access_token=a+b").body(()).unwrap();
        take_query_token(&mut req, "access_token").unwrap();
        let err = bearer_token(&RequestHead::of(&req), 1024).unwrap_err();
        assert_eq!(err.kind(), RejectionKind::InvalidRequest);
    }

    #[test]
    fn b64token_bytes_are_exactly_rfc_6750s() {
        for b in 0..=255u8 {
            let expected =
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
            assert_eq!(is_b64token_char(b), expected, "byte {b:#04x}");
        }
    }

    fn extract(values: &[&[u8]]) -> Result<Option<String>, RejectionKind> {
        let mut req = Request::new(());
        for v in values {
            req.headers_mut()
                .append(AUTHORIZATION, http::HeaderValue::from_bytes(v).unwrap());
        }
        bearer_token(&RequestHead::of(&req), 64)
            .map(|t| t.map(str::to_owned))
            .map_err(|r| r.kind())
    }

    #[test]
    fn scheme_is_case_insensitive() {
        for v in [
            "Bearer a.b.c",
            "bearer a.b.c",
            "BEARER a.b.c",
            "bEaReR   a.b.c",
        ] {
            assert_eq!(extract(&[v.as_bytes()]), Ok(Some("a.b.c".into())), "{v}");
        }
    }

    #[test]
    fn other_schemes_are_no_credential() {
        assert_eq!(extract(&[]), Ok(None));
        assert_eq!(extract(&[b"Basic dXNlcjpwYXNz"]), Ok(None));
        assert_eq!(extract(&[b"Bearerish a.b.c"]), Ok(None));
        assert_eq!(extract(&[b"a.b.c"]), Ok(None));
    }

    #[test]
    fn malformed_is_invalid_request() {
        use RejectionKind::*;
        assert_eq!(extract(&[b"Bearer a", b"Bearer a"]), Err(InvalidRequest));
        assert_eq!(extract(&[b"Bearer a", b"Basic b"]), Err(InvalidRequest));
        assert_eq!(extract(&[b"Bearer"]), Err(InvalidRequest));
        assert_eq!(extract(&[b"Bearer   "]), Err(InvalidRequest));
        assert_eq!(extract(&[b"Bearer\ta.b.c"]), Err(InvalidRequest));
        assert_eq!(extract(&[b"Bearer a b"]), Err(InvalidRequest));
        assert_eq!(extract(&[b"Bearer a,b"]), Err(InvalidRequest));
        assert_eq!(extract(&[b"Bearer ==="]), Err(InvalidRequest));
        assert_eq!(extract(&[b"Bearer \xc3\xa9"]), Err(InvalidRequest));
    }

    #[test]
    fn b64token_padding_allowed_at_end() {
        assert_eq!(extract(&[b"Bearer abc=="]), Ok(Some("abc==".into())));
    }

    #[test]
    fn padding_inside_the_token_is_invalid_token() {
        use RejectionKind::*;
        assert_eq!(extract(&[b"Bearer a=b"]), Err(InvalidToken));
        assert_eq!(extract(&[b"Bearer abc==.def.ghi"]), Err(InvalidToken));
        assert_eq!(extract(&[b"Bearer abc.d=ef.ghi="]), Err(InvalidToken));
        assert_eq!(extract(&[b"Bearer ==="]), Err(InvalidRequest));
        assert_eq!(extract(&[b"Bearer a=,b"]), Err(InvalidRequest));
    }

    #[test]
    fn oversized_is_invalid_token() {
        let long = format!("Bearer {}", "a".repeat(65));
        assert_eq!(
            extract(&[long.as_bytes()]),
            Err(RejectionKind::InvalidToken)
        );
    }

    #[test]
    fn peer_certificate_thumbprint_is_base64url_sha256_of_der() {
        // RFC 4648 test vector style: SHA-256("abc").
        let cert = PeerCertificate::from_der(&b"abc"[..]);
        assert_eq!(
            cert.sha256_thumbprint(),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
        assert_eq!(cert.der(), b"abc");
        assert_eq!(cert.clone(), cert);
        assert!(!format!("{cert:?}").contains("abc\""));
    }
}
