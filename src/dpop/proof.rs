//! One DPoP proof checked against one request (RFC 9449 §4.3), and the RFC 7638 thumbprint.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::keys::VerifyingKey;
use crate::{Algorithm, AlgorithmSet};

/// The most a proof may be (a proof with an RSA 4096 key is about 1.5 KB).
pub(crate) const MAX_PROOF_BYTES: usize = 8 * 1024;
/// The most a `jti` may be.
pub(crate) const MAX_JTI_BYTES: usize = 256;

/// Why a proof was refused. Each variant names one rule; the texts are fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// No `DPoP` header beside a `DPoP` authorization.
    #[error("the DPoP proof is missing")]
    Missing,
    /// More than one `DPoP` header (§4.3 check 1).
    #[error("more than one DPoP proof")]
    MultipleProofs,
    /// Not a compact JWS with JSON header and claims (§4.3 check 2).
    #[error("the DPoP proof is malformed")]
    Malformed,
    /// `typ` is not `dpop+jwt` (§4.3 check 4).
    #[error("the DPoP proof's typ is not dpop+jwt")]
    WrongType,
    /// `alg` is missing, `none`, symmetric or not allowed here (§4.3 check 5).
    #[error("the DPoP proof's algorithm is not accepted")]
    Algorithm,
    /// `jwk` is missing or not a usable public key (§4.3 checks 3 and 5).
    #[error("the DPoP proof's jwk is not a usable public key")]
    Key,
    /// `jwk` carries private key material (§4.3 check 7).
    #[error("the DPoP proof's jwk contains a private key")]
    PrivateKey,
    /// The signature does not verify with `jwk` (§4.3 check 6).
    #[error("the DPoP proof's signature is invalid")]
    Signature,
    /// A required claim is missing or of the wrong type (§4.3 check 3).
    #[error("the DPoP proof lacks a required claim")]
    MissingClaim,
    /// `htm` is not the request's method (§4.3 check 8).
    #[error("the DPoP proof's htm does not match the request method")]
    Method,
    /// `htu` carries a query or fragment (§4.2).
    #[error("the DPoP proof's htu has a query or fragment")]
    UriQuery,
    /// `htu` is not the request's URI (§4.3 check 9).
    #[error("the DPoP proof's htu does not match the request URI")]
    Uri,
    /// `iat` is older than the acceptance window (§4.3 check 11).
    #[error("the DPoP proof is too old")]
    Stale,
    /// `iat` is later than now plus the allowed skew (§4.3 check 11).
    #[error("the DPoP proof is issued in the future")]
    Future,
    /// `ath` is not the hash of the access token (§4.3 check 12).
    #[error("the DPoP proof's ath does not match the access token")]
    AccessTokenHash,
    /// The `jti` was seen before within the window (§11.1).
    #[error("the DPoP proof was already used")]
    Replayed,
    /// The proof has no nonce while the server requires one (§8, §9).
    #[error("a DPoP nonce is required")]
    NonceRequired,
    /// The proof's nonce is not one this server issued, or no longer valid (§4.3 check 10).
    #[error("the DPoP nonce is invalid or expired")]
    NonceInvalid,
}

impl ProofError {
    /// The fixed description used in rejections.
    pub fn description(self) -> &'static str {
        match self {
            ProofError::Missing => "the DPoP proof is missing",
            ProofError::MultipleProofs => "more than one DPoP proof",
            ProofError::Malformed => "the DPoP proof is malformed",
            ProofError::WrongType => "the DPoP proof's typ is not dpop+jwt",
            ProofError::Algorithm => "the DPoP proof's algorithm is not accepted",
            ProofError::Key => "the DPoP proof's jwk is not a usable public key",
            ProofError::PrivateKey => "the DPoP proof's jwk contains a private key",
            ProofError::Signature => "the DPoP proof's signature is invalid",
            ProofError::MissingClaim => "the DPoP proof lacks a required claim",
            ProofError::Method => "the DPoP proof's htm does not match the request method",
            ProofError::UriQuery => "the DPoP proof's htu has a query or fragment",
            ProofError::Uri => "the DPoP proof's htu does not match the request URI",
            ProofError::Stale => "the DPoP proof is too old",
            ProofError::Future => "the DPoP proof is issued in the future",
            ProofError::AccessTokenHash => "the DPoP proof's ath does not match the access token",
            ProofError::Replayed => "the DPoP proof was already used",
            ProofError::NonceRequired => "a DPoP nonce is required",
            ProofError::NonceInvalid => "the DPoP nonce is invalid or expired",
        }
    }

    /// Whether the client should retry with the server's nonce (`use_dpop_nonce`).
    pub fn wants_nonce(self) -> bool {
        matches!(self, ProofError::NonceRequired | ProofError::NonceInvalid)
    }
}

