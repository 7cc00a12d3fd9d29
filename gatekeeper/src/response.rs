//! Responses the gateway makes itself (no route, bad request, upstream down), shaped like the
//! library's rejections.

use std::error::Error as StdError;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tower_gatekeeper::reject::Protocol;

use crate::serve::GatewayBody;

/// A gateway-made error response, shaped like the library's rejections: JSON for HTTP, and
/// for gRPC a Trailers-Only response whose `grpc-status` follows gRPC's HTTP status mapping
/// (404 and 405 → 12 UNIMPLEMENTED, 429 → 8 RESOURCE_EXHAUSTED, 502/503/504 → 14 UNAVAILABLE; a malformed request → 3
/// INVALID_ARGUMENT, a request too slow → 4 DEADLINE_EXCEEDED), so gRPC clients see a
/// status rather than a body they cannot decode.
pub(crate) fn gateway_error(
    protocol: Protocol,
    status: StatusCode,
    error: &str,
    description: &str,
) -> Response<GatewayBody> {
    if protocol == Protocol::Grpc {
        let code: u16 = match status {
            StatusCode::BAD_REQUEST => 3,
            StatusCode::REQUEST_TIMEOUT => 4,
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => 12,
            StatusCode::TOO_MANY_REQUESTS => 8,
            _ => 14,
        };
        let mut response = Response::new(GatewayBody::default());
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from(code));
        // The descriptions are fixed ASCII sentences: no percent-encoding needed beyond spaces.
        if let Ok(message) = HeaderValue::from_str(&description.replace(' ', "%20")) {
            headers.insert("grpc-message", message);
        }
        return response;
    }
    json_error(status, error, description)
}

/// 503 with `Retry-After: 1` (gRPC: 14 UNAVAILABLE): the route's upstream is busy.
pub(crate) fn retry_later(protocol: Protocol) -> Response<GatewayBody> {
    let mut response = gateway_error(
        protocol,
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "the upstream service is busy; retry later",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// A gateway-made error response with the same JSON shape as the library's rejections.
pub(crate) fn json_error(
    status: StatusCode,
    error: &str,
    description: &str,
) -> Response<GatewayBody> {
    let body = json!({ "error": error, "error_description": description }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An error and its sources, for logs.
pub(crate) fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
