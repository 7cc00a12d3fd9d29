//! `[[route]] websocket = true` end to end over loopback, with a real WebSocket client and
//! server (tokio-tungstenite) on both sides of the gateway: the handshake authenticated (header
//! or query token) with identity propagated and the token never forwarded, text and binary
//! frames relayed both ways, routes without the key not upgrading, the tunnel closed when the
//! token expires, and the configuration errors.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{WebSocketStream, accept_hdr_async, client_async};
use tower_gatekeeper::Algorithm;
use tower_gatekeeper::keys::SigningKey;

use support::{
    BOUND, ONE_ISSUER, Running, admin_token, assert_mentions, find, fixtures, gateway_dir,
};

// ---------------------------------------------------------------------------------------------
// The WebSocket upstream
// ---------------------------------------------------------------------------------------------

/// What the WebSocket upstream saw.
#[derive(Default)]
struct Seen {
    /// TCP connections accepted.
    connections: AtomicUsize,
    /// The head of every request, as it arrived (lower-cased).
    heads: Mutex<Vec<String>>,
    /// Completed handshakes.
    handshakes: AtomicUsize,
    /// When each WebSocket connection ended (the client went away or closed).
    ended: Mutex<Vec<SystemTime>>,
}

/// An echo WebSocket server: every text and binary message comes back as it is, except the
/// text `whoami`, answered with what the handshake carried (`x-user-id`, whether an
/// `authorization` header arrived, the request target).
struct WsUpstream {
    addr: SocketAddr,
    seen: Arc<Seen>,
}

impl WsUpstream {
    async fn start() -> WsUpstream {
        WsUpstream::start_with(None).await
    }

    /// Over TLS with `config`.
    async fn start_tls(config: Arc<rustls::ServerConfig>) -> WsUpstream {
        WsUpstream::start_with(Some(TlsAcceptor::from(config))).await
    }

    async fn start_with(tls: Option<TlsAcceptor>) -> WsUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let shared = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_ws(stream, Arc::clone(&shared), tls.clone()));
            }
        });
        WsUpstream { addr, seen }
    }

    fn heads(&self) -> Vec<String> {
        self.seen.heads.lock().unwrap().clone()
    }
}

