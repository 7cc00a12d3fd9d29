//! Idle HTTP/1.1 keep-alive connections are parked between requests (the gateway keeps only
//! the socket, not its HTTP state and buffers) and served again when the client sends its
//! next request: keep-alive and pipelining work across a park, and a parked connection keeps
//! the header-read and idle deadlines and closes at once on shutdown. Parking is observed in
//! the gateway's trace log ("idle connection parked", with the client's address).

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use support::{BOUND, ISSUER, Running, TempDir, Upstream, find, gateway_dir};

/// A tracing writer into a shared buffer (the tests' runtimes are single-threaded, so the
/// gateway's tasks log into it too).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Installs the capture as this thread's subscriber, with the gateway's trace events.
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_env_filter(tracing_subscriber::EnvFilter::new("gatekeeper=trace"))
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    /// How many times the connection from `client` was parked.
    fn parks(&self, client: SocketAddr) -> usize {
        let peer = format!("peer={client}");
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|line| line.contains("idle connection parked") && line.contains(&peer))
            .count()
    }

    /// Waits until the connection from `client` has been parked `times` times.
    async fn wait_parked(&self, client: SocketAddr, times: usize) {
        tokio::time::timeout(BOUND, async {
            while self.parks(client) < times {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the connection from {client} was not parked {times} times"));
    }
}

/// A gateway with `server` as its `[server]` section and a public `/pub/` route to `upstream`
/// (the echo upstream: it answers with the request it got as JSON).
async fn gateway(upstream: SocketAddr, server: &str) -> (Running, TempDir) {
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
"#
    ));
    let config = gatekeeper::load_config(&path).unwrap_or_else(|e| panic!("{e}"));
    (Running::start(config).await, dir)
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\n\r\n")
}

/// Reads one response (head and a `Content-Length` or chunked body) from `stream`, returning
/// its status and body; `buffered` holds what was read past earlier responses.
async fn read_response(stream: &mut TcpStream, buffered: &mut Vec<u8>) -> (u16, String) {
    tokio::time::timeout(BOUND, async {
        let head_end = loop {
            if let Some(at) = find(buffered, b"\r\n\r\n") {
                break at + 4;
            }
            fill(stream, buffered).await;
        };
        let head = String::from_utf8_lossy(&buffered[..head_end]).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {head:?}"));
        let header = |name: &str| {
            head.lines().find_map(|line| {
                let (n, v) = line.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        buffered.drain(..head_end);
        let body = if let Some(length) = header("content-length") {
            let length: usize = length.parse().unwrap();
            while buffered.len() < length {
                fill(stream, buffered).await;
            }
            buffered.drain(..length).collect::<Vec<u8>>()
        } else {
            assert_eq!(header("transfer-encoding").as_deref(), Some("chunked"));
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(at) = find(buffered, b"\r\n") {
                        break at;
                    }
                    fill(stream, buffered).await;
                };
                let size = usize::from_str_radix(
                    String::from_utf8_lossy(&buffered[..line_end]).trim(),
                    16,
                )
                .unwrap();
                while buffered.len() < line_end + 2 + size + 2 {
                    fill(stream, buffered).await;
                }
                body.extend_from_slice(&buffered[line_end + 2..line_end + 2 + size]);
                buffered.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    break body;
                }
            }
        };
        (status, String::from_utf8_lossy(&body).into_owned())
    })
    .await
    .expect("a response within BOUND")
}

async fn fill(stream: &mut TcpStream, buffered: &mut Vec<u8>) {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await.unwrap();
    assert!(n > 0, "the gateway closed the connection mid-response");
    buffered.extend_from_slice(&chunk[..n]);
}

/// The path the echo upstream saw, from its JSON answer.
fn echoed_path(body: &str) -> String {
    let echo: serde_json::Value = serde_json::from_str(body).unwrap();
    echo["path"].as_str().unwrap().to_owned()
}

/// Waits until the gateway closes `stream` (EOF or reset) and returns when; panics after
/// `BOUND`.
async fn closed_by_gateway(stream: &mut TcpStream) -> Instant {
    let mut out = Vec::new();
    tokio::time::timeout(BOUND, async {
        let _ = stream.read_to_end(&mut out).await;
    })
    .await
    .expect("the gateway closes the connection");
    Instant::now()
}

