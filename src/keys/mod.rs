//! Verification keys: the [`KeySource`] trait, [`VerifyingKey`] (a key bound to the algorithms
//! it may verify), [`KeySet`] selection rules and the static [`StaticKeys`] source.
//!
//! # Binding keys to algorithms
//!
//! A token's `alg` header is attacker-controlled, so it is never trusted on its own: every
//! key carries the set of algorithms it may verify, derived from its type and, for JWKs, from
//! its `alg` member. A token whose `alg` is not in its key's set is rejected, which closes the
//! RS256/HS256 confusion (an RSA public key used as an HMAC secret) and similar attacks.
//!
//! | key | algorithms |
//! |---|---|
//! | RSA, ≥ 2048 bits | RS256 RS384 RS512 PS256 PS384 PS512 (or the JWK's `alg`) |
//! | EC P-256 | ES256 |
//! | EC P-384 | ES384 |
//! | EC P-521 | ES512 |
//! | Ed25519 | EdDSA |
//! | HMAC secret of n ≥ 32 bytes | the HS* whose hash size ≤ n (RFC 7518 §3.2) |
//!
//! ```
//! use tower_gatekeeper::keys::{KeyQuery, KeySource, StaticKeys, VerifyingKey};
//! use tower_gatekeeper::Algorithm;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let secret = [7u8; 32];
//! let keys = StaticKeys::new([VerifyingKey::hmac(&secret).unwrap().with_kid("k1")]);
//! let key = keys.key(&KeyQuery::new(None, Some("k1"), Algorithm::HS256)).await.unwrap();
//! assert_eq!(key.kid(), Some("k1"));
//! // The secret is too short for HS512 (RFC 7518 §3.2), so the key refuses it.
//! assert!(keys.key(&KeyQuery::new(None, Some("k1"), Algorithm::HS512)).await.is_err());
//! # }
//! ```

mod any;
mod der;
mod fetch;
mod fingerprint;
#[cfg(feature = "remote")]
mod http;
mod jwks;
#[cfg(feature = "jwks-client-rs")]
mod jwks_client;
#[cfg(feature = "remote")]
mod oidc;
#[cfg(feature = "remote")]
mod remote;
mod signing;
mod static_keys;
mod tenant;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};

use crate::algorithm::{Algorithm, AlgorithmSet};

pub use any::{IssuerKeys, KeyFuture};
pub use fetch::FetchError;
#[cfg(feature = "remote")]
#[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
pub use fetch::{FetchFuture, JwksDocument, JwksFetcher};
pub use fingerprint::KeyFingerprint;
#[cfg(feature = "jwks-client-rs")]
pub use jwks_client::JwksClientFetcher;
#[cfg(feature = "remote")]
#[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
pub use oidc::provider_jwks_uri;
#[cfg(feature = "remote")]
#[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
pub use remote::{
    DEFAULT_FETCH_TIMEOUT, DEFAULT_MAX_REFRESH, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_MAX_STALENESS,
    DEFAULT_MIN_REFRESH, DEFAULT_REFRESH, DEFAULT_RETRY, DEFAULT_UNKNOWN_KID_INTERVAL, RemoteJwks,
    RemoteJwksBuilder,
};
pub use signing::SigningKey;
pub use static_keys::StaticKeys;
#[cfg(feature = "remote")]
#[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
pub use tenant::{DEFAULT_MAX_TENANTS, TenantJwks, TenantJwksBuilder};
pub use tenant::{
    MAX_TENANT_BYTES, TENANT_PLACEHOLDER, TenantIssuer, TenantTemplate, is_valid_tenant,
};

/// The future of [`KeySource::ready`].
pub type ReadyFuture = Pin<Box<dyn Future<Output = Result<(), KeyError>> + Send + 'static>>;

