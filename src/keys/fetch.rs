//! Fetching key documents: the [`FetchError`] enum, and (feature `remote`) the
//! [`JwksFetcher`] trait and the [`JwksDocument`] it returns.

/// Why fetching or reading a remote key document failed. Texts name the URL and the problem,
/// never a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The server did not answer completely within the fetch timeout.
    #[error("{url}: no complete answer within the fetch timeout")]
    Timeout {
        /// The URL fetched.
        url: String,
    },
    /// The server could not be reached (connection refused, DNS, TLS, reset).
    #[error("{url}: cannot reach the server: {reason}")]
    Unreachable {
        /// The URL fetched.
        url: String,
        /// What the client reported.
        reason: String,
    },
    /// The server answered with a non-success status.
    #[error("{url}: HTTP status {status}")]
    Status {
        /// The URL fetched.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The body is larger than the configured limit.
    #[error("{url}: response larger than the limit of {limit} bytes")]
    TooLarge {
        /// The URL fetched.
        url: String,
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body is not JSON (wrong content type or invalid JSON).
    #[error("{url}: response is not JSON: {reason}")]
    NotJson {
        /// The URL fetched.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The body is JSON but not the expected document (no `keys` array, no `jwks_uri`, …).
    #[error("{url}: {reason}")]
    WrongContent {
        /// The URL fetched.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The JWKS was read but none of its keys can verify signatures; the report lists why
    /// each key was skipped.
    #[error("{url}: no usable key in the JWKS ({report})")]
    NoUsableKeys {
        /// The URL fetched.
        url: String,
        /// Why each key was skipped.
        report: String,
    },
    /// The discovery document names another issuer than the configured one (OpenID Connect
    /// Discovery §4.3 requires them to be identical).
    #[error(
        "{url}: the discovery document's issuer {found:?} is not the configured issuer {expected:?} (they must be identical, OpenID Connect Discovery 4.3)"
    )]
    IssuerMismatch {
        /// The discovery URL.
        url: String,
        /// The configured issuer.
        expected: String,
        /// The `issuer` the document names.
        found: String,
    },
    /// A pluggable fetcher failed; the text says why.
    #[error("{0}")]
    Other(String),
}

impl FetchError {
    /// Whether retrying may help (the server is down, slow or overloaded), as opposed to a
    /// document that is wrong and will stay wrong until someone fixes it. Start-up checks
    /// keep waiting on transient errors and fail fast on the others.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Timeout { .. } | FetchError::Unreachable { .. } | FetchError::Other(_) => {
                true
            }
            FetchError::Status { status, .. } => {
                *status >= 500 || *status == 404 || *status == 408 || *status == 429
            }
            _ => false,
        }
    }
}

#[cfg(feature = "remote")]
pub use self::fetcher::*;

#[cfg(feature = "remote")]
mod fetcher {
    use std::fmt;
    use std::future::Future;
    use std::pin::Pin;
    use std::time::Duration;

    use super::FetchError;
    use crate::keys::KeySet;
    use crate::keys::jwks;

    /// A fetched JWKS: its keys as JSON values (parsed tolerantly by the cache) and how long
    /// the server says it may be cached.
    #[derive(Debug, Clone, Default)]
    pub struct JwksDocument {
        pub(crate) keys: Vec<serde_json::Value>,
        pub(crate) max_age: Option<Duration>,
    }

    impl JwksDocument {
        /// A document with `keys` (the members of the JWKS's `keys` array).
        pub fn new(keys: Vec<serde_json::Value>) -> Self {
            JwksDocument {
                keys,
                max_age: None,
            }
        }

        /// Sets how long the document may be cached (`Cache-Control: max-age`).
        #[must_use]
        pub fn max_age(mut self, max_age: Option<Duration>) -> Self {
            self.max_age = max_age;
            self
        }

        /// The usable keys, parsed as the remote cache parses them: keys of unknown `kty`,
        /// `use: enc`, unusable parameters or (when others have one) no `kid` are skipped,
        /// each with a reason in the returned report.
        ///
        /// # Errors
        ///
        /// [`FetchError::NoUsableKeys`] when no key is usable.
        pub fn usable_keys(&self) -> Result<(KeySet, Vec<String>), FetchError> {
            self.parse("JWKS document").map(|parsed| {
                (
                    parsed.keys,
                    parsed.skipped.iter().map(ToString::to_string).collect(),
                )
            })
        }

        /// The usable keys and the skipped ones; `label` names the source in the error.
        pub(crate) fn parse(&self, label: &str) -> Result<jwks::Parsed, FetchError> {
            jwks::parse_keys(&self.keys, jwks::Symmetric::Skip).map_err(|report| {
                FetchError::NoUsableKeys {
                    url: label.to_owned(),
                    report,
                }
            })
        }

        /// Parses a JWKS document (`{"keys": [...]}`) from `body`; `url` names it in errors.
        ///
        /// # Errors
        ///
        /// [`FetchError::NotJson`] or [`FetchError::WrongContent`].
        pub fn from_json(url: &str, body: &[u8]) -> Result<Self, FetchError> {
            match jwks::keys_array(body) {
                Ok(keys) => Ok(JwksDocument::new(keys)),
                Err(jwks::DocumentError::NotJson(reason)) => Err(FetchError::NotJson {
                    url: url.to_owned(),
                    reason,
                }),
                Err(jwks::DocumentError::NotAJwks(reason)) => Err(FetchError::WrongContent {
                    url: url.to_owned(),
                    reason: reason.to_owned(),
                }),
            }
        }
    }

    /// The future a [`JwksFetcher`] returns.
    pub type FetchFuture<'a> =
        Pin<Box<dyn Future<Output = Result<JwksDocument, FetchError>> + Send + 'a>>;

    /// Fetches a JWKS. [`RemoteJwks`](crate::keys::RemoteJwks) calls it from its background
    /// task, one call at a time, under its own timeout; everything else (caching, refresh,
    /// unknown-`kid` throttling, tolerant parsing, staleness) is the cache's job.
    ///
    /// The built-in implementations are plain HTTP(S) (used by
    /// [`RemoteJwks::builder`](crate::keys::RemoteJwks::builder)), OIDC discovery
    /// ([`RemoteJwks::discovery`](crate::keys::RemoteJwks::discovery)) and, with the
    /// `jwks-client-rs` feature, a jwks-client-rs `JwksSource`.
    pub trait JwksFetcher: fmt::Debug + Send + Sync + 'static {
        /// Fetches the current document.
        fn fetch(&self) -> FetchFuture<'_>;

        /// Where the keys come from, for logs and errors (usually a URL).
        fn describe(&self) -> String;
    }
}
