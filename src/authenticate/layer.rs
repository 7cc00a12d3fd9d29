use tower_layer::Layer;

use super::Authenticate;
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
/// See the [module docs](crate::authenticate) for an example.
#[derive(Debug, Clone)]
#[must_use]
pub struct AuthenticateLayer<A, R = DefaultRejection> {
    authenticator: A,
    mode: AuthMode,
    rejection: R,
}

impl<A> AuthenticateLayer<A> {
    /// Requires a valid credential, checked by `authenticator`.
    pub fn new(authenticator: A) -> Self {
        AuthenticateLayer {
            authenticator,
            mode: AuthMode::Required,
            rejection: DefaultRejection::default(),
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
        }
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
        )
    }
}
