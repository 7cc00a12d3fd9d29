use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::{PolicyEvaluator, ResponseFuture};
use crate::audit::{HookSlot, Observation, Outcome, Stage};
use crate::body::ResponseBody;
use crate::context::AuthContext;
use crate::credential::RequestHead;
use crate::macros::define_inner_service_accessors;
use crate::reject::{Protocol, Rejection, RejectionResponse, render};

/// Asks a policy before calling the inner service; denied requests never reach it, and the
/// [`Rejection`](crate::Rejection) is in the response extensions.
///
/// See the [module docs](crate::authorize) for an example.
pub struct Authorize<S, P, R> {
    inner: S,
    policy: Arc<P>,
    rejection: R,
    hook: HookSlot,
}

impl<S: Clone, P, R: Clone> Clone for Authorize<S, P, R> {
    fn clone(&self) -> Self {
        Authorize {
            inner: self.inner.clone(),
            policy: Arc::clone(&self.policy),
            rejection: self.rejection.clone(),
            hook: self.hook.clone(),
        }
    }
}

impl<S: fmt::Debug, P, R> fmt::Debug for Authorize<S, P, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorize")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, P, R> Authorize<S, P, R> {
    pub(crate) fn from_parts(inner: S, policy: Arc<P>, rejection: R, hook: HookSlot) -> Self {
        Authorize {
            inner,
            policy,
            rejection,
            hook,
        }
    }

    define_inner_service_accessors!();
}

impl<S, P, R, ReqBody, ResBody> Service<Request<ReqBody>> for Authorize<S, P, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    P: PolicyEvaluator,
    R: RejectionResponse,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<P::Future, S, R, ReqBody, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let observation = Observation::start(Stage::Authorize, &self.hook, &req, false);
        let ctx = req.extensions().get::<AuthContext>();
        let authenticated = ctx.is_some();
        let decided = {
            let _entered = observation.span().enter();
            self.policy.decide_now(ctx, &RequestHead::of(&req))
        };
        if let Some(decision) = decided {
            // Decided at once (every built-in rule): no future to drive, and the inner
            // service readied by `poll_ready` is called directly.
            return match decision.into_rejection(authenticated) {
                None => {
                    observation.finish(Outcome::Allow, "allowed by policy", ctx, None);
                    ResponseFuture::calling(self.inner.call(req))
                }
                Some(rejected) => ResponseFuture::rejected(reject(
                    &self.rejection,
                    rejected,
                    Protocol::of(&req),
                    ctx,
                    observation,
                )),
            };
        }
        let fut = {
            let _entered = observation.span().enter();
            self.policy.evaluate(ctx, &RequestHead::of(&req))
        };
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let protocol = Protocol::of(&req);
        ResponseFuture::new(
            fut,
            req,
            inner,
            self.rejection.clone(),
            protocol,
            authenticated,
            observation,
        )
    }
}

/// The response for a denied request, with the decision observed.
pub(super) fn reject<R: RejectionResponse, B>(
    rejection: &R,
    rejected: Rejection,
    protocol: Protocol,
    ctx: Option<&AuthContext>,
    observation: Observation,
) -> Response<ResponseBody<B>> {
    let span = observation.span().clone();
    let _entered = span.enter();
    observation.finish(Outcome::Deny, rejected.description(), ctx, Some(&rejected));
    render(rejection, rejected, protocol)
}
