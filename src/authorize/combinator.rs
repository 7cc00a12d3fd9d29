//! `all_of`, `any_of` and `not` over any [`PolicyEvaluator`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::{Decision, Denial, PolicyEvaluator, Require, Unavailable};
use crate::context::AuthContext;
use crate::credential::RequestHead;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    All,
    Any,
}

/// Folds the decisions of a combinator's members.
#[derive(Debug)]
struct Tally {
    mode: Mode,
    allowed: bool,
    denial: Option<Denial>,
    unavailable: Option<Unavailable>,
}

impl Tally {
    fn new(mode: Mode) -> Self {
        Tally {
            mode,
            allowed: false,
            denial: None,
            unavailable: None,
        }
    }

    fn add(&mut self, decision: Decision) {
        match decision {
            Decision::Allow => self.allowed = true,
            Decision::Deny(denial) => {
                self.denial = Some(match self.denial.take() {
                    None => denial,
                    Some(first) => first.merge(&denial),
                });
            }
            Decision::Unavailable(unavailable) => {
                self.unavailable.get_or_insert(unavailable);
            }
        }
    }

    /// Whether the members still to be asked cannot change the outcome.
    fn settled(&self) -> bool {
        match self.mode {
            Mode::All => self.denial.is_some(),
            Mode::Any => self.allowed,
        }
    }

    fn finish(self) -> Decision {
        match self.mode {
            // A definite denial beats an outage; an outage beats an allow (fail closed).
            Mode::All => match (self.denial, self.unavailable) {
                (Some(denial), _) => Decision::Deny(denial),
                (None, Some(unavailable)) => Decision::Unavailable(unavailable),
                (None, None) => Decision::Allow,
            },
            // One allow is enough; an outage could have hidden an allow, so it beats a denial.
            Mode::Any => match (self.allowed, self.unavailable, self.denial) {
                (true, _, _) => Decision::Allow,
                (false, Some(unavailable), _) => Decision::Unavailable(unavailable),
                (false, None, Some(denial)) => Decision::Deny(denial),
                (false, None, None) => Decision::deny("no rule allows this request"),
            },
        }
    }
}

/// Asks every member synchronously; returns the tally and the members that must be awaited
/// (empty when the tally is settled).
fn sync_pass<P: PolicyEvaluator>(
    mode: Mode,
    members: &[P],
    ctx: Option<&AuthContext>,
    req: &RequestHead<'_>,
) -> (Tally, Vec<usize>) {
    let mut tally = Tally::new(mode);
    let mut pending = Vec::new();
    for (i, member) in members.iter().enumerate() {
        match member.decide_now(ctx, req) {
            Some(decision) => {
                tally.add(decision);
                if mode == Mode::Any && tally.settled() {
                    return (tally, Vec::new());
                }
            }
            None => pending.push(i),
        }
    }
    if tally.settled() {
        pending.clear();
    }
    (tally, pending)
}

fn evaluate<P: PolicyEvaluator>(
    mode: Mode,
    members: &[P],
    ctx: Option<&AuthContext>,
    req: &RequestHead<'_>,
) -> CombineFuture<P::Future> {
    let (tally, pending) = sync_pass(mode, members, ctx, req);
    if pending.is_empty() {
        return CombineFuture {
            state: CombineState::Ready(Some(tally.finish())),
        };
    }
    let futures = pending
        .into_iter()
        .map(|i| Some(Box::pin(members[i].evaluate(ctx, req))))
        .collect();
    CombineFuture {
        state: CombineState::Waiting {
            futures,
            tally: Some(tally),
        },
    }
}

fn decide_now<P: PolicyEvaluator>(
    mode: Mode,
    members: &[P],
    ctx: Option<&AuthContext>,
    req: &RequestHead<'_>,
) -> Option<Decision> {
    let (tally, pending) = sync_pass(mode, members, ctx, req);
    pending.is_empty().then(|| tally.finish())
}

/// Requires every member policy to allow; see [`all_of`].
pub struct AllOf<P = Require>(Arc<[P]>);

