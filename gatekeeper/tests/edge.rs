//! The edge: what the upstream receives is exactly what the gateway checked (headers a client
//! could spoof are removed, `Host` is unambiguous, trailers stay out), and slow or hostile
//! clients cannot wear the gateway down (timeouts, connection and concurrency limits,
//! accept errors). Upstreams here are raw sockets that record the bytes they receive.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use support::{BOUND, ISSUER, Running, TempDir, find, gateway_dir, token};

// ---------------------------------------------------------------------------------------------
// A raw upstream: records each request's target, headers and body as received
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct Seen {
    target: String,
    method: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct RawState {
    seen: Mutex<Vec<Seen>>,
    /// Requests whose target starts with `/hold` wait for this.
    release: Notify,
    arrived: Notify,
}

struct RawUpstream {
    addr: SocketAddr,
    state: Arc<RawState>,
}

impl RawUpstream {
    async fn start() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(RawState::default());
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(raw_exchange(stream, Arc::clone(&shared)));
            }
        });
        RawUpstream { addr, state }
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    fn hits(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }
}

/// Reads one request (head, then a `Content-Length` or chunked body), records it and answers
/// `200 ok`, closing the connection.
async fn raw_exchange(mut stream: TcpStream, state: Arc<RawState>) {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut seen = Seen {
        target,
        method,
        headers,
        body: Vec::new(),
    };
    let mut rest = buf[head_end..].to_vec();
    if let Some(length) = seen.header("content-length") {
        let length: usize = length.parse().unwrap_or(0);
        while rest.len() < length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => rest.extend_from_slice(&chunk[..n]),
            }
        }
        seen.body = rest;
    } else if seen
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        while find(&rest, b"0\r\n\r\n").is_none() {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => rest.extend_from_slice(&chunk[..n]),
            }
        }
        seen.body = dechunk(&rest);
    }
    let hold = seen.target.starts_with("/hold");
    state.seen.lock().unwrap().push(seen);
    if hold {
        state.arrived.notify_one();
        state.release.notified().await;
    }
    let _ = stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        .await;
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = find(data, b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..line_end])
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The gateway under test
// ---------------------------------------------------------------------------------------------

/// A gateway with `server` as its `[server]` section, a public `/pub/` route and a
/// clerk-only `/orders/` route to `upstream`, plus `extra` routes.
async fn gateway(upstream: SocketAddr, server: &str, extra: &str) -> (Running, TempDir) {
    let dir = gateway_dir();
    let path = dir.write_config(&format!(
        r#"
[server]
{server}
{ISSUER}
[[route]]
path = "/pub/{{*rest}}"
upstream = "http://{upstream}"
auth = "public"

[[route]]
path = "/orders/{{*rest}}"
upstream = "http://{upstream}"
roles_any = ["clerk"]
{extra}
"#
    ));
    let config = gatekeeper::load_config(&path).unwrap_or_else(|e| panic!("{e}"));
    (Running::start(config).await, dir)
}

/// A public `/hold/` route to `upstream` (whose answers wait for `RawState::release`), with
/// `extra` keys.
fn hold_route(upstream: SocketAddr, extra: &str) -> String {
    format!(
        "[[route]]\npath = \"/hold/{{*rest}}\"\nupstream = \"http://{upstream}\"\nauth = \"public\"\n{extra}"
    )
}

