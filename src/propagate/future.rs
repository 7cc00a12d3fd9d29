use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{HeaderName, HeaderValue, Response};
use pin_project_lite::pin_project;

pin_project! {
    /// Response future of [`ContextPropagation`](super::ContextPropagation): the inner
    /// service's future, then the forwarded request id set on the response.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        request_id: Option<(HeaderName, HeaderValue)>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, name: HeaderName, value: HeaderValue) -> Self {
        ResponseFuture {
            inner,
            request_id: Some((name, value)),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        if let Some((name, value)) = this.request_id.take() {
            // The id the upstream received is the one the client sees: one value, ours.
            response.headers_mut().insert(name, value);
        }
        Poll::Ready(Ok(response))
    }
}
