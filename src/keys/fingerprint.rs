//! [`KeyFingerprint`]: the identity of a verification key's material, whatever its `kid`.

use std::fmt;

use jsonwebtoken::{DecodingKey, DecodingKeyKind};
use sha2::{Digest, Sha256};

use super::KeyType;

/// A fingerprint of a verification key's material: the SHA-256 of its type and its public
/// key (RSA modulus and exponent, EC point, Ed25519 key; for an HMAC secret, of the secret,
/// which the digest does not reveal). Two keys have the same fingerprint exactly when they
/// verify the same signatures, whatever their `kid`.
///
/// A verified [`AuthContext`](crate::AuthContext) remembers the fingerprint of the key that
/// verified it, so that a cache of verified tokens can tell a key replaced under the same
/// `kid` from the key it trusted ([`KeySource::contains_key`](super::KeySource::contains_key)).
///
/// ```
/// use tower_gatekeeper::keys::SigningKey;
///
/// let a = SigningKey::generate_ed25519().unwrap().with_kid("k1");
/// let b = SigningKey::generate_ed25519().unwrap().with_kid("k1");
/// let renamed = a.verifying_key().clone().with_kid("k2");
/// assert_eq!(a.verifying_key().fingerprint(), renamed.fingerprint());
/// assert_ne!(a.verifying_key().fingerprint(), b.verifying_key().fingerprint());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyFingerprint([u8; 32]);

impl KeyFingerprint {
    pub(crate) fn of(key_type: KeyType, key: &DecodingKey) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"tower-gatekeeper key fingerprint\0");
        let tag = match key_type {
            KeyType::Rsa { .. } => "rsa",
            KeyType::Hmac => "hmac",
            _ => "public",
        };
        let mut part = |bytes: &[u8]| {
            hash.update((bytes.len() as u64).to_be_bytes());
            hash.update(bytes);
        };
        part(tag.as_bytes());
        part(format!("{key_type:?}").as_bytes());
        match key.kind() {
            DecodingKeyKind::SecretOrDer(bytes) => part(bytes),
            DecodingKeyKind::RsaModulusExponent { n, e } => {
                part(strip_zeros(n));
                part(strip_zeros(e));
            }
        }
        KeyFingerprint(hash.finalize().into())
    }

    /// The fingerprint's 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

impl fmt::Debug for KeyFingerprint {
    /// The first 8 bytes in hex: enough to tell keys apart in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyFingerprint(")?;
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "…)")
    }
}
