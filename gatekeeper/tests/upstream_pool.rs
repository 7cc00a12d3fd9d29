//! Kept-alive HTTP/1.1 upstream connections: reused across requests and clients, each
//! response given to the request it answers whatever its framing (chunked, HEAD, 204, an
//! answer sent before the request body was read), and never lent again before its response
//! has been read to the end or after the upstream closed it. The upstream is a raw socket that numbers its
//! connections and records which one carried each request.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use support::{BOUND, Running, TempDir, client, find, gateway_dir};

#[derive(Debug, Clone)]
struct Exchange {
    connection: usize,
    method: String,
    target: String,
    body_len: usize,
}

#[derive(Default)]
struct Record {
    connections: usize,
    exchanges: Vec<Exchange>,
}

#[derive(Default)]
struct Shared {
    record: Mutex<Record>,
    /// A `/big/` answer holds the rest of its body back until this.
    release: Notify,
}

struct RawUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl RawUpstream {
    async fn start() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let state = Arc::clone(&shared);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let connection = {
                    let mut record = state.record.lock().unwrap();
                    record.connections += 1;
                    record.connections - 1
                };
                tokio::spawn(serve(stream, connection, Arc::clone(&state)));
            }
        });
        RawUpstream { addr, shared }
    }

    fn connections(&self) -> usize {
        self.shared.record.lock().unwrap().connections
    }

    fn exchanges(&self) -> Vec<Exchange> {
        self.shared.record.lock().unwrap().exchanges.clone()
    }
}

/// Serves requests on one connection, answering by the target:
/// - `/keep/…`: 200 with the target as a `Content-Length` body (none for HEAD);
/// - `/chunked/…`: 200 with the target as a chunked body;
/// - `/empty/…`: 204;
/// - `/close/…`: like `/keep/`, then the connection is closed without a word;
/// - `/early/…`: 200 `early` before the request body is read, which is then read;
/// - `/big/…`: 200 with [`BIG`] bytes of `x`, the first [`PIECE`] at once, the rest once
///   released.
async fn serve(mut stream: TcpStream, connection: usize, shared: Arc<Shared>) {
    let mut buf = Vec::new();
    loop {
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
        let mut rest = buf.split_off(head_end);
        buf.clear();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or_default().split(' ');
        let method = request_line.next().unwrap_or_default().to_owned();
        let target = request_line.next().unwrap_or_default().to_owned();
        let length: usize = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        let early = target.contains("/early/");
        if early
            && stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nearly")
                .await
                .is_err()
        {
            return;
        }
        while rest.len() < length {
            let mut chunk = [0u8; 65536];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => rest.extend_from_slice(&chunk[..n]),
            }
        }
        buf = rest.split_off(length);
        shared.record.lock().unwrap().exchanges.push(Exchange {
            connection,
            method: method.clone(),
            target: target.clone(),
            body_len: length,
        });
        let head_only = method == "HEAD";
        let written = if early {
            Ok(())
        } else if target.contains("/chunked/") {
            let answer = format!(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{target}\r\n0\r\n\r\n",
                target.len()
            );
            stream.write_all(answer.as_bytes()).await
        } else if target.contains("/empty/") {
            stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await
        } else if target.contains("/big/") {
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {BIG}\r\n\r\n");
            let piece = vec![b'x'; PIECE];
            let mut result = stream.write_all(head.as_bytes()).await;
            for i in 0..BIG / PIECE {
                if result.is_err() {
                    break;
                }
                if i == 1 {
                    shared.release.notified().await;
                }
                result = stream.write_all(&piece).await;
            }
            result
        } else {
            let body = if head_only { "" } else { target.as_str() };
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                target.len()
            );
            stream.write_all(answer.as_bytes()).await
        };
        if written.is_err() || target.contains("/close/") {
            return;
        }
    }
}

const BIG: usize = 1 << 20;
const PIECE: usize = 1 << 16;

async fn gateway(upstream: SocketAddr) -> (Running, TempDir) {
    let dir = gateway_dir();
    let path = dir.write_config(&format!(
        r#"
[server]
[[route]]
path = "/pub/{{*rest}}"
upstream = "http://{upstream}"
auth = "public"

[[route]]
path = "/also/{{*rest}}"
upstream = "http://{upstream}"
auth = "public"
"#
    ));
    let config = gatekeeper::load_config(&path).unwrap_or_else(|e| panic!("{e}"));
    (Running::start(config).await, dir)
}

