//! Limits against abuse, applied by [`AuthenticateLayer`](crate::AuthenticateLayer) before
//! and after the authenticator runs.
//!
//! | limit | default | when exceeded |
//! |---|---|---|
//! | [`max_credential_header_bytes`](LimitsBuilder::max_credential_header_bytes): total size of the `Authorization` header(s) | 32 KiB | `400 invalid_request`, before any parsing |
//! | [`max_claims_bytes`](LimitsBuilder::max_claims_bytes): decoded size of a bearer JWT's claims | 8 KiB | `401 invalid_token` ("claims too large"), before any decoding |
//! | [`max_roles`](LimitsBuilder::max_roles): roles kept in the [`AuthContext`](crate::AuthContext) | 256 | the first 256 are kept, the rest dropped |
//! | [`max_scopes`](LimitsBuilder::max_scopes): scopes kept in the [`AuthContext`](crate::AuthContext) | 256 | the first 256 are kept, the rest dropped |
//!
//! These sit on top of the per-issuer token size limit
//! ([`Validation::max_token_bytes`](crate::jwt::Validation::max_token_bytes), 16 KiB) and
//! cap what any authenticator is handed, whatever its kind. The claims estimate is the
//! base64url length of the payload segment × 3 / 4, so no byte is decoded for a token that
//! is refused.
//!
//! # Security caveat
//!
//! Dropping roles or scopes can only take permissions away, never add them, except for
//! policies that *deny* on the presence of a role (`not(roles_any(["suspended"]))`): such a
//! role beyond the limit is no longer seen. Tokens are signed by your identity provider, so
//! this matters only when callers can give themselves many roles there; raise the limit, or
//! check such claims with a claim predicate (which reads the full claims), if they can.
//!
//! ```
//! use tower_gatekeeper::{AuthenticateLayer, JwtAuthenticator, jwt::Validation};
//! use tower_gatekeeper::keys::{SigningKey, StaticKeys};
//! use tower_gatekeeper::limits::Limits;
//!
//! let signer = SigningKey::generate_ed25519().unwrap();
//! let keys = StaticKeys::new([signer.verifying_key().clone()]);
//! let auth = JwtAuthenticator::new(keys, Validation::new("https://idp").any_audience()).unwrap();
//! let limits = Limits::builder().max_roles(32).max_claims_bytes(4 * 1024).build().unwrap();
//! let layer = AuthenticateLayer::new(auth).limits(limits);
//! # let _ = layer;
//!
//! // Mistakes are found when the limits are built, naming the limit.
//! let error = Limits::builder().max_roles(0).build().unwrap_err();
//! assert!(error.to_string().contains("max_roles"));
//! ```

use http::HeaderMap;
use http::header::AUTHORIZATION;

use crate::config_error::ConfigError;
use crate::reject::Rejection;

/// Abuse limits with documented defaults, checked when built ([`Limits::builder`]), so a
/// `Limits` always works; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Limits {
    max_credential_header_bytes: usize,
    max_claims_bytes: usize,
    max_roles: usize,
    max_scopes: usize,
}

/// Builds [`Limits`]: every setter is optional and starts from the default; [`build`]
/// checks the result.
///
/// [`build`]: LimitsBuilder::build
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct LimitsBuilder {
    limits: Limits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_credential_header_bytes: Self::DEFAULT_MAX_CREDENTIAL_HEADER_BYTES,
            max_claims_bytes: Self::DEFAULT_MAX_CLAIMS_BYTES,
            max_roles: Self::DEFAULT_MAX_ROLES,
            max_scopes: Self::DEFAULT_MAX_SCOPES,
        }
    }
}

impl Limits {
    /// Default for [`max_credential_header_bytes`](LimitsBuilder::max_credential_header_bytes): 32 KiB.
    pub const DEFAULT_MAX_CREDENTIAL_HEADER_BYTES: usize = 32 * 1024;
    /// Default for [`max_claims_bytes`](LimitsBuilder::max_claims_bytes): 8 KiB.
    pub const DEFAULT_MAX_CLAIMS_BYTES: usize = 8 * 1024;
    /// Default for [`max_roles`](LimitsBuilder::max_roles): 256.
    pub const DEFAULT_MAX_ROLES: usize = 256;
    /// Default for [`max_scopes`](LimitsBuilder::max_scopes): 256.
    pub const DEFAULT_MAX_SCOPES: usize = 256;

    /// A builder starting from the defaults.
    pub fn builder() -> LimitsBuilder {
        LimitsBuilder {
            limits: Limits::default(),
        }
    }

    /// The credential header limit.
    pub fn credential_header_limit(&self) -> usize {
        self.max_credential_header_bytes
    }

    /// The claims size limit.
    pub fn claims_limit(&self) -> usize {
        self.max_claims_bytes
    }

    /// The number of roles kept.
    pub fn roles_limit(&self) -> usize {
        self.max_roles
    }

    /// The number of scopes kept.
    pub fn scopes_limit(&self) -> usize {
        self.max_scopes
    }

    /// The rejection for a request over the header or claims limit, if any.
    pub(crate) fn check_request(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        let mut total = 0usize;
        let mut single = None;
        for (i, value) in headers.get_all(AUTHORIZATION).iter().enumerate() {
            total = total.saturating_add(value.len());
            single = (i == 0).then_some(value);
        }
        if total > self.max_credential_header_bytes {
            return Err(Rejection::invalid_request("authorization header too large"));
        }
        // A payload segment is part of the value, so a value whose whole length decodes to
        // no more than the limit cannot hold too many claims: the usual case, decided
        // without scanning the token for its segments.
        if decoded_len(total) <= self.max_claims_bytes {
            return Ok(());
        }
        if let Some(payload) = single.and_then(|v| bearer_payload_segment(v.as_bytes()))
            && decoded_len(payload.len()) > self.max_claims_bytes
        {
            return Err(Rejection::invalid_token("claims too large"));
        }
        Ok(())
    }
}

