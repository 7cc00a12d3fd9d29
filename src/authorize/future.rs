use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::Decision;
use super::service::reject;
use crate::audit::{Observation, Outcome};
use crate::body::ResponseBody;
use crate::context::AuthContext;
use crate::reject::{Protocol, RejectionResponse};

pin_project! {
    /// Response future of [`Authorize`](super::Authorize).
    pub struct ResponseFuture<PF, S, R, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<PF, S::Future, ResponseBody<ResBody>>,
        // Boxed: only the waiting path needs it, and the future stays small for the
        // ready path (moved and boxed by routers on every request).
        pending: Option<Box<Pending<S, R, ReqBody>>>,
        _body: std::marker::PhantomData<fn() -> ResBody>,
    }
}

struct Pending<S, R, ReqBody> {
    req: Request<ReqBody>,
    inner: S,
    rejection: R,
    protocol: Protocol,
    authenticated: bool,
    observation: Observation,
}

pin_project! {
    #[project = StateProj]
    enum State<PF, SF, B> {
        Evaluating { #[pin] fut: PF },
        Calling { #[pin] fut: SF },
        Rejected { response: Option<Response<B>> },
    }
}

impl<PF, S, R, ReqBody, ResBody> ResponseFuture<PF, S, R, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(crate) fn new(
        fut: PF,
        req: Request<ReqBody>,
        inner: S,
        rejection: R,
        protocol: Protocol,
        authenticated: bool,
        observation: Observation,
    ) -> Self {
        ResponseFuture {
            state: State::Evaluating { fut },
            pending: Some(Box::new(Pending {
                req,
                inner,
                rejection,
                protocol,
                authenticated,
                observation,
            })),
            _body: std::marker::PhantomData,
        }
    }

    /// The decision was made at once and allowed the request: `fut` is the inner call.
    pub(crate) fn calling(fut: S::Future) -> Self {
        ResponseFuture {
            state: State::Calling { fut },
            pending: None,
            _body: std::marker::PhantomData,
        }
    }

    /// The decision was made at once and denied the request.
    pub(crate) fn rejected(response: Response<ResponseBody<ResBody>>) -> Self {
        ResponseFuture {
            state: State::Rejected {
                response: Some(response),
            },
            pending: None,
            _body: std::marker::PhantomData,
        }
    }
}

impl<PF, S, R, ReqBody, ResBody> Future for ResponseFuture<PF, S, R, ReqBody, ResBody>
where
    PF: Future<Output = Decision>,
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: RejectionResponse,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Evaluating { fut } => {
                    let decision = {
                        let span = this.pending.as_ref().map(|p| p.observation.span());
                        let _entered = span.map(tracing::Span::enter);
                        ready!(fut.poll(cx))
                    };
                    let Pending {
                        req,
                        mut inner,
                        rejection,
                        protocol,
                        authenticated,
                        observation,
                    } = *this.pending.take().expect("polled after completion");
                    let ctx = req.extensions().get::<AuthContext>();
                    match decision.into_rejection(authenticated) {
                        None => {
                            observation.finish(Outcome::Allow, "allowed by policy", ctx, None);
                            let fut = inner.call(req);
                            this.state.set(State::Calling { fut });
                        }
                        Some(rejected) => {
                            return Poll::Ready(Ok(reject(
                                &rejection,
                                rejected,
                                protocol,
                                ctx,
                                observation,
                            )));
                        }
                    }
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

impl<PF, S, R, ReqBody, ResBody> fmt::Debug for ResponseFuture<PF, S, R, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