async fn serve_ws(stream: TcpStream, seen: Arc<Seen>, tls: Option<TlsAcceptor>) {
    if let Some(acceptor) = tls {
        if let Ok(stream) = acceptor.accept(stream).await {
            handshake_and_echo(stream, seen).await;
        }
        return;
    }
    // The request head as the gateway sent it, read without consuming it.
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = stream.peek(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        if let Some(end) = find(&buf[..n], b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            seen.heads.lock().unwrap().push(head);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    handshake_and_echo(stream, seen).await;
}

// tungstenite's handshake callback returns its `ErrorResponse` by value.
#[allow(clippy::result_large_err)]
async fn handshake_and_echo<S>(stream: S, seen: Arc<Seen>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let handshake = Arc::new(Mutex::new(Value::Null));
    let record = Arc::clone(&handshake);
    let callback = move |req: &Request, response: Response| {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        *record.lock().unwrap() = json!({
            "x-user-id": header("x-user-id"),
            "authorization": header("authorization").is_some(),
            "target": req.uri().to_string(),
        });
        Ok(response)
    };
    let Ok(mut ws) = accept_hdr_async(stream, callback).await else {
        return;
    };
    seen.handshakes.fetch_add(1, Ordering::SeqCst);
    while let Some(Ok(message)) = ws.next().await {
        let reply = match message {
            Message::Text(text) if text.as_str() == "whoami" => {
                Message::text(handshake.lock().unwrap().to_string())
            }
            Message::Text(_) | Message::Binary(_) => message,
            Message::Close(_) => break,
            _ => continue,
        };
        if ws.send(reply).await.is_err() {
            break;
        }
    }
    seen.ended.lock().unwrap().push(SystemTime::now());
}

// ---------------------------------------------------------------------------------------------
// The gateway and the client
// ---------------------------------------------------------------------------------------------

fn config(ws: SocketAddr) -> String {
    format!(
        r#"{ONE_ISSUER}
[[route]]
path = "/ws/{{*rest}}"
upstream = "http://{ws}"
websocket = true

[[route]]
path = "/browser/{{*rest}}"
upstream = "http://{ws}"
websocket = true
query_token = "access_token"

[[route]]
path = "/plain/{{*rest}}"
upstream = "http://{ws}"

[[route]]
path = "/long/{{*rest}}"
upstream = "http://{ws}"
websocket = true
websocket_close_on_expiry = false
"#
    )
}

async fn start() -> (WsUpstream, Running, support::TempDir) {
    start_with("").await
}

/// [`config`], then `extra` sections.
async fn start_with(extra: &str) -> (WsUpstream, Running, support::TempDir) {
    let upstream = WsUpstream::start().await;
    let dir = gateway_dir();
    let path = dir.write_config(&format!("{}{extra}", config(upstream.addr)));
    let config = gatekeeper::load_config(&path).unwrap_or_else(|e| panic!("{e}"));
    (upstream, Running::start(config).await, dir)
}

/// Opens a WebSocket to `target` (path and query) at the gateway over `stream`, with the
/// token as a bearer header when given.
async fn open<S>(stream: S, url: &str, token: Option<&str>) -> Result<WebSocketStream<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = url.into_client_request().unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    tokio::time::timeout(BOUND, client_async(request, stream))
        .await
        .expect("the handshake ends in time")
        .map(|(ws, _)| ws)
}

async fn connect(
    gw: &Running,
    target: &str,
    token: Option<&str>,
) -> Result<WebSocketStream<TcpStream>, WsError> {
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    open(stream, &format!("ws://{}{target}", gw.addr), token).await
}

/// The status of a refused handshake.
fn refused_status<T>(result: Result<T, WsError>) -> u16 {
    match result {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("the handshake failed without an HTTP answer: {other}"),
        Ok(_) => panic!("the handshake succeeded"),
    }
}

/// Sends `message` and returns the next message.
async fn round_trip<S>(ws: &mut WebSocketStream<S>, message: Message) -> Message
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.send(message).await.unwrap();
    tokio::time::timeout(BOUND, ws.next())
        .await
        .expect("an answer in time")
        .expect("the connection is open")
        .unwrap()
}

/// What the upstream saw on the handshake, asked through the tunnel.
async fn whoami<S>(ws: &mut WebSocketStream<S>) -> Value
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let answer = round_trip(ws, Message::text("whoami")).await;
    serde_json::from_str(answer.to_text().unwrap()).unwrap()
}

