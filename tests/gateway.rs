//! End-to-end tests of `examples/gateway.rs`: the example is compiled into this test crate and
//! driven over real loopback HTTP, against a real upstream echo server started here.

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/gateway.rs"]
mod gateway;

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/tonic_service.rs"]
mod tonic_service;

#[allow(dead_code)]
#[path = "support/http_server.rs"]
mod http_server;

#[path = "support/temp_dir.rs"]
mod temp_dir;

use temp_dir::TempDir;

/// A temp dir with the fixture JWKS and HMAC secret under `keys/`.
fn gateway_dir() -> TempDir {
    TempDir::new("gateway").with_fixture_keys(&["jwks.json", "hmac.secret"])
}

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tower_gatekeeper::Algorithm;
use tower_gatekeeper::keys::SigningKey;

/// Generous bound for anything that should take milliseconds; only hit when a test fails.
const BOUND: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Fixtures and temp dirs
// ---------------------------------------------------------------------------------------------

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn token(name: &str) -> String {
    static TOKENS: OnceLock<HashMap<String, String>> = OnceLock::new();
    let tokens = TOKENS.get_or_init(|| {
        let text = std::fs::read_to_string(fixtures().join("tokens.json")).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        doc["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["name"].as_str().unwrap().to_owned(),
                    t["token"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    });
    tokens
        .get(name)
        .unwrap_or_else(|| panic!("no fixture token {name}"))
        .clone()
}

/// A token for the fixture RSA key with roles ["admin"] (the fixtures only have clerks).
fn admin_token() -> String {
    let pem = std::fs::read(fixtures().join("keys/rsa-1.key.pem")).unwrap();
    let key = SigningKey::from_pem(Algorithm::RS256, &pem)
        .unwrap()
        .with_kid("rsa-1");
    key.sign(&json!({
        "iss": "https://idp.example.test", "aud": "api://orders", "sub": "admin-1",
        "roles": ["admin"], "scope": "orders:read", "exp": 4102444800u64,
    }))
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// The upstream: echoes what it got, counts requests, and has hooks for streaming and shutdown
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct UpstreamState {
    hits: AtomicUsize,
    /// Signalled when a request body's first data frame arrives.
    first_chunk: Notify,
    /// Signalled when a `/hold/` request arrives; it then waits for `release`.
    arrived: Notify,
    release: Notify,
    /// `/download/` sends one chunk, then waits for this before sending the rest.
    client_got_first: Notify,
}

struct Upstream {
    addr: SocketAddr,
    state: Arc<UpstreamState>,
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(UpstreamState::default());
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(echo(req, state).await) }
                    });
                    // HTTP/1.1 and h2c (prior knowledge), as the gateway's routes choose.
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream { addr, state }
    }

    fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
}

const DOWNLOAD_FIRST: &[u8] = b"first chunk;";
const DOWNLOAD_REST: &[u8] = b"the rest";

async fn echo(
    req: Request<Incoming>,
    state: Arc<UpstreamState>,
) -> Response<BoxBody<Bytes, Infallible>> {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let (parts, mut body) = req.into_parts();
    if parts.uri.path().starts_with("/download/") {
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            tx.send(Bytes::from_static(DOWNLOAD_FIRST)).await.unwrap();
            state.client_got_first.notified().await;
            tx.send(Bytes::from_static(DOWNLOAD_REST)).await.unwrap();
        });
        return Response::new(ChannelBody(rx).boxed());
    }
    if parts.uri.path().starts_with("/hold/") {
        state.arrived.notify_one();
        state.release.notified().await;
    }
    let mut length = 0u64;
    let mut hash = Fnv::default();
    let mut first = true;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            if first && !data.is_empty() {
                first = false;
                state.first_chunk.notify_one();
            }
            length += data.len() as u64;
            hash.write(&data);
        }
    }
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let values: Vec<&str> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        headers.insert(name.as_str().to_owned(), values.join(", ").into());
    }
    let echo = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().unwrap().as_str(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_length": length,
        "body_hash": hash.0,
    });
    Response::new(Full::new(Bytes::from(echo.to_string())).boxed())
}

/// FNV-1a, to compare bodies without keeping them.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A body fed chunk by chunk through a channel; ends when the sender is dropped.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

// ---------------------------------------------------------------------------------------------
// The gateway under test
// ---------------------------------------------------------------------------------------------

