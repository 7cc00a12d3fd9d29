use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::service::admit;
use super::{AuthMode, AuthenticateSeen};
use crate::audit::{Observation, Outcome};
use crate::body::ResponseBody;
use crate::context::AuthContext;
use crate::limits::Limits;
use crate::reject::{Protocol, Rejection, RejectionKind, RejectionResponse, render};

pin_project! {
    /// Response future of [`Authenticate`](super::Authenticate).
    pub struct ResponseFuture<AF, S, R, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<AF, S::Future, ResponseBody<ResBody>>,
        // Boxed: only the waiting path needs it, and the future stays small for the
        // ready path (moved and boxed by routers on every request).
        pending: Option<Box<Pending<S, R, ReqBody>>>,
    }
}

struct Pending<S, R, ReqBody> {
    req: Request<ReqBody>,
    inner: S,
    rejection: R,
    protocol: Protocol,
    mode: AuthMode,
    limits: Limits,
    observation: Observation,
}

pin_project! {
    #[project = StateProj]
    enum State<AF, SF, B> {
        Authenticating { #[pin] fut: AF },
        Calling { #[pin] fut: SF },
        Rejected { response: Option<Response<B>> },
    }
}

impl<AF, S, R, ReqBody, ResBody> ResponseFuture<AF, S, R, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>>,
{
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn authenticating(
        fut: AF,
        req: Request<ReqBody>,
        inner: S,
        rejection: R,
        protocol: Protocol,
        mode: AuthMode,
        limits: Limits,
        observation: Observation,
    ) -> Self {
        ResponseFuture {
            state: State::Authenticating { fut },
            pending: Some(Box::new(Pending {
                req,
                inner,
                rejection,
                protocol,
                mode,
                limits,
                observation,
            })),
        }
    }

    pub(crate) fn calling(fut: S::Future) -> Self {
        ResponseFuture {
            state: State::Calling { fut },
            pending: None,
        }
    }

    pub(crate) fn rejected(response: Response<ResponseBody<ResBody>>) -> Self {
        ResponseFuture {
            state: State::Rejected {
                response: Some(response),
            },
            pending: None,
        }
    }
}

impl<AF, S, R, ReqBody, ResBody> Future for ResponseFuture<AF, S, R, ReqBody, ResBody>
where
    AF: Future<Output = Result<AuthContext, Rejection>>,
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: RejectionResponse,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Authenticating { fut } => {
                    let outcome = {
                        // Key sources log inside the decision's span.
                        let span = this.pending.as_ref().map(|p| p.observation.span());
                        let _entered = span.map(tracing::Span::enter);
                        ready!(fut.poll(cx))
                    };
                    let Pending {
                        mut req,
                        mut inner,
                        rejection,
                        protocol,
                        mode,
                        limits,
                        observation,
                    } = *this.pending.take().expect("polled after completion");
                    match outcome {
                        Ok(ctx) => admit(&mut req, ctx, limits, observation),
                        Err(r)
                            if r.kind() == RejectionKind::MissingCredential
                                && mode == AuthMode::Optional =>
                        {
                            observation.finish(Outcome::Allow, "anonymous", None, None);
                            req.extensions_mut().insert(AuthenticateSeen);
                        }
                        Err(r) => {
                            let span = observation.span().clone();
                            let _entered = span.enter();
                            observation.finish(Outcome::Deny, r.description(), None, Some(&r));
                            let response = render(&rejection, r, protocol);
                            this.state.set(State::Rejected {
                                response: Some(response),
                            });
                            continue;
                        }
                    }
                    let fut = inner.call(req);
                    this.state.set(State::Calling { fut });
                }
                StateProj::Calling { fut } => {
                    return fut.poll(cx).map_ok(|r| r.map(ResponseBody::inner));
                }
                StateProj::Rejected { response } => {
                    return Poll::Ready(Ok(response.take().expect("polled after completion")));
                }
            }
        }
    }
}

impl<AF, S, R, ReqBody, ResBody> fmt::Debug for ResponseFuture<AF, S, R, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
