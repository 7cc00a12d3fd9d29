use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::future::ResponseFuture;
use super::headers::Propagator;
use crate::context::AuthContext;
use crate::macros::define_inner_service_accessors;

/// Strips owned inbound headers and forwards the [`AuthContext`] as headers; see the
/// [module docs](crate::propagate). Its future sets the forwarded request id on the
/// response.
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ContextPropagation<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let ctx = parts.extensions.get::<AuthContext>();
        let request_id =
            self.propagator
                .apply_to(&parts.method, parts.uri.path(), &mut parts.headers, ctx);
        let name = self.propagator.request_id_name().clone();
        ResponseFuture::new(
            self.inner.call(Request::from_parts(parts, body)),
            name,
            request_id,
        )
    }
}