/// What a checked proof tells.
#[derive(Debug, Clone)]
pub(crate) struct CheckedProof {
    /// RFC 7638 SHA-256 thumbprint of the proof's key, base64url.
    pub(crate) jkt: String,
    pub(crate) jti: String,
    pub(crate) nonce: Option<String>,
}

/// The request facts a proof is checked against.
pub(crate) struct Expected<'a> {
    pub(crate) method: &'a str,
    /// The request's URI without query and fragment, normalised ([`normalize_htu`]).
    pub(crate) uri: &'a str,
    pub(crate) access_token: Option<&'a str>,
    pub(crate) now: u64,
    pub(crate) max_age: u64,
    pub(crate) future_skew: u64,
    pub(crate) algorithms: AlgorithmSet,
}

/// The members a public JWK never has.
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Checks `proof` against `expected`: every rule of RFC 9449 §4.3 except the nonce and the
/// `jti` replay, which need server state (the caller checks those next).
pub(crate) fn check(proof: &str, expected: &Expected<'_>) -> Result<CheckedProof, ProofError> {
    if proof.len() > MAX_PROOF_BYTES {
        return Err(ProofError::Malformed);
    }
    let mut parts = proof.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ProofError::Malformed);
    };
    let header = crate::jwt::decode_object(header_b64).map_err(|()| ProofError::Malformed)?;
    let claims = crate::jwt::decode_object(claims_b64).map_err(|()| ProofError::Malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| ProofError::Malformed)?;

    match header.get("typ").and_then(Value::as_str) {
        Some(typ) if typ.eq_ignore_ascii_case("dpop+jwt") => {}
        _ => return Err(ProofError::WrongType),
    }
    let alg: Algorithm = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(ProofError::Algorithm)?
        .parse()
        .map_err(|_| ProofError::Algorithm)?;
    if alg.is_hmac() || !expected.algorithms.contains(alg) {
        return Err(ProofError::Algorithm);
    }
    if header.contains_key("crit") || header.contains_key("b64") {
        return Err(ProofError::Malformed);
    }
    let jwk = match header.get("jwk") {
        Some(Value::Object(jwk)) => jwk,
        _ => return Err(ProofError::Key),
    };
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err(ProofError::PrivateKey);
    }
    if jwk.get("kty").and_then(Value::as_str) == Some("oct") {
        return Err(ProofError::Key);
    }
    let jwk_value = Value::Object(jwk.clone());
    let key = VerifyingKey::from_jwk_value(&jwk_value).map_err(|_| ProofError::Key)?;
    if !key.algorithms().contains(alg) {
        return Err(ProofError::Key);
    }
    if signature.is_empty() {
        return Err(ProofError::Signature);
    }
    let signing_input = &proof[..header_b64.len() + 1 + claims_b64.len()];
    if !key.verify_vec(alg, signing_input.as_bytes(), &signature) {
        return Err(ProofError::Signature);
    }

    let string = |name: &str| match claims.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.as_str()),
        _ => Err(ProofError::MissingClaim),
    };
    let jti = string("jti")?;
    let htm = string("htm")?;
    let htu = string("htu")?;
    if jti.len() > MAX_JTI_BYTES {
        return Err(ProofError::Malformed);
    }
    let iat = match claims.get("iat") {
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .ok_or(ProofError::MissingClaim)?,
        _ => return Err(ProofError::MissingClaim),
    };

    if htm != expected.method {
        return Err(ProofError::Method);
    }
    if htu.contains(['?', '#']) {
        return Err(ProofError::UriQuery);
    }
    match normalize_htu(htu) {
        Some(normal) if normal == expected.uri => {}
        _ => return Err(ProofError::Uri),
    }
    if iat > expected.now.saturating_add(expected.future_skew) {
        return Err(ProofError::Future);
    }
    if iat.saturating_add(expected.max_age) < expected.now {
        return Err(ProofError::Stale);
    }
    if let Some(token) = expected.access_token {
        let ath = string("ath").map_err(|_| ProofError::AccessTokenHash)?;
        let want = URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()));
        if !bool::from(ath.as_bytes().ct_eq(want.as_bytes())) {
            return Err(ProofError::AccessTokenHash);
        }
    }
    let nonce = match claims.get("nonce") {
        None => None,
        Some(Value::String(n)) => Some(n.clone()),
        Some(_) => return Err(ProofError::NonceInvalid),
    };
    Ok(CheckedProof {
        jkt: jwk_thumbprint(jwk).ok_or(ProofError::Key)?,
        jti: jti.to_owned(),
        nonce,
    })
}

