use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::{KeyError, KeyQuery, KeySource, ReadyFuture, StaticKeys, VerifyingKey};
use crate::algorithm::AlgorithmSet;

type BoxedKey = Pin<Box<dyn Future<Output = Result<VerifyingKey, KeyError>> + Send + 'static>>;

/// The future of [`IssuerKeys`] and of the remote sources: ready at once when the key is
/// cached (no allocation), boxed only on the rare slow path (a refetch for an unknown `kid`).
#[must_use = "futures do nothing unless polled"]
pub struct KeyFuture {
    inner: Inner,
}

enum Inner {
    Ready(Option<Result<VerifyingKey, KeyError>>),
    Boxed(BoxedKey),
}

impl KeyFuture {
    /// A future that is ready with `result`.
    pub fn ready(result: Result<VerifyingKey, KeyError>) -> Self {
        KeyFuture {
            inner: Inner::Ready(Some(result)),
        }
    }

    /// A future that waits for `future`.
    pub fn boxed(
        future: impl Future<Output = Result<VerifyingKey, KeyError>> + Send + 'static,
    ) -> Self {
        KeyFuture {
            inner: Inner::Boxed(Box::pin(future)),
        }
    }
}

impl fmt::Debug for KeyFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.inner {
            Inner::Ready(_) => "ready",
            Inner::Boxed(_) => "waiting",
        };
        f.debug_struct("KeyFuture").field("state", &state).finish()
    }
}

impl Future for KeyFuture {
    type Output = Result<VerifyingKey, KeyError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.inner {
            Inner::Ready(result) => Poll::Ready(result.take().expect("polled after completion")),
            Inner::Boxed(future) => future.as_mut().poll(cx),
        }
    }
}

/// One issuer's keys, wherever they come from: lets one
/// [`JwtAuthenticator`](crate::JwtAuthenticator) serve issuers with static keys next to
/// issuers with remote JWKS or OIDC discovery (as `examples/gateway.rs` does).
///
/// ```
/// use tower_gatekeeper::keys::{IssuerKeys, SigningKey, StaticKeys};
///
/// let signer = SigningKey::generate_ed25519().unwrap().with_kid("k1");
/// let keys: IssuerKeys = StaticKeys::new([signer.verifying_key().clone()]).into();
/// assert!(matches!(keys, IssuerKeys::Static(_)));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum IssuerKeys {
    /// Keys known at start-up.
    Static(StaticKeys),
    /// Keys fetched from a JWKS URL or found through OIDC discovery.
    #[cfg(feature = "remote")]
    #[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
    Remote(super::RemoteJwks),
    /// One remote source per tenant of a multi-tenant issuer.
    #[cfg(feature = "remote")]
    #[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
    Tenants(super::TenantJwks),
}

impl From<StaticKeys> for IssuerKeys {
    fn from(keys: StaticKeys) -> Self {
        IssuerKeys::Static(keys)
    }
}

#[cfg(feature = "remote")]
impl From<super::TenantJwks> for IssuerKeys {
    fn from(keys: super::TenantJwks) -> Self {
        IssuerKeys::Tenants(keys)
    }
}

#[cfg(feature = "remote")]
impl From<super::RemoteJwks> for IssuerKeys {
    fn from(keys: super::RemoteJwks) -> Self {
        IssuerKeys::Remote(keys)
    }
}

impl KeySource for IssuerKeys {
    type Future = KeyFuture;

    fn key(&self, query: &KeyQuery<'_>) -> Self::Future {
        match self {
            IssuerKeys::Static(keys) => KeyFuture::ready(keys.key_set().select(query).cloned()),
            #[cfg(feature = "remote")]
            IssuerKeys::Remote(keys) => keys.key(query),
            #[cfg(feature = "remote")]
            IssuerKeys::Tenants(keys) => keys.key(query),
        }
    }

    fn algorithms(&self) -> Option<AlgorithmSet> {
        match self {
            IssuerKeys::Static(keys) => keys.algorithms(),
            #[cfg(feature = "remote")]
            IssuerKeys::Remote(keys) => keys.algorithms(),
            #[cfg(feature = "remote")]
            IssuerKeys::Tenants(keys) => keys.algorithms(),
        }
    }

    fn possible_algorithms(&self) -> AlgorithmSet {
        match self {
            IssuerKeys::Static(keys) => keys.possible_algorithms(),
            #[cfg(feature = "remote")]
            IssuerKeys::Remote(keys) => keys.possible_algorithms(),
            #[cfg(feature = "remote")]
            IssuerKeys::Tenants(keys) => keys.possible_algorithms(),
        }
    }

    fn ready(&self, allowed: Option<AlgorithmSet>) -> ReadyFuture {
        match self {
            IssuerKeys::Static(keys) => keys.ready(allowed),
            #[cfg(feature = "remote")]
            IssuerKeys::Remote(keys) => keys.ready(allowed),
            #[cfg(feature = "remote")]
            IssuerKeys::Tenants(keys) => keys.ready(allowed),
        }
    }

    fn contains_kid(&self, issuer: Option<&str>, kid: Option<&str>) -> bool {
        match self {
            IssuerKeys::Static(keys) => keys.contains_kid(issuer, kid),
            #[cfg(feature = "remote")]
            IssuerKeys::Remote(keys) => keys.contains_kid(issuer, kid),
            #[cfg(feature = "remote")]
            IssuerKeys::Tenants(keys) => keys.contains_kid(issuer, kid),
        }
    }

    fn contains_key(
        &self,
        issuer: Option<&str>,
        kid: Option<&str>,
        fingerprint: &super::KeyFingerprint,
    ) -> bool {
        match self {
            IssuerKeys::Static(keys) => keys.contains_key(issuer, kid, fingerprint),
            #[cfg(feature = "remote")]
            IssuerKeys::Remote(keys) => keys.contains_key(issuer, kid, fingerprint),
            #[cfg(feature = "remote")]
            IssuerKeys::Tenants(keys) => keys.contains_key(issuer, kid, fingerprint),
        }
    }
}
