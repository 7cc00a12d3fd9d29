//! An external authorizer over HTTP, in the spirit of Envoy's `ext_authz` (feature
//! `ext-authz`).
//!
//! For each request, [`ExtAuthz`] POSTs the [input document](super::policy_input) (caller,
//! request attributes, environment; never the token, cookies or the body) as JSON to the
//! configured URL and maps the answer:
//!
//! | authorizer | decision | client sees |
//! |---|---|---|
//! | 2xx | allow | the upstream's response |
//! | 401 or 403 | deny | 403 (401 without a caller) |
//! | any other status, connection error, or no answer within the timeout | unavailable | 503 + `Retry-After` |
//!
//! It fails closed: nothing but a 2xx lets a request through. At most
//! [`max_connections`](ExtAuthzBuilder::max_connections) calls are in flight at once (each
//! on its own pooled keep-alive connection); callers beyond that wait for a slot, within the
//! same timeout. Outcomes other than allow and deny are logged at `warn`.
//!
//! # TLS
//!
//! Only plain `http://` URLs are supported: run the authorizer on loopback or a trusted
//! network (a sidecar, as with Envoy). TLS would need an HTTPS connector (`hyper-rustls` with
//! a root store, behind a feature of its own) in place of the plain `HttpConnector`; the rest
//! is unchanged.
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_gatekeeper::AuthorizeLayer;
//! use tower_gatekeeper::authorize::ext_authz::ExtAuthz;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let authorizer = ExtAuthz::builder("http://127.0.0.1:9191/check")
//!     .timeout(Duration::from_millis(200))
//!     .max_connections(64)
//!     .build()?;
//! let layer = AuthorizeLayer::new(authorizer);
//! # let _ = layer; Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::Semaphore;

use super::{Decision, PolicyEvaluator, Unavailable, policy_input};
use crate::clock::Clock;
use crate::context::AuthContext;
use crate::credential::RequestHead;

/// How much of an authorizer's response body is read (and discarded) so that its
/// connection can be reused.
const MAX_DRAINED_BODY: usize = 64 * 1024;

/// An external HTTP authorizer; see the [module docs](self).
#[derive(Clone)]
pub struct ExtAuthz {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: Uri,
    timeout: Duration,
    permits: Semaphore,
    retry_after: Duration,
    clock: Clock,
}

impl fmt::Debug for ExtAuthz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExtAuthz")
            .field("uri", &self.inner.uri)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// An external authorizer that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExtAuthzError {
    /// The URL is not an absolute `http://` URL.
    #[error("external authorizer URL {0:?} must be an absolute http:// URL")]
    InvalidUrl(String),
    /// The URL uses `https`, which needs a TLS connector this crate does not build in.
    #[error(
        "external authorizer URL {0:?}: https is not supported; use http:// on a trusted network"
    )]
    HttpsUnsupported(String),
    /// A zero timeout or connection limit.
    #[error("external authorizer: {0} must be positive")]
    Zero(&'static str),
}

/// Builds an [`ExtAuthz`]; see [`ExtAuthz::builder`].
#[must_use]
pub struct ExtAuthzBuilder {
    url: String,
    timeout: Duration,
    max_connections: usize,
    retry_after: Duration,
    clock: Clock,
}

impl fmt::Debug for ExtAuthzBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExtAuthzBuilder")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

impl ExtAuthz {
    /// The default [timeout](ExtAuthzBuilder::timeout): 1 s.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
    /// The default [connection limit](ExtAuthzBuilder::max_connections): 32.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 32;

    /// Starts building an authorizer that POSTs to `url` (`http://host:port/path`).
    pub fn builder(url: impl Into<String>) -> ExtAuthzBuilder {
        ExtAuthzBuilder {
            url: url.into(),
            timeout: Self::DEFAULT_TIMEOUT,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            retry_after: Unavailable::DEFAULT_RETRY_AFTER,
            clock: Clock::system(),
        }
    }
}

