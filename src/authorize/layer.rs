use std::sync::Arc;

use tower_layer::Layer;

use super::Authorize;
use crate::audit::{DecisionHook, HookSlot};
use crate::reject::DefaultRejection;

/// Applies [`Authorize`] to requests: asks the policy `P` and rejects with `R`'s response
/// when it denies.
///
/// Every decision runs in a tracing span, is counted in the [`metrics`](crate::metrics) and
/// is passed to the [`DecisionHook`] set with [`on_decision`](Self::on_decision) (see
/// [`audit`](crate::audit)).
///
/// See the [module docs](crate::authorize) for an example.
#[derive(Debug)]
#[must_use]
pub struct AuthorizeLayer<P, R = DefaultRejection> {
    policy: Arc<P>,
    rejection: R,
    hook: HookSlot,
}

impl<P, R: Clone> Clone for AuthorizeLayer<P, R> {
    fn clone(&self) -> Self {
        AuthorizeLayer {
            policy: Arc::clone(&self.policy),
            rejection: self.rejection.clone(),
            hook: self.hook.clone(),
        }
    }
}

impl<P> AuthorizeLayer<P> {
    /// Authorizes requests with `policy`.
    pub fn new(policy: P) -> Self {
        AuthorizeLayer {
            policy: Arc::new(policy),
            rejection: DefaultRejection::default(),
            hook: HookSlot::default(),
        }
    }
}

impl<P, R> AuthorizeLayer<P, R> {
    /// Renders rejections with `rejection` instead of the default.
    pub fn rejection_response<R2>(self, rejection: R2) -> AuthorizeLayer<P, R2> {
        AuthorizeLayer {
            policy: self.policy,
            rejection,
            hook: self.hook,
        }
    }

    /// Calls `hook` with every allow/deny decision (see [`audit`](crate::audit)). Replaces
    /// a hook set before.
    pub fn on_decision(mut self, hook: impl DecisionHook) -> Self {
        self.hook = HookSlot(Some(Arc::new(hook)));
        self
    }
}

impl<S, P, R: Clone> Layer<S> for AuthorizeLayer<P, R> {
    type Service = Authorize<S, P, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize::from_parts(
            inner,
            Arc::clone(&self.policy),
            self.rejection.clone(),
            self.hook.clone(),
        )
    }
}
