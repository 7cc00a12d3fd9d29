use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use tower_service::Service;

use super::headers::Propagator;
use crate::context::AuthContext;
use crate::macros::define_inner_service_accessors;

/// Strips owned inbound headers and forwards the [`AuthContext`] as headers; see the
/// [module docs](crate::propagate). Its future is the inner service's.
#[derive(Debug, Clone)]
pub struct ContextPropagation<S> {
    inner: S,
    propagator: Arc<Propagator>,
}

impl<S> ContextPropagation<S> {
    pub(crate) fn from_parts(inner: S, propagator: Arc<Propagator>) -> Self {
        ContextPropagation { inner, propagator }
    }

    #[cfg(test)]
    pub(crate) fn into_propagator(self) -> Arc<Propagator> {
        self.propagator
    }

    define_inner_service_accessors!();
}

impl<S, B> Service<Request<B>> for ContextPropagation<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let ctx = parts.extensions.get::<AuthContext>();
        self.propagator.apply(&mut parts.headers, ctx);
        self.inner.call(Request::from_parts(parts, body))
    }
}
