//! Selection of jsonwebtoken's crypto backend, without its process-wide default.
//!
//! jsonwebtoken 11 picks a process-level `CryptoProvider` from its features and panics when
//! both or neither are enabled. We never rely on that default: every signature is checked
//! through the provider chosen here, at compile time, from our own features. With both
//! `aws-lc-rs` and `rust-crypto` enabled (`--all-features`), aws-lc-rs is used.

use jsonwebtoken::crypto::CryptoProvider;

#[cfg(not(any(feature = "aws-lc-rs", feature = "rust-crypto")))]
compile_error!(
    "tower-gatekeeper needs a crypto backend: enable the `aws-lc-rs` (default) or the `rust-crypto` feature"
);

/// The provider every verification and signature of this crate goes through.
pub(crate) fn provider() -> &'static CryptoProvider {
    #[cfg(feature = "aws-lc-rs")]
    {
        &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER
    }
    #[cfg(all(feature = "rust-crypto", not(feature = "aws-lc-rs")))]
    {
        &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER
    }
}

/// The name of the compiled-in backend, for logs and the README's figures.
pub const BACKEND: &str = if cfg!(feature = "aws-lc-rs") {
    "aws-lc-rs"
} else {
    "rust-crypto"
};

/// Fills `buf` with random bytes from the operating system.
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<(), getrandom::Error> {
    getrandom::fill(buf)
}

/// A verification key prepared once, when it is loaded, for every algorithm it may verify.
///
/// jsonwebtoken builds its verifier per call: aws-lc-rs then parses the RSA, EC or Ed25519
/// public key (and checks an EC point is on its curve) and derives the HMAC key for every
/// token. With aws-lc-rs we keep parsed keys (`ParsedPublicKey`, `hmac::Key`) instead, so a
/// verification is the signature check alone, and a key aws-lc-rs refuses (an EC point off
/// its curve, an unusable RSA key) fails when it is loaded rather than on every token. With
/// rust-crypto alone, verification goes through jsonwebtoken's provider per call, and EC
/// points are checked at load with the `p256` / `p384` crates it uses.
///
/// ES512 (P-521) is not in jsonwebtoken's providers: with aws-lc-rs it is a prepared key
/// like the others (`ECDSA_P521_SHA512_FIXED`); with rust-crypto alone the key keeps a
/// `p521` verifying key (the point checked on its curve at load) and verifies the fixed
/// 132-byte `r || s` signature with it.
#[derive(Clone, Default)]
pub(crate) struct PreparedKey {
    #[cfg(feature = "aws-lc-rs")]
    verifiers: Vec<(crate::Algorithm, aws::Verifier)>,
    #[cfg(not(feature = "aws-lc-rs"))]
    es512: Option<p521::ecdsa::VerifyingKey>,
}

impl PreparedKey {
    /// Prepares `key` for each of `algorithms`.
    ///
    /// # Errors
    ///
    /// A message naming what the backend refused in the key.
    #[cfg_attr(
        not(feature = "aws-lc-rs"),
        allow(clippy::unnecessary_wraps, unused_variables)
    )]
    pub(crate) fn new(
        key: &jsonwebtoken::DecodingKey,
        algorithms: crate::AlgorithmSet,
    ) -> Result<Self, &'static str> {
        #[cfg(feature = "aws-lc-rs")]
        {
            let verifiers = algorithms
                .iter()
                .map(|alg| aws::Verifier::new(key, alg).map(|v| (alg, v)))
                .collect::<Result<_, _>>()?;
            Ok(PreparedKey { verifiers })
        }
        #[cfg(not(feature = "aws-lc-rs"))]
        {
            // Nothing is kept, but an EC point must still be on its curve (aws-lc-rs checks
            // that when parsing).
            use crate::Algorithm;
            let mut es512 = None;
            if let jsonwebtoken::DecodingKeyKind::SecretOrDer(point) = key.kind() {
                let on_curve = (!algorithms.contains(Algorithm::ES256)
                    || p256::PublicKey::from_sec1_bytes(point).is_ok())
                    && (!algorithms.contains(Algorithm::ES384)
                        || p384::PublicKey::from_sec1_bytes(point).is_ok());
                if !on_curve {
                    return Err("the EC public key is not a point on its curve");
                }
                if algorithms.contains(Algorithm::ES512) {
                    es512 = Some(
                        p521::ecdsa::VerifyingKey::from_sec1_bytes(point)
                            .map_err(|_| "the EC public key is not a point on its curve")?,
                    );
                }
            }
            Ok(PreparedKey { es512 })
        }
    }

    /// `Some(valid)` when this key was prepared for `alg`; `None` sends the caller to
    /// jsonwebtoken's provider.
    #[cfg_attr(
        not(feature = "aws-lc-rs"),
        allow(clippy::unused_self, unused_variables)
    )]
    #[inline]
    pub(crate) fn verify(
        &self,
        alg: crate::Algorithm,
        message: &[u8],
        signature: &[u8],
    ) -> Option<bool> {
        #[cfg(feature = "aws-lc-rs")]
        {
            self.verifiers
                .iter()
                .find(|(a, _)| *a == alg)
                .map(|(_, v)| v.verify(message, signature))
        }
        #[cfg(not(feature = "aws-lc-rs"))]
        {
            if alg != crate::Algorithm::ES512 {
                return None;
            }
            // An ES512 signature is the fixed-size r || s of RFC 7518 §3.4 (66 + 66 bytes).
            let key = self.es512.as_ref()?;
            let valid = p521::ecdsa::Signature::from_slice(signature).is_ok_and(|sig| {
                p521::ecdsa::signature::Verifier::verify(key, message, &sig).is_ok()
            });
            Some(valid)
        }
    }
}

