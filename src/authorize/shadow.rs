//! Shadow (report-only) mode: evaluate a policy, log and count its decision, allow anyway.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::{Decision, PolicyEvaluator};
use crate::context::AuthContext;
use crate::credential::RequestHead;

/// Runs a policy in report-only mode; see [`shadow`].
#[derive(Debug, Clone)]
pub struct Shadow<P> {
    inner: P,
    stats: Arc<ShadowStats>,
}

/// What a [`Shadow`] policy would have decided, counted since it was built. Shared by its
/// clones; read it from [`Shadow::stats`].
#[derive(Debug)]
pub struct ShadowStats {
    name: Arc<str>,
    allowed: AtomicU64,
    denied: AtomicU64,
    unavailable: AtomicU64,
}

impl ShadowStats {
    /// The name given to [`shadow`], used in logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many requests the policy would have allowed.
    pub fn allowed(&self) -> u64 {
        self.allowed.load(Ordering::Relaxed)
    }

    /// How many requests the policy would have denied.
    pub fn denied(&self) -> u64 {
        self.denied.load(Ordering::Relaxed)
    }

    /// How many requests the policy could not decide.
    pub fn unavailable(&self) -> u64 {
        self.unavailable.load(Ordering::Relaxed)
    }

    fn record(&self, decision: &Decision) {
        match decision {
            Decision::Allow => {
                self.allowed.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(policy = %self.name, "shadow policy would allow");
            }
            Decision::Deny(denial) => {
                self.denied.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    policy = %self.name,
                    reason = denial.reason(),
                    missing_scopes = ?denial.scopes(),
                    missing_roles = ?denial.roles(),
                    "shadow policy would deny (not enforced)"
                );
            }
            Decision::Unavailable(unavailable) => {
                self.unavailable.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    policy = %self.name,
                    reason = unavailable.reason(),
                    "shadow policy could not decide (not enforced)"
                );
            }
        }
    }
}

/// Runs `policy` in report-only mode: every decision is logged (would-be denials at `info`,
/// with the reason and missing roles and scopes, never the token) and counted in
/// [`ShadowStats`], and the request is allowed. Roll a new rule out with
/// `all_of([current.boxed(), shadow("new-rule", candidate).boxed()])`, watch the counts,
/// then enforce it.
///
/// A shadow policy always allows, so put it in [`all_of`](super::all_of), never in
/// [`any_of`](super::any_of), where it would allow every request.
///
/// ```
/// use tower_gatekeeper::{AuthContext, CredentialKind, PolicyEvaluator};
/// use tower_gatekeeper::authorize::{roles_any, shadow};
/// # let req = http::Request::new(());
/// # let head = tower_gatekeeper::credential::RequestHead::of(&req);
///
/// let candidate = shadow("admins-only", roles_any(["admin"]));
/// let clerk = AuthContext::builder(CredentialKind::Jwt).roles(["clerk"]).build();
/// assert!(candidate.decide_now(Some(&clerk), &head).unwrap().is_allow());
/// assert_eq!(candidate.stats().denied(), 1);
/// ```
pub fn shadow<P: PolicyEvaluator>(name: impl Into<Arc<str>>, policy: P) -> Shadow<P> {
    Shadow {
        inner: policy,
        stats: Arc::new(ShadowStats {
            name: name.into(),
            allowed: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            unavailable: AtomicU64::new(0),
        }),
    }
}

impl<P> Shadow<P> {
    /// The counters, shared by every clone of this policy.
    pub fn stats(&self) -> Arc<ShadowStats> {
        Arc::clone(&self.stats)
    }
}

impl<P: PolicyEvaluator> PolicyEvaluator for Shadow<P> {
    type Future = ShadowFuture<P::Future>;

    fn evaluate(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Self::Future {
        ShadowFuture {
            inner: self.inner.evaluate(ctx, req),
            stats: Arc::clone(&self.stats),
        }
    }

    fn decide_now(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Option<Decision> {
        let decision = self.inner.decide_now(ctx, req)?;
        self.stats.record(&decision);
        Some(Decision::Allow)
    }
}

pin_project! {
    /// Response future of [`Shadow`].
    pub struct ShadowFuture<F> {
        #[pin]
        inner: F,
        stats: Arc<ShadowStats>,
    }
}

impl<F: Future<Output = Decision>> Future for ShadowFuture<F> {
    type Output = Decision;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Decision> {
        let this = self.project();
        let decision = ready!(this.inner.poll(cx));
        this.stats.record(&decision);
        Poll::Ready(Decision::Allow)
    }
}

impl<F> fmt::Debug for ShadowFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShadowFuture").finish_non_exhaustive()
    }
}