#[tokio::test(flavor = "current_thread")]
async fn keep_alive_requests_are_served_across_parks() {
    let logs = Captured::default();
    let _guard = logs.install();
    let upstream = Upstream::start().await;
    let (gw, _dir) = gateway(upstream.addr, "").await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let client = stream.local_addr().unwrap();
    let mut buffered = Vec::new();
    for (i, path) in ["/pub/1", "/pub/2", "/pub/3"].into_iter().enumerate() {
        stream.write_all(get(path).as_bytes()).await.unwrap();
        let (status, body) = read_response(&mut stream, &mut buffered).await;
        assert_eq!(status, 200);
        assert_eq!(echoed_path(&body), path);
        // Idle after each answer: parked before the next request.
        logs.wait_parked(client, i + 1).await;
    }
    assert_eq!(upstream.hits(), 3);
    gw.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn pipelined_requests_are_answered_in_order_before_and_after_a_park() {
    let logs = Captured::default();
    let _guard = logs.install();
    let upstream = Upstream::start().await;
    let (gw, _dir) = gateway(upstream.addr, "").await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let client = stream.local_addr().unwrap();
    let mut buffered = Vec::new();
    stream
        .write_all(format!("{}{}", get("/pub/a"), get("/pub/b")).as_bytes())
        .await
        .unwrap();
    for path in ["/pub/a", "/pub/b"] {
        let (status, body) = read_response(&mut stream, &mut buffered).await;
        assert_eq!(status, 200);
        assert_eq!(echoed_path(&body), path);
    }
    logs.wait_parked(client, 1).await;
    // Two requests in one write wake the parked connection; both are answered, in order.
    stream
        .write_all(format!("{}{}", get("/pub/c"), get("/pub/d")).as_bytes())
        .await
        .unwrap();
    for path in ["/pub/c", "/pub/d"] {
        let (status, body) = read_response(&mut stream, &mut buffered).await;
        assert_eq!(status, 200);
        assert_eq!(echoed_path(&body), path);
    }
    // A request arriving in pieces after a park is served as well.
    logs.wait_parked(client, 2).await;
    let request = get("/pub/e");
    let (first, rest) = request.split_at(10);
    stream.write_all(first.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stream.write_all(rest.as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut stream, &mut buffered).await;
    assert_eq!(status, 200);
    assert_eq!(echoed_path(&body), "/pub/e");
    assert_eq!(upstream.hits(), 5);
    gw.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_partial_head_after_a_park_is_cut_at_the_header_timeout_counted_from_the_last_answer() {
    let logs = Captured::default();
    let _guard = logs.install();
    let upstream = Upstream::start().await;
    let (gw, _dir) = gateway(
        upstream.addr,
        "header_read_timeout_seconds = 1\nidle_timeout_seconds = 60",
    )
    .await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let client = stream.local_addr().unwrap();
    let mut buffered = Vec::new();
    stream.write_all(get("/pub/1").as_bytes()).await.unwrap();
    let (status, _) = read_response(&mut stream, &mut buffered).await;
    let answered = Instant::now();
    assert_eq!(status, 200);
    logs.wait_parked(client, 1).await;
    // A slow client: part of a head 0.6 s after the answer, then a byte every 100 ms.
    tokio::time::sleep_until(answered + Duration::from_millis(600)).await;
    stream
        .write_all(b"GET /pub/2 HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.split();
    let drip = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if writer.write_all(b"X").await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    let mut out = Vec::new();
    tokio::select! {
        _ = reader.read_to_end(&mut out) => {}
        () = drip => unreachable!(),
        () = tokio::time::sleep(BOUND) => panic!("the slow head was never cut"),
    }
    let closed = Instant::now();
    let after = closed - answered;
    // The deadline runs from the answer (1 s), not from the wake-up (1.6 s).
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_millis(1450),
        "closed {after:?} after the answer"
    );
    assert_eq!(upstream.hits(), 1);
    gw.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn parked_connections_close_at_the_idle_timeout_and_at_once_on_shutdown() {
    let logs = Captured::default();
    let _guard = logs.install();
    let upstream = Upstream::start().await;
    let (gw, _dir) = gateway(upstream.addr, "idle_timeout_seconds = 0.5").await;
    let mut buffered = Vec::new();
    // Idle timeout: closed while parked.
    let mut idle = TcpStream::connect(gw.addr).await.unwrap();
    idle.write_all(get("/pub/1").as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut idle, &mut buffered).await.0, 200);
    logs.wait_parked(idle.local_addr().unwrap(), 1).await;
    closed_by_gateway(&mut idle).await;
    gw.stop().await;
    // Shutdown: a parked connection does not hold the drain up.
    let (gw, _dir) = gateway(upstream.addr, "").await;
    let mut parked = TcpStream::connect(gw.addr).await.unwrap();
    parked.write_all(get("/pub/2").as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut parked, &mut buffered).await.0, 200);
    logs.wait_parked(parked.local_addr().unwrap(), 1).await;
    let stopping = Instant::now();
    gw.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "shutdown waited {:?} for a parked connection",
        stopping.elapsed()
    );
    closed_by_gateway(&mut parked).await;
}
