use std::borrow::Cow;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use crate::config::file::UpstreamProtocol;
use crate::response::error_chain;
use crate::response::gateway_error;
use crate::serve::GatewayBody;
use crate::serve::HttpClient;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme, Uri};
use http::{Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tower_gatekeeper::authorize::ClientAddr;
use tower_gatekeeper::reject::Protocol;
use tracing::warn;

/// The reverse proxy to one upstream.
#[derive(Clone)]
pub(crate) struct Proxy {
    /// A request header never forwarded (the API key header).
    pub(crate) strip: Option<HeaderName>,
    pub(crate) http1: HttpClient,
    pub(crate) h2c: HttpClient,
    pub(crate) protocol: UpstreamProtocol,
    pub(crate) upstream: Authority,
    pub(crate) timeout: Duration,
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded.
pub(crate) const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

impl Proxy {
    pub(crate) async fn forward(&self, mut req: Request<Incoming>) -> Response<GatewayBody> {
        let protocol = Protocol::of(&req);
        let original_host = req.headers().get(header::HOST).cloned().or_else(|| {
            req.uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let client = req.extensions().get::<ClientAddr>().map(|c| c.0.ip());
        let path_and_query = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.upstream.clone())
            .path_and_query(path_and_query)
            .build();
        let Ok(uri) = uri else {
            return gateway_error(
                protocol,
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the request target is malformed",
            );
        };
        *req.uri_mut() = uri;
        // The upstream's protocol is the route's, whatever the client spoke.
        let h2c = match self.protocol {
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::H2c => true,
            UpstreamProtocol::Auto => protocol == Protocol::Grpc,
        };
        *req.version_mut() = if h2c {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };

        let headers = req.headers_mut();
        // `TE: trailers` is the one TE HTTP/2 allows (RFC 9113 §8.2.2); gRPC peers send it
        // to say they read trailers. Kept for an h2c upstream, dropped (hop-by-hop) for
        // HTTP/1.1.
        let te_trailers = h2c
            && headers
                .get_all(header::TE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
        remove_hop_by_hop(headers);
        if te_trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if let Some(name) = &self.strip {
            headers.remove(name);
        }
        if h2c {
            // The upstream's authority travels as `:authority`, from the URI.
            headers.remove(header::HOST);
        } else if let Ok(host) = HeaderValue::from_str(self.upstream.as_str()) {
            headers.insert(header::HOST, host);
        }
        if let Some(ip) = client {
            append_forwarded_for(headers, ip);
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        match original_host {
            Some(host) => headers.insert(X_FORWARDED_HOST, host),
            None => headers.remove(X_FORWARDED_HOST),
        };

        // The timeout runs from the moment the request is sent in full: a large upload may
        // take longer than the upstream has to answer.
        let (sent_tx, sent_rx) = oneshot::channel();
        let client = if h2c { &self.h2c } else { &self.http1 };
        let response = client.request(req.map(|body| SentBody::new(body, sent_tx)));
        let deadline = async {
            let _ = sent_rx.await;
            tokio::time::sleep(self.timeout).await;
        };
        let outcome = tokio::select! {
            response = response => Some(response),
            () = deadline => None,
        };
        match outcome {
            Some(Ok(mut response)) => {
                remove_hop_by_hop(response.headers_mut());
                response.map(|body| body.map_err(Into::into).boxed())
            }
            Some(Err(error)) => {
                warn!(upstream = %self.upstream, error = %error_chain(&error), "upstream request failed");
                gateway_error(
                    protocol,
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    "the upstream service is unreachable",
                )
            }
            None => {
                warn!(upstream = %self.upstream, timeout_s = self.timeout.as_secs_f64(), "upstream timed out");
                gateway_error(
                    protocol,
                    StatusCode::GATEWAY_TIMEOUT,
                    "gateway_timeout",
                    "the upstream service did not answer in time",
                )
            }
        }
    }
}

/// A request body on its way upstream that reports when it has been sent in full (or
/// dropped unsent).
pub(crate) struct SentBody {
    pub(crate) inner: Incoming,
    pub(crate) sent: Option<oneshot::Sender<()>>,
}

impl SentBody {
    pub(crate) fn new(inner: Incoming, sent: oneshot::Sender<()>) -> Self {
        let mut body = SentBody {
            inner,
            sent: Some(sent),
        };
        if body.inner.is_end_stream() {
            body.finish();
        }
        body
    }

    pub(crate) fn finish(&mut self) {
        if let Some(sent) = self.sent.take() {
            let _ = sent.send(());
        }
    }
}

impl http_body::Body for SentBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) || self.inner.is_end_stream() {
            self.finish();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Removes the hop-by-hop headers and every header `Connection` names.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Appends the client's address to `x-forwarded-for` (joining any values it already has).
pub(crate) fn append_forwarded_for(headers: &mut HeaderMap, ip: IpAddr) {
    let mut value = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ");
    if !value.is_empty() {
        value.push_str(", ");
    }
    value.push_str(&ip.to_string());
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_FOR, value);
    }
}

/// The canonical form of a request path, used for routing and forwarded upstream, so the
/// route the gateway checks is the resource the upstream serves: escapes of unreserved
/// characters decoded (RFC 3986 §6.2.2.2), other escapes upper-cased. `None` for a path that
/// is not absolute, has a malformed escape, or has a `.` or `..` segment (also when escaped),
/// which an upstream would resolve to a path under another route.
pub(crate) fn normalize_path(path: &str) -> Option<Cow<'_, str>> {
    if !path.starts_with('/') {
        return None;
    }
    let normalized = if path.contains('%') {
        let bytes = path.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'%' {
                out.push(bytes[i]);
                i += 1;
                continue;
            }
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let value = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~') {
                out.push(value);
            } else {
                out.push(b'%');
                out.extend(hex.iter().map(u8::to_ascii_uppercase));
            }
            i += 3;
        }
        // Only ASCII was decoded, so the result is as valid UTF-8 as the input.
        let out = String::from_utf8(out).ok()?;
        if out == path {
            Cow::Borrowed(path)
        } else {
            Cow::Owned(out)
        }
    } else {
        Cow::Borrowed(path)
    };
    if normalized.split('/').any(|s| s == "." || s == "..") {
        return None;
    }
    Some(normalized)
}

/// `uri` with its path replaced, query kept.
pub(crate) fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    Uri::from_parts(parts).ok()
}