async fn get(gw: &Running, path: &str) -> (StatusCode, String) {
    let response = client().get(gw.url(path)).send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_share_one_upstream_connection() {
    let upstream = RawUpstream::start().await;
    let (gw, _dir) = gateway(upstream.addr).await;
    for i in 0..20 {
        // Two routes to the same upstream share its connections.
        let path = if i % 2 == 0 {
            format!("/pub/keep/{i}")
        } else {
            format!("/also/keep/{i}")
        };
        assert_eq!(get(&gw, &path).await, (StatusCode::OK, path.clone()));
    }
    assert_eq!(upstream.connections(), 1, "{:?}", upstream.exchanges());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_reaches_its_own_request_whatever_its_framing() {
    let upstream = RawUpstream::start().await;
    let (gw, _dir) = gateway(upstream.addr).await;
    for round in 0..3 {
        let path = format!("/pub/chunked/{round}");
        assert_eq!(get(&gw, &path).await, (StatusCode::OK, path.clone()));

        let path = format!("/pub/keep/head-{round}");
        let response = client().head(gw.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-length"],
            path.len().to_string().as_str()
        );
        assert_eq!(response.text().await.unwrap(), "");

        let path = format!("/pub/empty/{round}");
        assert_eq!(
            get(&gw, &path).await,
            (StatusCode::NO_CONTENT, String::new())
        );

        let path = format!("/pub/keep/post-{round}");
        let response = client()
            .post(gw.url(&path))
            .body(vec![b'b'; 10_000])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.text().await.unwrap(), path);

        let path = format!("/pub/keep/get-{round}");
        assert_eq!(get(&gw, &path).await, (StatusCode::OK, path.clone()));
    }
    let exchanges = upstream.exchanges();
    assert_eq!(exchanges.len(), 15);
    assert!(
        exchanges.iter().all(|e| e.connection == 0),
        "one connection carries them all: {exchanges:?}"
    );
    let posts: Vec<_> = exchanges.iter().filter(|e| e.method == "POST").collect();
    assert!(posts.iter().all(|e| e.body_len == 10_000), "{posts:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_upstream_closed_while_idle_are_not_used() {
    let upstream = RawUpstream::start().await;
    let (gw, _dir) = gateway(upstream.addr).await;
    for i in 0..5 {
        let path = format!("/pub/close/{i}");
        assert_eq!(get(&gw, &path).await, (StatusCode::OK, path.clone()));
        // The close reaches the gateway before the next request.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(upstream.connections(), 5);
    let path = "/pub/keep/after";
    assert_eq!(get(&gw, path).await, (StatusCode::OK, path.to_owned()));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_answer_lets_the_request_body_finish_before_the_connection_is_reused() {
    let upstream = RawUpstream::start().await;
    let (gw, _dir) = gateway(upstream.addr).await;
    const BODY: usize = 1 << 20;
    let response = client()
        .post(gw.url("/pub/early/upload"))
        .body(vec![b'u'; BODY])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "early");
    tokio::time::timeout(BOUND, async {
        while upstream.exchanges().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the upstream reads the whole body");
    assert_eq!(upstream.exchanges()[0].body_len, BODY);
    let path = "/pub/keep/next";
    assert_eq!(get(&gw, path).await, (StatusCode::OK, path.to_owned()));
    let exchanges = upstream.exchanges();
    assert_eq!(exchanges[1].target, path);
    assert_eq!(
        exchanges[1].connection, 0,
        "the connection is reused once the body is sent"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_not_lent_again_before_its_response_is_read_to_the_end() {
    let upstream = RawUpstream::start().await;
    let (gw, _dir) = gateway(upstream.addr).await;
    let mut big = client().get(gw.url("/pub/big/file")).send().await.unwrap();
    assert_eq!(big.status(), StatusCode::OK);
    let mut got = big.chunk().await.unwrap().unwrap().len();
    // The rest of the body is held back: the connection stays busy.
    for i in 0..3 {
        let path = format!("/pub/keep/{i}");
        assert_eq!(get(&gw, &path).await, (StatusCode::OK, path.clone()));
    }
    let exchanges = upstream.exchanges();
    assert_eq!(exchanges[0].connection, 0);
    assert!(
        exchanges[1..].iter().all(|e| e.connection != 0),
        "a request went out on the connection still carrying a response: {exchanges:?}"
    );
    upstream.shared.release.notify_one();
    tokio::time::timeout(BOUND, async {
        while let Some(chunk) = big.chunk().await.unwrap() {
            got += chunk.len();
        }
    })
    .await
    .expect("the rest of the body arrives");
    assert_eq!(got, BIG);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_each_get_their_own_answer() {
    let upstream = RawUpstream::start().await;
    let (gw, _dir) = gateway(upstream.addr).await;
    let gw = Arc::new(gw);
    for round in 0..5 {
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let gw = Arc::clone(&gw);
                tokio::spawn(async move {
                    let path = match i % 3 {
                        0 => format!("/pub/keep/{round}-{i}"),
                        1 => format!("/pub/chunked/{round}-{i}"),
                        _ => format!("/also/keep/{round}-{i}"),
                    };
                    assert_eq!(get(&gw, &path).await, (StatusCode::OK, path.clone()));
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    }
    assert!(
        upstream.connections() <= 16,
        "{} upstream connections for 16 clients",
        upstream.connections()
    );
    Arc::into_inner(gw).unwrap().stop().await;
}
