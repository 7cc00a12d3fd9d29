//! Fetching key documents: the [`FetchError`] enum, and (feature `remote`) the
//! [`JwksFetcher`] trait with its HTTP implementation.

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
pub use self::remote::*;

#[cfg(feature = "remote")]
mod remote {
    use std::fmt;
    use std::future::Future;
    use std::pin::Pin;
    use std::time::Duration;

    use super::FetchError;

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
        pub fn usable_keys(&self) -> Result<(crate::keys::KeySet, Vec<String>), FetchError> {
            crate::keys::remote::parse_tolerant("JWKS document", self)
        }

        /// Parses a JWKS document (`{"keys": [...]}`) from `body`; `url` names it in errors.
        ///
        /// # Errors
        ///
        /// [`FetchError::NotJson`] or [`FetchError::WrongContent`].
        pub fn from_json(url: &str, body: &[u8]) -> Result<Self, FetchError> {
            let value: serde_json::Value =
                serde_json::from_slice(body).map_err(|e| FetchError::NotJson {
                    url: url.to_owned(),
                    reason: e.to_string(),
                })?;
            match value {
                serde_json::Value::Object(mut doc) => match doc.remove("keys") {
                    Some(serde_json::Value::Array(keys)) => Ok(JwksDocument::new(keys)),
                    _ => Err(FetchError::WrongContent {
                        url: url.to_owned(),
                        reason: "not a JWKS: no \"keys\" array".to_owned(),
                    }),
                },
                _ => Err(FetchError::WrongContent {
                    url: url.to_owned(),
                    reason: "not a JWKS: the document is not a JSON object".to_owned(),
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

    /// The HTTP client shared by the built-in fetchers: timeouts, no redirects, a size limit.
    #[derive(Debug, Clone)]
    pub(crate) struct Http {
        client: reqwest::Client,
        max_bytes: usize,
    }

    impl Http {
        pub(crate) fn new(timeout: Duration, max_bytes: usize) -> Result<Self, String> {
            let client = reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("tower-gatekeeper/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
            Ok(Http { client, max_bytes })
        }

        /// GETs `url`, checks status, content type and size, and returns the JSON body and
        /// the `Cache-Control: max-age`.
        pub(crate) async fn get_json(
            &self,
            url: &str,
        ) -> Result<(Vec<u8>, Option<Duration>), FetchError> {
            let transport = |e: reqwest::Error| {
                if e.is_timeout() {
                    FetchError::Timeout {
                        url: url.to_owned(),
                    }
                } else {
                    FetchError::Unreachable {
                        url: url.to_owned(),
                        reason: error_chain(&e),
                    }
                }
            };
            let mut response = self
                .client
                .get(url)
                .header(
                    reqwest::header::ACCEPT,
                    "application/jwk-set+json, application/json",
                )
                .send()
                .await
                .map_err(transport)?;
            let status = response.status();
            if !status.is_success() {
                return Err(FetchError::Status {
                    url: url.to_owned(),
                    status: status.as_u16(),
                });
            }
            if let Some(ct) = response.headers().get(reqwest::header::CONTENT_TYPE) {
                let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
                let essence = ct.split(';').next().unwrap_or("").trim();
                if !(essence == "application/json" || essence.ends_with("+json")) {
                    return Err(FetchError::NotJson {
                        url: url.to_owned(),
                        reason: format!("content type is {essence:?}, expected application/json"),
                    });
                }
            }
            let too_large = || FetchError::TooLarge {
                url: url.to_owned(),
                limit: self.max_bytes,
            };
            if response
                .content_length()
                .is_some_and(|len| len > self.max_bytes as u64)
            {
                return Err(too_large());
            }
            let max_age = response
                .headers()
                .get_all(reqwest::header::CACHE_CONTROL)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(parse_max_age);
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(transport)? {
                if body.len() + chunk.len() > self.max_bytes {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok((body, max_age))
        }
    }

    fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(e) = source {
            text.push_str(": ");
            text.push_str(&e.to_string());
            source = e.source();
        }
        text
    }

    /// How long a response may be cached per one `Cache-Control` value: `max-age=N`, or zero
    /// for `no-cache`/`no-store` (the cache's lower bound then applies).
    pub(crate) fn parse_max_age(value: &str) -> Option<Duration> {
        let mut result = None;
        for directive in value.split(',') {
            let directive = directive.trim();
            let (name, arg) = match directive.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (directive, None),
            };
            if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store") {
                return Some(Duration::ZERO);
            }
            if name.eq_ignore_ascii_case("max-age") {
                result = arg
                    .and_then(|a| a.parse::<u64>().ok())
                    .map(Duration::from_secs);
            }
        }
        result
    }

    /// The plain JWKS-over-HTTP fetcher.
    #[derive(Debug)]
    pub(crate) struct HttpJwks {
        pub(crate) http: Http,
        pub(crate) url: String,
    }

    impl JwksFetcher for HttpJwks {
        fn fetch(&self) -> FetchFuture<'_> {
            Box::pin(async move {
                let (body, max_age) = self.http.get_json(&self.url).await?;
                Ok(JwksDocument::from_json(&self.url, &body)?.max_age(max_age))
            })
        }

        fn describe(&self) -> String {
            self.url.clone()
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn cache_control_max_age() {
            assert_eq!(
                parse_max_age("public, max-age=300"),
                Some(Duration::from_secs(300))
            );
            assert_eq!(
                parse_max_age("Max-Age=\"60\", must-revalidate"),
                Some(Duration::from_secs(60))
            );
            assert_eq!(parse_max_age("no-cache"), Some(Duration::ZERO));
            assert_eq!(parse_max_age("public"), None);
            assert_eq!(parse_max_age("max-age=soon"), None);
        }
    }
}
