use std::sync::Arc;

use tower_layer::Layer;

use super::Authorize;
use crate::reject::DefaultRejection;

/// Applies [`Authorize`] to requests: asks the policy `P` and rejects with `R`'s response
/// when it denies.
///
/// See the [module docs](crate::authorize) for an example.
#[derive(Debug)]
#[must_use]
pub struct AuthorizeLayer<P, R = DefaultRejection> {
    policy: Arc<P>,
    rejection: R,
}

impl<P, R: Clone> Clone for AuthorizeLayer<P, R> {
    fn clone(&self) -> Self {
        AuthorizeLayer {
            policy: Arc::clone(&self.policy),
            rejection: self.rejection.clone(),
        }
    }
}

impl<P> AuthorizeLayer<P> {
    /// Authorizes requests with `policy`.
    pub fn new(policy: P) -> Self {
        AuthorizeLayer {
            policy: Arc::new(policy),
            rejection: DefaultRejection::default(),
        }
    }
}

impl<P, R> AuthorizeLayer<P, R> {
    /// Renders rejections with `rejection` instead of the default.
    pub fn rejection_response<R2>(self, rejection: R2) -> AuthorizeLayer<P, R2> {
        AuthorizeLayer {
            policy: self.policy,
            rejection,
        }
    }
}

impl<S, P, R: Clone> Layer<S> for AuthorizeLayer<P, R> {
    type Service = Authorize<S, P, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize::from_parts(inner, Arc::clone(&self.policy), self.rejection.clone())
    }
}
