//! [`BoxAuthenticator`]: an authenticator whose type is erased.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::{Authenticator, Started};
use crate::context::AuthContext;
use crate::credential::RequestHead;
use crate::reject::Rejection;

/// The future of a [`BoxAuthenticator`].
pub type BoxAuthFuture =
    Pin<Box<dyn Future<Output = Result<AuthContext, Rejection>> + Send + 'static>>;

trait DynAuthenticator: Send + Sync + 'static {
    fn authenticate_dyn(&self, head: &RequestHead<'_>) -> Result<BoxAuthFuture, Rejection>;
    fn start_dyn(&self, head: &RequestHead<'_>) -> Result<Started<BoxAuthFuture>, Rejection>;
    fn still_trusted_dyn(&self, ctx: &AuthContext) -> bool;
}

impl<A: Authenticator> DynAuthenticator for A {
    fn authenticate_dyn(&self, head: &RequestHead<'_>) -> Result<BoxAuthFuture, Rejection> {
        self.authenticate(head)
            .map(|fut| Box::pin(fut) as BoxAuthFuture)
    }

    fn start_dyn(&self, head: &RequestHead<'_>) -> Result<Started<BoxAuthFuture>, Rejection> {
        self.start(head)
            .map(|started| started.map(|fut| Box::pin(fut) as BoxAuthFuture))
    }

    fn still_trusted_dyn(&self, ctx: &AuthContext) -> bool {
        self.still_trusted(ctx)
    }
}

/// An [`Authenticator`] of any type, for stacks whose layers are chosen at run time (with or
/// without a token cache, with or without revocation checks): each choice is one
/// `BoxAuthenticator` instead of one type per combination.
///
/// A ready outcome of the authenticator inside (a cache hit, an API key) stays ready and
/// costs no allocation; a pending one is boxed. Cheap to clone.
///
/// ```
/// use tower_gatekeeper::{JwtAuthenticator, jwt::Validation};
/// use tower_gatekeeper::authenticate::{BoxAuthenticator, CacheConfig, CachedAuthenticator};
/// use tower_gatekeeper::keys::{SigningKey, StaticKeys};
/// use tower_gatekeeper::revocation::{MemoryRevocations, Revocable};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let signer = SigningKey::generate_ed25519()?;
/// let jwt = JwtAuthenticator::new(
///     StaticKeys::new([signer.verifying_key().clone()]),
///     Validation::new("https://idp.example.test").audiences(["api://orders"]),
/// )?;
/// let (cache, revocations) = (true, Some(MemoryRevocations::new()));
///
/// let mut auth = BoxAuthenticator::new(jwt.clone());
/// if cache {
///     auth = BoxAuthenticator::new(CachedAuthenticator::new(jwt, CacheConfig::default())?);
/// }
/// if let Some(store) = revocations {
///     auth = BoxAuthenticator::new(Revocable::new(auth, store));
/// }
/// # let _ = auth;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct BoxAuthenticator(Arc<dyn DynAuthenticator>);

impl BoxAuthenticator {
    /// Erases the type of `authenticator`.
    pub fn new<A: Authenticator>(authenticator: A) -> Self {
        BoxAuthenticator(Arc::new(authenticator))
    }
}

impl fmt::Debug for BoxAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxAuthenticator").finish_non_exhaustive()
    }
}

impl Authenticator for BoxAuthenticator {
    type Future = BoxAuthFuture;

    fn authenticate(&self, head: &RequestHead<'_>) -> Result<Self::Future, Rejection> {
        self.0.authenticate_dyn(head)
    }

    fn start(&self, head: &RequestHead<'_>) -> Result<Started<Self::Future>, Rejection> {
        self.0.start_dyn(head)
    }

    fn still_trusted(&self, ctx: &AuthContext) -> bool {
        self.0.still_trusted_dyn(ctx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::authenticate::{ApiKeyAuthenticator, ApiKeyEntry, ApiKeyHash};
    use crate::reject::RejectionKind;
    use crate::revocation::{
        MemoryRevocations, Revocable, Revocation, RevocationStore, Revocations,
    };

    fn head(key: &str) -> http::Request<()> {
        http::Request::builder()
            .header("x-api-key", key)
            .body(())
            .unwrap()
    }

    /// The API key authenticator, with a revocation check when `store` is given: two types,
    /// one `BoxAuthenticator`.
    fn stack(store: Option<Revocations>) -> BoxAuthenticator {
        let keys =
            ApiKeyAuthenticator::new([ApiKeyEntry::new(ApiKeyHash::of("the-key"), "bot")]).unwrap();
        match store {
            Some(store) => BoxAuthenticator::new(Revocable::new(keys, store)),
            None => BoxAuthenticator::new(keys),
        }
    }

    #[tokio::test]
    async fn boxed_stacks_answer_like_the_authenticator_inside() {
        let store = MemoryRevocations::new();
        for auth in [stack(None), stack(Some(store.clone().into()))] {
            let good = head("the-key");
            // Ready stays ready.
            let Ok(Started::Ready(ctx)) = auth.start(&RequestHead::of(&good)) else {
                panic!("an API key is known at once");
            };
            assert_eq!(ctx.subject(), Some("bot"));
            assert!(auth.still_trusted(&ctx));
            assert_eq!(
                auth.authenticate(&RequestHead::of(&good))
                    .unwrap()
                    .await
                    .unwrap()
                    .subject(),
                Some("bot")
            );
            let wrong = head("wrong");
            let rejection = auth.start(&RequestHead::of(&wrong)).err().unwrap();
            assert_eq!(rejection.kind(), RejectionKind::InvalidToken);
        }

        // The revocation check inside the box applies.
        let revoking = stack(Some(store.clone().into()));
        let expires = SystemTime::now() + Duration::from_secs(3600);
        store
            .revoke(Revocation::subject("bot", expires))
            .await
            .unwrap();
        let rejection = revoking
            .start(&RequestHead::of(&head("the-key")))
            .err()
            .unwrap();
        assert_eq!(rejection.description(), "the access token has been revoked");
        assert!(
            stack(None)
                .start(&RequestHead::of(&head("the-key")))
                .is_ok()
        );
    }
}