/// Allows when every one of `policies` allows (an empty list allows everything).
///
/// A denial reports the first member's reason and the missing scopes and roles of every
/// denying member, so the 403 challenge names all the scopes the caller lacks. Members that
/// decide synchronously are asked first; asynchronous ones (external authorizers) are only
/// asked when no synchronous member denied. An unavailable member makes the whole
/// unavailable (503) unless another denies.
///
/// ```
/// use tower_gatekeeper::{AuthContext, CredentialKind, Decision};
/// use tower_gatekeeper::authorize::{all_of, scopes_all, roles_any};
///
/// let policy = all_of([scopes_all(["orders:read"]), scopes_all(["orders:write"])]);
/// let ctx = AuthContext::builder(CredentialKind::Jwt).build();
/// let Decision::Deny(denial) = policy.decide(Some(&ctx)) else { unreachable!() };
/// assert_eq!(denial.scopes(), ["orders:read", "orders:write"]);
/// ```
pub fn all_of<P, I>(policies: I) -> AllOf<P>
where
    P: PolicyEvaluator,
    I: IntoIterator<Item = P>,
{
    AllOf(policies.into_iter().collect())
}

impl AllOf<Require> {
    /// The decision for `ctx`, synchronously (role and scope requirements only).
    pub fn decide(&self, ctx: Option<&AuthContext>) -> Decision {
        let mut tally = Tally::new(Mode::All);
        for policy in self.0.iter() {
            tally.add(policy.decide(ctx));
        }
        tally.finish()
    }
}

impl<P: PolicyEvaluator> PolicyEvaluator for AllOf<P> {
    type Future = CombineFuture<P::Future>;

    fn evaluate(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Self::Future {
        evaluate(Mode::All, &self.0, ctx, req)
    }

    fn decide_now(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Option<Decision> {
        decide_now(Mode::All, &self.0, ctx, req)
    }
}

/// Requires one member policy to allow; see [`any_of`].
pub struct AnyOf<P>(Arc<[P]>);

/// Allows when at least one of `policies` allows (an empty list allows nobody).
///
/// Members are asked in order and the first allow wins, without asking the rest. When all
/// deny, the first denial's reason is reported with the missing scopes of every member. An
/// unavailable member with no allowing one makes the whole unavailable (503): it might have
/// allowed.
///
/// "Owner or admin":
///
/// ```
/// use http::Request;
/// use tower_gatekeeper::{AuthContext, CredentialKind, PolicyEvaluator};
/// use tower_gatekeeper::authorize::{PathParams, any_of, path_param, roles_any, subject};
/// use tower_gatekeeper::credential::RequestHead;
///
/// let owner_or_admin = any_of([
///     path_param("user_id").equals(subject()).boxed(),
///     roles_any(["admin"]).boxed(),
/// ]);
/// let mut req = Request::new(());
/// req.extensions_mut().insert(PathParams::from_iter([("user_id", "u-1")]));
/// let owner = AuthContext::builder(CredentialKind::Jwt).subject("u-1").build();
/// let other = AuthContext::builder(CredentialKind::Jwt).subject("u-2").build();
/// let head = RequestHead::of(&req);
/// assert!(owner_or_admin.decide_now(Some(&owner), &head).unwrap().is_allow());
/// assert!(!owner_or_admin.decide_now(Some(&other), &head).unwrap().is_allow());
/// ```
pub fn any_of<P, I>(policies: I) -> AnyOf<P>
where
    P: PolicyEvaluator,
    I: IntoIterator<Item = P>,
{
    AnyOf(policies.into_iter().collect())
}

impl<P: PolicyEvaluator> PolicyEvaluator for AnyOf<P> {
    type Future = CombineFuture<P::Future>;

    fn evaluate(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Self::Future {
        evaluate(Mode::Any, &self.0, ctx, req)
    }

    fn decide_now(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Option<Decision> {
        decide_now(Mode::Any, &self.0, ctx, req)
    }
}

macro_rules! combinator_impls {
    ($name:ident) => {
        impl<P> Clone for $name<P> {
            fn clone(&self) -> Self {
                $name(Arc::clone(&self.0))
            }
        }

        impl<P: fmt::Debug> fmt::Debug for $name<P> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($name)).field(&&*self.0).finish()
            }
        }
    };
}
combinator_impls!(AllOf);
combinator_impls!(AnyOf);

/// Response future of [`AllOf`] and [`AnyOf`]: ready at once when every member decided
/// synchronously, else awaits the asynchronous members (each boxed) concurrently.
pub struct CombineFuture<F> {
    state: CombineState<F>,
}

enum CombineState<F> {
    Ready(Option<Decision>),
    Waiting {
        futures: Vec<Option<Pin<Box<F>>>>,
        tally: Option<Tally>,
    },
}

impl<F: Future<Output = Decision>> Future for CombineFuture<F> {
    type Output = Decision;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Decision> {
        match &mut self.state {
            CombineState::Ready(decision) => {
                Poll::Ready(decision.take().expect("polled after completion"))
            }
            CombineState::Waiting { futures, tally } => {
                let done = tally.as_mut().expect("polled after completion");
                let mut waiting = false;
                for slot in futures.iter_mut() {
                    let Some(fut) = slot else { continue };
                    match fut.as_mut().poll(cx) {
                        Poll::Ready(decision) => {
                            *slot = None;
                            done.add(decision);
                            if done.settled() {
                                futures.clear();
                                return Poll::Ready(tally.take().expect("present").finish());
                            }
                        }
                        Poll::Pending => waiting = true,
                    }
                }
                if waiting {
                    return Poll::Pending;
                }
                Poll::Ready(tally.take().expect("present").finish())
            }
        }
    }
}

impl<F> fmt::Debug for CombineFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CombineFuture").finish_non_exhaustive()
    }
}

