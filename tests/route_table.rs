//! Route tables without fall-through, over real loopback HTTP: bare prefixes, 405 with
//! `Allow` (and gRPC 12) through `AuthorizeLayer`, HEAD where GET is, and a canonical path
//! in front of the table.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};
use tower_gatekeeper::authorize::{
    AllowAll, Authenticated, PolicyEvaluator, RouteTable, roles_any,
};
use tower_gatekeeper::jwt::Validation;
use tower_gatekeeper::keys::{SigningKey, StaticKeys};
use tower_gatekeeper::path::{PathPolicy, canonicalize};
use tower_gatekeeper::{Algorithm, AuthMode, AuthenticateLayer, AuthorizeLayer, JwtAuthenticator};

const ISSUER: &str = "https://idp.route-table.test";
const AUDIENCE: &str = "api://route-table";

fn signer() -> SigningKey {
    SigningKey::hmac(Algorithm::HS256, &[9u8; 32])
        .unwrap()
        .with_kid("k")
}

fn token(roles: &[&str]) -> String {
    signer()
        .sign(&json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": "u", "roles": roles, "exp": 4102444800u64,
        }))
        .unwrap()
}

/// Serves `table` behind authenticate (optional) and authorize on a loopback port, with
/// the path canonicalised first (400 when refused); the inner service answers 200 with the
/// path it received and counts calls.
async fn serve(table: RouteTable) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let keys = StaticKeys::new([signer().verifying_key().clone()]);
    let authenticator =
        JwtAuthenticator::new(keys, Validation::new(ISSUER).audiences([AUDIENCE])).unwrap();
    let counter = Arc::clone(&hits);
    let stack = ServiceBuilder::new()
        .layer(AuthenticateLayer::new(authenticator).mode(AuthMode::Optional))
        .layer(AuthorizeLayer::new(table))
        .service_fn(move |req: Request<Incoming>| {
            counter.fetch_add(1, Ordering::SeqCst);
            let path = req.uri().path().to_owned();
            async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(path)))) }
        });
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let stack = stack.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    let stack = stack.clone();
                    async move {
                        let rewritten = match canonicalize(req.uri().path(), PathPolicy::strict()) {
                            Err(error) => {
                                let mut response = Response::new(
                                    Full::new(Bytes::from(error.description())).boxed(),
                                );
                                *response.status_mut() = StatusCode::BAD_REQUEST;
                                return Ok(response);
                            }
                            Ok(path) if path.is_unchanged() => None,
                            Ok(path) => Some(path.as_str().to_owned()),
                        };
                        if let Some(path) = rewritten {
                            let query = req.uri().query().map(|q| format!("?{q}"));
                            let target = format!("{path}{}", query.unwrap_or_default());
                            *req.uri_mut() = target.parse().unwrap();
                        }
                        let response = stack.oneshot(req).await?;
                        Ok::<_, Infallible>(response.map(BodyExt::boxed))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, hits)
}

/// The issue's table: a public catch-all, an API for any caller, an admin area.
fn table() -> RouteTable {
    RouteTable::builder()
        .any_method("/{*rest}", AllowAll.boxed())
        .any_method("/api/{*rest}", Authenticated.boxed())
        .route(
            [Method::GET, Method::POST],
            "/api/admin/{*rest}",
            roles_any(["admin"]).boxed(),
        )
        .route([Method::GET], "/reports", roles_any(["clerk"]).boxed())
        .build()
        .unwrap()
}

async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    grpc: bool,
) -> reqwest::Response {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut request = client.request(method, format!("http://{addr}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if grpc {
        request = request.header("content-type", "application/grpc");
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_prefixes_go_to_their_prefix_route() {
    let (addr, hits) = serve(table()).await;
    let clerk = token(&["clerk"]);
    let admin = token(&["admin"]);
    for path in ["/api/admin", "/api/admin/", "/api/admin/users"] {
        // Not `/api/{*rest}`, which lets any caller in.
        let response = send(addr, Method::GET, path, Some(&clerk), false).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        let response = send(addr, Method::GET, path, Some(&admin), false).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.text().await.unwrap(), path);
    }
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    let response = send(addr, Method::GET, "/api/other", Some(&clerk), false).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_the_route_does_not_list_is_405_not_the_catch_all() {
    let (addr, hits) = serve(table()).await;
    let admin = token(&["admin"]);
    for (path, allow) in [
        ("/api/admin", "GET, HEAD, POST"),
        ("/api/admin/users", "GET, HEAD, POST"),
        ("/reports", "GET, HEAD"),
    ] {
        for caller in [None, Some(admin.as_str())] {
            let response = send(addr, Method::DELETE, path, caller, false).await;
            assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
            assert_eq!(response.headers()["allow"], allow, "{path}");
            assert!(response.headers().get("www-authenticate").is_none());
            let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
            assert_eq!(body["error"], "method_not_allowed");
        }
        // gRPC: 12 UNIMPLEMENTED, Trailers-Only.
        let response = send(addr, Method::PUT, path, Some(&admin), true).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "12", "{path}");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the service was never called"
    );
    // The catch-all still serves what no route names.
    let response = send(addr, Method::DELETE, "/elsewhere", None, false).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_is_allowed_where_get_is() {
    let (addr, hits) = serve(table()).await;
    let clerk = token(&["clerk"]);
    let response = send(addr, Method::HEAD, "/reports", Some(&clerk), false).await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = send(addr, Method::HEAD, "/reports", Some(&token(&[])), false).await;
    assert_eq!(
        response.status(),
        StatusCode::FORBIDDEN,
        "HEAD gets GET's policy"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_routes_and_the_service_gets_the_canonical_path() {
    let (addr, hits) = serve(table()).await;
    let clerk = token(&["clerk"]);
    let admin = token(&["admin"]);
    // Encoded unreserved characters: routed and forwarded decoded.
    let response = send(addr, Method::GET, "/api/%61dmin/users", Some(&clerk), false).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = send(addr, Method::GET, "/api/%61dmin/users", Some(&admin), false).await;
    assert_eq!(response.text().await.unwrap(), "/api/admin/users");
    // Spellings an upstream could read as the admin area never reach a route. Sent raw:
    // URL parsers (reqwest's too) resolve `%2e%2e` and `\` before sending.
    for path in [
        "/api/x/..%2Fadmin/users",
        "/api/x/%2e%2e/admin/users",
        "/api//admin/users",
        "/api/admin;x/users",
        "/api/x%2Fadmin",
        "/api\\admin",
    ] {
        let status = raw_get(addr, path, &clerk).await;
        assert_eq!(status, 400, "{path}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

/// Sends `GET target` over a plain socket, as written; the response's status code.
async fn raw_get(addr: SocketAddr, target: &str, token: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {target} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    let status = text.split(' ').nth(1).unwrap_or_default();
    status
        .parse()
        .unwrap_or_else(|_| panic!("no status in {text:?}"))
}
