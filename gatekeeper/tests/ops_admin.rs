//! The admin actions over real loopback HTTP: revoking tokens and subjects (in memory, and
//! through a real Redis shared by two replicas), refreshing remote keys now, the admin token
//! and the 400s of bad requests.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use support::{BOUND, ISSUER, TempDir, client, fixtures, json_body, token};

const ADMIN_TOKEN: &str = "admin-secret-0123456789abcdef0123456789";

fn admin_sha256() -> String {
    tower_gatekeeper::authenticate::ApiKeyHash::of(ADMIN_TOKEN).to_hex()
}

/// A gateway with its admin listener, serving one `Live` configuration.
struct Gateway {
    addr: SocketAddr,
    admin: SocketAddr,
    _stop: oneshot::Sender<()>,
    _dir: TempDir,
}

impl Gateway {
    async fn start(toml_extra: &str, route_upstream: SocketAddr) -> Gateway {
        Gateway::start_with(ISSUER, toml_extra, route_upstream).await
    }

    async fn start_with(issuer: &str, extra: &str, upstream: SocketAddr) -> Gateway {
        let dir = TempDir::new("ops-admin").with_fixture_keys(&["jwks.json"]);
        let admin = support::closed_port().await;
        let path = dir.write_config(&format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"{admin}\"\n{extra}\n{issuer}\n\
             [[route]]\npath = \"/orders/{{*rest}}\"\nupstream = \"http://{upstream}\"\n"
        ));
        let config = gatekeeper::load_config(&path).unwrap_or_else(|e| panic!("{e}"));
        let ready = config.keys_ready();
        let live = gatekeeper::Live::new(config);
        gatekeeper::start_admin(&live, ready).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(gatekeeper::run_live(live, listener, async {
            let _ = stopped.await;
        }));
        Gateway {
            addr,
            admin,
            _stop: stop,
            _dir: dir,
        }
    }

    async fn get(&self, bearer: &str) -> StatusCode {
        client()
            .get(format!("http://{}/orders/1", self.addr))
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn admin(&self, path: &str, bearer: Option<&str>, body: &str) -> reqwest::Response {
        let mut request = client()
            .post(format!("http://{}{path}", self.admin))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        request.send().await.unwrap()
    }
}

async fn upstream() -> SocketAddr {
    support::http_server::serve(|_req| async {
        Response::new(Full::new(Bytes::from_static(b"ok")))
    })
    .await
}

fn admin_keys() -> String {
    format!("admin_token_sha256 = \"{}\"\n", admin_sha256())
}

