//! `[cors]` over loopback with reqwest: preflights answered at the edge (never 401, never
//! upstream, even where the route does not take `OPTIONS`), other `OPTIONS` requests routed
//! and authenticated, CORS headers on actual responses, nothing without `[cors]`, and the
//! configuration checks. The real-browser test is `tests/cors_browser.rs`.

mod support;

use std::net::SocketAddr;

use support::{ONE_ISSUER, Running, Upstream, admin_token, assert_mentions, gateway_dir, header};

const APP: &str = "http://app.example.test:8443";

fn routes(upstream: SocketAddr) -> String {
    format!(
        r#"
[[route]]
path = "/orders/{{*rest}}"
methods = ["GET", "POST"]
upstream = "http://{upstream}"

[[route]]
path = "/any/{{*rest}}"
upstream = "http://{upstream}"
"#
    )
}

const CORS: &str = r#"
[cors]
allow_origins = ["http://app.example.test:8443", "https://other.example.test"]
allow_methods = ["GET", "POST", "DELETE"]
allow_headers = ["authorization", "content-type", "x-trace"]
expose_headers = ["www-authenticate", "x-request-id"]
max_age_seconds = 600
"#;

async fn start(cors: &str) -> (Upstream, Running, support::TempDir) {
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    let toml = format!("{ONE_ISSUER}{}{cors}", routes(upstream.addr));
    let config = gatekeeper::load_config(dir.write_config(&toml)).unwrap_or_else(|e| panic!("{e}"));
    (upstream, Running::start(config).await, dir)
}

fn preflight(client: &reqwest::Client, url: &str, origin: &str) -> reqwest::RequestBuilder {
    client
        .request(reqwest::Method::OPTIONS, url)
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflights_are_answered_at_the_edge() {
    let (upstream, gw, _dir) = start(CORS).await;
    let client = support::client();
    // A route that does not take OPTIONS (it would be 405), and one that takes every method
    // (it would be 401): both preflights are answered before routing and authentication.
    for path in ["/orders/1", "/any/1"] {
        let response = preflight(&client, &gw.url(path), APP).send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        assert_eq!(header(&response, "access-control-allow-origin"), APP);
        assert_eq!(
            header(&response, "access-control-allow-methods"),
            "GET,POST,DELETE"
        );
        assert_eq!(
            header(&response, "access-control-allow-headers"),
            "authorization,content-type,x-trace"
        );
        assert_eq!(header(&response, "access-control-max-age"), "600");
        assert!(response.headers().get("www-authenticate").is_none());
        assert!(header(&response, "vary").contains("origin"));
    }
    // An origin that is not allowed gets no permission (the browser then fails the call).
    let response = preflight(&client, &gw.url("/orders/1"), "http://evil.example.test")
        .send()
        .await
        .unwrap();
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    // A path no route serves: the preflight is still answered, the call itself will 404.
    let response = preflight(&client, &gw.url("/nowhere"), APP)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    assert_eq!(upstream.hits(), 0, "no preflight reaches the upstream");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_options_requests_are_routed_and_authenticated() {
    let (upstream, gw, _dir) = start(CORS).await;
    let client = support::client();
    // OPTIONS with Origin but no Access-Control-Request-Method: not a preflight.
    let response = client
        .request(reqwest::Method::OPTIONS, gw.url("/any/1"))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // The rejection is readable by the page: CORS headers on it too.
    assert_eq!(header(&response, "access-control-allow-origin"), APP);
    assert!(header(&response, "access-control-expose-headers").contains("www-authenticate"));
    // Without Origin either.
    let response = client
        .request(reqwest::Method::OPTIONS, gw.url("/any/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // With a token, the OPTIONS request goes upstream as OPTIONS.
    let response = client
        .request(reqwest::Method::OPTIONS, gw.url("/any/1"))
        .header("origin", APP)
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "access-control-allow-origin"), APP);
    let echo = support::json_body(response).await;
    assert_eq!(echo["method"], "OPTIONS");
    assert_eq!(upstream.hits(), 1);
    // A route that does not take OPTIONS: 405 with Allow, as without [cors].
    let response = client
        .request(reqwest::Method::OPTIONS, gw.url("/orders/1"))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(header(&response, "allow"), "GET, HEAD, POST");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actual_cross_origin_responses_carry_cors_headers() {
    let (_upstream, gw, _dir) = start(CORS).await;
    let client = support::client();
    let response = client
        .get(gw.url("/orders/1"))
        .header("origin", APP)
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "access-control-allow-origin"), APP);
    assert_eq!(
        header(&response, "access-control-expose-headers"),
        "www-authenticate,x-request-id"
    );
    assert!(
        response
            .headers()
            .get("access-control-allow-credentials")
            .is_none()
    );
    // The identity reached the upstream as usual.
    let echo = support::json_body(response).await;
    assert_eq!(echo["headers"]["x-user-id"], "admin-1");
    // Same-origin or non-browser requests (no Origin) get no CORS permission.
    let response = client
        .get(gw.url("/orders/1"))
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cors_nothing_changes() {
    let (upstream, gw, _dir) = start("").await;
    let client = support::client();
    // The preflight is an unauthenticated OPTIONS request like any other: 401 or 405.
    let response = preflight(&client, &gw.url("/any/1"), APP)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let response = preflight(&client, &gw.url("/orders/1"), APP)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let response = client
        .get(gw.url("/orders/1"))
        .header("origin", APP)
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    assert_eq!(upstream.hits(), 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_any_origin() {
    // Credentials: the listed origin is echoed with Allow-Credentials.
    let (_upstream, gw, _dir) = start(
        r#"
[cors]
allow_origins = ["http://app.example.test:8443"]
allow_credentials = true
"#,
    )
    .await;
    let response = preflight(&support::client(), &gw.url("/orders/1"), APP)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "access-control-allow-origin"), APP);
    assert_eq!(
        header(&response, "access-control-allow-credentials"),
        "true"
    );
    // The defaults: GET, HEAD, POST, PUT, PATCH, DELETE; authorization and content-type.
    assert_eq!(
        header(&response, "access-control-allow-methods"),
        "GET,HEAD,POST,PUT,PATCH,DELETE"
    );
    assert_eq!(
        header(&response, "access-control-allow-headers"),
        "authorization,content-type"
    );
    gw.stop().await;

    let (_upstream, gw, _dir) = start("[cors]\nallow_origins = [\"*\"]\n").await;
    let response = preflight(&support::client(), &gw.url("/orders/1"), APP)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "access-control-allow-origin"), "*");
    gw.stop().await;
}

