//! Authentication: the [`Authenticator`] trait, [`JwtAuthenticator`] and
//! [`AuthenticateLayer`], which verifies the credential once and puts the caller's
//! [`AuthContext`] into the request extensions.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use serde_json::json;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_gatekeeper::{AuthContext, AuthenticateLayer, JwtAuthenticator, jwt::Validation};
//! use tower_gatekeeper::keys::{SigningKey, StaticKeys};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let signer = SigningKey::generate_ed25519().unwrap().with_kid("k1");
//! let keys = StaticKeys::new([signer.verifying_key().clone()]);
//! let validation = Validation::new("https://idp.example.test").audiences(["api://orders"]);
//! let auth = JwtAuthenticator::new(keys, validation).unwrap();
//!
//! let service = ServiceBuilder::new()
//!     .layer(AuthenticateLayer::new(auth))
//!     .service_fn(|req: Request<Full<Bytes>>| async move {
//!         let who = req.extensions().get::<AuthContext>().unwrap().subject().unwrap().to_owned();
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(who))))
//!     });
//!
//! // No credential: 401 with a bare challenge.
//! let response = service.clone().oneshot(Request::new(Full::default())).await.unwrap();
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(response.headers()["www-authenticate"], r#"Bearer realm="api""#);
//!
//! // A valid token: the handler sees the caller.
//! let token = signer.sign(&json!({
//!     "iss": "https://idp.example.test", "aud": "api://orders",
//!     "sub": "user-1", "exp": 4102444800u64,
//! })).unwrap();
//! let request = Request::builder()
//!     .header("authorization", format!("Bearer {token}"))
//!     .body(Full::default())
//!     .unwrap();
//! let response = service.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! # }
//! ```

mod api_key;
mod boxed;
pub mod cache;
mod chain;
mod decision;
mod future;
#[cfg(feature = "introspection")]
mod introspect;
#[cfg(all(feature = "introspection", feature = "redis"))]
mod introspect_redis;
mod jwt;
mod layer;
mod service;

use std::future::Future;

pub use self::api_key::{ApiKeyAuthenticator, ApiKeyEntry, ApiKeyHash};
pub use self::boxed::{BoxAuthFuture, BoxAuthenticator};
pub use self::cache::{CacheConfig, CachedAuthenticator, TokenCache};
pub use self::chain::{ChainFuture, CredentialChain, Unconfigured};
pub use self::future::ResponseFuture;
#[cfg(feature = "introspection")]
pub use self::introspect::{
    ClientAuth, IntrospectionAuthenticator, IntrospectionConfig, IntrospectionFuture,
    SharedCacheError, SharedCacheFuture, SharedEntry, SharedIntrospectionCache,
};
#[cfg(all(feature = "introspection", feature = "redis"))]
pub use self::introspect_redis::{RedisIntrospectionCache, RedisIntrospectionCacheBuilder};
pub use self::jwt::{JwtAuthenticator, JwtFuture};
pub use self::layer::{AuthMode, AuthenticateLayer};
pub use self::service::Authenticate;

use crate::context::AuthContext;
use crate::credential::RequestHead;
use crate::reject::Rejection;

/// Turns a request's credential into an [`AuthContext`], or a [`Rejection`].
///
/// `authenticate` does what it can synchronously (extracting and parsing the credential)
/// and returns `Err` at once for what is known to be bad; the returned future does the rest
/// (key lookup, signature, remote checks) on owned data.
///
/// Returning [`RejectionKind::MissingCredential`](crate::RejectionKind::MissingCredential)
/// means "no credential of mine here": optional routes let such requests through.
pub trait Authenticator: Clone + Send + Sync + 'static {
    /// The future that finishes authentication.
    type Future: Future<Output = Result<AuthContext, Rejection>> + Send + 'static;

    /// Starts authenticating the request whose head is `head`.
    ///
    /// # Errors
    ///
    /// A [`Rejection`] known without awaiting anything.
    fn authenticate(&self, head: &RequestHead<'_>) -> Result<Self::Future, Rejection>;

    /// Starts authenticating like [`authenticate`](Authenticator::authenticate), but may
    /// finish at once: [`Started::Ready`] when the outcome needs no waiting (a cache hit, an
    /// API key), so that [`AuthenticateLayer`] calls the inner service directly, with no
    /// future to drive and no clone of the inner service. The layer calls this method, not
    /// `authenticate`.
    ///
    /// The default wraps `authenticate` in [`Started::Pending`]. An override must agree with
    /// `authenticate`: the same request gets the same outcome either way. Wrappers should
    /// forward `start` to the authenticator they wrap (as [`CachedAuthenticator`] and
    /// [`Revocable`](crate::revocation::Revocable) do); one that does not is still correct,
    /// only its inner ready outcomes then go through a future.
    ///
    /// # Errors
    ///
    /// A [`Rejection`] known without awaiting anything.
    fn start(&self, head: &RequestHead<'_>) -> Result<Started<Self::Future>, Rejection> {
        self.authenticate(head).map(Started::Pending)
    }

    /// Whether `ctx`, which this authenticator produced earlier, is still backed by a key it
    /// trusts now (see [`KeySource::contains_kid`](crate::keys::KeySource::contains_kid)).
    /// [`CachedAuthenticator`] asks on every cache hit and drops the entry when not.
    ///
    /// The default is `true`, right for authenticators whose keys never change. Wrappers
    /// (chains, revocation) should delegate to the authenticator that produced `ctx`.
    fn still_trusted(&self, ctx: &AuthContext) -> bool {
        let _ = ctx;
        true
    }
}

/// How [`Authenticator::start`] began: with the caller already known, or with a future
/// that will know.
#[derive(Debug)]
pub enum Started<F> {
    /// Authenticated without awaiting anything.
    Ready(AuthContext),
    /// The outcome needs awaiting this future.
    Pending(F),
}

impl<F> Started<F> {
    /// Maps the pending future, leaving a ready outcome alone.
    pub fn map<G>(self, f: impl FnOnce(F) -> G) -> Started<G> {
        match self {
            Started::Ready(ctx) => Started::Ready(ctx),
            Started::Pending(fut) => Started::Pending(f(fut)),
        }
    }
}

/// Marks a request that went through an [`AuthenticateLayer`] without an authenticated
/// caller (an optional route), so extractors can tell "no credential" (401) from "no layer"
/// (500). Requests with a caller carry the [`AuthContext`] instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthenticateSeen;