impl LimitsBuilder {
    /// The most bytes the `Authorization` header(s) of a request may have together; larger
    /// requests get `400 invalid_request` before anything is parsed. At least 64.
    pub fn max_credential_header_bytes(mut self, max: usize) -> Self {
        self.limits.max_credential_header_bytes = max;
        self
    }

    /// The most bytes a bearer JWT's decoded claims may have; larger tokens get
    /// `401 invalid_token` before anything is decoded. At least 2.
    pub fn max_claims_bytes(mut self, max: usize) -> Self {
        self.limits.max_claims_bytes = max;
        self
    }

    /// How many roles the [`AuthContext`](crate::AuthContext) keeps (the first ones). At
    /// least 1.
    pub fn max_roles(mut self, max: usize) -> Self {
        self.limits.max_roles = max;
        self
    }

    /// How many scopes the [`AuthContext`](crate::AuthContext) keeps (the first ones). At
    /// least 1.
    pub fn max_scopes(mut self, max: usize) -> Self {
        self.limits.max_scopes = max;
        self
    }

    /// Checks that the limits can work and returns them.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the limit: a credential header limit below 64 bytes (no JWT
    /// fits), a claims limit below 2 bytes, or zero roles or scopes kept.
    pub fn build(self) -> Result<Limits, ConfigError> {
        let l = self.limits;
        if l.max_credential_header_bytes < 64 {
            return Err(ConfigError::invalid(format!(
                "limits: max_credential_header_bytes = {} is too small to hold any credential; use at least 64 (default {})",
                l.max_credential_header_bytes,
                Limits::DEFAULT_MAX_CREDENTIAL_HEADER_BYTES
            )));
        }
        if l.max_claims_bytes < 2 {
            return Err(ConfigError::invalid(format!(
                "limits: max_claims_bytes = {} is too small to hold any claims; use at least 2 (default {})",
                l.max_claims_bytes,
                Limits::DEFAULT_MAX_CLAIMS_BYTES
            )));
        }
        for (name, value, default) in [
            ("max_roles", l.max_roles, Limits::DEFAULT_MAX_ROLES),
            ("max_scopes", l.max_scopes, Limits::DEFAULT_MAX_SCOPES),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(format!(
                    "limits: {name} = 0 would drop every one; use at least 1 (default {default})"
                )));
            }
        }
        Ok(l)
    }
}

/// How many bytes `len` characters of unpadded base64url decode to (at most).
fn decoded_len(len: usize) -> usize {
    len / 4 * 3 + (len % 4 * 3) / 4
}

/// The payload segment of `Bearer header.payload.signature`, without decoding anything.
fn bearer_payload_segment(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() < SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let token = value[SCHEME.len()..].trim_ascii_start();
    let mut parts = token.split(|b| *b == b'.');
    let (_header, payload) = (parts.next()?, parts.next()?);
    Some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn defaults_are_documented_values() {
        let l = Limits::default();
        assert_eq!(l.credential_header_limit(), 32 * 1024);
        assert_eq!(l.claims_limit(), 8 * 1024);
        assert_eq!(l.roles_limit(), 256);
        assert_eq!(l.scopes_limit(), 256);
        assert_eq!(Limits::builder().build().unwrap(), l);
    }

    #[test]
    fn config_mistakes_name_the_limit() {
        for (limits, name) in [
            (
                Limits::builder().max_credential_header_bytes(10),
                "max_credential_header_bytes",
            ),
            (Limits::builder().max_claims_bytes(1), "max_claims_bytes"),
            (Limits::builder().max_roles(0), "max_roles"),
            (Limits::builder().max_scopes(0), "max_scopes"),
        ] {
            let error = limits.build().unwrap_err().to_string();
            assert!(error.contains(name), "{error}");
        }
    }

    #[test]
    fn header_limit_counts_every_authorization_value() {
        let l = Limits::builder()
            .max_credential_header_bytes(100)
            .build()
            .unwrap();
        assert!(l.check_request(&headers(&[&"a".repeat(100)])).is_ok());
        let err = l.check_request(&headers(&[&"a".repeat(101)])).unwrap_err();
        assert_eq!(err.kind(), crate::RejectionKind::InvalidRequest);
        let err = l
            .check_request(&headers(&[&"a".repeat(60), &"b".repeat(60)]))
            .unwrap_err();
        assert_eq!(err.kind(), crate::RejectionKind::InvalidRequest);
    }

    #[test]
    fn claims_limit_estimates_the_decoded_payload() {
        let l = Limits::builder().max_claims_bytes(30).build().unwrap();
        // 40 base64url characters decode to exactly 30 bytes.
        let ok = format!("Bearer h.{}.s", "A".repeat(40));
        assert!(l.check_request(&headers(&[&ok])).is_ok());
        let big = format!("bearer h.{}.s", "A".repeat(42));
        let err = l.check_request(&headers(&[&big])).unwrap_err();
        assert_eq!(err.kind(), crate::RejectionKind::InvalidToken);
        assert_eq!(err.description(), "claims too large");
        // Other schemes and non-JWTs are left to the authenticator.
        assert!(
            l.check_request(&headers(&[&format!("Basic {}", "A".repeat(90))]))
                .is_ok()
        );
        assert!(
            l.check_request(&headers(&[&format!("Bearer {}", "A".repeat(90))]))
                .is_ok()
        );
    }
}