#[tokio::test]
async fn revoking_a_token_and_a_subject_in_memory() {
    let gateway =
        Gateway::start(&format!("{}[revocation]\n", admin_keys()), upstream().await).await;
    let rs256 = token("rs256_valid");
    assert_eq!(gateway.get(&rs256).await, StatusCode::OK);

    let response = gateway
        .admin(
            "/revoke/token",
            Some(ADMIN_TOKEN),
            r#"{"jti": "fixture-rs256_valid", "exp": 4102444800}"#,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        json_body(response).await,
        json!({"revoked": "token", "shared": true})
    );
    // Revoked at once, though the token was cached by the first request.
    assert_eq!(gateway.get(&rs256).await, StatusCode::UNAUTHORIZED);
    // Other tokens of the subject still pass.
    let es256 = token("es256_valid");
    assert_eq!(gateway.get(&es256).await, StatusCode::OK);

    // The subject, for every token issued up to now.
    let response = gateway
        .admin(
            "/revoke/subject",
            Some(ADMIN_TOKEN),
            r#"{"sub": "user-123"}"#,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(gateway.get(&es256).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn admin_actions_need_the_admin_token() {
    let gateway =
        Gateway::start(&format!("{}[revocation]\n", admin_keys()), upstream().await).await;
    let body = r#"{"jti": "fixture-rs256_valid", "exp": 4102444800}"#;
    for bearer in [None, Some("wrong"), Some(""), Some(&ADMIN_TOKEN[..10])] {
        let response = gateway.admin("/revoke/token", bearer, body).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{bearer:?}");
        assert_eq!(
            support::header(&response, "www-authenticate"),
            "Bearer realm=\"gatekeeper-admin\""
        );
    }
    // The hash itself is not the token.
    let response = gateway
        .admin("/revoke/token", Some(&admin_sha256()), body)
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    for path in ["/keys/refresh", "/reload", "/revoke/subject"] {
        let response = gateway.admin(path, None, "{}").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    // Nothing was revoked.
    assert_eq!(gateway.get(&token("rs256_valid")).await, StatusCode::OK);
}

#[tokio::test]
async fn without_an_admin_token_the_actions_are_not_served() {
    let gateway = Gateway::start("[revocation]\n", upstream().await).await;
    for path in [
        "/revoke/token",
        "/revoke/subject",
        "/keys/refresh",
        "/reload",
    ] {
        let response = gateway.admin(path, Some(ADMIN_TOKEN), "{}").await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let body = json_body(response).await;
        let text = body["error_description"].as_str().unwrap();
        support::assert_mentions(text, &["admin_token_sha256", "admin_token_file"]);
    }
    // The read-only endpoints stay.
    let response = client()
        .get(format!("http://{}/healthz", gateway.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn bad_admin_requests_are_400_and_change_nothing() {
    let gateway =
        Gateway::start(&format!("{}[revocation]\n", admin_keys()), upstream().await).await;
    for (path, body, mentions) in [
        ("/revoke/token", "not json", "expected"),
        ("/revoke/token", "{}", "missing field `jti`"),
        ("/revoke/token", r#"{"jti": "x"}"#, "missing field `exp`"),
        ("/revoke/token", r#"{"jti": 7, "exp": 1}"#, "invalid type"),
        (
            "/revoke/token",
            r#"{"jti": "x", "exp": -1}"#,
            "invalid value",
        ),
        (
            "/revoke/token",
            r#"{"jti": "x", "exp": 1.5}"#,
            "invalid type",
        ),
        (
            "/revoke/token",
            r#"{"jti": "x", "exp": 18446744073709551615}"#,
            "out of range",
        ),
        (
            "/revoke/token",
            r#"{"jti": "", "exp": 4102444800}"#,
            "not revoked",
        ),
        (
            "/revoke/token",
            r#"{"jti": "x", "exp": 1, "sub": "y"}"#,
            "unknown field `sub`",
        ),
        (
            "/revoke/subject",
            r#"{"sub": "user-123", "issued_before": 4102444800}"#,
            "future",
        ),
        (
            "/revoke/subject",
            r#"{"subject": "user-123"}"#,
            "unknown field",
        ),
        ("/revoke/subject", "[]", "a JSON object"),
        ("/keys/refresh", r#"{"now": true}"#, "unknown field"),
    ] {
        let response = gateway.admin(path, Some(ADMIN_TOKEN), body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path} {body}");
        let answer = json_body(response).await;
        assert_eq!(answer["error"], "invalid_request", "{answer}");
        let text = answer["error_description"].as_str().unwrap();
        assert!(text.contains(mentions), "{path} {body}: {text}");
    }
    let response = gateway
        .admin("/revoke/token", Some(ADMIN_TOKEN), &"x".repeat(70 * 1024))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // GET on an action: 405 with Allow.
    let response = client()
        .get(format!("http://{}/revoke/token", gateway.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(support::header(&response, "allow"), "POST");
    assert_eq!(gateway.get(&token("rs256_valid")).await, StatusCode::OK);
}

#[tokio::test]
async fn revoking_without_a_revocation_store_says_why() {
    let gateway = Gateway::start(&admin_keys(), upstream().await).await;
    let response = gateway
        .admin(
            "/revoke/subject",
            Some(ADMIN_TOKEN),
            r#"{"sub": "user-123"}"#,
        )
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body = json_body(response).await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("[revocation]"),
        "{body}"
    );
}

#[tokio::test]
async fn admin_token_keys_are_checked_at_load() {
    let dir = TempDir::new("ops-admin").with_fixture_keys(&["jwks.json"]);
    let load = |extra: &str| {
        let path = dir.write_config(&format!("{extra}\n{ISSUER}{}", support::ROUTE));
        gatekeeper::load_config(&path)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let error = load("admin_token_sha256 = \"abc\"").unwrap_err();
    support::assert_mentions(
        &error,
        &["`admin_token_sha256`", "64 hexadecimal", "gateway.toml"],
    );
    let error = load(&format!(
        "admin_token_sha256 = \"+{}\"",
        &admin_sha256()[1..]
    ))
    .unwrap_err();
    support::assert_mentions(&error, &["`admin_token_sha256`"]);
    let error = load(&format!(
        "admin_token_sha256 = \"{}\"\nadmin_token_file = \"x\"",
        admin_sha256()
    ))
    .unwrap_err();
    support::assert_mentions(&error, &["both set"]);
    let error = load("admin_token_file = \"missing\"").unwrap_err();
    support::assert_mentions(&error, &["`admin_token_file`", "missing"]);
    std::fs::write(dir.0.join("admin.token"), ADMIN_TOKEN).unwrap();
    let error = load("admin_token_file = \"admin.token\"").unwrap_err();
    support::assert_mentions(&error, &["`admin_token_file`", "SHA-256", "not the token"]);
    // `sha256sum` output is accepted as it is.
    std::fs::write(
        dir.0.join("admin.sha256"),
        format!("{}  -\n", admin_sha256()),
    )
    .unwrap();
    load("admin_token_file = \"admin.sha256\"").unwrap();
    let error = load("log_format = \"yaml\"").unwrap_err();
    support::assert_mentions(&error, &["`log_format`", "\"yaml\"", "\"json\""]);
}

/// A JWKS endpoint whose document the test replaces.
async fn jwks_server(doc: Value) -> (SocketAddr, Arc<Mutex<Value>>) {
    let served = Arc::new(Mutex::new(doc));
    let shared = Arc::clone(&served);
    let addr = support::http_server::serve(move |_req| {
        let body = shared.lock().unwrap().to_string();
        async move {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                "cache-control",
                http::HeaderValue::from_static("max-age=86400"),
            );
            response
        }
    })
    .await;
    (addr, served)
}

fn fixture_jwks(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("keys").join(name)).unwrap()).unwrap()
}

#[cfg(feature = "remote")]
#[tokio::test]
async fn refresh_keys_now_stops_a_removed_key_at_once() {
    let (jwks, served) = jwks_server(fixture_jwks("jwks.json")).await;
    let issuer = format!(
        "[[issuer]]\nissuer = \"https://idp.example.test\"\naudiences = [\"api://orders\"]\njwks_url = \"http://{jwks}/jwks\"\n"
    );
    let gateway = Gateway::start_with(&issuer, &admin_keys(), upstream().await).await;
    let rs256 = token("rs256_valid");
    let deadline = Instant::now() + BOUND;
    // Keys are fetched in the background; 503 until they are in.
    while gateway.get(&rs256).await != StatusCode::OK {
        assert!(Instant::now() < deadline, "keys never loaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The identity provider drops rsa-1 (max-age one day: no scheduled refresh soon).
    *served.lock().unwrap() = fixture_jwks("jwks-issuer-b.json");
    assert_eq!(
        gateway.get(&rs256).await,
        StatusCode::OK,
        "served from the cache"
    );
    let response = gateway.admin("/keys/refresh", Some(ADMIN_TOKEN), "").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_body(response).await;
    assert_eq!(
        body,
        json!({
            "issuers": [{"issuer": "https://idp.example.test", "source": "remote", "refreshed": true}],
            "cache_cleared": true,
        })
    );
    assert_eq!(gateway.get(&rs256).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn refresh_reports_keys_from_files_as_static() {
    let gateway = Gateway::start(&admin_keys(), upstream().await).await;
    let response = gateway
        .admin("/keys/refresh", Some(ADMIN_TOKEN), "{}")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_body(response).await;
    assert_eq!(body["issuers"][0]["source"], "static", "{body}");
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_revocation_through_one_replica_is_enforced_by_the_other() {
    let Some(redis) = support::redis_server::RedisServer::start() else {
        return;
    };
    let section = format!(
        "{}[revocation]\nredis_url = \"{}\"\nprefix = \"ops-admin-test\"\nfail_mode = \"closed\"\n",
        admin_keys(),
        redis.url()
    );
    let up = upstream().await;
    let a = Gateway::start(&section, up).await;
    let b = Gateway::start(&section, up).await;
    let rs256 = token("rs256_valid");
    let deadline = Instant::now() + BOUND;
    // Fail closed: 503 until each replica has synchronised with Redis.
    while a.get(&rs256).await != StatusCode::OK || b.get(&rs256).await != StatusCode::OK {
        assert!(Instant::now() < deadline, "replicas never synchronised");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let response = a
        .admin(
            "/revoke/token",
            Some(ADMIN_TOKEN),
            r#"{"jti": "fixture-rs256_valid", "exp": 4102444800}"#,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_body(response).await["shared"], true);
    assert_eq!(a.get(&rs256).await, StatusCode::UNAUTHORIZED);
    // The other replica hears of it through Redis (pub/sub), within the bound.
    let deadline = Instant::now() + BOUND;
    while b.get(&rs256).await != StatusCode::UNAUTHORIZED {
        assert!(
            Instant::now() < deadline,
            "the other replica never refused the token"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A subject revocation the same way.
    let es256 = token("es256_valid");
    assert_eq!(b.get(&es256).await, StatusCode::OK);
    let response = b
        .admin(
            "/revoke/subject",
            Some(ADMIN_TOKEN),
            r#"{"sub": "user-123"}"#,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let deadline = Instant::now() + BOUND;
    while a.get(&es256).await != StatusCode::UNAUTHORIZED {
        assert!(
            Instant::now() < deadline,
            "replica A never refused the subject"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
