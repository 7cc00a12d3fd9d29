use std::sync::Arc;

use tower_layer::Layer;

use super::Authenticate;
use crate::audit::{DecisionHook, HookSlot};
use crate::limits::Limits;
use crate::reject::DefaultRejection;

/// Whether a route requires a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// A credential is required: requests without one get 401.
    #[default]
    Required,
    /// A credential is optional: requests without one pass without an
    /// [`AuthContext`](crate::AuthContext). A credential that is present but bad is still
    /// rejected: a bad token never silently downgrades to anonymous.
    Optional,
}

/// Applies [`Authenticate`] to requests: verifies the credential with the authenticator `A`
/// and rejects with `R`'s response when it fails.
///
/// Every decision runs in a tracing span, is counted in the [`metrics`](crate::metrics) and
/// is passed to the [`DecisionHook`] set with [`on_decision`](Self::on_decision) (see
/// [`audit`](crate::audit)); requests are held to the [`Limits`] (documented defaults).
///
/// See the [module docs](crate::authenticate) for an example.
#[derive(Debug, Clone)]
#[must_use]
pub struct AuthenticateLayer<A, R = DefaultRejection> {
    authenticator: A,
    mode: AuthMode,
    rejection: R,
    limits: Limits,
    hook: HookSlot,
    query_token: Option<Arc<str>>,
}

impl<A> AuthenticateLayer<A> {
    /// Requires a valid credential, checked by `authenticator`.
    pub fn new(authenticator: A) -> Self {
        AuthenticateLayer {
            authenticator,
            mode: AuthMode::Required,
            rejection: DefaultRejection::default(),
            limits: Limits::default(),
            hook: HookSlot::default(),
            query_token: None,
        }
    }

    /// Accepts requests without a credential (see [`AuthMode::Optional`]).
    pub fn optional(authenticator: A) -> Self {
        Self::new(authenticator).mode(AuthMode::Optional)
    }
}

impl<A, R> AuthenticateLayer<A, R> {
    /// Sets the mode.
    pub fn mode(mut self, mode: AuthMode) -> Self {
        self.mode = mode;
        self
    }

    /// Renders rejections with `rejection` instead of the default.
    pub fn rejection_response<R2>(self, rejection: R2) -> AuthenticateLayer<A, R2> {
        AuthenticateLayer {
            authenticator: self.authenticator,
            mode: self.mode,
            rejection,
            limits: self.limits,
            hook: self.hook,
            query_token: self.query_token,
        }
    }

    /// Calls `hook` with every allow/deny decision (see [`audit`](crate::audit)). Replaces
    /// a hook set before.
    pub fn on_decision(mut self, hook: impl DecisionHook) -> Self {
        self.hook = HookSlot(Some(Arc::new(hook)));
        self
    }

    /// Also accepts an access token in the URI query parameter `name` (RFC 6750 §2.3,
    /// conventionally `access_token`), for clients that cannot send headers (browser
    /// downloads, `EventSource`, WebSocket handshakes). Off by default: query strings end up
    /// in logs, histories and `Referer` headers, and RFC 6750 advises against them.
    ///
    /// The token is moved into an `Authorization: Bearer` header and removed from the URI
    /// before authentication (see [`take_query_token`](crate::credential::take_query_token)),
    /// so the inner service never sees it in the query, and [`ContextPropagationLayer`]
    /// drops it with the header. A request with both a header and a query token, or two
    /// query tokens, is 400 `invalid_request` (RFC 6750 §3.1). Successful responses to
    /// requests that used the query get `Cache-Control: private` (RFC 6750 §2.3).
    ///
    /// [`ContextPropagationLayer`]: crate::ContextPropagationLayer
    pub fn query_token(mut self, name: impl Into<String>) -> Self {
        self.query_token = Some(Arc::from(name.into()));
        self
    }

    /// Holds requests to `limits` instead of the defaults (see [`limits`](crate::limits)).
    /// [`Limits`] are checked when they are built, so this cannot fail.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

impl<S, A: Clone, R: Clone> Layer<S> for AuthenticateLayer<A, R> {
    type Service = Authenticate<S, A, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate::from_parts(
            inner,
            self.authenticator.clone(),
            self.mode,
            self.rejection.clone(),
            self.limits,
            self.hook.clone(),
            self.query_token.clone(),
        )
    }
}
