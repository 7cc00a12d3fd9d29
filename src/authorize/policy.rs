use std::fmt;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderValue;

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
///
/// Policies that decide synchronously (everything but external authorizers) also implement
/// [`decide_now`](PolicyEvaluator::decide_now), which lets combinators, [`BoxPolicy`] and
/// route tables decide without allocating a future.
pub trait PolicyEvaluator: Send + Sync + 'static {
    /// The future of a decision. Built-ins use `std::future::Ready`.
    type Future: Future<Output = Decision> + Send + 'static;

    /// Decides for the request whose head is `req`, made by `ctx`.
    fn evaluate(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Self::Future;

    /// The decision, when the policy can make it without waiting; `None` when the caller
    /// must await [`evaluate`](PolicyEvaluator::evaluate). The default is `None`.
    ///
    /// When it returns `Some`, the decision must be the one `evaluate` would produce.
    fn decide_now(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Option<Decision> {
        let _ = (ctx, req);
        None
    }

    /// Erases the type of this policy, for heterogeneous lists and tables.
    fn boxed(self) -> BoxPolicy
    where
        Self: Sized,
    {
        BoxPolicy::new(self)
    }
}

impl<F> PolicyEvaluator for F
where
    F: Fn(Option<&AuthContext>, &RequestHead<'_>) -> Decision + Send + Sync + 'static,
{
    type Future = Ready<Decision>;

    fn evaluate(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Self::Future {
        ready(self(ctx, req))
    }

    fn decide_now(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Option<Decision> {
        Some(self(ctx, req))
    }
}

impl<P: PolicyEvaluator + ?Sized> PolicyEvaluator for Arc<P> {
    type Future = P::Future;

    fn evaluate(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Self::Future {
        (**self).evaluate(ctx, req)
    }

    fn decide_now(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Option<Decision> {
        (**self).decide_now(ctx, req)
    }
}

/// The boxed future of a type-erased policy.
type DynFuture = Pin<Box<dyn Future<Output = Decision> + Send + 'static>>;

trait DynPolicy: Send + Sync + 'static {
    fn evaluate_dyn(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> DynFuture;
    fn decide_now_dyn(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Option<Decision>;
}

impl<P: PolicyEvaluator> DynPolicy for P {
    fn evaluate_dyn(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> DynFuture {
        Box::pin(self.evaluate(ctx, req))
    }

    fn decide_now_dyn(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Option<Decision> {
        self.decide_now(ctx, req)
    }
}

/// A type-erased policy: any [`PolicyEvaluator`] behind an `Arc`, cheap to clone.
///
/// Policies that decide synchronously stay allocation-free behind it (it asks
/// [`decide_now`](PolicyEvaluator::decide_now) first); only asynchronous ones (external
/// authorizers) have their future boxed.
///
/// ```
/// use tower_gatekeeper::authorize::{BoxPolicy, PolicyEvaluator, any_of, claim_equals, roles_any};
///
/// let policy: BoxPolicy = any_of([roles_any(["admin"]).boxed(), claim_equals("tier", "gold").boxed()]).boxed();
/// # let _ = policy;
/// ```
#[derive(Clone)]
pub struct BoxPolicy(Arc<dyn DynPolicy>);

impl BoxPolicy {
    /// Erases the type of `policy`.
    pub fn new<P: PolicyEvaluator>(policy: P) -> Self {
        BoxPolicy(Arc::new(policy))
    }
}

impl fmt::Debug for BoxPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxPolicy").finish_non_exhaustive()
    }
}

impl PolicyEvaluator for BoxPolicy {
    type Future = BoxPolicyFuture;

    fn evaluate(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Self::Future {
        match self.0.decide_now_dyn(ctx, req) {
            Some(decision) => BoxPolicyFuture(Inner::Ready(Some(decision))),
            None => BoxPolicyFuture(Inner::Boxed(self.0.evaluate_dyn(ctx, req))),
        }
    }

    fn decide_now(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Option<Decision> {
        self.0.decide_now_dyn(ctx, req)
    }

    fn boxed(self) -> BoxPolicy {
        self
    }
}

/// Response future of [`BoxPolicy`]: ready at once for synchronous policies, else boxed.
pub struct BoxPolicyFuture(Inner);

enum Inner {
    Ready(Option<Decision>),
    Boxed(DynFuture),
}

impl Future for BoxPolicyFuture {
    type Output = Decision;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Decision> {
        match &mut self.0 {
            Inner::Ready(decision) => {
                Poll::Ready(decision.take().expect("polled after completion"))
            }
            Inner::Boxed(fut) => fut.as_mut().poll(cx),
        }
    }
}

impl fmt::Debug for BoxPolicyFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxPolicyFuture").finish_non_exhaustive()
    }
}

/// The outcome of a [`PolicyEvaluator`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// The request may proceed.
    Allow,
    /// The request is denied (401 without a caller, else 403).
    Deny(Denial),
    /// The decision cannot be made right now, e.g. an external authorizer is unreachable or
    /// too slow. The request is refused (fail closed) with 503 and `Retry-After`.
    Unavailable(Unavailable),
}

impl Decision {
    /// Whether this is [`Decision::Allow`].
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow)
    }

    /// Whether this is [`Decision::Deny`].
    pub fn is_deny(&self) -> bool {
        matches!(self, Decision::Deny(_))
    }

    /// A denial with a fixed reason and nothing named as missing.
    pub fn deny(reason: &'static str) -> Self {
        Decision::Deny(Denial::new(reason))
    }

    /// An undecidable request (503) with a fixed reason and the default `Retry-After`.
    pub fn unavailable(reason: &'static str) -> Self {
        Decision::Unavailable(Unavailable::new(reason))
    }

    /// The rejection for a decision other than [`Decision::Allow`]; `authenticated` says
    /// whether the request has a caller (denials without one are 401).
    pub fn into_rejection(self, authenticated: bool) -> Option<Rejection> {
        match self {
            Decision::Allow => None,
            Decision::Deny(denial) => Some(denial.into_rejection(authenticated)),
            Decision::Unavailable(unavailable) => Some(Rejection::authorizer_unavailable(
                unavailable.reason,
                unavailable.retry_after,
            )),
        }
    }
}

/// Why a decision could not be made: a fixed reason and how long clients should wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    reason: &'static str,
    retry_after: Duration,
}

impl Unavailable {
    /// The `Retry-After` of [`Unavailable::new`].
    pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

    /// An outage with a fixed, client-safe reason.
    pub fn new(reason: &'static str) -> Self {
        Unavailable {
            reason,
            retry_after: Self::DEFAULT_RETRY_AFTER,
        }
    }

    /// Sets the `Retry-After` hint.
    #[must_use]
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// The reason.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

/// Why a request was denied: a fixed reason, and the scopes or roles that were missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    reason: &'static str,
    missing_scopes: Vec<String>,
    missing_roles: Vec<String>,
    /// For a route that does not take the request's method: the `Allow` header value.
    allow: Option<HeaderValue>,
}

impl Denial {
    /// A denial with a fixed, client-safe reason.
    pub fn new(reason: &'static str) -> Self {
        Denial {
            reason,
            missing_scopes: Vec::new(),
            missing_roles: Vec::new(),
            allow: None,
        }
    }

    /// The path is routed but the route does not take the request's method; `allow` lists
    /// the methods it takes (the `Allow` header). Rendered as 405 (gRPC 12 UNIMPLEMENTED)
    /// with or without a caller; [`RouteTable`](super::RouteTable) denies with it.
    pub fn method_not_allowed(allow: HeaderValue) -> Self {
        Denial {
            allow: Some(allow),
            ..Denial::new("the route does not allow this method")
        }
    }

    /// The `Allow` header value of a [`method_not_allowed`](Denial::method_not_allowed)
    /// denial.
    pub fn allow(&self) -> Option<&HeaderValue> {
        self.allow.as_ref()
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

    /// This denial with the missing scopes and roles of `other` added (each named once).
    pub(crate) fn merge(mut self, other: &Denial) -> Self {
        for scope in &other.missing_scopes {
            if !self.missing_scopes.contains(scope) {
                self.missing_scopes.push(scope.clone());
            }
        }
        for role in &other.missing_roles {
            if !self.missing_roles.contains(role) {
                self.missing_roles.push(role.clone());
            }
        }
        self
    }

    /// The missing scopes.
    pub fn scopes(&self) -> &[String] {
        &self.missing_scopes
    }

    /// The missing roles.
    pub fn roles(&self) -> &[String] {
        &self.missing_roles
    }

    /// The rejection for this denial: 405 with `Allow` for a method the route does not take,
    /// else 401 without a caller, 403 `insufficient_scope` with `scope` when scopes are
    /// missing, 403 otherwise.
    pub fn into_rejection(self, authenticated: bool) -> Rejection {
        if let Some(allow) = self.allow {
            return Rejection::method_not_allowed(allow);
        }
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
