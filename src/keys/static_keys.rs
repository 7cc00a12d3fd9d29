use std::future::{Ready, ready};
use std::path::Path;
use std::sync::Arc;

use super::{KeyError, KeyQuery, KeySet, KeySource, VerifyingKey};

/// A [`KeySource`] over keys known at start-up: PEM, JWK, a JWKS file or an HMAC secret.
///
/// Lookups never wait: the future is always ready. Selection follows [`KeySet::select`].
///
/// ```
/// use tower_gatekeeper::keys::{StaticKeys, VerifyingKey};
///
/// let keys = StaticKeys::from_jwks_str(r#"{"keys":[{"kty":"oct","kid":"k","alg":"HS256",
///     "k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC0"}]}"#).unwrap();
/// assert_eq!(keys.key_set().keys().len(), 1);
/// ```
#[derive(Debug, Clone)]
pub struct StaticKeys {
    set: Arc<KeySet>,
}

impl StaticKeys {
    /// A source over `keys`.
    pub fn new(keys: impl IntoIterator<Item = VerifyingKey>) -> Self {
        Self::from_key_set(KeySet::new(keys))
    }

    /// A source over a [`KeySet`].
    pub fn from_key_set(set: KeySet) -> Self {
        StaticKeys { set: Arc::new(set) }
    }

    /// A source over the usable keys of a JWKS document; unusable keys are skipped with a
    /// warning, as [`KeySet::from_jwks_str`] describes.
    ///
    /// # Errors
    ///
    /// See [`KeySet::from_jwks_str`].
    pub fn from_jwks_str(jwks: &str) -> Result<Self, KeyError> {
        KeySet::from_jwks_str(jwks).map(Self::from_key_set)
    }

    /// A source over the usable keys of a JWKS file, parsed as
    /// [`KeySet::from_jwks_str`] parses a document; the warnings for skipped keys name the
    /// file.
    ///
    /// # Errors
    ///
    /// [`KeyError::Io`] when the file cannot be read, else as [`KeySet::from_jwks_str`].
    pub fn from_jwks_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        let text = read_to_string(path)?;
        KeySet::parse_jwks(&text, &path.display().to_string()).map(Self::from_key_set)
    }

    /// A source over one public key read from a PEM file.
    ///
    /// # Errors
    ///
    /// [`KeyError::Io`] when the file cannot be read, else as [`VerifyingKey::from_pem`].
    pub fn from_pem_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        let pem = std::fs::read(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self::new([VerifyingKey::from_pem(&pem)?]))
    }

    /// A source over one HMAC secret read from a file. Trailing line breaks (`\n`, `\r\n`)
    /// are not part of the secret; every other byte is.
    ///
    /// # Errors
    ///
    /// [`KeyError::Io`] when the file cannot be read, else as [`VerifyingKey::hmac`].
    pub fn from_hmac_secret_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        let secret = std::fs::read(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        let end = secret
            .iter()
            .rposition(|b| !matches!(b, b'\n' | b'\r'))
            .map_or(0, |i| i + 1);
        Ok(Self::new([VerifyingKey::hmac(&secret[..end])?]))
    }

    /// The keys.
    pub fn key_set(&self) -> &KeySet {
        &self.set
    }
}

fn read_to_string(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })
}

impl KeySource for StaticKeys {
    type Future = Ready<Result<VerifyingKey, KeyError>>;

    fn key(&self, query: &KeyQuery<'_>) -> Self::Future {
        ready(self.set.select(query).cloned())
    }

    fn algorithms(&self) -> Option<crate::AlgorithmSet> {
        Some(self.set.algorithms())
    }
}
