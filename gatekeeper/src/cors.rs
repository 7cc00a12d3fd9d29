//! `[cors]`: cross-origin requests answered at the edge by tower-http's `CorsLayer`, before
//! routing and authentication.
//!
//! A real preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered
//! by the layer itself: never routed, never authenticated, never sent upstream. Every other
//! request, `OPTIONS` included, is routed and authenticated as usual, and its response gets
//! the CORS response headers (`Access-Control-Allow-Origin`, `-Expose-Headers`, ...).

use std::convert::Infallible;

use http::header::{ACCESS_CONTROL_REQUEST_METHOD, ORIGIN};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use tower::{Layer, ServiceExt};
use tower_http::cors::CorsLayer;

use crate::routes::Gateway;
use crate::serve::GatewayBody;

/// Whether `req` is a CORS preflight (Fetch standard §3.2.2).
pub(crate) fn is_preflight<B>(req: &Request<B>) -> bool {
    req.method() == Method::OPTIONS
        && req.headers().contains_key(ORIGIN)
        && req.headers().contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// The method of an `OPTIONS` request that is not a preflight, while it passes the CORS
/// layer (which answers every `OPTIONS` it sees as a preflight) as a `GET`.
#[derive(Clone, Copy)]
struct NotPreflight;

/// Serves `req` through `cors` in front of the gateway's routing.
pub(crate) async fn handle(
    cors: &CorsLayer,
    gateway: Gateway,
    mut req: Request<Incoming>,
) -> Response<GatewayBody> {
    if req.method() == Method::OPTIONS && !is_preflight(&req) {
        req.extensions_mut().insert(NotPreflight);
        *req.method_mut() = Method::GET;
    }
    let routed = tower::service_fn(move |mut req: Request<Incoming>| {
        let gateway = gateway.clone();
        async move {
            if req.extensions_mut().remove::<NotPreflight>().is_some() {
                *req.method_mut() = Method::OPTIONS;
            }
            Ok::<_, Infallible>(gateway.route(req).await)
        }
    });
    match cors.layer(routed).oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}
