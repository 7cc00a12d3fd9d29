//! The reverse proxy to one upstream: the request as the upstream gets it (hop-by-hop and
//! spoofable headers removed, our own `X-Forwarded-*`), the upstream clients, and the
//! gateway's answers when the exchange fails.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme, Uri};
use http::{Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::Semaphore;
use tower_gatekeeper::authorize::ClientAddr;
use tower_gatekeeper::reject::Protocol;
use tracing::{debug, warn};

use crate::body::{BodyFailure, BodyOutcome, Held, UpstreamBody};
use crate::config::file::UpstreamProtocol;
use crate::config::server::Server;
use crate::response::{error_chain, gateway_error, retry_later};
use crate::serve::{BoxError, GatewayBody};
use crate::tls::ArrivedOverTls;
use crate::upstream::{Http1Pool, Http1Pools, Limits, UpstreamResponse};

/// The upstream client: pooled connections, bodies streamed.
pub(crate) type HttpClient = Client<HttpConnector, UpstreamBody>;
/// The client for `https://` upstreams.
pub(crate) type HttpsClient = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

/// The upstream clients every route shares: plain HTTP/1.1 connections pooled per upstream
/// ([`crate::upstream`]); hyper-util's client for WebSocket handshakes to plain upstreams (it
/// hands the upgraded connection over) and for h2c; and with `https://` upstreams TLS offering
/// h2 and http/1.1 by ALPN, and TLS with HTTP/1.1 only.
#[derive(Clone)]
pub(crate) struct Clients {
    pub(crate) pools: Http1Pools,
    /// WebSocket handshakes to plain upstreams.
    pub(crate) http1: HttpClient,
    pub(crate) h2c: HttpClient,
    pub(crate) https: Option<HttpsClients>,
}

#[derive(Clone)]
pub(crate) struct HttpsClients {
    /// ALPN h2 and http/1.1: the upstream chooses (gRPC requests insist on h2).
    pub(crate) alpn: HttpsClient,
    /// HTTP/1.1 only (`upstream_protocol = "http1"`).
    pub(crate) http1: HttpsClient,
}

impl Clients {
    pub(crate) fn new(connect_timeout: Duration, tls: Option<&rustls::ClientConfig>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        let https = tls.map(|tls| {
            let mut tcp = connector.clone();
            tcp.enforce_http(false);
            let builder = || {
                Client::builder(TokioExecutor::new())
                    .pool_timer(TokioTimer::new())
                    .pool_idle_timeout(Duration::from_secs(60))
                    .timer(TokioTimer::new())
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .http2_keep_alive_timeout(Duration::from_secs(10))
                    .clone()
            };
            let alpn = HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                .https_only()
                .enable_all_versions()
                .wrap_connector(tcp.clone());
            let http1 = HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                .https_only()
                .enable_http1()
                .wrap_connector(tcp);
            HttpsClients {
                alpn: builder().build(alpn),
                http1: builder().build(http1),
            }
        });
        let http1 = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector.clone());
        // h2c: one multiplexed connection per upstream, pinged while idle so a dead one is
        // noticed before a request is sent on it.
        let h2c = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .timer(TokioTimer::new())
            .http2_only(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_timeout(Duration::from_secs(10))
            .build(connector);
        Clients {
            pools: Http1Pools::new(Limits::new(connect_timeout)),
            http1,
            h2c,
            https,
        }
    }
}

/// The reverse proxy to one upstream.
#[derive(Clone)]
pub(crate) struct Proxy {
    pub(crate) clients: Clients,
    /// Kept-alive HTTP/1.1 connections to `upstream` (plain `http://`).
    pub(crate) pool: Http1Pool,
    /// A request header never forwarded (the API key header).
    pub(crate) strip: Option<HeaderName>,
    pub(crate) protocol: UpstreamProtocol,
    pub(crate) upstream: Authority,
    /// `upstream` as the `Host` header an HTTP/1.1 upstream gets.
    pub(crate) upstream_host: Option<HeaderValue>,
    /// An `https://` upstream.
    pub(crate) tls: bool,
    /// From sending the request to the response head, body included.
    pub(crate) timeout: Duration,
    /// The longest pause between two pieces of the request body.
    pub(crate) body_timeout: Duration,
    /// Requests in flight upstream for this route (`max_concurrency`).
    pub(crate) slots: Option<Arc<Semaphore>>,
    /// Which peers may send us an `X-Forwarded-*` chain.
    pub(crate) server: Arc<Server>,
    /// `websocket = true`: upgrade handshakes are forwarded and the tunnel relayed.
    pub(crate) websocket: bool,
    /// Whether a tunnel is closed when the caller's credential expires.
    pub(crate) websocket_close_on_expiry: bool,
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded.
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
/// Request headers a client could use to make the upstream see another method, path or
/// client than the one the gateway checked, or to pass credentials of its own; never
/// forwarded. Compared with `_` read as `-`, since many frameworks (CGI, WSGI, PHP) read
/// `X_Original_URL` as `X-Original-URL`.
const SPOOFABLE: [&str; 8] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "forwarded",
    "x-real-ip",
    "x-original-url",
    "x-rewrite-url",
    "proxy-authorization",
];
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

impl Proxy {
    pub(crate) async fn forward(&self, mut req: Request<Incoming>) -> Response<GatewayBody> {
        let protocol = Protocol::of(&req);
        // A WebSocket handshake on a `websocket = true` route: the client's connection, once
        // upgraded, and when the caller's credential expires.
        let upgrade = (self.websocket && crate::websocket::is_handshake(&req))
            .then(|| crate::websocket::ClientSide::take(&mut req, self.websocket_close_on_expiry));
        let slot = match &self.slots {
            None => None,
            Some(slots) => match Arc::clone(slots).try_acquire_owned() {
                Ok(slot) => Some(slot),
                Err(_) => {
                    debug!(upstream = %self.upstream, "max_concurrency reached; 503");
                    return retry_later(protocol);
                }
            },
        };
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
        // The upstream's protocol is the route's, whatever the client spoke; an https
        // upstream with `auto` may also answer HTTP/1.1 requests over h2 (ALPN).
        let h2c = match self.protocol {
            _ if upgrade.is_some() => false,
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::H2c => true,
            UpstreamProtocol::Auto => protocol == Protocol::Grpc,
        };
        // Plain HTTP/1.1 goes out on the route's pool, with the target in origin form.
        let pooled = !self.tls && !h2c && upgrade.is_none();
        let uri = if pooled {
            Ok(Uri::from(path_and_query))
        } else {
            Uri::builder()
                .scheme(if self.tls {
                    Scheme::HTTPS
                } else {
                    Scheme::HTTP
                })
                .authority(self.upstream.clone())
                .path_and_query(path_and_query)
                .build()
        };
        let Ok(uri) = uri else {
            return gateway_error(
                protocol,
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the request target is malformed",
            );
        };
        *req.uri_mut() = uri;
        let over_tls = req.extensions().get::<ArrivedOverTls>().is_some();
        *req.version_mut() = if h2c {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        let has_body = !req.body().is_end_stream();

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
        if upgrade.is_some() {
            crate::websocket::keep_upgrade(headers);
        }
        // A body of unknown length goes upstream chunked, whatever the method (hyper sends
        // no body for a GET without a length or `Transfer-Encoding`).
        if !h2c && has_body && !headers.contains_key(header::CONTENT_LENGTH) {
            headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
        if let Some(name) = &self.strip {
            headers.remove(name);
        }
        let trusted = client.is_some_and(|ip| self.server.trusts(ip));
        remove_spoofable(headers, trusted);
        if h2c {
            // The upstream's authority travels as `:authority`, from the URI.
            headers.remove(header::HOST);
        } else if let Some(host) = &self.upstream_host {
            headers.insert(header::HOST, host.clone());
        }
        if let Some(ip) = client {
            append_forwarded_for(headers, ip);
        }
        if !(trusted && headers.contains_key(X_FORWARDED_PROTO)) {
            let proto = if over_tls { "https" } else { "http" };
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        }
        if !(trusted && headers.contains_key(X_FORWARDED_HOST)) {
            match original_host {
                Some(host) => headers.insert(X_FORWARDED_HOST, host),
                None => headers.remove(X_FORWARDED_HOST),
            };
        }

        let outcome = BodyOutcome::default();
        let body_timeout = self.body_timeout;
        let req = req.map(|body| UpstreamBody::new(body, body_timeout, outcome.clone()));
        let sent = async {
            let legacy = match (&self.clients.https, self.tls) {
                _ if pooled => return self.pool.send(req).await,
                (Some(https), true)
                    if self.protocol == UpstreamProtocol::Http1 || upgrade.is_some() =>
                {
                    https.http1.request(req).await
                }
                (Some(https), true) => https.alpn.request(req).await,
                _ if h2c => self.clients.h2c.request(req).await,
                _ => self.clients.http1.request(req).await,
            };
            legacy
                .map(|response| (response, None))
                .map_err(BoxError::from)
        };
        match tokio::time::timeout(self.timeout, sent).await {
            Ok(Ok((response, _))) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                match upgrade {
                    Some(client) => client.relay(response, slot, self.upstream.clone()),
                    None => {
                        warn!(upstream = %self.upstream, "upstream switched protocols unasked");
                        gateway_error(
                            protocol,
                            StatusCode::BAD_GATEWAY,
                            "bad_gateway",
                            "the upstream service answered with an unexpected protocol switch",
                        )
                    }
                }
            }
            Ok(Ok((mut response, lease))) => {
                remove_hop_by_hop(response.headers_mut());
                response.map(|body| {
                    Held::new(UpstreamResponse::new(body, lease), slot)
                        .map_err(Into::into)
                        .boxed()
                })
            }
            Ok(Err(error)) => match outcome.failure() {
                Some(BodyFailure::Stalled) => {
                    debug!(upstream = %self.upstream, "request body stalled past the body timeout");
                    gateway_error(
                        protocol,
                        StatusCode::REQUEST_TIMEOUT,
                        "request_timeout",
                        "the request body was not sent in time",
                    )
                }
                Some(BodyFailure::Malformed) => {
                    debug!(upstream = %self.upstream, error = %error_chain(&*error), "malformed request body");
                    gateway_error(
                        protocol,
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "the request body is malformed",
                    )
                }
                None => {
                    warn!(upstream = %self.upstream, error = %error_chain(&*error), "upstream request failed");
                    gateway_error(
                        protocol,
                        StatusCode::BAD_GATEWAY,
                        "bad_gateway",
                        "the upstream service is unreachable",
                    )
                }
            },
            Err(_) => {
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

/// Removes the hop-by-hop headers and every header `Connection` names.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names present: most messages carry none of these, and looking each
    // one up would hash it.
    if !headers.keys().any(|name| is_hop_by_hop(name.as_str())) {
        return;
    }
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

/// Whether `name` (lower case, as `HeaderName` keeps it) is one of [`HOP_BY_HOP`].
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Removes [`SPOOFABLE`] headers and, unless the peer is a trusted proxy, every
/// `X-Forwarded-*` header (in any spelling with `_`).
fn remove_spoofable(headers: &mut HeaderMap, trusted: bool) {
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            let dashed: Cow<'_, str> = if name.contains('_') {
                Cow::Owned(name.replace('_', "-"))
            } else {
                Cow::Borrowed(name)
            };
            SPOOFABLE.contains(&&*dashed)
                || (dashed.starts_with("x-forwarded-") && (!trusted || dashed != name))
        })
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// Appends the client's address to `x-forwarded-for` (joining any values it already has).
fn append_forwarded_for(headers: &mut HeaderMap, ip: IpAddr) {
    if !headers.contains_key(&X_FORWARDED_FOR) {
        let mut text = [0u8; 45];
        let mut cursor = std::io::Cursor::new(&mut text[..]);
        if std::io::Write::write_fmt(&mut cursor, format_args!("{ip}")).is_ok() {
            let len = usize::try_from(cursor.position()).unwrap_or(0);
            if let Ok(value) = HeaderValue::from_bytes(&text[..len]) {
                headers.insert(X_FORWARDED_FOR, value);
            }
            return;
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hop_by_hop_names_are_the_ones_matched() {
        for name in &HOP_BY_HOP {
            assert!(is_hop_by_hop(name.as_str()), "{name}");
        }
        for name in [
            "content-length",
            "host",
            "x-connection",
            "tes",
            "upgrade-insecure-requests",
        ] {
            assert!(!is_hop_by_hop(name), "{name}");
        }
    }
}
