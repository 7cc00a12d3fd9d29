//! Bodies on their way through the gateway: request bodies sent upstream (with a stall
//! timeout, trailers dropped, and a record of why they failed), and response bodies that hold
//! something (a connection's activity guard, a concurrency slot) until they are sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use crate::serve::BoxError;

pin_project! {
    /// `inner`, holding `held` until the body is dropped.
    pub(crate) struct Held<B, T> {
        #[pin]
        inner: B,
        held: T,
    }
}

impl<B, T> Held<B, T> {
    pub(crate) fn new(inner: B, held: T) -> Self {
        Held { inner, held }
    }
}

impl<B: Body, T> Body for Held<B, T> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why a request body could not be sent upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFailure {
    /// The client paused longer than the body timeout.
    Stalled,
    /// The client sent a malformed body (bad chunked encoding, a reset stream, ...).
    Malformed,
}

/// Where an [`UpstreamBody`] records its failure, for the proxy to answer 408 or 400 rather
/// than blame the upstream.
#[derive(Debug, Clone, Default)]
pub(crate) struct BodyOutcome(Arc<Mutex<Option<BodyFailure>>>);

impl BodyOutcome {
    pub(crate) fn failure(&self) -> Option<BodyFailure> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, failure: BodyFailure) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(failure);
    }
}

pin_project! {
    /// A client's request body as sent upstream: data frames as they come, cut off with an
    /// error when the client pauses longer than `timeout` between frames; trailers are not
    /// forwarded (they could carry identity headers or credentials past the propagation
    /// layer).
    pub(crate) struct UpstreamBody {
        #[pin]
        inner: Incoming,
        timeout: Duration,
        // Armed while a frame is awaited; boxed so the body stays small when not waiting.
        stall: Option<Pin<Box<Sleep>>>,
        outcome: BodyOutcome,
        done: bool,
    }
}

impl UpstreamBody {
    pub(crate) fn new(inner: Incoming, timeout: Duration, outcome: BodyOutcome) -> Self {
        let done = inner.is_end_stream();
        UpstreamBody {
            inner,
            timeout,
            stall: None,
            outcome,
            done,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(frame) => {
                *this.stall = None;
                match frame {
                    Some(Ok(frame)) if frame.is_data() => {
                        if this.inner.is_end_stream() {
                            *this.done = true;
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    // Trailers end the body; they are not forwarded.
                    Some(Ok(_)) | None => {
                        *this.done = true;
                        Poll::Ready(None)
                    }
                    Some(Err(error)) => {
                        *this.done = true;
                        this.outcome.record(BodyFailure::Malformed);
                        Poll::Ready(Some(Err(error.into())))
                    }
                }
            }
            Poll::Pending => {
                let timeout = *this.timeout;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(stall.as_mut().poll(cx));
                *this.done = true;
                this.outcome.record(BodyFailure::Stalled);
                Poll::Ready(Some(Err(
                    "the client stopped sending the request body".into()
                )))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        if self.done {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}
