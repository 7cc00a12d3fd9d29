use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::AuthMode;
use super::decision::{Verdict, decide};
use crate::audit::Observation;
use crate::body::ResponseBody;
use crate::context::AuthContext;
use crate::limits::Limits;
use crate::reject::{Rejection, RejectionResponse};

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
        // The token came from the query: successful responses get `Cache-Control: private`.
        private: bool,
    }
}

struct Pending<S, R, ReqBody> {
    req: Request<ReqBody>,
    inner: S,
    rejection: R,
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
    pub(crate) fn authenticating(
        fut: AF,
        req: Request<ReqBody>,
        inner: S,
        rejection: R,
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
                mode,
                limits,
                observation,
            })),
            private: false,
        }
    }

    pub(crate) fn calling(fut: S::Future) -> Self {
        ResponseFuture {
            state: State::Calling { fut },
            pending: None,
            private: false,
        }
    }

    /// Marks a request whose token came from the query (RFC 6750 §2.3).
    pub(crate) fn private(mut self, private: bool) -> Self {
        self.private = private;
        self
    }

    pub(crate) fn rejected(response: Response<ResponseBody<ResBody>>) -> Self {
        ResponseFuture {
            state: State::Rejected {
                response: Some(response),
            },
            pending: None,
            private: false,
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
                        mode,
                        limits,
                        observation,
                    } = *this.pending.take().expect("polled after completion");
                    if let Verdict::Reject(response) =
                        decide(&mut req, outcome, mode, limits, observation, &rejection)
                    {
                        this.state.set(State::Rejected {
                            response: Some(response),
                        });
                        continue;
                    }
                    let fut = inner.call(req);
                    this.state.set(State::Calling { fut });
                }
                StateProj::Calling { fut } => {
                    let private = *this.private;
                    return fut.poll(cx).map_ok(|mut r| {
                        if private && r.status().is_success() {
                            mark_private(r.headers_mut());
                        }
                        r.map(ResponseBody::inner)
                    });
                }
                StateProj::Rejected { response } => {
                    return Poll::Ready(Ok(response.take().expect("polled after completion")));
                }
            }
        }
    }
}

/// Adds `private` to `Cache-Control` unless the response already forbids shared caching.
fn mark_private(headers: &mut http::HeaderMap) {
    use http::header::CACHE_CONTROL;
    let current: Vec<&str> = headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let covered = current.iter().flat_map(|v| v.split(',')).any(|d| {
        let d = d.trim();
        d.eq_ignore_ascii_case("private") || d.eq_ignore_ascii_case("no-store")
    });
    if covered {
        return;
    }
    let value = if current.is_empty() {
        http::HeaderValue::from_static("private")
    } else {
        match http::HeaderValue::try_from(format!("{}, private", current.join(", "))) {
            Ok(value) => value,
            Err(_) => http::HeaderValue::from_static("private"),
        }
    };
    headers.insert(CACHE_CONTROL, value);
}

impl<AF, S, R, ReqBody, ResBody> fmt::Debug for ResponseFuture<AF, S, R, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;
    use http::header::CACHE_CONTROL;

    use super::mark_private;

    #[test]
    fn private_is_added_unless_shared_caching_is_already_excluded() {
        for (before, after) in [
            (&[][..], &["private"][..]),
            (&["max-age=60"], &["max-age=60, private"]),
            (
                &["max-age=60", "must-revalidate"],
                &["max-age=60, must-revalidate, private"],
            ),
            (&["Private"], &["Private"]),
            (&["no-cache, no-store"], &["no-cache, no-store"]),
        ] {
            let mut headers = HeaderMap::new();
            for value in before {
                headers.append(CACHE_CONTROL, value.parse().unwrap());
            }
            mark_private(&mut headers);
            let got: Vec<_> = headers.get_all(CACHE_CONTROL).iter().collect();
            assert_eq!(got, after, "{before:?}");
        }
    }
}
