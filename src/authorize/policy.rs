use std::future::{Future, Ready, ready};
use std::sync::Arc;

use crate::context::AuthContext;
use crate::credential::RequestHead;
use crate::reject::Rejection;

/// Decides whether a request may proceed.
///
/// `ctx` is `None` when the request carries no authenticated caller (optional or public
/// routes). A denial without a caller becomes 401, with one 403.
///
/// Implemented by the built-ins in this module and by closures
/// `Fn(Option<&AuthContext>, &RequestHead<'_>) -> Decision`.
pub trait PolicyEvaluator: Send + Sync + 'static {
    /// The future of a decision. Built-ins use `std::future::Ready`.
    type Future: Future<Output = Decision> + Send + 'static;

    /// Decides for the request whose head is `req`, made by `ctx`.
    fn evaluate(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Self::Future;
}

impl<F> PolicyEvaluator for F
where
    F: Fn(Option<&AuthContext>, &RequestHead<'_>) -> Decision + Send + Sync + 'static,
{
    type Future = Ready<Decision>;

    fn evaluate(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Self::Future {
        ready(self(ctx, req))
    }
}

impl<P: PolicyEvaluator + ?Sized> PolicyEvaluator for Arc<P> {
    type Future = P::Future;

    fn evaluate(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Self::Future {
        (**self).evaluate(ctx, req)
    }
}

/// The outcome of a [`PolicyEvaluator`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The request may proceed.
    Allow,
    /// The request is denied.
    Deny(Denial),
}

impl Decision {
    /// Whether this is [`Decision::Allow`].
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow)
    }

    /// A denial with a fixed reason and nothing named as missing.
    pub fn deny(reason: &'static str) -> Self {
        Decision::Deny(Denial::new(reason))
    }
}

/// Why a request was denied: a fixed reason, and the scopes or roles that were missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    reason: &'static str,
    missing_scopes: Vec<String>,
    missing_roles: Vec<String>,
}

impl Denial {
    /// A denial with a fixed, client-safe reason.
    pub fn new(reason: &'static str) -> Self {
        Denial {
            reason,
            missing_scopes: Vec::new(),
            missing_roles: Vec::new(),
        }
    }

    /// Names scopes whose absence caused the denial (they go into the 403 challenge's
    /// `scope` parameter, RFC 6750 §3).
    #[must_use]
    pub fn missing_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.missing_scopes
            .extend(scopes.into_iter().map(Into::into));
        self
    }

    /// Names roles whose absence caused the denial (logged, not sent to the client).
    #[must_use]
    pub fn missing_roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.missing_roles.extend(roles.into_iter().map(Into::into));
        self
    }

    /// The reason.
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// The missing scopes.
    pub fn scopes(&self) -> &[String] {
        &self.missing_scopes
    }

    /// The missing roles.
    pub fn roles(&self) -> &[String] {
        &self.missing_roles
    }

    /// The rejection for this denial: 401 without a caller, 403 `insufficient_scope` with
    /// `scope` when scopes are missing, 403 otherwise.
    pub fn into_rejection(self, authenticated: bool) -> Rejection {
        if !authenticated {
            return Rejection::missing_credential();
        }
        if self.missing_scopes.is_empty() {
            Rejection::forbidden(self.reason)
        } else {
            Rejection::insufficient_scope(&self.missing_scopes).with_description(self.reason)
        }
    }
}