/// Where verification keys come from.
///
/// `key` receives what the (not yet verified) token says about its key: issuer, `kid` and
/// `alg`. It must only return a key that may verify `alg`; the verifier checks again.
/// Implementations that have the key cached should return a ready future
/// (`std::future::Ready`), so the hot path never waits.
pub trait KeySource: Clone + Send + Sync + 'static {
    /// The future returned by [`key`](KeySource::key).
    type Future: Future<Output = Result<VerifyingKey, KeyError>> + Send + 'static;

    /// Finds the key for `query`.
    fn key(&self, query: &KeyQuery<'_>) -> Self::Future;

    /// The algorithms this source's keys can verify, when known up front (static keys).
    /// Authenticators use it to refuse configurations that allow an algorithm no key can
    /// verify. Sources whose keys arrive later return `None` (the default).
    fn algorithms(&self) -> Option<AlgorithmSet> {
        None
    }

    /// The algorithms this source could ever verify, whatever keys it gets (default: all).
    /// Remote JWKS sources exclude HMAC, so an issuer that allows HS* with a JWKS is refused
    /// when the authenticator is built.
    fn possible_algorithms(&self) -> AlgorithmSet {
        Algorithm::ALL.into_iter().collect()
    }

    /// Waits until the source has usable keys for the `allowed` algorithms (all, when
    /// `None`): readiness. Sources whose keys are known up front are ready at once (the
    /// default). Remote sources wait for their first successful fetch, keep waiting while the
    /// IdP is unreachable (apply a timeout), and fail fast when the configuration cannot
    /// work: an allowed algorithm no key can verify, HMAC with a JWKS, a JWKS without usable
    /// keys, a discovery document naming another issuer.
    fn ready(&self, allowed: Option<AlgorithmSet>) -> ReadyFuture {
        let _ = allowed;
        Box::pin(std::future::ready(Ok(())))
    }

    /// Whether the key that verified a token, named `kid` (`None`: a key without a `kid`),
    /// is still in this source's current key set for `issuer`. Caches of verified tokens
    /// ([`CachedAuthenticator`](crate::authenticate::CachedAuthenticator)) ask on every hit
    /// and drop results whose key has left the set (rotation, removal).
    ///
    /// Sources whose keys never change answer `true` (the default). Sources whose keys
    /// change must override it, and answer `false` when they cannot tell (for instance for a
    /// key without a `kid`): such results are then not cached.
    fn contains_kid(&self, issuer: Option<&str>, kid: Option<&str>) -> bool {
        let _ = (issuer, kid);
        true
    }

    /// Whether the exact key that verified a token, named `kid` and with material
    /// `fingerprint`, is still in this source's current key set for `issuer`: unlike
    /// [`contains_kid`](Self::contains_kid), a different key published under the same `kid`
    /// does not count. [`CachedAuthenticator`](crate::authenticate::CachedAuthenticator)
    /// asks this on every hit for results that carry a fingerprint (every JWT verified by
    /// this crate).
    ///
    /// The default answers [`contains_kid`](Self::contains_kid), right for sources whose
    /// keys never change. Sources whose keys change should override it and compare
    /// [`VerifyingKey::fingerprint`].
    fn contains_key(
        &self,
        issuer: Option<&str>,
        kid: Option<&str>,
        fingerprint: &KeyFingerprint,
    ) -> bool {
        let _ = fingerprint;
        self.contains_kid(issuer, kid)
    }
}

/// What a token says about the key that should verify it.
#[derive(Debug, Clone, Copy)]
pub struct KeyQuery<'a> {
    issuer: Option<&'a str>,
    kid: Option<&'a str>,
    alg: Algorithm,
}

impl<'a> KeyQuery<'a> {
    /// A query for the key of `issuer` named `kid` that may verify `alg`.
    pub fn new(issuer: Option<&'a str>, kid: Option<&'a str>, alg: Algorithm) -> Self {
        KeyQuery { issuer, kid, alg }
    }

    /// The token's issuer.
    pub fn issuer(&self) -> Option<&'a str> {
        self.issuer
    }

    /// The token's `kid` header.
    pub fn kid(&self) -> Option<&'a str> {
        self.kid
    }

    /// The token's `alg` header.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }
}

/// Errors when loading or looking up keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// No key has the token's `kid`.
    #[error("no key has the token's kid")]
    UnknownKid,
    /// No key may verify the token's algorithm.
    #[error("no key may verify this algorithm")]
    NoMatchingKey,
    /// The key named by the token's `kid` may not verify the token's algorithm.
    #[error("the token's algorithm is not allowed for its key")]
    AlgorithmMismatch,
    /// The token has no `kid` and several keys could verify it; the verifier does not guess.
    #[error("the token has no kid and several keys could verify it")]
    AmbiguousKey,
    /// The token's issuer is not trusted.
    #[error("untrusted issuer")]
    UnknownIssuer,
    /// Keys cannot be had right now; callers may retry after `retry_after`.
    #[error("verification keys are unavailable")]
    Unavailable {
        /// How long until a retry may succeed.
        retry_after: Duration,
    },
    /// A key could not be used; the text says why.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// Fetching keys failed in a way that needs fixing (see [`KeySource::ready`]).
    #[error("fetching keys failed: {0}")]
    Fetch(FetchError),
    /// A key file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
}

