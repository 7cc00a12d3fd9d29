use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::future::ResponseFuture;
use super::{AuthMode, AuthenticateSeen, Authenticator};
use crate::body::ResponseBody;
use crate::credential::RequestHead;
use crate::macros::define_inner_service_accessors;
use crate::reject::{Protocol, RejectionKind, RejectionResponse};

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
}

impl<S, A, R> Authenticate<S, A, R> {
    pub(crate) fn from_parts(inner: S, authenticator: A, mode: AuthMode, rejection: R) -> Self {
        Authenticate {
            inner,
            authenticator,
            mode,
            rejection,
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
        req.extensions_mut().insert(AuthenticateSeen);
        let protocol = Protocol::of(&req);
        match self.authenticator.authenticate(&RequestHead::of(&req)) {
            Ok(fut) => {
                // Keep the service that was driven to readiness for this request.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::authenticating(
                    fut,
                    req,
                    inner,
                    self.rejection.clone(),
                    protocol,
                    self.mode,
                )
            }
            Err(rejection)
                if rejection.kind() == RejectionKind::MissingCredential
                    && self.mode == AuthMode::Optional =>
            {
                ResponseFuture::calling(self.inner.call(req))
            }
            Err(rejection) => ResponseFuture::rejected(crate::reject::render(
                &self.rejection,
                rejection,
                protocol,
            )),
        }
    }
}