#[cfg(feature = "aws-lc-rs")]
mod aws {
    use aws_lc_rs::{hmac, signature};
    use jsonwebtoken::{DecodingKey, DecodingKeyKind};

    use crate::Algorithm;

    /// One algorithm's parsed key. The parameters are those of jsonwebtoken's aws-lc-rs
    /// provider (fixed-size ECDSA signatures, RSA moduli of 2048 to 8192 bits).
    #[derive(Clone)]
    pub(super) enum Verifier {
        Public(signature::ParsedPublicKey),
        /// Boxed: aws-lc-rs keeps the precomputed inner and outer states (1.2 KB).
        Hmac(Box<hmac::Key>),
    }

    impl Verifier {
        pub(super) fn new(key: &DecodingKey, alg: Algorithm) -> Result<Self, &'static str> {
            let hmac_alg = match alg {
                Algorithm::HS256 => Some(hmac::HMAC_SHA256),
                Algorithm::HS384 => Some(hmac::HMAC_SHA384),
                Algorithm::HS512 => Some(hmac::HMAC_SHA512),
                _ => None,
            };
            if let Some(hmac_alg) = hmac_alg {
                let secret = key.try_get_as_bytes().map_err(|_| "not an HMAC secret")?;
                return Ok(Verifier::Hmac(Box::new(hmac::Key::new(hmac_alg, secret))));
            }
            let rsa: Option<&'static signature::RsaParameters> = match alg {
                Algorithm::RS256 => Some(&signature::RSA_PKCS1_2048_8192_SHA256),
                Algorithm::RS384 => Some(&signature::RSA_PKCS1_2048_8192_SHA384),
                Algorithm::RS512 => Some(&signature::RSA_PKCS1_2048_8192_SHA512),
                Algorithm::PS256 => Some(&signature::RSA_PSS_2048_8192_SHA256),
                Algorithm::PS384 => Some(&signature::RSA_PSS_2048_8192_SHA384),
                Algorithm::PS512 => Some(&signature::RSA_PSS_2048_8192_SHA512),
                _ => None,
            };
            let parsed = match (rsa, key.kind()) {
                (Some(params), DecodingKeyKind::RsaModulusExponent { n, e }) => {
                    signature::RsaPublicKeyComponents { n, e }
                        .to_parsed_public_key(params)
                        .map_err(|_| "the RSA public key was refused by aws-lc-rs")?
                }
                (Some(params), DecodingKeyKind::SecretOrDer(der)) => {
                    signature::ParsedPublicKey::new(params, der)
                        .map_err(|_| "the RSA public key was refused by aws-lc-rs")?
                }
                (None, DecodingKeyKind::SecretOrDer(bytes)) => {
                    let params: &'static dyn signature::VerificationAlgorithm = match alg {
                        Algorithm::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
                        Algorithm::ES384 => &signature::ECDSA_P384_SHA384_FIXED,
                        Algorithm::ES512 => &signature::ECDSA_P521_SHA512_FIXED,
                        Algorithm::EdDSA => &signature::ED25519,
                        _ => return Err("no verification algorithm for this key"),
                    };
                    signature::ParsedPublicKey::new(params, bytes).map_err(|_| {
                        if alg == Algorithm::EdDSA {
                            "the Ed25519 public key was refused by aws-lc-rs"
                        } else {
                            "the EC public key is not a point on its curve"
                        }
                    })?
                }
                (None, DecodingKeyKind::RsaModulusExponent { .. }) => {
                    return Err("an RSA key cannot verify this algorithm");
                }
            };
            Ok(Verifier::Public(parsed))
        }

        #[inline]
        pub(super) fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
            match self {
                Verifier::Public(key) => key.verify_sig(message, sig).is_ok(),
                // Constant time (aws-lc-rs compares tags with CRYPTO_memcmp).
                Verifier::Hmac(key) => hmac::verify(key, message, sig).is_ok(),
            }
        }
    }
}