impl KeyError {
    fn invalid(reason: impl Into<String>) -> Self {
        KeyError::InvalidKey(reason.into())
    }
}

/// The type of a verification key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyType {
    /// RSA, with its modulus size in bits.
    Rsa {
        /// Modulus size in bits.
        bits: usize,
    },
    /// ECDSA on P-256.
    EcP256,
    /// ECDSA on P-384.
    EcP384,
    /// ECDSA on P-521.
    EcP521,
    /// Ed25519.
    Ed25519,
    /// An HMAC secret.
    Hmac,
}

impl KeyType {
    /// The algorithms a key of this type may verify, before any narrowing.
    pub fn algorithms(self) -> AlgorithmSet {
        match self {
            KeyType::Rsa { .. } => AlgorithmSet::RSA,
            KeyType::EcP256 => Algorithm::ES256.into(),
            KeyType::EcP384 => Algorithm::ES384.into(),
            KeyType::EcP521 => Algorithm::ES512.into(),
            KeyType::Ed25519 => Algorithm::EdDSA.into(),
            KeyType::Hmac => AlgorithmSet::HMAC,
        }
    }
}

/// The smallest RSA modulus accepted, in bits (RFC 7518 §3.3).
pub const MIN_RSA_BITS: usize = 2048;

/// A verification key, bound to the algorithms it may verify. Cheap to clone.
///
/// See the [module docs](self) for the binding rules.
#[derive(Clone)]
pub struct VerifyingKey {
    inner: Arc<KeyInner>,
}

