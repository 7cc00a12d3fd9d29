//! JWS signature algorithms (RFC 7518 §3) and the sets of them a key may verify.

use std::fmt;
use std::str::FromStr;

/// A JWS signature algorithm this crate can verify (RFC 7518 §3, RFC 8037).
///
/// Parsing is exact and case-sensitive, as RFC 7515 §4.1.1 requires: `"none"`, `"None"`,
/// `"NONE"` or any other spelling of the unsecured algorithm is not an `Algorithm`, so an
/// unsigned token can never be accepted.
///
/// ```
/// use tower_gatekeeper::Algorithm;
///
/// assert_eq!("RS256".parse::<Algorithm>(), Ok(Algorithm::RS256));
/// assert!("none".parse::<Algorithm>().is_err());
/// assert!("rs256".parse::<Algorithm>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Algorithm {
    /// HMAC using SHA-256.
    HS256,
    /// HMAC using SHA-384.
    HS384,
    /// HMAC using SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 using SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 using SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 using SHA-512.
    RS512,
    /// RSASSA-PSS using SHA-256 and MGF1 with SHA-256.
    PS256,
    /// RSASSA-PSS using SHA-384 and MGF1 with SHA-384.
    PS384,
    /// RSASSA-PSS using SHA-512 and MGF1 with SHA-512.
    PS512,
    /// ECDSA using P-256 and SHA-256.
    ES256,
    /// ECDSA using P-384 and SHA-384.
    ES384,
    /// EdDSA with the Ed25519 curve (RFC 8037).
    EdDSA,
    /// ECDSA using P-521 and SHA-512.
    ES512,
}

impl Algorithm {
    /// Every algorithm, in a fixed order.
    pub const ALL: [Algorithm; 13] = [
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::ES512,
        Algorithm::EdDSA,
    ];

    /// The registered name, as it appears in a JOSE header.
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::HS256 => "HS256",
            Algorithm::HS384 => "HS384",
            Algorithm::HS512 => "HS512",
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::ES512 => "ES512",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// Whether this is a symmetric (HMAC) algorithm.
    pub const fn is_hmac(self) -> bool {
        matches!(self, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
    }

    /// The smallest HMAC secret, in bytes, RFC 7518 §3.2 allows for this algorithm
    /// (the hash output size); `None` for asymmetric algorithms.
    pub const fn min_hmac_secret_len(self) -> Option<usize> {
        match self {
            Algorithm::HS256 => Some(32),
            Algorithm::HS384 => Some(48),
            Algorithm::HS512 => Some(64),
            _ => None,
        }
    }

    const fn bit(self) -> u16 {
        1 << (self as u16)
    }

    pub(crate) fn to_jsonwebtoken(self) -> Option<jsonwebtoken::Algorithm> {
        use jsonwebtoken::Algorithm as J;
        Some(match self {
            Algorithm::HS256 => J::HS256,
            Algorithm::HS384 => J::HS384,
            Algorithm::HS512 => J::HS512,
            Algorithm::RS256 => J::RS256,
            Algorithm::RS384 => J::RS384,
            Algorithm::RS512 => J::RS512,
            Algorithm::PS256 => J::PS256,
            Algorithm::PS384 => J::PS384,
            Algorithm::PS512 => J::PS512,
            Algorithm::ES256 => J::ES256,
            Algorithm::ES384 => J::ES384,
            Algorithm::EdDSA => J::EdDSA,
            // jsonwebtoken has no ES512: this crate verifies it itself (src/crypto.rs).
            Algorithm::ES512 => return None,
        })
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error returned when a string is not the exact name of a supported [`Algorithm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unsupported or unknown JWS algorithm")]
pub struct UnknownAlgorithm;

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|alg| alg.as_str() == s)
            .ok_or(UnknownAlgorithm)
    }
}

/// A set of [`Algorithm`]s, such as the algorithms a key may verify or an issuer's allow-list.
///
/// ```
/// use tower_gatekeeper::{Algorithm, AlgorithmSet};
///
/// let rsa = AlgorithmSet::RSA;
/// assert!(rsa.contains(Algorithm::PS256));
/// assert!(!rsa.contains(Algorithm::HS256));
/// let allowed: AlgorithmSet = [Algorithm::RS256, Algorithm::ES256].into_iter().collect();
/// assert_eq!(rsa.intersection(allowed), AlgorithmSet::from(Algorithm::RS256));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AlgorithmSet(u16);

impl AlgorithmSet {
    /// No algorithm.
    pub const EMPTY: AlgorithmSet = AlgorithmSet(0);
    /// HS256, HS384, HS512.
    pub const HMAC: AlgorithmSet =
        AlgorithmSet(Algorithm::HS256.bit() | Algorithm::HS384.bit() | Algorithm::HS512.bit());
    /// RS256, RS384, RS512, PS256, PS384, PS512.
    pub const RSA: AlgorithmSet = AlgorithmSet(
        Algorithm::RS256.bit()
            | Algorithm::RS384.bit()
            | Algorithm::RS512.bit()
            | Algorithm::PS256.bit()
            | Algorithm::PS384.bit()
            | Algorithm::PS512.bit(),
    );

    /// Whether `alg` is in the set.
    pub const fn contains(self, alg: Algorithm) -> bool {
        self.0 & alg.bit() != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The algorithms in both sets.
    #[must_use]
    pub const fn intersection(self, other: AlgorithmSet) -> AlgorithmSet {
        AlgorithmSet(self.0 & other.0)
    }

    /// The algorithms in either set.
    #[must_use]
    pub const fn union(self, other: AlgorithmSet) -> AlgorithmSet {
        AlgorithmSet(self.0 | other.0)
    }

    /// The set with `alg` added.
    #[must_use]
    pub const fn with(self, alg: Algorithm) -> AlgorithmSet {
        AlgorithmSet(self.0 | alg.bit())
    }

    /// The algorithms in the set, in [`Algorithm::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Algorithm> {
        Algorithm::ALL
            .into_iter()
            .filter(move |a| self.contains(*a))
    }
}

impl From<Algorithm> for AlgorithmSet {
    fn from(alg: Algorithm) -> Self {
        AlgorithmSet(alg.bit())
    }
}

impl FromIterator<Algorithm> for AlgorithmSet {
    fn from_iter<I: IntoIterator<Item = Algorithm>>(iter: I) -> Self {
        iter.into_iter()
            .fold(AlgorithmSet::EMPTY, AlgorithmSet::with)
    }
}

impl fmt::Debug for AlgorithmSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_is_exact_and_rejects_none() {
        for alg in Algorithm::ALL {
            assert_eq!(alg.as_str().parse::<Algorithm>(), Ok(alg));
        }
        for bad in [
            "none", "None", "NONE", "nOnE", "rs256", "RS256 ", "", "es512", "ES521", "HS256\0",
        ] {
            assert!(bad.parse::<Algorithm>().is_err(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn sets() {
        assert!(AlgorithmSet::HMAC.iter().all(Algorithm::is_hmac));
        assert_eq!(AlgorithmSet::RSA.iter().count(), 6);
        assert!(
            AlgorithmSet::RSA
                .intersection(AlgorithmSet::HMAC)
                .is_empty()
        );
    }
}