impl ExtAuthzBuilder {
    /// The time limit for one check, waiting for a free connection included.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The most checks in flight at once, which bounds the connection pool.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// The `Retry-After` of a 503 when the authorizer is unavailable.
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// The clock for `environment.now` in the input document.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Checks the URL and limits and builds the client. Connections are made on first use;
    /// checks must run inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`ExtAuthzError`] for a URL that is not absolute `http://`, or a zero limit.
    pub fn build(self) -> Result<ExtAuthz, ExtAuthzError> {
        let uri: Uri = self
            .url
            .parse()
            .map_err(|_| ExtAuthzError::InvalidUrl(self.url.clone()))?;
        match uri.scheme_str() {
            Some("http") if uri.authority().is_some() => {}
            Some("https") => return Err(ExtAuthzError::HttpsUnsupported(self.url)),
            _ => return Err(ExtAuthzError::InvalidUrl(self.url)),
        }
        if self.timeout.is_zero() {
            return Err(ExtAuthzError::Zero("the timeout"));
        }
        if self.max_connections == 0 {
            return Err(ExtAuthzError::Zero("max_connections"));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(self.timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(self.max_connections)
            .build(connector);
        Ok(ExtAuthz {
            inner: Arc::new(Inner {
                client,
                uri,
                timeout: self.timeout,
                permits: Semaphore::new(self.max_connections),
                retry_after: self.retry_after,
                clock: self.clock,
            }),
        })
    }
}

enum Outcome {
    Status(StatusCode),
    Failed(hyper_util::client::legacy::Error),
    TimedOut,
}

impl Inner {
    async fn check(self: Arc<Self>, body: Bytes) -> Decision {
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .expect("a valid request");
        let call = async {
            let _permit = self.permits.acquire().await.expect("never closed");
            match self.client.request(request).await {
                Ok(response) => {
                    let status = response.status();
                    // Read the (small) body so that the connection goes back to the pool.
                    let _ = Limited::new(response.into_body(), MAX_DRAINED_BODY)
                        .collect()
                        .await;
                    Outcome::Status(status)
                }
                Err(error) => Outcome::Failed(error),
            }
        };
        let outcome = tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or(Outcome::TimedOut);
        let unavailable = || {
            Decision::Unavailable(
                Unavailable::new("the authorization service is unavailable")
                    .retry_after(self.retry_after),
            )
        };
        match outcome {
            Outcome::Status(status) if status.is_success() => Decision::Allow,
            Outcome::Status(StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED) => {
                Decision::deny("denied by the authorization service")
            }
            Outcome::Status(status) => {
                tracing::warn!(uri = %self.uri, status = status.as_u16(), "external authorizer failed; refusing (503)");
                unavailable()
            }
            Outcome::Failed(error) => {
                tracing::warn!(uri = %self.uri, %error, "external authorizer unreachable; refusing (503)");
                unavailable()
            }
            Outcome::TimedOut => {
                tracing::warn!(uri = %self.uri, timeout_ms = self.timeout.as_millis() as u64, "external authorizer timed out; refusing (503)");
                unavailable()
            }
        }
    }
}

impl PolicyEvaluator for ExtAuthz {
    type Future = ExtAuthzFuture;

    fn evaluate(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Self::Future {
        let input = policy_input(ctx, req, self.inner.clock.now());
        let body = Bytes::from(serde_json::to_vec(&input).expect("JSON values serialize"));
        ExtAuthzFuture(Box::pin(Arc::clone(&self.inner).check(body)))
    }
}

/// Response future of [`ExtAuthz`] (boxed: it is a network call).
pub struct ExtAuthzFuture(Pin<Box<dyn Future<Output = Decision> + Send + 'static>>);

impl Future for ExtAuthzFuture {
    type Output = Decision;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Decision> {
        self.0.as_mut().poll(cx)
    }
}

impl fmt::Debug for ExtAuthzFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExtAuthzFuture").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(matches!(
            ExtAuthz::builder("https://authz.example.test/check").build(),
            Err(ExtAuthzError::HttpsUnsupported(_))
        ));
        assert!(matches!(
            ExtAuthz::builder("/check").build(),
            Err(ExtAuthzError::InvalidUrl(_))
        ));
        assert!(matches!(
            ExtAuthz::builder("http://127.0.0.1:1/check")
                .max_connections(0)
                .build(),
            Err(ExtAuthzError::Zero(_))
        ));
    }
}