/// Text and binary frames both ways.
async fn assert_echoes<S>(ws: &mut WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let text = round_trip(ws, Message::text("hello through the gateway")).await;
    assert_eq!(text, Message::text("hello through the gateway"));
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let binary = round_trip(ws, Message::binary(payload.clone())).await;
    assert_eq!(binary, Message::binary(payload));
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_without_a_token_is_401_and_never_reaches_the_upstream() {
    let (upstream, gw, _dir) = start().await;
    assert_eq!(refused_status(connect(&gw, "/ws/chat", None).await), 401);
    let status = refused_status(connect(&gw, "/ws/chat", Some("not-a-jwt")).await);
    assert_eq!(status, 401);
    assert_eq!(upstream.seen.connections.load(Ordering::SeqCst), 0);
    assert_eq!(upstream.seen.handshakes.load(Ordering::SeqCst), 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_are_relayed_both_ways_with_the_identity_and_without_the_token() {
    let (upstream, gw, _dir) = start().await;
    let token = admin_token();
    let mut ws = connect(&gw, "/ws/chat?room=1", Some(&token))
        .await
        .expect("the handshake succeeds");
    assert_echoes(&mut ws).await;
    let seen = whoami(&mut ws).await;
    assert_eq!(seen["x-user-id"], "admin-1", "{seen}");
    assert_eq!(seen["authorization"], false, "{seen}");
    assert_eq!(seen["target"], "/ws/chat?room=1", "{seen}");
    let heads = upstream.heads();
    assert_eq!(heads.len(), 1);
    assert!(
        !heads[0].contains(&token.to_ascii_lowercase()),
        "{}",
        heads[0]
    );
    assert!(heads[0].contains("sec-websocket-key:"), "{}", heads[0]);
    assert!(
        heads[0].contains("sec-websocket-version: 13"),
        "{}",
        heads[0]
    );

    // The client closes; the upstream sees the end of the connection.
    ws.close(None).await.unwrap();
    tokio::time::timeout(BOUND, async {
        while upstream.seen.ended.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the upstream sees the close");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_authenticate_the_handshake_with_the_query_token() {
    let (upstream, gw, _dir) = start().await;
    let token = admin_token();
    assert_eq!(
        refused_status(connect(&gw, "/browser/chat", None).await),
        401
    );
    let target = format!("/browser/chat?access_token={token}&room=2");
    let mut ws = connect(&gw, &target, None)
        .await
        .expect("the handshake succeeds");
    assert_echoes(&mut ws).await;
    let seen = whoami(&mut ws).await;
    assert_eq!(seen["x-user-id"], "admin-1", "{seen}");
    assert_eq!(seen["authorization"], false, "{seen}");
    assert_eq!(seen["target"], "/browser/chat?room=2", "{seen}");
    // The token reached the upstream in no request head.
    let heads = upstream.heads();
    assert!(
        heads
            .iter()
            .all(|h| !h.contains(&token.to_ascii_lowercase()))
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_without_websocket_do_not_upgrade() {
    let (upstream, gw, _dir) = start().await;
    let status = refused_status(connect(&gw, "/plain/chat", Some(&admin_token())).await);
    assert_ne!(status, 101);
    // The request reached the upstream without its upgrade headers, so no handshake.
    let heads = upstream.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(!heads[0].contains("\nupgrade:"), "{}", heads[0]);
    assert!(!heads[0].contains("\nconnection: upgrade"), "{}", heads[0]);
    assert_eq!(upstream.seen.handshakes.load(Ordering::SeqCst), 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_switching_protocols_unasked_is_502() {
    // An upstream that answers 101 to anything.
    let rogue = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rogue_addr = rogue.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = rogue.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n")
                    .await;
                tokio::time::sleep(BOUND).await;
            });
        }
    });
    let extra = format!(
        "\n[[route]]\npath = \"/rogue/{{*rest}}\"\nupstream = \"http://{rogue_addr}\"\nauth = \"public\"\n"
    );
    let (_upstream, gw, _dir) = start_with(&extra).await;
    let response = support::client()
        .get(gw.url("/rogue/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    // A real handshake on a route without `websocket = true` does not switch either.
    let status = refused_status(connect(&gw, "/rogue/x", None).await);
    assert_eq!(status, 502);
    gw.stop().await;
}

/// An RS256 token of the fixture key for `sub` expiring at `exp` (Unix seconds).
fn token_expiring_at(sub: &str, exp: u64) -> String {
    let pem = std::fs::read(fixtures().join("keys/rsa-1.key.pem")).unwrap();
    let key = SigningKey::from_pem(Algorithm::RS256, &pem)
        .unwrap()
        .with_kid("rsa-1");
    key.sign(&json!({
        "iss": "https://idp.example.test", "aud": "api://orders", "sub": sub, "exp": exp,
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tunnel_is_closed_when_the_token_expires() {
    let (upstream, gw, _dir) = start().await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let exp_secs = now + 2;
    let exp = UNIX_EPOCH + Duration::from_secs(exp_secs);
    let token = token_expiring_at("short-lived", exp_secs);
    let mut ws = connect(&gw, "/ws/chat", Some(&token))
        .await
        .expect("the handshake succeeds");
    assert_echoes(&mut ws).await;
    assert_eq!(whoami(&mut ws).await["x-user-id"], "short-lived");

    // Nothing more is sent: the next thing the client reads is the end of the connection.
    let end = tokio::time::timeout(BOUND, ws.next())
        .await
        .expect("the connection ends");
    let closed_at = SystemTime::now();
    assert!(
        !matches!(end, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{end:?}"
    );
    let after = closed_at
        .duration_since(exp)
        .unwrap_or_else(|early| panic!("closed {:?} before exp", early.duration()));
    assert!(
        after < Duration::from_millis(1500),
        "closed {after:?} after exp"
    );
    eprintln!("client side closed {after:?} after exp");

    // The upstream's side was closed too.
    let upstream_end = tokio::time::timeout(BOUND, async {
        loop {
            if let Some(at) = upstream.seen.ended.lock().unwrap().first() {
                return *at;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the upstream's connection ends");
    let after = upstream_end.duration_since(exp).expect("closed after exp");
    assert!(
        after < Duration::from_millis(1500),
        "closed {after:?} after exp"
    );
    eprintln!("upstream side closed {after:?} after exp");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_close_on_expiry_off_the_tunnel_outlives_the_token() {
    let (upstream, gw, _dir) = start().await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let exp_secs = now + 1;
    let exp = UNIX_EPOCH + Duration::from_secs(exp_secs);
    let token = token_expiring_at("long-lived", exp_secs);
    let mut ws = connect(&gw, "/long/chat", Some(&token))
        .await
        .expect("the handshake succeeds");
    assert_echoes(&mut ws).await;
    // Well past exp, the tunnel still relays both ways.
    let wait =
        exp.duration_since(SystemTime::now()).unwrap_or_default() + Duration::from_millis(1500);
    tokio::time::sleep(wait).await;
    assert!(SystemTime::now() > exp + Duration::from_secs(1));
    assert_echoes(&mut ws).await;
    assert_eq!(whoami(&mut ws).await["x-user-id"], "long-lived");
    assert!(upstream.seen.ended.lock().unwrap().is_empty());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_open_tunnels() {
    let (upstream, gw, _dir) = start().await;
    let mut ws = connect(&gw, "/long/chat", Some(&admin_token()))
        .await
        .expect("the handshake succeeds");
    assert_echoes(&mut ws).await;
    let started = std::time::Instant::now();
    gw.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown waited {:?} for the tunnel",
        started.elapsed()
    );
    let end = tokio::time::timeout(BOUND, ws.next())
        .await
        .expect("the tunnel ends");
    assert!(
        !matches!(end, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{end:?}"
    );
    tokio::time::timeout(BOUND, async {
        while upstream.seen.ended.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the upstream's side ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_tunnels_count_towards_max_connections() {
    let (_upstream, gw, _dir) = start_with("\n[server]\nmax_connections = 1\n").await;
    let token = admin_token();
    let mut first = connect(&gw, "/ws/one", Some(&token))
        .await
        .expect("the handshake succeeds");
    assert_echoes(&mut first).await;
    // The only connection slot is the tunnel's: a second handshake waits.
    let addr = gw.addr;
    let second = tokio::spawn(async move {
        let stream = TcpStream::connect(addr).await.unwrap();
        open(stream, &format!("ws://{addr}/ws/two"), Some(&token)).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!second.is_finished(), "a second connection was served");
    // The client closes and reads to the end, as WebSocket clients do.
    first.close(None).await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(BOUND, first.next()).await {}
    drop(first);
    let mut second = tokio::time::timeout(BOUND, second)
        .await
        .expect("served once the tunnel closed")
        .unwrap()
        .expect("the handshake succeeds");
    assert_echoes(&mut second).await;
    drop(second);
    gw.stop().await;
}

/// Loads `toml` from a fresh temp dir and returns the error message.
fn config_error(toml: &str) -> String {
    let dir = gateway_dir();
    let path = dir.write_config(toml);
    let error = gatekeeper::load_config(&path)
        .map(|_| ())
        .expect_err("the config is rejected")
        .to_string();
    assert_mentions(&error, &[&path.display().to_string()]);
    error
}

#[test]
fn websocket_configuration_errors_name_the_key() {
    let route = |extra: &str| {
        format!(
            "{ONE_ISSUER}\n[[route]]\npath = \"/ws/{{*rest}}\"\nupstream = \"http://127.0.0.1:9001\"\n{extra}\n"
        )
    };
    let error = config_error(&route("websocket = true\nupstream_protocol = \"h2c\""));
    assert_mentions(&error, &["[[route]] #1", "`websocket`", "h2c", "HTTP/1.1"]);

    let error = config_error(&route("websocket = true\nmethods = [\"POST\"]"));
    assert_mentions(&error, &["[[route]] #1", "`websocket`", "GET", "`methods`"]);

    let error = config_error(&route("websocket = \"yes\""));
    assert_mentions(&error, &["websocket"]);

    let error = config_error(&route("websocket_close_on_expiry = false"));
    assert_mentions(
        &error,
        &[
            "[[route]] #1",
            "`websocket_close_on_expiry`",
            "`websocket` = true",
        ],
    );

    // GET among the methods, or every method: accepted.
    for extra in [
        "websocket = true\nmethods = [\"GET\"]",
        "websocket = true",
        "websocket = false\nupstream_protocol = \"h2c\"",
        "websocket = true\nwebsocket_close_on_expiry = true",
    ] {
        let dir = gateway_dir();
        let path = dir.write_config(&route(extra));
        gatekeeper::load_config(&path).unwrap_or_else(|e| panic!("{extra}: {e}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Through TLS
// ---------------------------------------------------------------------------------------------

/// A CA made for the test, and a server certificate it issued for localhost and 127.0.0.1,
/// as PEM: (CA, certificate, key).
fn test_pki() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "websocket test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(params, ca_key);
    let mut leaf =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS server offering h2 and http/1.1 by ALPN.
fn server_config(cert_pem: &str, key_pem: &str) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A TLS client trusting `ca_pem` only, offering http/1.1 by ALPN (as browsers do for
/// WebSockets).
fn tls_connector(ca_pem: &str) -> TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_tls_to_an_https_upstream() {
    let (ca_pem, cert_pem, key_pem) = test_pki();
    // The upstream offers h2 too: the gateway asks it for HTTP/1.1, where upgrades exist.
    let upstream = WsUpstream::start_tls(server_config(&cert_pem, &key_pem)).await;
    let dir = gateway_dir();
    std::fs::write(dir.0.join("server.pem"), &cert_pem).unwrap();
    std::fs::write(dir.0.join("server.key"), &key_pem).unwrap();
    std::fs::write(dir.0.join("ca.pem"), &ca_pem).unwrap();
    let toml = format!(
        r#"{ONE_ISSUER}
[tls]
cert_file = "server.pem"
key_file = "server.key"
upstream_ca_file = "ca.pem"

[[route]]
path = "/ws/{{*rest}}"
upstream = "https://localhost:{port}"
websocket = true
query_token = "access_token"
"#,
        port = upstream.addr.port()
    );
    let path = dir.write_config(&toml);
    let config = gatekeeper::load_config(&path).unwrap_or_else(|e| panic!("{e}"));
    let gw = Running::start(config).await;
    let connector = tls_connector(&ca_pem);
    let gw_addr = gw.addr;
    let tls = |connector: TlsConnector| async move {
        let tcp = TcpStream::connect(gw_addr).await.unwrap();
        connector
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap()
    };
    let url = format!("wss://localhost:{}/ws/secure", gw.addr.port());

    let refused = open(tls(connector.clone()).await, &url, None).await;
    assert_eq!(refused_status(refused), 401);
    assert_eq!(upstream.seen.connections.load(Ordering::SeqCst), 0);

    let token = admin_token();
    let mut ws = open(tls(connector.clone()).await, &url, Some(&token))
        .await
        .expect("the handshake succeeds");
    assert_echoes(&mut ws).await;
    let seen = whoami(&mut ws).await;
    assert_eq!(seen["x-user-id"], "admin-1", "{seen}");
    assert_eq!(seen["authorization"], false, "{seen}");

    let query = format!("{url}?access_token={token}");
    let mut ws = open(tls(connector).await, &query, None)
        .await
        .expect("the handshake succeeds");
    assert_echoes(&mut ws).await;
    assert_eq!(whoami(&mut ws).await["target"], "/ws/secure");
    gw.stop().await;
}