#[derive(Clone)]
struct KeyInner {
    kid: Option<String>,
    key_type: KeyType,
    algorithms: AlgorithmSet,
    key: DecodingKey,
    /// The key parsed once for the backend (see [`crate::crypto::PreparedKey`]).
    prepared: Arc<crate::crypto::PreparedKey>,
    fingerprint: KeyFingerprint,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.inner.kid)
            .field("key_type", &self.inner.key_type)
            .field("algorithms", &self.inner.algorithms)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    fn build(key_type: KeyType, key: DecodingKey) -> Result<Self, KeyError> {
        let algorithms = key_type.algorithms();
        let prepared =
            crate::crypto::PreparedKey::new(&key, algorithms).map_err(KeyError::invalid)?;
        Ok(VerifyingKey {
            inner: Arc::new(KeyInner {
                kid: None,
                key_type,
                algorithms,
                fingerprint: KeyFingerprint::of(key_type, &key),
                key,
                prepared: Arc::new(prepared),
            }),
        })
    }

    /// The fingerprint of this key's material (not of its `kid` or algorithms).
    pub fn fingerprint(&self) -> KeyFingerprint {
        self.inner.fingerprint
    }

    /// A public key from PEM: `PUBLIC KEY` (SPKI: RSA, EC P-256/P-384, Ed25519),
    /// `RSA PUBLIC KEY` (PKCS#1) or `CERTIFICATE`. Private keys are refused.
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidKey`] naming what is wrong (not PEM, a private key, an unsupported
    /// curve, an RSA key under 2048 bits).
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let text = std::str::from_utf8(pem).map_err(|_| KeyError::invalid("PEM is not text"))?;
        let label = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("-----BEGIN "))
            .and_then(|l| l.strip_suffix("-----"))
            .ok_or_else(|| {
                KeyError::invalid("no PEM block found (expected -----BEGIN PUBLIC KEY-----)")
            })?;
        if label.contains("PRIVATE") {
            return Err(KeyError::invalid(format!(
                "a {label} was given where a public key is expected; configure the public key"
            )));
        }
        if !matches!(label, "PUBLIC KEY" | "RSA PUBLIC KEY" | "CERTIFICATE") {
            return Err(KeyError::invalid(format!(
                "unsupported PEM block {label:?}"
            )));
        }
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            let der = key
                .try_get_as_bytes()
                .map_err(|_| KeyError::invalid("malformed RSA public key"))?;
            let (n, e) = der::rsa_public_key(der)
                .ok_or_else(|| KeyError::invalid("malformed RSA public key"))?;
            return Self::rsa_components(n, e);
        }
        if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            let point = key
                .try_get_as_bytes()
                .map_err(|_| KeyError::invalid("malformed EC public key"))?;
            let key_type = ec_point_type(point)?;
            // The point's length alone does not name the curve (secp256k1 and brainpool
            // points have the same lengths): require the curve's OID in the encoding.
            let oid: &[u8] = match key_type {
                KeyType::EcP256 => &OID_P256,
                KeyType::EcP384 => &OID_P384,
                _ => &OID_P521,
            };
            if !pem_der(text).is_some_and(|der| contains(&der, oid)) {
                return Err(KeyError::invalid(
                    "unsupported EC curve (supported: P-256, P-384, P-521)",
                ));
            }
            return Self::build(key_type, key);
        }
        if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            match key.try_get_as_bytes() {
                Ok(x) if x.len() == 32 => return Self::build(KeyType::Ed25519, key),
                _ => return Err(KeyError::invalid("malformed Ed25519 public key")),
            }
        }
        Err(KeyError::invalid(
            "unsupported key in PEM (supported: RSA, EC P-256, EC P-384, EC P-521, Ed25519)",
        ))
    }

    /// A public key from DER: an X.509 `SubjectPublicKeyInfo` (RSA, EC P-256/P-384, Ed25519),
    /// as `openssl pkey -pubout -outform DER` writes it.
    ///
    /// # Errors
    ///
    /// As [`from_pem`](Self::from_pem).
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        use base64::Engine as _;
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        Self::from_pem(pem.as_bytes())
    }

    /// An RSA public key from its big-endian modulus and exponent.
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidKey`] when the modulus is under 2048 bits or the exponent is unusable.
    pub fn rsa_components(n: &[u8], e: &[u8]) -> Result<Self, KeyError> {
        let n = strip_leading_zeros(n);
        let e = strip_leading_zeros(e);
        let bits = match n.first() {
            Some(first) => n.len() * 8 - first.leading_zeros() as usize,
            None => 0,
        };
        if bits < MIN_RSA_BITS {
            return Err(KeyError::invalid(format!(
                "RSA key of {bits} bits is too small (at least {MIN_RSA_BITS} required, RFC 7518 §3.3)"
            )));
        }
        if e.is_empty() || e.len() > 8 || e.last().is_some_and(|b| b & 1 == 0) || e == [1] {
            return Err(KeyError::invalid("unusable RSA public exponent"));
        }
        Self::build(
            KeyType::Rsa { bits },
            DecodingKey::from_rsa_raw_components(n, e),
        )
    }

    /// An HMAC secret. It may verify each HS* algorithm whose hash is no longer than the
    /// secret (RFC 7518 §3.2): 32 bytes allow HS256, 48 add HS384, 64 add HS512.
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidKey`] when the secret is shorter than 32 bytes.
    pub fn hmac(secret: &[u8]) -> Result<Self, KeyError> {
        let algorithms: AlgorithmSet = AlgorithmSet::HMAC
            .iter()
            .filter(|alg| {
                alg.min_hmac_secret_len()
                    .is_some_and(|min| secret.len() >= min)
            })
            .collect();
        if algorithms.is_empty() {
            return Err(KeyError::invalid(format!(
                "HMAC secret of {} bytes is too short (at least 32 bytes required, RFC 7518 §3.2)",
                secret.len()
            )));
        }
        let mut key = Self::build(KeyType::Hmac, DecodingKey::from_secret(secret))?;
        Arc::make_mut(&mut key.inner).algorithms = algorithms;
        Ok(key)
    }

    /// A key from a JWK (RFC 7517), given as JSON text.
    ///
    /// # Errors
    ///
    /// See [`from_jwk_value`](Self::from_jwk_value).
    pub fn from_jwk_str(jwk: &str) -> Result<Self, KeyError> {
        let value: serde_json::Value = serde_json::from_str(jwk)
            .map_err(|e| KeyError::invalid(format!("JWK is not valid JSON: {e}")))?;
        Self::from_jwk_value(&value)
    }

    /// A key from a JWK (RFC 7517) as a JSON value. The JWK's `kid` becomes the key's id,
    /// its `alg` (when present) narrows the algorithms, and it must be meant for signatures:
    /// `use` other than `sig`, or `key_ops` without `verify`, is refused.
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidKey`] naming what is wrong (unknown `kty`, encryption key, an
    /// `alg` that does not fit the key type, a too small key, malformed parameters).
    pub fn from_jwk_value(jwk: &serde_json::Value) -> Result<Self, KeyError> {
        // A published key with private parts is a leak at the identity provider; using it
        // would hide the problem.
        if ["d", "p", "q", "dp", "dq", "qi", "oth"]
            .iter()
            .any(|m| jwk.get(m).is_some())
        {
            return Err(KeyError::invalid(
                "JWK contains private key material; publish and configure only the public key",
            ));
        }
        let parsed: Jwk = serde_json::from_value(jwk.clone())
            .map_err(|e| KeyError::invalid(format!("unsupported or malformed JWK: {e}")))?;
        let common = &parsed.common;
        if common
            .public_key_use
            .as_ref()
            .is_some_and(|u| *u != PublicKeyUse::Signature)
        {
            return Err(KeyError::invalid(
                "JWK is not a signature key (use is not \"sig\")",
            ));
        }
        if common
            .key_operations
            .as_ref()
            .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
        {
            return Err(KeyError::invalid("JWK key_ops does not include \"verify\""));
        }
        let key = match &parsed.algorithm {
            AlgorithmParameters::RSA(rsa) => {
                let n = b64url(&rsa.n, "n")?;
                let e = b64url(&rsa.e, "e")?;
                Self::rsa_components(&n, &e)?
            }
            AlgorithmParameters::EllipticCurve(ec) => {
                let (key_type, len) = match ec.curve {
                    EllipticCurve::P256 => (KeyType::EcP256, 32),
                    EllipticCurve::P384 => (KeyType::EcP384, 48),
                    EllipticCurve::P521 => (KeyType::EcP521, 66),
                    _ => {
                        return Err(KeyError::invalid(
                            "unsupported EC curve (supported: P-256, P-384, P-521)",
                        ));
                    }
                };
                let x = b64url(&ec.x, "x")?;
                let y = b64url(&ec.y, "y")?;
                if x.len() != len || y.len() != len {
                    return Err(KeyError::invalid(
                        "EC coordinates have the wrong length for the curve",
                    ));
                }
                let mut point = Vec::with_capacity(1 + 2 * len);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                Self::build(key_type, DecodingKey::from_ec_der(&point))?
            }
            AlgorithmParameters::OctetKeyPair(okp) => {
                if okp.curve != EllipticCurve::Ed25519 {
                    return Err(KeyError::invalid(
                        "unsupported OKP curve (supported: Ed25519)",
                    ));
                }
                let x = b64url(&okp.x, "x")?;
                if x.len() != 32 {
                    return Err(KeyError::invalid("Ed25519 public key must be 32 bytes"));
                }
                Self::build(KeyType::Ed25519, DecodingKey::from_ed_der(&x))?
            }
            AlgorithmParameters::OctetKey(oct) => Self::hmac(&b64url(&oct.value, "k")?)?,
            _ => return Err(KeyError::invalid("unsupported JWK kty")),
        };
        let key = match &common.key_algorithm {
            None => key,
            Some(alg) => {
                // The member as written: jsonwebtoken's enum has no name for some algorithms
                // this crate verifies (ES512).
                let name = jwk
                    .get("alg")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
                    .or_else(|| {
                        serde_json::to_value(alg)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                    })
                    .unwrap_or_default();
                let alg: Algorithm = name.parse().map_err(|_| {
                    KeyError::invalid(format!(
                        "JWK alg {name:?} is not a supported signature algorithm"
                    ))
                })?;
                key.restrict_algorithms(alg.into())?
            }
        };
        Ok(match &common.key_id {
            Some(kid) => key.with_kid(kid.clone()),
            None => key,
        })
    }

    /// Names the key (the `kid` tokens refer to it by).
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.inner).kid = Some(kid.into());
        self
    }

    /// Narrows the algorithms this key may verify to those also in `allowed`.
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidKey`] when no algorithm is left: the configuration allows nothing
    /// this key can verify.
    pub fn restrict_algorithms(mut self, allowed: AlgorithmSet) -> Result<Self, KeyError> {
        let narrowed = self.inner.algorithms.intersection(allowed);
        if narrowed.is_empty() {
            return Err(KeyError::invalid(format!(
                "none of the algorithms {allowed:?} fits this {:?} key (it may verify {:?})",
                self.inner.key_type, self.inner.algorithms
            )));
        }
        Arc::make_mut(&mut self.inner).algorithms = narrowed;
        Ok(self)
    }

    /// The key's id.
    pub fn kid(&self) -> Option<&str> {
        self.inner.kid.as_deref()
    }

    /// The key's type.
    pub fn key_type(&self) -> KeyType {
        self.inner.key_type
    }

    /// The algorithms this key may verify.
    pub fn algorithms(&self) -> AlgorithmSet {
        self.inner.algorithms
    }

    /// Whether `signature` is a valid `alg` signature of `message` by this key. Always
    /// `false` when `alg` is not bound to this key.
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        self.verify_vec(alg, message, &signature.to_vec())
    }

    /// [`verify`](Self::verify) without a copy: jsonwebtoken's verifiers take `&Vec<u8>`.
    #[allow(clippy::ptr_arg)]
    pub(crate) fn verify_vec(&self, alg: Algorithm, message: &[u8], signature: &Vec<u8>) -> bool {
        if !self.inner.algorithms.contains(alg) {
            return false;
        }
        if let Some(valid) = self.inner.prepared.verify(alg, message, signature) {
            return valid;
        }
        let Some(jwt_alg) = alg.to_jsonwebtoken() else {
            // Only prepared keys verify what jsonwebtoken does not support (ES512).
            return false;
        };
        let provider = crate::crypto::provider();
        match (provider.verifier_factory)(&jwt_alg, &self.inner.key) {
            Ok(verifier) => verifier.verify(message, signature).is_ok(),
            Err(_) => false,
        }
    }
}

/// DER of the OID 1.2.840.10045.3.1.7 (P-256, `prime256v1`).
const OID_P256: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of the OID 1.3.132.0.34 (P-384, `secp384r1`).
const OID_P384: [u8; 7] = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// DER of the OID 1.3.132.0.35 (P-521, `secp521r1`).
const OID_P521: [u8; 7] = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];

/// The DER inside the first PEM block of `text`.
fn pem_der(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let body: String = text
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("-----BEGIN "))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END "))
        .filter(|l| !l.contains(':'))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

fn ec_point_type(point: &[u8]) -> Result<KeyType, KeyError> {
    match (point.first(), point.len()) {
        (Some(0x04), 65) => Ok(KeyType::EcP256),
        (Some(0x04), 97) => Ok(KeyType::EcP384),
        (Some(0x04), 133) => Ok(KeyType::EcP521),
        (Some(0x02 | 0x03), _) => Err(KeyError::invalid(
            "compressed EC points are not supported; use the uncompressed public key",
        )),
        _ => Err(KeyError::invalid(
            "unsupported EC curve (supported: P-256, P-384, P-521)",
        )),
    }
}

fn b64url(value: &str, member: &str) -> Result<Vec<u8>, KeyError> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|_| KeyError::invalid(format!("JWK member {member:?} is not base64url")))
}

/// A set of keys and the rule that picks one for a token.
///
/// - the token names a `kid`: the key with that `kid` that may verify the token's `alg`;
///   keys without a `kid` are considered only when no key has that `kid`;
/// - the token has no `kid`: the one key that may verify its `alg`; with several candidates
///   the token is rejected ([`KeyError::AmbiguousKey`]), never guessed.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
}

impl KeySet {
    /// A set of `keys`.
    pub fn new(keys: impl IntoIterator<Item = VerifyingKey>) -> Self {
        KeySet {
            keys: keys.into_iter().collect(),
        }
    }

    /// Parses a JWKS document (`{"keys": [...]}`) tolerantly, by the rules every key set
    /// follows (JWKS file, URL, discovery): a key that cannot be used (`use` other than
    /// `sig`, unsupported `kty` or curve, RSA under [`MIN_RSA_BITS`], bad parameters, private
    /// parts, no `kid` beside keys with one) is skipped with a `tracing` warning naming its
    /// `kid` and the reason. Symmetric (`oct`) keys are taken: this is for documents the
    /// operator wrote, while a set fetched from a URL never serves HMAC secrets.
    ///
    /// A single key given on its own ([`VerifyingKey::from_jwk_str`]) stays strict.
    ///
    /// ```
    /// use tower_gatekeeper::keys::KeySet;
    ///
    /// let set = KeySet::from_jwks_str(r#"{"keys":[
    ///     {"kty":"oct","kid":"hs","alg":"HS256","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC0"},
    ///     {"kty":"RSA","kid":"enc","use":"enc","n":"AQAB","e":"AQAB"}
    /// ]}"#).unwrap();
    /// assert_eq!(set.keys().len(), 1);
    /// assert!(KeySet::from_jwks_str(r#"{"keys":[]}"#).is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidKey`] when the text is not a JWKS, or when no key is usable (the
    /// text then names every key and why it was skipped).
    pub fn from_jwks_str(jwks: &str) -> Result<Self, KeyError> {
        Self::parse_jwks(jwks, "JWKS")
    }

    /// [`from_jwks_str`](Self::from_jwks_str), naming `source` in the warnings.
    pub(crate) fn parse_jwks(jwks: &str, source: &str) -> Result<Self, KeyError> {
        let keys = jwks::keys_array(jwks.as_bytes()).map_err(|e| match e {
            jwks::DocumentError::NotJson(reason) => {
                KeyError::invalid(format!("JWKS is not valid JSON: {reason}"))
            }
            jwks::DocumentError::NotAJwks(reason) => KeyError::invalid(format!("JWKS: {reason}")),
        })?;
        let parsed = jwks::parse_keys(&keys, jwks::Symmetric::Allow)
            .map_err(|report| KeyError::invalid(format!("JWKS has no usable key: {report}")))?;
        jwks::warn_skipped(source, &parsed.skipped);
        Ok(parsed.keys)
    }

    /// The keys.
    pub fn keys(&self) -> &[VerifyingKey] {
        &self.keys
    }

    /// The union of the algorithms the keys may verify.
    pub fn algorithms(&self) -> AlgorithmSet {
        self.keys
            .iter()
            .fold(AlgorithmSet::EMPTY, |acc, k| acc.union(k.algorithms()))
    }

    /// Narrows every key to `allowed`, dropping keys that can verify none of them.
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidKey`] when no key is left.
    pub fn restrict_algorithms(self, allowed: AlgorithmSet) -> Result<Self, KeyError> {
        let keys: Vec<_> = self
            .keys
            .into_iter()
            .filter_map(|k| k.restrict_algorithms(allowed).ok())
            .collect();
        if keys.is_empty() {
            return Err(KeyError::invalid(format!(
                "no configured key can verify any of the allowed algorithms {allowed:?}"
            )));
        }
        Ok(KeySet { keys })
    }

    /// Picks the key for `query`; see the type docs for the rule.
    ///
    /// # Errors
    ///
    /// [`KeyError::UnknownKid`], [`KeyError::AlgorithmMismatch`], [`KeyError::AmbiguousKey`]
    /// or [`KeyError::NoMatchingKey`].
    pub fn select(&self, query: &KeyQuery<'_>) -> Result<&VerifyingKey, KeyError> {
        let alg = query.alg();
        if let Some(kid) = query.kid() {
            let mut named = self.keys.iter().filter(|k| k.kid() == Some(kid)).peekable();
            if named.peek().is_some() {
                return only_one(named.filter(|k| k.algorithms().contains(alg))).map_err(|none| {
                    if none {
                        KeyError::AlgorithmMismatch
                    } else {
                        KeyError::AmbiguousKey
                    }
                });
            }
            let anonymous = self
                .keys
                .iter()
                .filter(|k| k.kid().is_none() && k.algorithms().contains(alg));
            return only_one(anonymous).map_err(|none| {
                if none {
                    KeyError::UnknownKid
                } else {
                    KeyError::AmbiguousKey
                }
            });
        }
        only_one(self.keys.iter().filter(|k| k.algorithms().contains(alg))).map_err(|none| {
            if none {
                KeyError::NoMatchingKey
            } else {
                KeyError::AmbiguousKey
            }
        })
    }
}

/// The single item of `iter`; `Err(true)` when empty, `Err(false)` when several.
fn only_one<'a>(
    mut iter: impl Iterator<Item = &'a VerifyingKey>,
) -> Result<&'a VerifyingKey, bool> {
    match (iter.next(), iter.next()) {
        (Some(key), None) => Ok(key),
        (None, _) => Err(true),
        (Some(_), Some(_)) => Err(false),
    }
}

#[cfg(test)]
mod tests;