/// Inverts a policy; see [`not`].
#[derive(Debug, Clone)]
pub struct Not<P> {
    inner: P,
    reason: &'static str,
}

/// Allows when `policy` denies, and denies when it allows. An unavailable decision stays
/// unavailable (fail closed).
///
/// ```
/// use tower_gatekeeper::{AuthContext, CredentialKind};
/// use tower_gatekeeper::authorize::{PolicyEvaluator, not, roles_any};
/// # let req = http::Request::new(());
/// # let head = tower_gatekeeper::credential::RequestHead::of(&req);
///
/// let no_guests = not(roles_any(["guest"])).reason("guests may not do this");
/// let guest = AuthContext::builder(CredentialKind::Jwt).roles(["guest"]).build();
/// assert!(!no_guests.decide_now(Some(&guest), &head).unwrap().is_allow());
/// ```
pub fn not<P: PolicyEvaluator>(policy: P) -> Not<P> {
    Not {
        inner: policy,
        reason: "access to this resource is denied",
    }
}

impl<P> Not<P> {
    /// Sets the fixed, client-safe reason of a denial.
    #[must_use]
    pub fn reason(mut self, reason: &'static str) -> Self {
        self.reason = reason;
        self
    }
}

fn invert(decision: Decision, reason: &'static str) -> Decision {
    match decision {
        Decision::Allow => Decision::deny(reason),
        Decision::Deny(_) => Decision::Allow,
        other => other,
    }
}

impl<P: PolicyEvaluator> PolicyEvaluator for Not<P> {
    type Future = NotFuture<P::Future>;

