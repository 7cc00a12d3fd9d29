use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::EncodingKey;
use jsonwebtoken::jwk::EllipticCurve;
use serde_json::{Map, Value};

use super::{KeyError, VerifyingKey};
use crate::algorithm::Algorithm;

/// A private key that mints compact JWS tokens: for demos, tests and (later) signed context.
///
/// The gateway itself only verifies; this type exists so that the runnable example and the
/// tests can mint tokens without a second JOSE library in the dependency tree.
///
/// ```
/// use tower_gatekeeper::keys::SigningKey;
/// use serde_json::json;
///
/// let key = SigningKey::generate_ed25519().unwrap().with_kid("demo");
/// let token = key.sign(&json!({"sub": "user-1", "exp": 4102444800u64})).unwrap();
/// assert_eq!(token.split('.').count(), 3);
/// assert_eq!(key.verifying_key().kid(), Some("demo"));
/// ```
#[derive(Clone)]
pub struct SigningKey {
    alg: Algorithm,
    key: EncodingKey,
    public: VerifyingKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.public.kid())
            .finish_non_exhaustive()
    }
}

/// PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410 §7), followed by the 32-byte seed.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

impl SigningKey {
    /// A fresh Ed25519 key from the operating system's random source.
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidKey`] when no randomness is available.
    pub fn generate_ed25519() -> Result<Self, KeyError> {
        let mut der = ED25519_PKCS8_PREFIX.to_vec();
        let mut seed = [0u8; 32];
        crate::crypto::random_bytes(&mut seed)
            .map_err(|e| KeyError::invalid(format!("no randomness available: {e}")))?;
        der.extend_from_slice(&seed);
        Self::from_private(Algorithm::EdDSA, EncodingKey::from_ed_der(&der))
    }

    /// A private key from PEM (PKCS#8 `PRIVATE KEY`, or PKCS#1 `RSA PRIVATE KEY`) for `alg`.
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidKey`] when the PEM does not hold a private key for `alg`.
    pub fn from_pem(alg: Algorithm, pem: &[u8]) -> Result<Self, KeyError> {
        let key = match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => EncodingKey::from_rsa_pem(pem),
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
            Algorithm::ES512 => {
                return Err(KeyError::invalid(
                    "ES512 keys verify only: signing with ES512 is not supported",
                ));
            }
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                return Err(KeyError::invalid(
                    "HMAC keys are secrets, use SigningKey::hmac",
                ));
            }
        }
        .map_err(|e| KeyError::invalid(format!("not a private key for {alg}: {e}")))?;
        Self::from_private(alg, key)
    }

    /// An HMAC key for `alg`.
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidKey`] when `alg` is not HS* or the secret is too short for it.
    pub fn hmac(alg: Algorithm, secret: &[u8]) -> Result<Self, KeyError> {
        if !alg.is_hmac() {
            return Err(KeyError::invalid(format!("{alg} is not an HMAC algorithm")));
        }
        let public = VerifyingKey::hmac(secret)?.restrict_algorithms(alg.into())?;
        Ok(SigningKey {
            alg,
            key: EncodingKey::from_secret(secret),
            public,
        })
    }

    fn from_private(alg: Algorithm, key: EncodingKey) -> Result<Self, KeyError> {
        let utils = &crate::crypto::provider().key_utils;
        let der = key.as_bytes();
        let public = match alg {
            Algorithm::EdDSA => {
                let x = (utils.ed_pub_components_from_private_key)(der, &EllipticCurve::Ed25519)
                    .map_err(|e| KeyError::invalid(format!("bad Ed25519 private key: {e}")))?;
                VerifyingKey::from_jwk_value(&serde_json::json!({
                    "kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(x),
                }))?
            }
            Algorithm::ES256 | Algorithm::ES384 => {
                let (_, x, y) = (utils.ec_pub_components_from_private_key)(der, jwt_alg(alg)?)
                    .map_err(|e| KeyError::invalid(format!("bad EC private key: {e}")))?;
                let crv = if alg == Algorithm::ES256 {
                    "P-256"
                } else {
                    "P-384"
                };
                VerifyingKey::from_jwk_value(&serde_json::json!({
                    "kty": "EC", "crv": crv,
                    "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
                }))?
            }
            _ => {
                let (n, e) = (utils.rsa_pub_components_from_private_key)(der)
                    .map_err(|e| KeyError::invalid(format!("bad RSA private key: {e}")))?;
                VerifyingKey::rsa_components(&n, &e)?
            }
        };
        let public = public.restrict_algorithms(alg.into())?;
        Ok(SigningKey { alg, key, public })
    }

    /// Sets the `kid` put in the header of minted tokens (and on the verifying key).
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.public = self.public.with_kid(kid);
        self
    }

    /// The signing algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The key id, when set.
    pub fn kid(&self) -> Option<&str> {
        self.public.kid()
    }

    /// The public key that verifies this key's signatures.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// Mints a compact JWS of `claims` with header `{"alg", "typ": "JWT", "kid"}`.
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidKey`] when signing fails.
    pub fn sign(&self, claims: &Value) -> Result<String, KeyError> {
        self.sign_with_header(Map::new(), claims)
    }

    /// Mints a compact JWS of `claims`; `header` adds or overrides header members (`alg`
    /// always stays this key's algorithm).
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidKey`] when signing fails.
    pub fn sign_with_header(
        &self,
        header: Map<String, Value>,
        claims: &Value,
    ) -> Result<String, KeyError> {
        let mut full = Map::new();
        full.insert("typ".into(), "JWT".into());
        if let Some(kid) = self.kid() {
            full.insert("kid".into(), kid.into());
        }
        full.extend(header);
        full.insert("alg".into(), self.alg.as_str().into());
        let mut token = URL_SAFE_NO_PAD.encode(Value::Object(full).to_string());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signer = (crate::crypto::provider().signer_factory)(&jwt_alg(self.alg)?, &self.key)
            .map_err(|e| KeyError::invalid(format!("cannot sign: {e}")))?;
        let signature = signer
            .try_sign(token.as_bytes())
            .map_err(|e| KeyError::invalid(format!("cannot sign: {e}")))?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(token)
    }
}

/// jsonwebtoken's name of `alg`, for the algorithms it signs with.
fn jwt_alg(alg: Algorithm) -> Result<jsonwebtoken::Algorithm, KeyError> {
    alg.to_jsonwebtoken()
        .ok_or_else(|| KeyError::invalid(format!("signing with {alg} is not supported")))
}