struct Running {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn start(config: gateway::Config) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway::run(config, listener, async {
            let _ = rx.await;
        }));
        Running {
            addr,
            shutdown: Some(tx),
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Triggers shutdown and waits for `run` to return.
    async fn stop(mut self) {
        self.shutdown.take().unwrap().send(()).unwrap();
        tokio::time::timeout(BOUND, &mut self.task)
            .await
            .expect("run() returns after shutdown")
            .unwrap()
            .unwrap();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// The two-issuer configuration most tests use.
fn config_toml(upstream: SocketAddr, down: SocketAddr) -> String {
    format!(
        r#"
listen = "127.0.0.1:0"
realm = "gatekeeper-test"

[[issuer]]
issuer = "https://idp.example.test"
audiences = ["api://orders"]
algorithms = ["RS256", "ES256", "EdDSA"]
jwks_file = "keys/jwks.json"
roles_claim = "roles"
tenant_claim = "tenant_id"
leeway_seconds = 30

[[issuer]]
issuer = "https://hmac.example.test"
audiences = ["api://orders"]
algorithms = ["HS256"]
hmac_secret_file = "keys/hmac.secret"

[[route]]
path = "/orders/{{*rest}}"
methods = ["GET", "POST"]
upstream = "http://{upstream}"
auth = "required"
roles_any = ["clerk", "admin"]
scopes_all = ["orders:read"]

[[route]]
path = "/admin/{{*rest}}"
upstream = "http://{upstream}"
roles_any = ["admin"]

[[route]]
path = "/reports/{{*rest}}"
upstream = "http://{upstream}"
scopes_all = ["orders:admin"]

[[route]]
path = "/public/{{*rest}}"
upstream = "http://{upstream}"
auth = "public"

[[route]]
path = "/maybe/{{*rest}}"
upstream = "http://{upstream}"
auth = "optional"

[[route]]
path = "/items/{{id}}"
methods = ["GET"]
upstream = "http://{upstream}"
auth = "public"

[[route]]
path = "/items/{{id}}"
methods = ["DELETE"]
upstream = "http://{upstream}"
roles_any = ["admin"]

[[route]]
path = "/hold/{{*rest}}"
upstream = "http://{upstream}"
auth = "public"

[[route]]
path = "/download/{{*rest}}"
upstream = "http://{upstream}"
auth = "public"

[[route]]
path = "/down/{{*rest}}"
upstream = "http://{down}"
auth = "public"
"#
    )
}

/// A loopback address where nothing listens.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Upstream, gateway and temp dir for the standard configuration.
async fn setup() -> (Upstream, Running, TempDir) {
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    let path = dir.write_config(&config_toml(upstream.addr, closed_port().await));
    let config = gateway::load_config(&path).unwrap_or_else(|e| panic!("{e}"));
    (upstream, Running::start(config).await, dir)
}

async fn json_body(response: reqwest::Response) -> Value {
    let bytes = response.bytes().await.unwrap();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// The demo
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_flow_allows_401s_and_403s_as_printed() {
    let demo = gateway::start_demo().await.unwrap();
    assert_eq!(demo.config.listen().to_string(), "127.0.0.1:8080");
    let token = demo.token.clone();
    let upstream = demo.upstream;
    let gw = Running::start(demo.config).await;

    let text = gateway::demo_instructions(gw.addr, upstream, &token);
    let base = format!("http://{}", gw.addr);
    let auth = format!("-H 'Authorization: Bearer {token}'");
    assert!(
        text.contains(&format!("curl -i {auth} {base}/orders/42")),
        "{text}"
    );
    assert!(
        text.contains(&format!("curl -i {base}/orders/42")),
        "{text}"
    );
    assert!(
        text.contains(&format!("curl -i {auth} {base}/admin/users")),
        "{text}"
    );

    let http = client();
    let allowed = http
        .get(gw.url("/orders/42"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
    let echo = json_body(allowed).await;
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/orders/42");
    assert_eq!(echo["headers"]["x-user-id"], "demo-user");
    assert_eq!(echo["headers"]["x-user-roles"], "clerk");
    assert_eq!(echo["headers"]["x-user-scopes"], "orders:read");
    assert_eq!(echo["headers"]["x-tenant-id"], "demo");
    assert!(echo["headers"].get("authorization").is_none());

    let anonymous = http.get(gw.url("/orders/42")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&anonymous, "www-authenticate"),
        r#"Bearer realm="gatekeeper-demo""#
    );

    let forbidden = http
        .get(gw.url("/admin/users"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);

    let public = http.get(gw.url("/public/hello")).send().await.unwrap();
    assert_eq!(public.status(), StatusCode::OK);
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Authentication and propagation
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_tokens_of_both_issuers_reach_the_upstream_as_context() {
    let (upstream, gw, _dir) = setup().await;
    let http = client();
    for name in ["rs256_valid", "es256_valid", "eddsa_valid", "hs256_valid"] {
        let response = http
            .get(gw.url("/orders/42?expand=items&x=%2F"))
            .bearer_auth(token(name))
            .header("x-forwarded-for", "203.0.113.9")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{name}");
        let echo = json_body(response).await;
        let headers = &echo["headers"];
        assert_eq!(echo["path"], "/orders/42?expand=items&x=%2F", "{name}");
        assert_eq!(echo["version"], "HTTP/1.1");
        assert_eq!(headers["x-user-id"], "user-123", "{name}");
        assert_eq!(headers["x-user-roles"], "clerk", "{name}");
        assert_eq!(
            headers["x-user-scopes"], "orders:read orders:write",
            "{name}"
        );
        assert_eq!(headers["x-tenant-id"], "acme", "{name}");
        assert!(headers.get("authorization").is_none(), "{name}: {echo}");
        assert!(
            headers["x-request-id"]
                .as_str()
                .is_some_and(|id| !id.is_empty())
        );
        assert_eq!(headers["host"], upstream.addr.to_string());
        assert_eq!(headers["x-forwarded-host"], gw.addr.to_string());
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    }
    assert_eq!(upstream.hits(), 4);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_missing_tokens_get_401_and_never_reach_the_upstream() {
    let (upstream, gw, _dir) = setup().await;
    let http = client();

    let response = http.get(gw.url("/orders/1")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&response, "www-authenticate"),
        r#"Bearer realm="gatekeeper-test""#
    );
    assert_eq!(header(&response, "content-type"), "application/json");
    assert_eq!(json_body(response).await["error"], "missing_credential");

    for (name, description) in [
        ("expired", "token expired"),
        ("alg_none_lower", "unsupported algorithm"),
        ("wrong_aud", "invalid audience"),
        ("tampered_payload", "invalid signature"),
    ] {
        let response = http
            .get(gw.url("/orders/1"))
            .bearer_auth(token(name))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{name}");
        let challenge = header(&response, "www-authenticate");
        assert!(
            challenge.starts_with(r#"Bearer realm="gatekeeper-test", error="invalid_token""#),
            "{name}: {challenge}"
        );
        assert!(challenge.contains(description), "{name}: {challenge}");
        let body = json_body(response).await;
        assert_eq!(body["error"], "invalid_token", "{name}");
    }

    // Two Authorization headers: 400.
    let response = http
        .get(gw.url("/orders/1"))
        .header("authorization", format!("Bearer {}", token("rs256_valid")))
        .header("authorization", "Bearer other")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    assert_eq!(upstream.hits(), 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_deny_with_403() {
    let (upstream, gw, _dir) = setup().await;
    let http = client();

    let response = http
        .get(gw.url("/admin/users"))
        .bearer_auth(token("rs256_valid"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let challenge = header(&response, "www-authenticate");
    assert!(
        challenge.contains(r#"error="insufficient_scope""#),
        "{challenge}"
    );
    assert!(
        !challenge.contains("scope=\"admin"),
        "roles are not scopes: {challenge}"
    );

    let response = http
        .get(gw.url("/reports/monthly"))
        .bearer_auth(token("es256_valid"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let challenge = header(&response, "www-authenticate");
    assert!(
        challenge.ends_with(r#"scope="orders:admin""#),
        "{challenge}"
    );
    assert_eq!(json_body(response).await["error"], "insufficient_scope");
    assert_eq!(upstream.hits(), 0);

    // An admin passes.
    let response = http
        .get(gw.url("/admin/users"))
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_body(response).await["headers"]["x-user-id"], "admin-1");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_routes_need_no_token_and_strip_spoofed_identity() {
    let (upstream, gw, _dir) = setup().await;
    let response = client()
        .get(gw.url("/public/status"))
        .header("x-user-id", "admin")
        .header("X_User_Id", "admin")
        .header("x-user-roles", "admin")
        .header("x-tenant-id", "other")
        .header("authorization", "Bearer not-even-a-jwt")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echo = json_body(response).await;
    let headers = echo["headers"].as_object().unwrap();
    for name in [
        "x-user-id",
        "x_user_id",
        "x-user-roles",
        "x-tenant-id",
        "authorization",
    ] {
        assert!(
            !headers.contains_key(name),
            "{name} reached the upstream: {echo}"
        );
    }
    assert_eq!(upstream.hits(), 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_routes_pass_without_a_token_but_reject_bad_ones() {
    let (upstream, gw, _dir) = setup().await;
    let http = client();

    let response = http
        .get(gw.url("/maybe/x"))
        .header("x-user-id", "spoofed")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        json_body(response).await["headers"]
            .get("x-user-id")
            .is_none()
    );

    let response = http
        .get(gw.url("/maybe/x"))
        .bearer_auth(token("hs256_valid"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        json_body(response).await["headers"]["x-user-id"],
        "user-123"
    );

    let response = http
        .get(gw.url("/maybe/x"))
        .bearer_auth(token("expired"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(upstream.hits(), 2);
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_paths_and_methods_get_404_without_touching_the_upstream() {
    let (upstream, gw, _dir) = setup().await;
    let http = client();
    let valid = token("rs256_valid");
    for (method, path) in [
        ("GET", "/nowhere"),
        ("GET", "/"),
        ("GET", "/orders"),
        ("DELETE", "/orders/1"),
        ("PUT", "/items/7"),
        ("GET", "/items/7/extra"),
    ] {
        let response = http
            .request(method.parse().unwrap(), gw.url(path))
            .bearer_auth(&valid)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(header(&response, "content-type"), "application/json");
        assert_eq!(json_body(response).await["error"], "not_found");
    }
    assert_eq!(upstream.hits(), 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_sharing_a_path_are_told_apart_by_method() {
    let (upstream, gw, _dir) = setup().await;
    let http = client();
    let get = http.get(gw.url("/items/7")).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(json_body(get).await["method"], "GET");

    let delete = http.delete(gw.url("/items/7")).send().await.unwrap();
    assert_eq!(delete.status(), StatusCode::UNAUTHORIZED);
    let delete = http
        .delete(gw.url("/items/7"))
        .bearer_auth(token("rs256_valid"))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::FORBIDDEN);
    let delete = http
        .delete(gw.url("/items/7"))
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::OK);
    assert_eq!(json_body(delete).await["method"], "DELETE");
    assert_eq!(upstream.hits(), 2);
    gw.stop().await;
}

/// Sends a raw HTTP/1.1 request (clients would normalise these paths) and returns the status
/// line.
async fn raw_request(addr: SocketAddr, target: &str, token: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(BOUND, stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&response);
    text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_normalised_before_routing() {
    let (upstream, gw, _dir) = setup().await;
    let clerk = token("rs256_valid");
    // Dot segments would let the upstream resolve a path under another route.
    for target in [
        "/orders/../admin/x",
        "/orders/%2e%2E/admin/x",
        "/orders/./1",
        "/orders/%+1",
        "/orders/%zz",
    ] {
        let status = raw_request(gw.addr, target, &clerk).await;
        assert!(status.starts_with("HTTP/1.1 400"), "{target}: {status}");
    }
    // Escaped unreserved characters are decoded before matching: this is /admin/x.
    let status = raw_request(gw.addr, "/%61dmin/x", &clerk).await;
    assert!(status.starts_with("HTTP/1.1 403"), "{status}");
    assert_eq!(upstream.hits(), 0);
    // ... and forwarded decoded.
    let response = client()
        .get(gw.url("/orders/%7Euser/%41?q=%61"))
        .bearer_auth(&clerk)
        .send()
        .await
        .unwrap();
    assert_eq!(json_body(response).await["path"], "/orders/~user/A?q=%61");
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Proxying
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_not_forwarded() {
    let (_upstream, gw, _dir) = setup().await;
    let response = client()
        .get(gw.url("/public/x"))
        .header("connection", "keep-alive, x-hop-secret")
        .header("x-hop-secret", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("te", "trailers")
        .header("x-end-to-end", "kept")
        .send()
        .await
        .unwrap();
    let echo = json_body(response).await;
    let headers = echo["headers"].as_object().unwrap();
    for name in [
        "x-hop-secret",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
        "trailer",
    ] {
        assert!(!headers.contains_key(name), "{name} was forwarded: {echo}");
    }
    assert_eq!(headers["x-end-to-end"], "kept");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_stream_to_the_upstream_intact() {
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 64; // 4 MiB
    let (upstream, gw, _dir) = setup().await;
    let chunk = |k: usize| -> Bytes {
        (0..CHUNK)
            .map(|i| (i.wrapping_mul(31) ^ k.wrapping_mul(7)) as u8)
            .collect::<Vec<_>>()
            .into()
    };
    let mut expected = Fnv::default();
    for k in 0..CHUNKS {
        expected.write(&chunk(k));
    }

    // The rest of the body is only sent once the upstream has seen the first chunk: a gateway
    // that buffered the request would deadlock here (and fail at the bound).
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let state = Arc::clone(&upstream.state);
    let sender = tokio::spawn(async move {
        tx.send(chunk(0)).await.unwrap();
        state.first_chunk.notified().await;
        for k in 1..CHUNKS {
            tx.send(chunk(k)).await.unwrap();
        }
    });
    let hyper_client = Client::builder(TokioExecutor::new()).build_http::<ChannelBody>();
    let request = Request::post(gw.url("/orders/upload"))
        .header("authorization", format!("Bearer {}", token("rs256_valid")))
        .body(ChannelBody(rx))
        .unwrap();
    let response = tokio::time::timeout(BOUND, async {
        let response = hyper_client.request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().collect().await.unwrap().to_bytes()
    })
    .await
    .expect("the upload streams through the gateway");
    sender.await.unwrap();
    let echo: Value = serde_json::from_slice(&response).unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body_length"], (CHUNK * CHUNKS) as u64);
    assert_eq!(echo["body_hash"], expected.0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_bodies_stream_to_the_client() {
    let (upstream, gw, _dir) = setup().await;
    tokio::time::timeout(BOUND, async {
        let mut response = client().get(gw.url("/download/file")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        // The upstream holds the rest back until we have the first chunk.
        let mut got = Vec::new();
        while got.len() < DOWNLOAD_FIRST.len() {
            got.extend_from_slice(&response.chunk().await.unwrap().expect("first chunk"));
        }
        assert_eq!(got, DOWNLOAD_FIRST);
        upstream.state.client_got_first.notify_one();
        while let Some(chunk) = response.chunk().await.unwrap() {
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, [DOWNLOAD_FIRST, DOWNLOAD_REST].concat());
    })
    .await
    .expect("the download streams through the gateway");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_502() {
    let (_upstream, gw, _dir) = setup().await;
    let response = client().get(gw.url("/down/x")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(json_body(response).await["error"], "bad_gateway");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_upstream_is_504_after_the_timeout() {
    // An upstream that accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let dir = gateway_dir();
    let path = dir.write_config(&format!(
        r#"
upstream_timeout_seconds = 0.2

[[route]]
path = "/{{*rest}}"
upstream = "http://{silent_addr}"
auth = "public"
"#
    ));
    let gw = Running::start(gateway::load_config(&path).unwrap()).await;
    let response = client().get(gw.url("/slow")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(json_body(response).await["error"], "gateway_timeout");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_timeout_starts_once_the_request_is_sent() {
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    let path = dir.write_config(&format!(
        r#"
upstream_timeout_seconds = 0.2

[[route]]
path = "/{{*rest}}"
upstream = "http://{}"
auth = "public"
"#,
        upstream.addr
    ));
    let gw = Running::start(gateway::load_config(&path).unwrap()).await;
    // An upload that takes longer than the timeout still gets its answer: the sleep only
    // makes sure the upload outlasts the timeout.
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let state = Arc::clone(&upstream.state);
    let sender = tokio::spawn(async move {
        tx.send(Bytes::from_static(b"first")).await.unwrap();
        state.first_chunk.notified().await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        tx.send(Bytes::from_static(b", last")).await.unwrap();
    });
    let hyper_client = Client::builder(TokioExecutor::new()).build_http::<ChannelBody>();
    let request = Request::post(gw.url("/slow-upload"))
        .body(ChannelBody(rx))
        .unwrap();
    let response = tokio::time::timeout(BOUND, hyper_client.request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let echo: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["body_length"], 11);
    sender.await.unwrap();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_http2_prior_knowledge() {
    let (_upstream, gw, _dir) = setup().await;
    let http2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = http2
        .get(gw.url("/orders/9"))
        .bearer_auth(token("eddsa_valid"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let echo = json_body(response).await;
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(echo["headers"]["x-user-id"], "user-123");
    assert_eq!(echo["headers"]["x-forwarded-host"], gw.addr.to_string());
    assert!(echo["headers"].get("authorization").is_none());
    let response = http2.get(gw.url("/orders/9")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Upstream protocols: HTTP/1.1, h2c, and gRPC end to end
// ---------------------------------------------------------------------------------------------

/// The head of configurations that need one RS256 issuer (the fixture JWKS).
const ONE_ISSUER: &str = r#"
listen = "127.0.0.1:0"

[[issuer]]
issuer = "https://idp.example.test"
audiences = ["api://orders"]
algorithms = ["RS256"]
jwks_file = "keys/jwks.json"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_choose_http1_or_h2c_upstreams() {
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    let toml = format!(
        r#"{ONE_ISSUER}
[[route]]
path = "/h1/{{*rest}}"
upstream = "http://{up}"

[[route]]
path = "/h2/{{*rest}}"
upstream = "http://{up}"
upstream_protocol = "h2c"

[[route]]
path = "/auto/{{*rest}}"
upstream = "http://{up}"
upstream_protocol = "auto"
"#,
        up = upstream.addr
    );
    let config = gateway::load_config(dir.write_config(&toml)).unwrap_or_else(|e| panic!("{e}"));
    let gw = Running::start(config).await;
    let bearer = format!("Bearer {}", token("rs256_valid"));
    for (path, version) in [
        ("/h1/a", "HTTP/1.1"),
        ("/h2/a", "HTTP/2.0"),
        ("/auto/a", "HTTP/1.1"),
    ] {
        let response = client()
            .post(gw.url(path))
            .header("authorization", &bearer)
            .header("te", "trailers")
            .header("x-user-id", "spoofed")
            .body("twelve bytes")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let echo = json_body(response).await;
        assert_eq!(echo["version"], version, "{path}");
        assert_eq!(echo["headers"]["x-user-id"], "user-123", "{path}");
        assert!(echo["headers"].get("authorization").is_none(), "{path}");
        assert_eq!(echo["body_length"], 12, "{path}");
        if version == "HTTP/2.0" {
            // `:authority` carries the upstream; `TE: trailers` is the one TE h2 allows.
            assert!(echo["headers"].get("host").is_none(), "{echo}");
            assert_eq!(echo["headers"]["te"], "trailers");
        } else {
            assert_eq!(echo["headers"]["host"], upstream.addr.to_string());
            assert!(echo["headers"].get("te").is_none(), "{echo}");
        }
    }
    // A mistyped protocol is named at load time.
    let bad = toml.replace(r#""h2c""#, r#""http2""#);
    let error = gateway::load_config(dir.write_config(&bad))
        .unwrap_err()
        .to_string();
    assert_mentions(&error, &["upstream_protocol", "http2", "h2c"]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_tokens_only_where_configured_and_never_upstream() {
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    let toml = format!(
        r#"{ONE_ISSUER}
[[route]]
path = "/files/{{*rest}}"
upstream = "http://{up}"
query_token = "access_token"
roles_any = ["clerk"]

[[route]]
path = "/orders/{{*rest}}"
upstream = "http://{up}"
"#,
        up = upstream.addr
    );
    let config = gateway::load_config(dir.write_config(&toml)).unwrap_or_else(|e| panic!("{e}"));
    let gw = Running::start(config).await;
    let good = token("rs256_valid");

    let response = client()
        .get(gw.url(&format!("/files/1?size=2&access_token={good}&z")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "cache-control"), "private");
    let echo = json_body(response).await;
    assert_eq!(echo["path"], "/files/1?size=2&z");
    assert_eq!(echo["headers"]["x-user-id"], "user-123");
    assert!(echo["headers"].get("authorization").is_none(), "{echo}");

    // Both methods at once, or twice in the query: 400 (RFC 6750 §3.1).
    for request in [
        client()
            .get(gw.url(&format!("/files/1?access_token={good}")))
            .bearer_auth(&good),
        client().get(gw.url(&format!("/files/1?access_token={good}&access_token={good}"))),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(header(&response, "www-authenticate").contains(r#"error="invalid_request""#));
    }
    // A bad token in the query is 401 like one in the header; the header still works.
    let response = client()
        .get(gw.url(&format!("/files/1?access_token={}", token("expired"))))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&response, "www-authenticate").contains(r#"error="invalid_token""#));
    let response = client()
        .get(gw.url("/files/1"))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("cache-control").is_none());

    // Where not configured, a query token is no credential at all.
    let hits = upstream.hits();
    let response = client()
        .get(gw.url(&format!("/orders/1?access_token={good}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&response, "www-authenticate"),
        r#"Bearer realm="api""#
    );
    assert_eq!(upstream.hits(), hits);

    for (key, needle) in [
        (r#"query_token = """#, "is not a query parameter name"),
        (r#"query_token = "a=b""#, "is not a query parameter name"),
    ] {
        let bad = toml.replace(r#"query_token = "access_token""#, key);
        let error = gateway::load_config(dir.write_config(&bad))
            .unwrap_err()
            .to_string();
        assert_mentions(&error, &["query_token", needle]);
    }
    let bad = toml.replace(
        r#"query_token = "access_token"
roles_any = ["clerk"]"#,
        r#"query_token = "access_token"
auth = "public""#,
    );
    let error = gateway::load_config(dir.write_config(&bad))
        .unwrap_err()
        .to_string();
    assert_mentions(&error, &["query_token", "public"]);
    gw.stop().await;
}

/// A plain tonic server as the upstream: it trusts the gateway's plain identity headers
/// (the service only reads what the gateway forwarded, never a token).
async fn tonic_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(tower_gatekeeper::TrustedContextLayer::plain_headers())
            .add_service(tonic_service::DemoServer)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    addr
}

/// A unary call to any `path` (one `DemoClient` does not have); returns its error status.
async fn raw_grpc_call(gateway: SocketAddr, path: &'static str, token: &str) -> tonic::Status {
    use tonic_service::{pb, with_token};
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{gateway}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let request = with_token(tonic::Request::new(pb::WhoAmIRequest {}), token);
    grpc.unary::<_, pb::WhoAmIReply, _>(
        request,
        http::uri::PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .expect_err("the call fails")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_pass_through_the_gateway_to_a_tonic_upstream() {
    use tonic::{Code, Request as GrpcRequest};
    use tonic_service::{DemoClient, pb, with_token};

    let service = tonic_upstream().await;
    let dir = gateway_dir();
    let toml = format!(
        r#"{ONE_ISSUER}
[[route]]
path = "/gatekeeper.demo.Demo/WhoAmI"
methods = ["POST"]
upstream = "http://{service}"
roles_any = ["clerk", "admin"]

[[route]]
path = "/gatekeeper.demo.Demo/Count"
methods = ["POST"]
upstream = "http://{service}"
roles_any = ["admin"]

[[route]]
path = "/gatekeeper.demo.Down/{{method}}"
upstream = "http://{down}"
"#,
        down = closed_port().await
    );
    let config = gateway::load_config(dir.write_config(&toml)).unwrap_or_else(|e| panic!("{e}"));
    let gw = Running::start(config).await;
    let mut client = DemoClient::connect(gw.addr).await.unwrap();

    // Allowed: the service sees the caller the gateway verified, and never the token; a
    // spoofed x-user-id from the client is replaced.
    let mut req = with_token(
        GrpcRequest::new(pb::WhoAmIRequest {}),
        &token("rs256_valid"),
    );
    req.metadata_mut()
        .insert("x-user-id", "spoofed".parse().unwrap());
    let reply = client.who_am_i(req).await.unwrap();
    assert_eq!(reply.subject, "user-123");
    assert_eq!(reply.roles, ["clerk"]);
    assert_eq!(reply.metadata_user, "user-123");
    assert!(!reply.request_id.is_empty());
    assert!(!reply.saw_authorization);

    // Server streaming, ending with the upstream's grpc-status trailer.
    let admin = admin_token();
    let replies = client
        .count(with_token(
            GrpcRequest::new(pb::CountRequest { upto: 50 }),
            &admin,
        ))
        .await
        .unwrap();
    assert_eq!(replies.len(), 50);
    assert!(replies.iter().all(|r| r.subject == "admin-1"));

    // Rejections answer in gRPC terms, without reaching the service.
    let status = client
        .who_am_i(GrpcRequest::new(pb::WhoAmIRequest {}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = client
        .who_am_i(with_token(
            GrpcRequest::new(pb::WhoAmIRequest {}),
            &token("expired"),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = client
        .count(with_token(
            GrpcRequest::new(pb::CountRequest { upto: 1 }),
            &token("rs256_valid"),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // The gateway's own errors are gRPC statuses too: no route → UNIMPLEMENTED, upstream
    // down → UNAVAILABLE.
    let status = raw_grpc_call(gw.addr, "/gatekeeper.demo.Demo/Nope", &admin).await;
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    let status = raw_grpc_call(gw.addr, "/gatekeeper.demo.Down/WhoAmI", &admin).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // Concurrent calls on the client's one HTTP/2 connection all reach the service.
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let mut client = client.clone();
            let token = admin.clone();
            tokio::spawn(async move {
                client
                    .who_am_i(with_token(GrpcRequest::new(pb::WhoAmIRequest {}), &token))
                    .await
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().subject, "admin-1");
    }
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests_then_returns() {
    let (upstream, gw, _dir) = setup().await;
    let addr = gw.addr;
    let in_flight = tokio::spawn(client().get(gw.url("/hold/1")).send());
    tokio::time::timeout(BOUND, upstream.state.arrived.notified())
        .await
        .expect("the request reaches the upstream");

    let Running {
        shutdown, mut task, ..
    } = gw;
    shutdown.unwrap().send(()).unwrap();
    upstream.state.release.notify_one();
    let response = tokio::time::timeout(BOUND, in_flight)
        .await
        .expect("the in-flight request finishes")
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_body(response).await["path"], "/hold/1");
    tokio::time::timeout(BOUND, &mut task)
        .await
        .expect("run() returns")
        .unwrap()
        .unwrap();
    // The listener is gone.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_returns_when_shutdown_resolves_while_idle() {
    let (_upstream, gw, _dir) = setup().await;
    // A kept-alive idle connection must not hold the shutdown up.
    let http = client();
    let response = http.get(gw.url("/public/x")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

const ISSUER: &str = r#"
[[issuer]]
issuer = "https://idp.example.test"
audiences = ["api://orders"]
jwks_file = "keys/jwks.json"
"#;

const ROUTE: &str = r#"
[[route]]
path = "/orders/{*rest}"
upstream = "http://127.0.0.1:9001"
"#;

/// Loads `toml` from a fresh temp dir and returns the error message, which must name the file.
fn config_error(toml: &str) -> String {
    let dir = gateway_dir();
    let path = dir.write_config(toml);
    let error = gateway::load_config(&path)
        .map(|_| ())
        .expect_err("the config is rejected")
        .to_string();
    assert!(
        error.contains(&path.display().to_string()),
        "the message names the file: {error}"
    );
    error
}

fn assert_mentions(error: &str, parts: &[&str]) {
    for part in parts {
        assert!(error.contains(part), "{part:?} not in: {error}");
    }
}

#[test]
fn example_config_file_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.example.toml");
    let config = gateway::load_config(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.listen().to_string(), "127.0.0.1:8080");
}

#[test]
fn unknown_keys_are_named() {
    let error = config_error(&format!("bogus_key = 1\n{ISSUER}{ROUTE}"));
    assert_mentions(&error, &["bogus_key", "unknown field"]);

    let error = config_error(&format!("{ISSUER}jwks_uri = \"http://x\"\n{ROUTE}"));
    assert_mentions(&error, &["jwks_uri", "unknown field"]);

    let error = config_error(&format!("{ISSUER}{ROUTE}timeout = 3\n"));
    assert_mentions(&error, &["`timeout`", "unknown field"]);

    // `pem_file` is not part of the contract.
    let error = config_error(&format!("{ISSUER}pem_file = \"k.pem\"\n{ROUTE}"));
    assert_mentions(&error, &["pem_file"]);
}

#[test]
fn issuer_key_sources_are_checked() {
    let error = config_error(&format!(
        "{ISSUER}hmac_secret_file = \"keys/hmac.secret\"\n{ROUTE}"
    ));
    assert_mentions(
        &error,
        &[
            "https://idp.example.test",
            "jwks_file",
            "hmac_secret_file",
            "exactly one",
        ],
    );

    let none = r#"
[[issuer]]
issuer = "https://idp.example.test"
audiences = ["api://orders"]
"#;
    let error = config_error(&format!("{none}{ROUTE}"));
    assert_mentions(&error, &["https://idp.example.test", "exactly one of"]);

    for key in ["jwks_url", "discovery_url"] {
        // Remote sources are checked when loading; keys are fetched later (tests/remote_keys.rs).
        let remote = format!(
            "[[issuer]]\nissuer = \"https://idp.example.test\"\naudiences = [\"api://orders\"]\n{key} = \"ftp://127.0.0.1:9000/jwks\"\n"
        );
        let error = config_error(&format!("{remote}{ROUTE}"));
        if cfg!(feature = "remote") {
            assert_mentions(&error, &[key, "ftp", "https://idp.example.test"]);
        } else {
            assert_mentions(&error, &[key, "needs the `remote` feature"]);
        }
    }

    let missing = ISSUER.replace("keys/jwks.json", "keys/nope.json");
    let error = config_error(&format!("{missing}{ROUTE}"));
    assert_mentions(
        &error,
        &["jwks_file", "nope.json", "https://idp.example.test"],
    );
}

#[test]
fn issuer_values_are_checked() {
    for bad in ["rs256", "none", "HS257"] {
        let error = config_error(&format!(
            "{ISSUER}algorithms = [\"RS256\", \"{bad}\"]\n{ROUTE}"
        ));
        assert_mentions(
            &error,
            &[
                "algorithms",
                &format!("{bad:?}"),
                "https://idp.example.test",
            ],
        );
    }
    // Allowed, but no key can verify it.
    let error = config_error(&format!("{ISSUER}algorithms = [\"HS256\"]\n{ROUTE}"));
    assert_mentions(&error, &["[[issuer]] #1", "HS256"]);

    let error = config_error(&format!("{ISSUER}{ISSUER}{ROUTE}"));
    assert_mentions(&error, &["[[issuer]] #2", "twice"]);

    let error = config_error(&format!(
        "{}{ROUTE}",
        ISSUER.replace("audiences = [\"api://orders\"]", "audiences = []")
    ));
    assert_mentions(&error, &["audiences"]);

    let error = config_error(&format!(
        "{}{ROUTE}",
        ISSUER.replace("audiences = [\"api://orders\"]\n", "")
    ));
    assert_mentions(&error, &["missing field `audiences`"]);
}

#[test]
fn routes_are_checked() {
    let route = |extra: &str| format!("{ISSUER}{ROUTE}{extra}\n");

    let error = config_error(&format!(
        "{ISSUER}[[route]]\npath = \"/orders/{{*rest}}/x\"\nupstream = \"http://127.0.0.1:9001\"\n"
    ));
    assert_mentions(
        &error,
        &["[[route]] #1", "/orders/{*rest}/x", "invalid path pattern"],
    );

    let error = config_error(&format!(
        "{ISSUER}[[route]]\npath = \"orders\"\nupstream = \"http://127.0.0.1:9001\"\n"
    ));
    assert_mentions(&error, &["[[route]] #1", "`path`"]);

    let error = config_error(&route("methods = [\"get\"]"));
    assert_mentions(&error, &["[[route]] #1", "methods", "\"get\""]);

    let error = config_error(&route("auth = \"sometimes\""));
    assert_mentions(&error, &["sometimes", "required", "optional", "public"]);

    let error = config_error(&format!(
        "{ISSUER}[[route]]\npath = \"/x\"\nupstream = \"https://127.0.0.1:9001\"\n"
    ));
    assert_mentions(&error, &["[[route]] #1", "`upstream`", "https"]);

    let error = config_error(&format!(
        "{ISSUER}[[route]]\npath = \"/x\"\nupstream = \"http://127.0.0.1:9001/prefix\"\n"
    ));
    assert_mentions(&error, &["`upstream`", "path"]);

    let error = config_error(&format!("{ISSUER}[[route]]\npath = \"/x\"\n"));
    assert_mentions(&error, &["missing field `upstream`"]);

    let error = config_error(&route("auth = \"public\"\nroles_any = [\"clerk\"]"));
    assert_mentions(&error, &["[[route]] #1", "roles_any", "public"]);

    let error = config_error(&route("roles_any = []"));
    assert_mentions(&error, &["[[route]] #1", "roles_any"]);

    let error = config_error(ROUTE);
    assert_mentions(&error, &["[[route]] #1", "[[issuer]]"]);

    let error = config_error(ISSUER);
    assert_mentions(&error, &["no [[route]]"]);

    let error = config_error(&format!("listen = \"localhost:80\"\n{ISSUER}{ROUTE}"));
    assert_mentions(&error, &["`listen`", "localhost:80"]);

    let error = config_error(&format!("upstream_timeout_seconds = 0\n{ISSUER}{ROUTE}"));
    assert_mentions(&error, &["upstream_timeout_seconds"]);
}

#[test]
fn conflicting_routes_are_named() {
    let two = |a: &str, b: &str| {
        format!(
            "{ISSUER}[[route]]\npath = \"/a/{{id}}\"\nupstream = \"http://127.0.0.1:9001\"\n{a}\n\
             [[route]]\npath = \"{b}\"\nupstream = \"http://127.0.0.1:9002\"\n"
        )
    };
    let error = config_error(&two("", "/a/{name}"));
    assert_mentions(
        &error,
        &[
            "[[route]] #2 (path \"/a/{name}\")",
            "[[route]] #1 (path \"/a/{id}\")",
            "conflict",
        ],
    );

    // Same pattern: the methods must not overlap.
    let error = config_error(&two("methods = [\"GET\", \"PUT\"]", "/a/{id}"));
    assert_mentions(&error, &["[[route]] #2", "[[route]] #1", "GET, PUT"]);
    let dir = gateway_dir();
    let ok = two("methods = [\"GET\"]", "/a/{id}").replace(
        "upstream = \"http://127.0.0.1:9002\"",
        "upstream = \"http://127.0.0.1:9002\"\nmethods = [\"POST\"]",
    );
    gateway::load_config(dir.write_config(&ok)).unwrap();
}

#[test]
fn a_missing_config_file_is_named() {
    let dir = gateway_dir();
    let path = dir.0.join("absent.toml");
    let error = gateway::load_config(&path).unwrap_err().to_string();
    assert_mentions(&error, &[&path.display().to_string(), "cannot read"]);
}

// ---------------------------------------------------------------------------------------------
// Authorization rules (issue #4): roles_all, scopes_any, claims, owner/tenant params, Rego
// ---------------------------------------------------------------------------------------------

fn rules_toml(upstream: SocketAddr) -> String {
    let mut toml = format!(
        r#"{ISSUER}
[[route]]
path = "/users/{{user_id}}"
upstream = "http://{upstream}"
owner_param = "user_id"
bypass_roles = ["admin"]

[[route]]
path = "/users/me"
methods = ["GET"]
upstream = "http://{upstream}"
roles_all = ["clerk"]

[[route]]
path = "/tenants/{{tenant}}/{{*rest}}"
upstream = "http://{upstream}"
tenant_param = "tenant"

[[route]]
path = "/scoped/{{*rest}}"
upstream = "http://{upstream}"
scopes_any = ["orders:admin", "orders:audit"]

[[route]]
path = "/claims/{{*rest}}"
upstream = "http://{upstream}"
claims = [{{ path = "tenant_id", equals = "acme" }}, {{ path = "roles", contains = "clerk" }}]
"#
    );
    if cfg!(feature = "rego") {
        toml.push_str(&format!(
            r#"
[[route]]
path = "/rego/{{*rest}}"
upstream = "http://{upstream}"
rego = {{ policy = "subjects.rego", data = "subjects.json" }}

[[route]]
path = "/rego-admin/{{*rest}}"
upstream = "http://{upstream}"
rego = {{ policy = "admins.rego" }}
"#
        ));
    }
    toml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_rules_allow_and_deny_over_http() {
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    std::fs::write(
        dir.0.join("subjects.rego"),
        "package subjects\ndefault allow := false\nallow if input.caller.subject in data.allowed\n",
    )
    .unwrap();
    std::fs::write(dir.0.join("subjects.json"), r#"{"allowed": ["user-123"]}"#).unwrap();
    std::fs::write(
        dir.0.join("admins.rego"),
        "package admins\nallow if \"admin\" in input.caller.roles\n",
    )
    .unwrap();
    let path = dir.write_config(&rules_toml(upstream.addr));
    let config = gateway::load_config(&path).unwrap_or_else(|e| panic!("{e}"));
    let gw = Running::start(config).await;
    let http = client();
    let clerk = token("rs256_valid"); // sub user-123, roles [clerk], tenant acme
    let admin = admin_token(); // sub admin-1, roles [admin], no tenant

    let mut allowed = 0;
    for (method, path, who, status) in [
        // owner_param with bypass_roles
        ("GET", "/users/user-123", &clerk, 200),
        ("GET", "/users/someone", &clerk, 403),
        ("GET", "/users/someone", &admin, 200),
        // the static route is more specific than the parameter route ...
        ("GET", "/users/me", &clerk, 200),
        ("GET", "/users/me", &admin, 403),
        // ... for GET only: DELETE /users/me is the parameter route with user_id = "me"
        ("DELETE", "/users/me", &clerk, 403),
        // tenant_param
        ("GET", "/tenants/acme/orders", &clerk, 200),
        ("GET", "/tenants/other/orders", &clerk, 403),
        ("GET", "/tenants/acme/orders", &admin, 403),
        // claims
        ("GET", "/claims/x", &clerk, 200),
        ("GET", "/claims/x", &admin, 403),
        // Rego with data, and without
        ("GET", "/rego/x", &clerk, 200),
        ("GET", "/rego/x", &admin, 403),
        ("GET", "/rego-admin/x", &admin, 200),
        ("GET", "/rego-admin/x", &clerk, 403),
    ] {
        if path.starts_with("/rego") && !cfg!(feature = "rego") {
            continue;
        }
        let response = http
            .request(method.parse().unwrap(), gw.url(path))
            .bearer_auth(who)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        if status == 200 {
            allowed += 1;
            let echo = json_body(response).await;
            assert_eq!(echo["path"], path);
        } else {
            assert_eq!(json_body(response).await["error"], "insufficient_scope");
        }
    }
    assert_eq!(upstream.hits(), allowed);

    // Without a token: 401, not 403.
    let response = http.get(gw.url("/users/user-123")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // scopes_any names every acceptable scope in the challenge.
    let response = http
        .get(gw.url("/scoped/x"))
        .bearer_auth(&clerk)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let challenge = header(&response, "www-authenticate");
    assert!(
        challenge.ends_with(r#"scope="orders:admin orders:audit""#),
        "{challenge}"
    );
    assert_eq!(upstream.hits(), allowed);
    gw.stop().await;
}

#[test]
fn rule_keys_are_checked() {
    let route = |extra: &str| format!("{ISSUER}{ROUTE}{extra}\n");

    let error = config_error(&route("claims = [{ path = \"a\", equal = 1 }]"));
    assert_mentions(&error, &["equal", "unknown field"]);

    let error = config_error(&route(
        "claims = [{ path = \"a\", equals = 1, one_of = [1] }]",
    ));
    assert_mentions(&error, &["[[route]] #1", "claims", "exactly one"]);

    let error = config_error(&route("scopes_any = []"));
    assert_mentions(&error, &["[[route]] #1", "scopes_any"]);

    let error = config_error(&route("bypass_roles = [\"admin\"]"));
    assert_mentions(&error, &["[[route]] #1", "bypass_roles", "owner_param"]);

    let error = config_error(&route("auth = \"public\"\nowner_param = \"id\""));
    assert_mentions(&error, &["[[route]] #1", "owner_param", "public"]);

    let error = config_error(&route("rego = { policy = \"p.rego\", rules = \"x\" }"));
    assert_mentions(&error, &["rules", "unknown field"]);

    if cfg!(feature = "rego") {
        let error = config_error(&route("rego = { policy = \"absent.rego\" }"));
        assert_mentions(&error, &["[[route]] #1", "rego", "absent.rego"]);

        let dir = gateway_dir();
        std::fs::write(dir.0.join("bad.rego"), "package bad\nallow if {\n").unwrap();
        let path = dir.write_config(&format!(
            "rego = {{ policy = \"bad.rego\" }}\n{ISSUER}{ROUTE}"
        ));
        let error = gateway::load_config(&path).unwrap_err().to_string();
        assert_mentions(&error, &["[[route]] #1", "bad.rego", "does not compile"]);
    } else {
        let error = config_error(&route("rego = { policy = \"p.rego\" }"));
        assert_mentions(&error, &["[[route]] #1", "`rego` feature"]);
    }
}

// ---------------------------------------------------------------------------------------------
// API keys, revocation and introspection (issue #7)
// ---------------------------------------------------------------------------------------------

const CI_KEY: &str = "ci-key-0123456789abcdef0123456789abcdef";
const NEXT_KEY: &str = "next-key-fedcba9876543210fedcba9876543210";

/// A keys file entry for `key` (only its SHA-256 is written).
fn key_entry(key: &str, subject: &str, roles: &str) -> String {
    let hash = tower_gatekeeper::authenticate::ApiKeyHash::of(key).to_hex();
    format!(
        "[[key]]\nsha256 = \"{hash}\"\nsubject = \"{subject}\"\nroles = [{roles}]\nscopes = [\"orders:read\"]\ntenant = \"acme\"\n"
    )
}

/// Replaces `path` atomically (write, then rename), as a deployment tool would.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn credentials_toml(upstream: SocketAddr, extra: &str) -> String {
    format!(
        r#"{ISSUER}
[[route]]
path = "/orders/{{*rest}}"
upstream = "http://{upstream}"
roles_any = ["clerk", "deployer"]
{extra}"#
    )
}

async fn get_with(gw: &Running, header: &str, value: &str) -> reqwest::Response {
    client()
        .get(gw.url("/orders/1"))
        .header(header, value)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_from_the_keys_file_reach_the_upstream_as_identity() {
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    std::fs::write(
        dir.0.join("api_keys.toml"),
        key_entry(CI_KEY, "ci-bot", r#""deployer", "reader""#),
    )
    .unwrap();
    let path = dir.write_config(&credentials_toml(
        upstream.addr,
        "[api_keys]\nfile = \"api_keys.toml\"\nheader = \"x-api-key\"\n",
    ));
    let gw = Running::start(gateway::load_config(&path).unwrap_or_else(|e| panic!("{e}"))).await;

    let response = get_with(&gw, "x-api-key", CI_KEY).await;
    assert_eq!(response.status(), StatusCode::OK);
    let echo = json_body(response).await;
    let headers = &echo["headers"];
    assert_eq!(headers["x-user-id"], "ci-bot");
    assert_eq!(headers["x-user-roles"], "deployer,reader");
    assert_eq!(headers["x-user-scopes"], "orders:read");
    assert_eq!(headers["x-tenant-id"], "acme");
    assert!(headers.get("x-api-key").is_none(), "key forwarded: {echo}");

    // Unknown key: 401, never reaches the upstream.
    let response = get_with(&gw, "x-api-key", "not-a-configured-key").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // JWTs still work through the chain.
    let response = get_with(
        &gw,
        "authorization",
        &format!("Bearer {}", token("rs256_valid")),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(upstream.hits(), 2);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_api_keys_file_is_picked_up_without_restart() {
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    let keys = dir.0.join("api_keys.toml");
    std::fs::write(&keys, key_entry(CI_KEY, "ci-bot", r#""deployer""#)).unwrap();
    let path = dir.write_config(&credentials_toml(
        upstream.addr,
        "[api_keys]\nfile = \"api_keys.toml\"\nreload_interval_seconds = 0.1\n",
    ));
    let gw = Running::start(gateway::load_config(&path).unwrap_or_else(|e| panic!("{e}"))).await;
    assert_eq!(
        get_with(&gw, "x-api-key", CI_KEY).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        get_with(&gw, "x-api-key", NEXT_KEY).await.status(),
        StatusCode::UNAUTHORIZED
    );

    replace_file(&keys, &key_entry(NEXT_KEY, "ci-bot-2", r#""deployer""#));
    tokio::time::timeout(BOUND, async {
        while get_with(&gw, "x-api-key", NEXT_KEY).await.status() != StatusCode::OK {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the new key is accepted after the file changed");
    assert_eq!(
        get_with(&gw, "x-api-key", CI_KEY).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let echo = json_body(get_with(&gw, "x-api-key", NEXT_KEY).await).await;
    assert_eq!(echo["headers"]["x-user-id"], "ci-bot-2");

    // A broken file keeps the current keys.
    replace_file(&keys, "[[key]]\nsha256 = \"zz\"\n");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        get_with(&gw, "x-api-key", NEXT_KEY).await.status(),
        StatusCode::OK
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_tokens_are_401_through_the_gateway() {
    use tower_gatekeeper::revocation::{Revocation, RevocationStore};
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    let path = dir.write_config(&credentials_toml(upstream.addr, "[revocation]\n"));
    let config = gateway::load_config(&path).unwrap_or_else(|e| panic!("{e}"));
    let store = config.revocations().expect("[revocation] gives a store");
    let gw = Running::start(config).await;
    let bearer = |name: &str| format!("Bearer {}", token(name));

    // Both accepted (and now in the verified-token cache).
    for name in ["rs256_valid", "es256_valid"] {
        let response = get_with(&gw, "authorization", &bearer(name)).await;
        assert_eq!(response.status(), StatusCode::OK, "{name}");
    }
    let exp = std::time::UNIX_EPOCH + Duration::from_secs(4_102_444_800);
    store
        .revoke(Revocation::token("fixture-rs256_valid", exp))
        .await
        .unwrap();
    let response = get_with(&gw, "authorization", &bearer("rs256_valid")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&response, "www-authenticate").contains("invalid_token"));
    let response = get_with(&gw, "authorization", &bearer("es256_valid")).await;
    assert_eq!(response.status(), StatusCode::OK);

    // "Log out everywhere": every token of user-123 issued before now.
    store
        .revoke(Revocation::subject(
            "user-123",
            std::time::SystemTime::now(),
        ))
        .await
        .unwrap();
    let response = get_with(&gw, "authorization", &bearer("es256_valid")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(upstream.hits(), 3);
    gw.stop().await;
}

#[cfg(feature = "introspection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_section_checks_opaque_tokens_at_the_idp() {
    // A minimal RFC 7662 endpoint: "goodopaque" is active, everything else inactive.
    let forms = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&forms);
    let idp = http_server::serve(move |req: Request<Incoming>| {
        let seen = Arc::clone(&seen);
        async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let form = String::from_utf8(body.to_vec()).unwrap();
            let answer = if form.split('&').any(|kv| kv == "token=goodopaque") {
                json!({"active": true, "sub": "opaque-user", "roles": ["clerk"],
                       "scope": "orders:read", "exp": 4102444800u64})
            } else {
                json!({"active": false})
            };
            seen.lock().unwrap().push(form);
            Response::new(Full::new(Bytes::from(answer.to_string())))
        }
    })
    .await;
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    std::fs::write(dir.0.join("introspection.secret"), "s3cret\n").unwrap();
    let path = dir.write_config(&credentials_toml(
        upstream.addr,
        &format!(
            "[introspection]\nendpoint = \"http://{idp}/introspect\"\nclient_id = \"gateway\"\n\
             client_secret_file = \"introspection.secret\"\nauth_method = \"post\"\n\
             timeout_seconds = 5\ncache_ttl_seconds = 30\nnegative_ttl_seconds = 1\n"
        ),
    ));
    let gw = Running::start(gateway::load_config(&path).unwrap_or_else(|e| panic!("{e}"))).await;

    let response = get_with(&gw, "authorization", "Bearer goodopaque").await;
    assert_eq!(response.status(), StatusCode::OK);
    let echo = json_body(response).await;
    assert_eq!(echo["headers"]["x-user-id"], "opaque-user");
    assert_eq!(echo["headers"]["x-user-roles"], "clerk");
    let response = get_with(&gw, "authorization", "Bearer inactiveopaque").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // JWTs are still verified locally, not introspected.
    let response = get_with(
        &gw,
        "authorization",
        &format!("Bearer {}", token("rs256_valid")),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let forms = forms.lock().unwrap().clone();
    assert_eq!(forms.len(), 2, "{forms:?}");
    assert!(
        forms
            .iter()
            .all(|f| f.contains("client_id=gateway") && f.contains("client_secret=s3cret")),
        "client_secret_post"
    );
    assert_eq!(upstream.hits(), 2);
    gw.stop().await;
}

#[test]
fn credential_sections_are_checked() {
    let error = config_error(&format!("{ISSUER}{ROUTE}[revocation]\nredis = \"x\"\n"));
    assert_mentions(&error, &["redis", "unknown field"]);
    let error = config_error(&format!(
        "{ISSUER}{ROUTE}[revocation]\nfail_mode = \"closed\"\n"
    ));
    assert_mentions(&error, &["[revocation]", "fail_mode", "redis_url"]);
    if !cfg!(feature = "redis") {
        let error = config_error(&format!(
            "{ISSUER}{ROUTE}[revocation]\nredis_url = \"redis://127.0.0.1:1/\"\n"
        ));
        assert_mentions(&error, &["redis_url", "`redis` feature"]);
    }
    let error = config_error(&format!(
        "{ISSUER}{ROUTE}[introspection]\nendpoint = \"http://127.0.0.1:1/i\"\nclient_id = \"gw\"\n"
    ));
    if cfg!(feature = "introspection") {
        assert_mentions(&error, &["[introspection]", "client_secret"]);
    } else {
        assert_mentions(&error, &["[introspection]", "`introspection` feature"]);
    }

    // The keys file: unknown keys name the key and the keys file.
    let dir = gateway_dir();
    let keys = dir.0.join("api_keys.toml");
    std::fs::write(
        &keys,
        format!("{}expires = 1\n", key_entry(CI_KEY, "x", "")),
    )
    .unwrap();
    let path = dir.write_config(&format!(
        "{ISSUER}{ROUTE}[api_keys]\nfile = \"api_keys.toml\"\n"
    ));
    let error = gateway::load_config(&path)
        .map(|_| ())
        .expect_err("rejected")
        .to_string();
    assert_mentions(
        &error,
        &["[api_keys]", "expires", &keys.display().to_string()],
    );
    let error = config_error(&format!(
        "{ISSUER}{ROUTE}[api_keys]\nfile = \"missing.toml\"\n"
    ));
    assert_mentions(&error, &["[api_keys]", "missing.toml"]);
}

/// A `redis-server` child on a free loopback port, killed on drop (as in
/// tests/revocation_redis.rs). `None`, after a loud message, when it is not installed on a
/// developer machine; under `CI=true` a missing server fails the test.
#[cfg(feature = "redis")]
struct RedisChild(std::process::Child, SocketAddr);

#[cfg(feature = "redis")]
impl RedisChild {
    fn start() -> Option<RedisChild> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let Some(binary) = std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
            .map(|dir| dir.join("redis-server"))
            .find(|candidate| candidate.is_file())
        else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("redis-server is not installed, and CI=true: .ci/run must install it");
            }
            eprintln!(
                "\n!!! SKIPPED: redis-server not found on PATH; the two-replica gateway test \
                 did not run. Install it (Debian: apt-get install redis-server).\n"
            );
            return None;
        };
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let child = std::process::Command::new(binary)
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(addr.port().to_string())
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start redis-server");
        let server = RedisChild(child, addr);
        let deadline = std::time::Instant::now() + BOUND;
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }
}

#[cfg(feature = "redis")]
impl Drop for RedisChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_replicas_share_revocations_through_redis() {
    use tower_gatekeeper::revocation::{Revocation, RevocationStore};
    let Some(redis) = RedisChild::start() else {
        return;
    };
    let upstream = Upstream::start().await;
    let section = format!(
        "[revocation]\nredis_url = \"redis://{}/\"\nprefix = \"gw-test\"\nfail_mode = \"open\"\n",
        redis.1
    );
    let (dir_a, dir_b) = (gateway_dir(), gateway_dir());
    let mut replicas = Vec::new();
    for dir in [&dir_a, &dir_b] {
        let path = dir.write_config(&credentials_toml(upstream.addr, &section));
        let config = gateway::load_config(&path).unwrap_or_else(|e| panic!("{e}"));
        tokio::time::timeout(BOUND, config.keys_ready())
            .await
            .expect("synchronised with Redis")
            .unwrap();
        let store = config.revocations().unwrap();
        replicas.push((Running::start(config).await, store));
    }
    let bearer = format!("Bearer {}", token("rs256_valid"));
    for (gw, _) in &replicas {
        assert_eq!(
            get_with(gw, "authorization", &bearer).await.status(),
            StatusCode::OK
        );
    }
    // Revoked through replica A's store: both replicas reject it.
    let exp = std::time::UNIX_EPOCH + Duration::from_secs(4_102_444_800);
    replicas[0]
        .1
        .revoke(Revocation::token("fixture-rs256_valid", exp))
        .await
        .unwrap();
    for (gw, _) in &replicas {
        tokio::time::timeout(BOUND, async {
            while get_with(gw, "authorization", &bearer).await.status() != StatusCode::UNAUTHORIZED
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the revocation reaches every replica");
    }
    for (gw, _) in replicas {
        gw.stop().await;
    }
}