/// The RFC 7638 SHA-256 thumbprint of a public JWK, base64url: the SHA-256 of the JSON
/// object of its required members only, in lexicographic order, without whitespace.
/// `None` for a key type without a thumbprint definition here (RSA, EC and OKP have one).
///
/// ```
/// use serde_json::json;
/// use tower_gatekeeper::dpop::jwk_thumbprint;
///
/// // RFC 7638 §3.1's example key.
/// let jwk = json!({
///     "kty": "RSA",
///     "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
///     "e": "AQAB",
///     "alg": "RS256",
///     "kid": "2011-04-29"
/// });
/// assert_eq!(
///     jwk_thumbprint(jwk.as_object().unwrap()).unwrap(),
///     "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
/// );
/// ```
pub fn jwk_thumbprint(jwk: &Map<String, Value>) -> Option<String> {
    let members: &[&str] = match jwk.get("kty").and_then(Value::as_str)? {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "OKP" => &["crv", "kty", "x"],
        _ => return None,
    };
    let mut json = String::from("{");
    for (i, name) in members.iter().enumerate() {
        let value = jwk.get(*name)?.as_str()?;
        if i > 0 {
            json.push(',');
        }
        json.push_str(&Value::from(*name).to_string());
        json.push(':');
        json.push_str(&Value::from(value).to_string());
    }
    json.push('}');
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(json.as_bytes())))
}

/// An absolute `http`/`https` URI without query and fragment, normalised for comparison
/// (RFC 3986 §6.2.2 and §6.2.3): scheme and host lower-case, the scheme's default port
/// removed, an empty path made `/`, percent-encodings of unreserved characters decoded and
/// other percent-encodings upper-cased. `None` when `uri` is not such a URI (no scheme or
/// host, user information, a query or fragment).
pub(crate) fn normalize_htu(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if rest.contains(['?', '#']) {
        return None;
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    normalize_parts(&scheme, authority, path)
}

/// [`normalize_htu`] of a URI given in parts: `scheme`, `authority` (`host[:port]`) and
/// `path`.
pub(crate) fn normalize_parts(scheme: &str, authority: &str, path: &str) -> Option<String> {
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => "80",
        "https" => "443",
        _ => return None,
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let authority = match authority.rsplit_once(':') {
        // An IPv6 literal's colons are inside brackets.
        Some((host, port)) if !port.contains(']') => {
            if port.is_empty() || port == default_port {
                host.to_owned()
            } else if port.bytes().all(|b| b.is_ascii_digit()) {
                authority.clone()
            } else {
                return None;
            }
        }
        _ => authority,
    };
    let mut out = String::with_capacity(scheme.len() + 3 + authority.len() + path.len() + 1);
    out.push_str(&scheme);
    out.push_str("://");
    out.push_str(&authority);
    if path.is_empty() {
        out.push('/');
    } else {
        normalize_path(path, &mut out);
    }
    Some(out)
}

fn normalize_path(path: &str, out: &mut String) {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' && i + 2 < bytes.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                let decoded = (h * 16 + l) as u8;
                if decoded.is_ascii_alphanumeric() || matches!(decoded, b'-' | b'.' | b'_' | b'~') {
                    out.push(decoded as char);
                } else {
                    out.push('%');
                    out.push(bytes[i + 1].to_ascii_uppercase() as char);
                    out.push(bytes[i + 2].to_ascii_uppercase() as char);
                }
                i += 3;
                continue;
            }
        }
        // Paths are ASCII in an http::Uri; anything else is kept as it is.
        out.push(b as char);
        i += 1;
    }
}

/// base64url(SHA-256(token)): the `ath` of a proof sent with `token`.
pub(crate) fn access_token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htu_normalisation() {
        let n = |u: &str| normalize_htu(u);
        assert_eq!(
            n("HTTPS://Api.Example.COM:443/a/B").unwrap(),
            "https://api.example.com/a/B"
        );
        assert_eq!(n("http://h:80").unwrap(), "http://h/");
        assert_eq!(n("http://h:8080/x").unwrap(), "http://h:8080/x");
        assert_eq!(n("http://h/%7e%41/%2f%2F").unwrap(), "http://h/~A/%2F%2F");
        assert_eq!(n("http://[::1]:8080/x").unwrap(), "http://[::1]:8080/x");
        assert_eq!(n("http://[::1]/x").unwrap(), "http://[::1]/x");
        assert!(n("http://u:p@h/x").is_none());
        assert!(n("ftp://h/x").is_none());
        assert!(n("/x").is_none());
        assert!(n("http://h/x?y").is_none());
        assert!(n("http://h:8o/x").is_none());
    }
}