#[test]
fn cors_errors_name_the_key() {
    let dir = gateway_dir();
    for (cors, expected) in [
        (
            r#"allow_origins = ["https://app.example.test/"]"#,
            &["[cors]", "allow_origins", "\"https://app.example.test\""][..],
        ),
        (
            r#"allow_origins = ["https://app.example.test/login"]"#,
            &["allow_origins", "no path"][..],
        ),
        (
            r#"allow_origins = ["app.example.test"]"#,
            &["allow_origins", "not an origin"][..],
        ),
        (
            r#"allow_origins = ["HTTPS://App.example.test"]"#,
            &["allow_origins", "\"https://app.example.test\""][..],
        ),
        (
            r#"allow_origins = ["ftp://app.example.test"]"#,
            &["allow_origins", "http or https"][..],
        ),
        (r#"allow_origins = []"#, &["allow_origins", "empty"][..]),
        (
            r#"allow_origins = ["*", "https://a.example.test"]"#,
            &["allow_origins", "\"*\""][..],
        ),
        (
            "allow_origins = [\"*\"]\nallow_credentials = true",
            &["allow_origins", "allow_credentials"][..],
        ),
        (
            "allow_origins = [\"https://a.example.test\"]\nallow_headers = [\"*\"]\nallow_credentials = true",
            &["allow_headers", "allow_credentials"][..],
        ),
        (
            "allow_origins = [\"https://a.example.test\"]\nallow_methods = [\"get\"]",
            &["allow_methods", "\"get\""][..],
        ),
        (
            "allow_origins = [\"https://a.example.test\"]\nexpose_headers = [\"bad header\"]",
            &["expose_headers", "bad header"][..],
        ),
        (
            "allow_origins = [\"https://a.example.test\"]\nallow_origin = true",
            &["allow_origin"][..],
        ),
    ] {
        let toml = format!(
            "{ONE_ISSUER}\n[[route]]\npath = \"/a\"\nupstream = \"http://127.0.0.1:9\"\n\n[cors]\n{cors}\n"
        );
        let error = gatekeeper::load_config(dir.write_config(&toml))
            .expect_err(cors)
            .to_string();
        assert_mentions(&error, expected);
        assert_mentions(&error, &["gateway.toml"]);
    }
}
