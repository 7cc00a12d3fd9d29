use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::decision::{Verdict, decide};
use super::future::ResponseFuture;
use super::{AuthMode, Authenticator, Started};
use crate::audit::{HookSlot, Observation, Stage};
use crate::body::ResponseBody;
use crate::credential::RequestHead;
use crate::limits::Limits;
use crate::macros::define_inner_service_accessors;
use crate::reject::RejectionResponse;

/// Verifies each request's credential before calling the inner service; on success the
/// [`AuthContext`](crate::AuthContext) is in the request extensions. Rejected requests never
/// reach the inner service; the [`Rejection`](crate::Rejection) is in the response extensions.
///
/// See the [module docs](crate::authenticate) for an example.
#[derive(Debug, Clone)]
pub struct Authenticate<S, A, R> {
    inner: S,
    authenticator: A,
    mode: AuthMode,
    rejection: R,
    limits: Limits,
    hook: HookSlot,
    query_token: Option<Arc<str>>,
}

impl<S, A, R> Authenticate<S, A, R> {
    pub(crate) fn from_parts(
        inner: S,
        authenticator: A,
        mode: AuthMode,
        rejection: R,
        limits: Limits,
        hook: HookSlot,
        query_token: Option<Arc<str>>,
    ) -> Self {
        Authenticate {
            inner,
            authenticator,
            mode,
            rejection,
            limits,
            hook,
            query_token,
        }
    }

    define_inner_service_accessors!();
}

impl<S, A, R, ReqBody, ResBody> Service<Request<ReqBody>> for Authenticate<S, A, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    A: Authenticator,
    R: RejectionResponse,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<A::Future, S, R, ReqBody, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let observation = Observation::start(Stage::Authenticate, &self.hook, &req, true);
        let mut from_query = false;
        let started = {
            let _entered = observation.span().enter();
            match &self.query_token {
                Some(name) => crate::credential::take_query_token(&mut req, name)
                    .map(|moved| from_query = moved),
                None => Ok(()),
            }
            .and_then(|()| self.limits.check_request(req.headers()))
            .and_then(|()| self.authenticator.start(&RequestHead::of(&req)))
        };
        let outcome = match started {
            Ok(Started::Pending(fut)) => {
                // Keep the service that was driven to readiness for this request.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                return ResponseFuture::authenticating(
                    fut,
                    req,
                    inner,
                    self.rejection.clone(),
                    self.mode,
                    self.limits,
                    observation,
                )
                .private(from_query);
            }
            // Known at once (a cache hit, an API key, a bad credential).
            Ok(Started::Ready(ctx)) => Ok(ctx),
            Err(rejection) => Err(rejection),
        };
        match decide(
            &mut req,
            outcome,
            self.mode,
            self.limits,
            observation,
            &self.rejection,
        ) {
            // Straight to the inner service, which `poll_ready` readied for this call.
            Verdict::Admit => ResponseFuture::calling(self.inner.call(req)).private(from_query),
            Verdict::Reject(response) => ResponseFuture::rejected(response),
        }
    }
}