    fn evaluate(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Self::Future {
        NotFuture {
            inner: self.inner.evaluate(ctx, req),
            reason: self.reason,
        }
    }

    fn decide_now(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Option<Decision> {
        self.inner
            .decide_now(ctx, req)
            .map(|d| invert(d, self.reason))
    }
}

pin_project! {
    /// Response future of [`Not`].
    pub struct NotFuture<F> {
        #[pin]
        inner: F,
        reason: &'static str,
    }
}

impl<F: Future<Output = Decision>> Future for NotFuture<F> {
    type Output = Decision;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Decision> {
        let this = self.project();
        let decision = ready!(this.inner.poll(cx));
        Poll::Ready(invert(decision, this.reason))
    }
}

impl<F> fmt::Debug for NotFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotFuture").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::future::Ready;
    use std::time::Duration;

    use super::*;
    use crate::authorize::{AllowAll, BoxPolicy, roles_any, scopes_all, scopes_any};
    use crate::context::CredentialKind;

    fn ctx(roles: &[&str], scopes: &[&str]) -> AuthContext {
        AuthContext::builder(CredentialKind::Jwt)
            .roles(roles.iter().copied())
            .scopes(scopes.iter().copied())
            .build()
    }

    /// An asynchronous policy (no `decide_now`) with a fixed answer and a call counter.
    #[derive(Clone)]
    struct Async(Decision, Arc<std::sync::atomic::AtomicUsize>);

    impl PolicyEvaluator for Async {
        type Future = Ready<Decision>;
        fn evaluate(&self, _: Option<&AuthContext>, _: &RequestHead<'_>) -> Self::Future {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::ready(self.0.clone())
        }
    }

    fn block_on<F: Future>(fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(out) => out,
            Poll::Pending => panic!("not ready"),
        }
    }

    #[test]
    fn all_of_merges_missing_scopes_and_any_of_short_circuits() {
        let req = http::Request::new(());
        let head = RequestHead::of(&req);
        let c = ctx(&["clerk"], &["a"]);
        let policy = all_of([
            scopes_all(["a", "b"]),
            scopes_all(["c"]),
            roles_any(["clerk"]),
        ]);
        let Some(Decision::Deny(denial)) = policy.decide_now(Some(&c), &head) else {
            panic!()
        };
        assert_eq!(denial.scopes(), ["b", "c"]);

        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let remote = Async(Decision::Allow, Arc::clone(&calls));
        let any = any_of([roles_any(["clerk"]).boxed(), remote.clone().boxed()]);
        assert_eq!(any.decide_now(Some(&c), &head), Some(Decision::Allow));
        assert_eq!(block_on(any.evaluate(Some(&c), &head)), Decision::Allow);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);

        // A synchronous denial spares the remote call in all_of.
        let all = all_of([roles_any(["admin"]).boxed(), remote.clone().boxed()]);
        assert!(all.decide_now(Some(&c), &head).unwrap().is_deny());
        assert!(block_on(all.evaluate(Some(&c), &head)).is_deny());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);

        // Otherwise the remote member is awaited.
        let all = all_of([roles_any(["clerk"]).boxed(), remote.boxed()]);
        assert_eq!(all.decide_now(Some(&c), &head), None);
        assert_eq!(block_on(all.evaluate(Some(&c), &head)), Decision::Allow);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn outages_fail_closed() {
        let req = http::Request::new(());
        let head = RequestHead::of(&req);
        let c = ctx(&[], &[]);
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let down = Async(
            Decision::Unavailable(Unavailable::new("down").retry_after(Duration::from_secs(1))),
            calls,
        );
        let all: AllOf<BoxPolicy> = all_of([AllowAll.boxed(), down.clone().boxed()]);
        assert!(matches!(
            block_on(all.evaluate(Some(&c), &head)),
            Decision::Unavailable(_)
        ));
        let any = any_of([scopes_any(["x"]).boxed(), down.clone().boxed()]);
        assert!(matches!(
            block_on(any.evaluate(Some(&c), &head)),
            Decision::Unavailable(_)
        ));
        assert!(matches!(
            block_on(not(down).evaluate(Some(&c), &head)),
            Decision::Unavailable(_)
        ));
        let empty: AnyOf<BoxPolicy> = any_of([]);
        assert!(empty.decide_now(Some(&c), &head).unwrap().is_deny());
    }

    #[test]
    fn any_of_reports_scopes_of_every_denial() {
        let req = http::Request::new(());
        let head = RequestHead::of(&req);
        let c = ctx(&[], &[]);
        let any = any_of([scopes_all(["a"]), scopes_all(["b"])]);
        let Some(Decision::Deny(denial)) = any.decide_now(Some(&c), &head) else {
            panic!()
        };
        assert_eq!(denial.scopes(), ["a", "b"]);
    }
}