/// Sends `request` as raw bytes on a new connection and returns everything the gateway
/// answers until it closes the connection (or `BOUND`).
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(BOUND, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

// ---------------------------------------------------------------------------------------------
// Header hygiene
// ---------------------------------------------------------------------------------------------

const SPOOFED: [(&str, &str); 12] = [
    ("X-HTTP-Method-Override", "DELETE"),
    ("X-HTTP-Method", "DELETE"),
    ("X-Method-Override", "DELETE"),
    ("X_HTTP_Method_Override", "DELETE"),
    ("Forwarded", "for=6.6.6.6;host=evil.test;proto=https"),
    ("X-Real-IP", "6.6.6.6"),
    ("X-Original-URL", "/admin/secrets"),
    ("X-Rewrite-URL", "/admin/secrets"),
    ("X_Original_URL", "/admin/secrets"),
    ("Proxy-Authorization", "Basic YWRtaW46YWRtaW4="),
    ("X-Forwarded-Host", "evil.test"),
    ("X-Forwarded-Prefix", "/admin"),
];

fn spoofing_request(path: &str, extra: &str) -> Vec<u8> {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\n{extra}");
    for (name, value) in SPOOFED {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(
        "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n",
    );
    request.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofable_headers_never_reach_the_upstream() {
    let upstream = RawUpstream::start().await;
    let (gw, _dir) = gateway(upstream.addr, "", "").await;
    let bearer = format!("Authorization: Bearer {}\r\n", token("rs256_valid"));
    for (path, extra) in [("/pub/a", ""), ("/orders/1", bearer.as_str())] {
        let response = raw(gw.addr, &spoofing_request(path, extra)).await;
        assert_eq!(status_of(&response), 200, "{response}");
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(request.method, "GET");
        for (name, _) in SPOOFED {
            let dashed = name.replace('_', "-");
            if dashed.eq_ignore_ascii_case("x-forwarded-host") {
                continue;
            }
            assert!(
                request.header(name).is_none() && request.header(&dashed).is_none(),
                "{name} reached the upstream: {request:?}"
            );
        }
        // The gateway's own forwarding headers, not the client's.
        assert_eq!(request.header("x-forwarded-for"), Some("127.0.0.1"));
        assert_eq!(request.header("x-forwarded-proto"), Some("http"));
        assert_eq!(request.header("x-forwarded-host"), Some("gw.test"));
        assert!(request.header("authorization").is_none());
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_extend_the_forwarded_chain() {
    let upstream = RawUpstream::start().await;
    let (gw, _dir) = gateway(upstream.addr, "trusted_proxies = [\"127.0.0.0/8\"]", "").await;
    let response = raw(gw.addr, &spoofing_request("/pub/a", "")).await;
    assert_eq!(status_of(&response), 200, "{response}");
    let seen = &upstream.seen()[0];
    assert_eq!(seen.header("x-forwarded-for"), Some("6.6.6.6, 127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-host"), Some("evil.test"));
    // A trusted proxy still cannot override the method or the path.
    assert!(seen.header("x-http-method-override").is_none());
    assert!(seen.header("x-original-url").is_none());
    assert!(seen.header("forwarded").is_none());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_one_host_is_400_and_never_forwarded() {
    let upstream = RawUpstream::start().await;
    let (gw, _dir) = gateway(upstream.addr, "", "").await;
    for request in [
        "GET /pub/a HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /pub/a HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nConnection: close\r\n\r\n",
        "GET /pub/a HTTP/1.0\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
    ] {
        let response = raw(gw.addr, request.as_bytes()).await;
        assert_eq!(status_of(&response), 400, "{request:?} -> {response}");
    }
    // HTTP/1.0 may omit Host.
    let response = raw(gw.addr, b"GET /pub/a HTTP/1.0\r\n\r\n").await;
    assert_eq!(status_of(&response), 200, "{response}");
    assert_eq!(upstream.hits(), 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_trailers_never_reach_an_h2c_upstream() {
    // An h2c upstream that reports the trailers it received.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = Arc::clone(&got);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let record = Arc::clone(&record);
                    async move {
                        let collected = req.into_body().collect().await.unwrap();
                        let trailers = collected
                            .trailers()
                            .map(|t| t.keys().map(|k| k.to_string()).collect::<Vec<_>>())
                            .unwrap_or_default();
                        record.lock().unwrap().extend(trailers);
                        let body = collected.to_bytes();
                        Ok::<_, Infallible>(Response::new(Full::new(body)))
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let (gw, _dir) = gateway(
        upstream,
        "",
        &format!(
            "[[route]]\npath = \"/h2/{{*rest}}\"\nupstream = \"http://{upstream}\"\nupstream_protocol = \"h2c\"\nauth = \"public\"\n"
        ),
    )
    .await;
    // An HTTP/2 client sends a body and trailers naming owned headers and a credential.
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-user-id", "admin".parse().unwrap());
    trailers.insert("authorization", "Bearer stolen".parse().unwrap());
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
        Ok(Frame::data(Bytes::from_static(b"payload"))),
        Ok(Frame::trailers(trailers)),
    ];
    let request = Request::post(format!("http://{}/h2/x", gw.addr))
        .body(StreamBody::new(futures_stream(frames)))
        .unwrap();
    let response = tokio::time::timeout(BOUND, sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"payload");
    assert!(
        got.lock().unwrap().is_empty(),
        "trailers forwarded: {got:?}"
    );
    gw.stop().await;
}

/// A stream of ready items, for `StreamBody`.
fn futures_stream<T: Unpin>(items: Vec<T>) -> tokio_stream::Iter<std::vec::IntoIter<T>> {
    tokio_stream::iter(items)
}

// ---------------------------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_any_method_are_forwarded_as_sent() {
    let upstream = RawUpstream::start().await;
    let (gw, _dir) = gateway(upstream.addr, "", "").await;
    let response = raw(
        gw.addr,
        b"GET /pub/search HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&response), 200, "{response}");
    let response = raw(
        gw.addr,
        b"DELETE /pub/x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 4\r\nConnection: close\r\n\r\ngone",
    )
    .await;
    assert_eq!(status_of(&response), 200, "{response}");
    let seen = upstream.seen();
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].body, b"hello world");
    assert_eq!(seen[1].method, "DELETE");
    assert_eq!(seen[1].body, b"gone");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_body_is_400_not_502() {
    let upstream = RawUpstream::start().await;
    let (gw, _dir) = gateway(upstream.addr, "", "").await;
    let response = raw(
        gw.addr,
        b"POST /pub/x HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
    )
    .await;
    assert_eq!(
        status_of(&response),
        400,
        "a malformed body is 400, never 502: {response}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_is_cut_off_with_408() {
    let upstream = RawUpstream::start().await;
    let (gw, _dir) = gateway(upstream.addr, "body_timeout_seconds = 0.3", "").await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(
            b"POST /pub/upload HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 100\r\n\r\nfirst part",
        )
        .await
        .unwrap();
    // Nothing more is sent: the gateway gives up on the body, answers and closes.
    let mut out = Vec::new();
    tokio::time::timeout(BOUND, stream.read_to_end(&mut out))
        .await
        .expect("the stalled exchange ends")
        .unwrap();
    let response = String::from_utf8_lossy(&out);
    assert_eq!(status_of(&response), 408, "{response}");
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Connections: silent, idle, too many
// ---------------------------------------------------------------------------------------------

/// Waits until the gateway closes `stream` (EOF or reset); panics after `BOUND`.
async fn closed_by_gateway(mut stream: TcpStream) {
    let mut out = Vec::new();
    tokio::time::timeout(BOUND, async {
        let _ = stream.read_to_end(&mut out).await;
    })
    .await
    .expect("the gateway closes the connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_open_connections_are_closed_within_the_header_timeout() {
    let upstream = RawUpstream::start().await;
    let (gw, _dir) = gateway(upstream.addr, "header_read_timeout_seconds = 0.3", "").await;
    // Sends nothing at all.
    closed_by_gateway(TcpStream::connect(gw.addr).await.unwrap()).await;
    // Part of the HTTP/2 preface, then nothing.
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    closed_by_gateway(stream).await;
    // Part of an HTTP/1.1 request head, then nothing.
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"GET /pub/a HTTP/1.1\r\nHo")
        .await
        .unwrap();
    closed_by_gateway(stream).await;
    assert_eq!(upstream.hits(), 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let upstream = RawUpstream::start().await;
    let (gw, _dir) = gateway(upstream.addr, "idle_timeout_seconds = 0.3", "").await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"GET /pub/a HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .await
        .unwrap();
    // The response arrives; the connection stays open for another request, then closes.
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(BOUND, stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&buf[..n])), 200);
    closed_by_gateway(stream).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_stay_open_while_a_request_is_in_flight_and_close_idle_after_it() {
    let upstream = RawUpstream::start().await;
    let (gw, _dir) = gateway(
        upstream.addr,
        "idle_timeout_seconds = 0.3\nheader_read_timeout_seconds = 60",
        &hold_route(upstream.addr, ""),
    )
    .await;
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let request = Request::get(format!("http://{}/hold/1", gw.addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = tokio::spawn(sender.send_request(request));
    tokio::time::timeout(BOUND, upstream.state.arrived.notified())
        .await
        .expect("the request reaches the upstream");
    // Twice the idle timeout with the request in flight: the connection stays open.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!conn.is_finished(), "closed with a request in flight");
    upstream.state.release.notify_one();
    let response = tokio::time::timeout(BOUND, response)
        .await
        .expect("the held request is answered")
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // The request ended: the idle timeout runs from there, not from the header-read timeout.
    tokio::time::timeout(BOUND, conn)
        .await
        .expect("the idle HTTP/2 connection is closed after the idle timeout")
        .unwrap()
        .unwrap();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_holds_the_next_connection_until_one_closes() {
    let upstream = RawUpstream::start().await;
    let (gw, _dir) = gateway(upstream.addr, "max_connections = 1", "").await;
    // The first connection is served and kept open.
    let mut first = TcpStream::connect(gw.addr).await.unwrap();
    first
        .write_all(b"GET /pub/1 HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = first.read(&mut buf).await.unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&buf[..n])), 200);
    // The second connects (the kernel's backlog) but is not served while the first is open.
    let mut second = TcpStream::connect(gw.addr).await.unwrap();
    second
        .write_all(b"GET /pub/2 HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(500), second.read(&mut buf)).await;
    assert!(
        waited.is_err(),
        "the second connection was served beyond max_connections"
    );
    assert_eq!(upstream.hits(), 1);
    // Once the first closes, the second is served.
    drop(first);
    let mut out = Vec::new();
    tokio::time::timeout(BOUND, second.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&out)), 200);
    assert_eq!(upstream.hits(), 2);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrency_answers_503_until_a_slot_frees() {
    let upstream = RawUpstream::start().await;
    let (gw, _dir) = gateway(
        upstream.addr,
        "",
        &hold_route(upstream.addr, "max_concurrency = 1\n"),
    )
    .await;
    let addr = gw.addr;
    let held = tokio::spawn(async move {
        raw(
            addr,
            b"GET /hold/1 HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n",
        )
        .await
    });
    tokio::time::timeout(BOUND, upstream.state.arrived.notified())
        .await
        .unwrap();
    let busy = raw(
        gw.addr,
        b"GET /hold/2 HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&busy), 503, "{busy}");
    assert!(
        busy.to_ascii_lowercase().contains("retry-after: 1"),
        "{busy}"
    );
    assert_eq!(
        upstream.hits(),
        1,
        "the busy request never reached the upstream"
    );
    upstream.state.release.notify_one();
    assert_eq!(status_of(&held.await.unwrap()), 200);
    // The slot is free again: the next request goes through (and is released at once).
    upstream.state.release.notify_one();
    let next = raw(
        gw.addr,
        b"GET /hold/3 HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&next), 200, "{next}");
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Out of file descriptors: the real program under a low RLIMIT_NOFILE
// ---------------------------------------------------------------------------------------------

/// Kills the child process when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_errors_back_off_log_boundedly_and_recover() {
    let upstream = RawUpstream::start().await;
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = gateway_dir();
    let config = dir.write_config(&format!(
        "listen = \"127.0.0.1:{port}\"\n[[route]]\npath = \"/pub/{{*rest}}\"\nupstream = \"http://{}\"\nauth = \"public\"\n",
        upstream.addr
    ));
    let log = dir.0.join("stderr.log");
    // The program itself, with at most 64 open files: a few hundred connections exhaust it.
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 64 && exec \"$0\" --config \"$1\" 2>\"$2\"")
        .arg(env!("CARGO_BIN_EXE_gatekeeper"))
        .arg(&config)
        .arg(&log)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let _child = Child(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let get = || {
        raw(
            addr,
            b"GET /pub/a HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n",
        )
    };
    tokio::time::timeout(BOUND, async {
        while TcpStream::connect(addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the gateway starts");
    assert_eq!(status_of(&get().await), 200);

    // 120 idle connections: the gateway runs out of descriptors and backs off (connections
    // it cannot accept wait in the listen backlog).
    let mut held = Vec::new();
    for _ in 0..120 {
        let connect = tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr));
        if let Ok(Ok(stream)) = connect.await {
            held.push(stream);
        }
    }
    assert!(
        held.len() > 64,
        "only {} connections could be opened",
        held.len()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(held);

    // Once they are gone it serves again.
    let served = tokio::time::timeout(BOUND, async {
        loop {
            let response = get().await;
            if !response.is_empty() && status_of(&response) == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(served.is_ok(), "the gateway did not recover");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let lines = text.lines().filter(|l| l.contains("cannot accept")).count();
    assert!(
        lines >= 1,
        "the accept errors were not logged at all: {text}"
    );
    assert!(
        lines <= 3,
        "accept errors flooded the log ({lines} lines): {text}"
    );
}

// ---------------------------------------------------------------------------------------------
// One canonical path; no fall-through
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_gets_exactly_the_path_that_was_authorized() {
    let upstream = RawUpstream::start().await;
    let extra = format!(
        "[[route]]\npath = \"/raw/{{*rest}}\"\nupstream = \"http://{}\"\nauth = \"public\"\nallow_path_forms = [\"encoded_slash\", \"matrix_parameters\"]\n",
        upstream.addr
    );
    let (gw, _dir) = gateway(upstream.addr, "", &extra).await;
    let send = |target: &str| {
        let request =
            format!("GET {target} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n");
        async move { raw(gw.addr, request.as_bytes()).await }
    };
    // Forms an upstream could resolve to another, more protected path: refused before any
    // route is chosen, the upstream never reached.
    for target in [
        "/pub/../orders/1",
        "/pub/..%2Forders/1",
        "/pub/%2e%2e/orders/1",
        "/pub/.%2E/orders/1",
        "/pub/./x",
        "/pub/a%2Fb",
        "/pub/a%2fb",
        "/pub/a%5Cb",
        "/pub/a\\..\\orders",
        "/pub/a;jsessionid=1",
        "/pub//orders",
        "//pub/x",
        "/pub/%00",
        "/pub/a%0Ab",
        "/pub/a%zz",
        "/pub/a%2",
        // Allowed on /raw only: not here.
        "/raw/../pub/x",
    ] {
        let response = send(target).await;
        assert_eq!(status_of(&response), 400, "{target}: {response}");
    }
    assert_eq!(upstream.hits(), 0, "a refused path reached the upstream");

    // Accepted forms: the upstream gets the canonical path the route table matched.
    let accepted = [
        ("/pub/%41bc", "/pub/Abc"),
        ("/pub/a%3ab", "/pub/a:b"),
        ("/pub/caf%c3%a9", "/pub/caf%C3%A9"),
        ("/pub/x/", "/pub/x/"),
        ("/pub/x?next=%2F..%2F&a=1", "/pub/x?next=%2F..%2F&a=1"),
        ("/pub", "/pub"),
        ("/raw/a%2Fb", "/raw/a%2Fb"),
        ("/raw/a;v=1/b", "/raw/a;v=1/b"),
    ];
    for (target, _) in accepted {
        let response = send(target).await;
        assert_eq!(status_of(&response), 200, "{target}: {response}");
    }
    let seen: Vec<String> = upstream.seen().into_iter().map(|s| s.target).collect();
    let expected: Vec<&str> = accepted.iter().map(|(_, forwarded)| *forwarded).collect();
    assert_eq!(seen, expected);
    // A form one route allows is still refused on the others.
    assert_eq!(status_of(&send("/pub/a%2Fb").await), 400);
    assert_eq!(upstream.hits(), accepted.len());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_goes_where_get_goes_and_other_methods_get_405() {
    let upstream = RawUpstream::start().await;
    let extra = format!(
        "[[route]]\npath = \"/get-only/{{*rest}}\"\nmethods = [\"GET\"]\nupstream = \"http://{}\"\nauth = \"public\"\n\n[[route]]\npath = \"/{{*rest}}\"\nupstream = \"http://{}\"\nauth = \"public\"\n",
        upstream.addr, upstream.addr
    );
    let (gw, _dir) = gateway(upstream.addr, "", &extra).await;
    let head = raw(
        gw.addr,
        b"HEAD /get-only/x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&head), 200, "{head}");
    assert_eq!(upstream.seen()[0].method, "HEAD");
    // POST matches the GET-only route's path: 405, not the public catch-all.
    let post = raw(
        gw.addr,
        b"POST /get-only/x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&post), 405, "{post}");
    assert!(
        post.to_ascii_lowercase().contains("allow: get, head"),
        "{post}"
    );
    assert_eq!(upstream.hits(), 1);
    gw.stop().await;
}

#[test]
fn routes_taking_requests_from_more_protected_ones_are_reported() {
    let dir = gateway_dir();
    let path = dir.write_config(&format!(
        "{ISSUER}\n[[route]]\npath = \"/api/{{*rest}}\"\nupstream = \"http://127.0.0.1:9\"\nroles_any = [\"admin\"]\n\n[[route]]\npath = \"/api/health\"\nupstream = \"http://127.0.0.1:9\"\nauth = \"public\"\n\n[[route]]\npath = \"/api/admin/{{*rest}}\"\nupstream = \"http://127.0.0.1:9\"\nroles_any = [\"admin\"]\n"
    ));
    let config = gatekeeper::load_config(&path).unwrap_or_else(|e| panic!("{e}"));
    let report = config.shadowed_routes();
    assert_eq!(report.len(), 1, "{report:?}");
    assert!(
        report[0].contains("[[route]] #2")
            && report[0].contains("/api/health")
            && report[0].contains("more protected [[route]] #1"),
        "{report:?}"
    );
}
