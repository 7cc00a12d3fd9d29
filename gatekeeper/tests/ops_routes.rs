//! Operations in the route stacks, over real loopback HTTP: the signed context (`[context]`)
//! verified by an upstream running the library's `TrustedContextLayer`, the external
//! authorizer (`[ext_authz]`) allowing and denying, and report-only `shadow` rules.

mod support;

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_gatekeeper::keys::{SigningKey, StaticKeys, VerifyingKey};
use tower_gatekeeper::propagate::SignedContextValidation;
use tower_gatekeeper::{Algorithm, AuthContext, TrustedContextLayer};

use support::{ISSUER, Running, TempDir, client, fixtures, json_body, token};

/// A temp dir with the fixture JWKS and the context signing keys under `keys/`.
fn ops_dir() -> TempDir {
    TempDir::new("ops-routes").with_fixture_keys(&[
        "jwks.json",
        "ed-1.key.pem",
        "ec256-1.key.pem",
        "rsa-1.key.pem",
    ])
}

async fn start(dir: &TempDir, toml: &str) -> Running {
    let path = dir.write_config(toml);
    let config = gatekeeper::load_config(&path).unwrap_or_else(|e| panic!("{e}"));
    Running::start(config).await
}

/// An upstream that runs `TrustedContextLayer::signed` with `public` and echoes the identity
/// it rebuilt (or the layer's rejection).
async fn context_upstream(public: VerifyingKey, audience: &str) -> SocketAddr {
    let layer = TrustedContextLayer::signed(
        StaticKeys::new([public]),
        SignedContextValidation::new().audience(audience),
    )
    .unwrap();
    let service =
        tower::ServiceBuilder::new()
            .layer(layer)
            .service_fn(|req: Request<Incoming>| async move {
                let ctx = req.extensions().get::<AuthContext>().cloned();
                let body = json!({
                    "subject": ctx.as_ref().and_then(|c| c.subject().map(str::to_owned)),
                    "roles": ctx.as_ref().map(|c| c.roles().to_vec()),
                    "issuer": ctx.as_ref().and_then(|c| c.issuer().map(str::to_owned)),
                });
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body.to_string()))))
            });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service.clone();
            tokio::spawn(async move {
                let hyper_service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let service = service.clone();
                    async move {
                        let response = service.oneshot(req).await.unwrap();
                        let (parts, body) = response.into_parts();
                        let bytes = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        Ok::<_, Infallible>(Response::from_parts(parts, Full::new(bytes)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), hyper_service)
                    .await;
            });
        }
    });
    addr
}

fn context_config(upstream: SocketAddr, key_file: &str) -> String {
    format!(
        r#"
listen = "127.0.0.1:0"
{ISSUER}
[context]
sign_key_file = "keys/{key_file}"
kid = "ctx-1"
audience = "orders-svc"

[[route]]
path = "/orders/{{*rest}}"
upstream = "http://{upstream}"
roles_any = ["clerk"]

[[route]]
path = "/public/{{*rest}}"
upstream = "http://{upstream}"
auth = "public"
"#
    )
}

#[tokio::test]
async fn signed_context_reaches_an_upstream_that_verifies_it() {
    for (key_file, alg) in [
        ("ed-1.key.pem", Algorithm::EdDSA),
        ("ec256-1.key.pem", Algorithm::ES256),
    ] {
        let pem = std::fs::read(fixtures().join("keys").join(key_file)).unwrap();
        let signer = SigningKey::from_pem(alg, &pem).unwrap().with_kid("ctx-1");
        // The upstream holds the public half only (read from the public key file).
        let public_file = key_file.replace(".key.", ".pub.");
        let public_pem = std::fs::read(fixtures().join("keys").join(&public_file)).unwrap();
        let public = VerifyingKey::from_pem(&public_pem)
            .unwrap()
            .with_kid("ctx-1");
        let upstream = context_upstream(public, "orders-svc").await;
        let dir = ops_dir();
        let gateway = start(&dir, &context_config(upstream, key_file)).await;

        // Through the gateway: the identity arrives.
        let response = client()
            .get(gateway.url("/orders/1"))
            .bearer_auth(token("rs256_valid"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{key_file}");
        let body = json_body(response).await;
        assert_eq!(body["subject"], "user-123", "{key_file}: {body}");
        assert_eq!(body["roles"], json!(["clerk"]), "{key_file}: {body}");
        assert_eq!(
            body["issuer"], "https://idp.example.test",
            "{key_file}: {body}"
        );

        // Around the gateway: no context is 401 at the upstream.
        let direct = format!("http://{upstream}/orders/1");
        let response = client().get(&direct).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{key_file}");

        // A context forged with another key under the same kid: 401.
        let forger = SigningKey::generate_ed25519().unwrap().with_kid("ctx-1");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let context = |sub: &str| {
            json!({
                "iss": "tower-gatekeeper", "aud": "orders-svc", "sub": sub,
                "iat": now, "exp": now + 5, "htm": "GET", "htu": "/orders/1",
            })
        };
        let typ = || {
            let mut header = serde_json::Map::new();
            header.insert("typ".into(), "gatekeeper-ctx+jwt".into());
            header
        };
        let forged = forger.sign_with_header(typ(), &context("mallory")).unwrap();
        let response = client()
            .get(&direct)
            .header("x-auth-context", &forged)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{key_file}");
        // ... and the real signer's context for that request passes (the check above
        // failed on the key, not on the shape).
        let genuine = signer.sign_with_header(typ(), &context("svc")).unwrap();
        let response = client()
            .get(&direct)
            .header("x-auth-context", &genuine)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{key_file}");

        // A client's own context header is stripped by the gateway: on a public route the
        // upstream sees none (401), even a validly signed one.
        let response = client()
            .get(gateway.url("/public/1"))
            .header("x-auth-context", &forged)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{key_file}");
        gateway.stop().await;
    }
}

#[tokio::test]
async fn context_keys_are_checked_at_load() {
    let dir = ops_dir();
    let upstream: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let load = |toml: String| {
        let path = dir.write_config(&toml);
        gatekeeper::load_config(&path).unwrap_err().to_string()
    };
    let error = load(context_config(upstream, "rsa-1.key.pem"));
    support::assert_mentions(
        &error,
        &[
            "[context]",
            "sign_key_file",
            "Ed25519 or P-256",
            "gateway.toml",
        ],
    );
    let error = load(context_config(upstream, "missing.pem"));
    support::assert_mentions(&error, &["[context]", "sign_key_file", "missing.pem"]);
    let error =
        load(context_config(upstream, "ed-1.key.pem").replace("kid = \"ctx-1\"", "kid = \"\""));
    support::assert_mentions(&error, &["[context]", "`kid`"]);
    let error =
        load(context_config(upstream, "ed-1.key.pem").replace("audience = \"orders-svc\"\n", ""));
    support::assert_mentions(&error, &["audience"]);
    let error = load(
        context_config(upstream, "ed-1.key.pem")
            .replace("kid = \"ctx-1\"", "kid = \"k\"\nlifetime_seconds = 3600"),
    );
    support::assert_mentions(&error, &["[context]"]);
}

/// An external authorizer on loopback: allows unless the request path contains "deny";
/// counts its calls and keeps the last input document.
async fn authorizer() -> (SocketAddr, Arc<AtomicUsize>, Arc<Mutex<Value>>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let last = Arc::new(Mutex::new(Value::Null));
    let (counted, seen) = (Arc::clone(&calls), Arc::clone(&last));
    let addr = support::http_server::serve(move |req: Request<Incoming>| {
        let (counted, seen) = (Arc::clone(&counted), Arc::clone(&seen));
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let input: Value = serde_json::from_slice(&body).unwrap();
            let deny = input["request"]["path"]
                .as_str()
                .unwrap_or("")
                .contains("deny");
            *seen.lock().unwrap() = input;
            let mut response = Response::new(Full::new(Bytes::new()));
            if deny {
                *response.status_mut() = StatusCode::FORBIDDEN;
            }
            response
        }
    })
    .await;
    (addr, calls, last)
}

#[tokio::test]
async fn the_external_authorizer_allows_and_denies() {
    let (authz, calls, last) = authorizer().await;
    let upstream = support::Upstream::start().await;
    let dir = ops_dir();
    let gateway = start(
        &dir,
        &format!(
            r#"
listen = "127.0.0.1:0"
{ISSUER}
[ext_authz]
url = "http://{authz}/check"
timeout_seconds = 5

[[route]]
path = "/orders/{{*rest}}"
upstream = "http://{up}"
roles_any = ["clerk"]

[[route]]
path = "/health/{{*rest}}"
upstream = "http://{up}"
ext_authz = false

[[route]]
path = "/public/{{*rest}}"
upstream = "http://{up}"
auth = "public"
"#,
            up = upstream.addr
        ),
    )
    .await;
    let get = |path: &str, bearer: Option<String>| {
        let mut request = client().get(gateway.url(path));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        request.send()
    };
    let response = get("/orders/allow", Some(token("rs256_valid")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(last.lock().unwrap()["caller"]["subject"], "user-123");
    assert_eq!(upstream.hits(), 1);

    let response = get("/orders/deny", Some(token("rs256_valid")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        upstream.hits(),
        1,
        "a denied request never reaches the upstream"
    );

    // Without a token the route's own rule answers 401 before the authorizer is asked.
    let response = get("/orders/allow", None).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // The opted-out route and the public route do not ask it.
    let response = get("/health/deny", Some(token("rs256_valid")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = get("/public/deny", None).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    gateway.stop().await;
}

#[tokio::test]
async fn an_unreachable_authorizer_fails_closed() {
    let upstream = support::Upstream::start().await;
    let closed = support::closed_port().await;
    let dir = ops_dir();
    let gateway = start(
        &dir,
        &format!(
            "listen = \"127.0.0.1:0\"\n{ISSUER}\n[ext_authz]\nurl = \"http://{closed}/check\"\n\n[[route]]\npath = \"/orders/{{*rest}}\"\nupstream = \"http://{}\"\n",
            upstream.addr
        ),
    )
    .await;
    let response = client()
        .get(gateway.url("/orders/1"))
        .bearer_auth(token("rs256_valid"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(upstream.hits(), 0);
    gateway.stop().await;
}

#[tokio::test]
async fn ext_authz_keys_are_checked_at_load() {
    let dir = ops_dir();
    let load = |extra: &str, route: &str| {
        let path = dir.write_config(&format!(
            "{ISSUER}\n{extra}\n[[route]]\npath = \"/o/{{*rest}}\"\nupstream = \"http://127.0.0.1:9\"\n{route}\n"
        ));
        gatekeeper::load_config(&path).unwrap_err().to_string()
    };
    let error = load(
        "[ext_authz]\nurl = \"https://authz.example.test/check\"",
        "",
    );
    support::assert_mentions(
        &error,
        &[
            "[ext_authz]",
            "`url`",
            "https is not supported",
            "gateway.toml",
        ],
    );
    let error = load("[ext_authz]\nurl = \"not a url\"", "");
    support::assert_mentions(&error, &["[ext_authz]", "http://"]);
    let error = load(
        "[ext_authz]\nurl = \"http://127.0.0.1:9/\"\ntimeout_seconds = 0",
        "",
    );
    support::assert_mentions(&error, &["[ext_authz]", "timeout_seconds"]);
    let error = load("[ext_authz]\nurl = \"http://127.0.0.1:9/\"\nbogus = 1", "");
    support::assert_mentions(&error, &["bogus"]);
    let error = load("", "ext_authz = false");
    support::assert_mentions(&error, &["[[route]] #1", "`ext_authz`", "[ext_authz]"]);
    let error = load(
        "[ext_authz]\nurl = \"http://127.0.0.1:9/\"",
        "auth = \"public\"\next_authz = true",
    );
    support::assert_mentions(&error, &["[[route]] #1", "ext_authz = true", "public"]);
}

/// A tracing writer into a shared buffer (the test's runtime is single-threaded, so the
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
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_shadow_deny_is_logged_and_counted_and_forwarded() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let upstream = support::Upstream::start().await;
    let admin = support::closed_port().await;
    let dir = ops_dir();
    let path = dir.write_config(&format!(
        r#"
listen = "127.0.0.1:0"
admin_listen = "{admin}"
{ISSUER}
[[route]]
path = "/orders/{{*rest}}"
upstream = "http://{up}"
roles_any = ["clerk"]
shadow = {{ roles_any = ["admin"], scopes_all = ["orders:read"] }}
"#,
        up = upstream.addr
    ));
    let config = gatekeeper::load_config(&path).unwrap_or_else(|e| panic!("{e}"));
    let live = gatekeeper::Live::new(config);
    gatekeeper::start_admin(&live, async { Ok(()) })
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gatekeeper::run_live(live, listener, async {
        let _ = stopped.await;
    }));

    // A clerk passes the enforced rule and fails the shadow one: forwarded all the same.
    for _ in 0..2 {
        let response = client()
            .get(format!("http://{addr}/orders/1"))
            .bearer_auth(token("rs256_valid"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(upstream.hits(), 2);
    let counts = json_body(
        client()
            .get(format!("http://{admin}/shadow"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(counts["shadow"][0]["denied"], 2, "{counts}");
    assert_eq!(counts["shadow"][0]["allowed"], 0, "{counts}");
    assert!(
        counts["shadow"][0]["route"]
            .as_str()
            .unwrap()
            .contains("/orders/"),
        "{counts}"
    );
    let text = logs.text();
    assert_eq!(
        text.matches("shadow policy would deny (not enforced)")
            .count(),
        2,
        "{text}"
    );
    assert!(
        text.contains("[[route]] #1"),
        "the log names the route: {text}"
    );
    assert!(
        !text.contains(&token("rs256_valid")),
        "no token in the logs"
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn shadow_keys_are_checked_at_load() {
    let dir = ops_dir();
    let load = |route: &str| {
        let path = dir.write_config(&format!(
            "{ISSUER}\n[[route]]\npath = \"/o/{{*rest}}\"\nupstream = \"http://127.0.0.1:9\"\n{route}\n"
        ));
        gatekeeper::load_config(&path).unwrap_err().to_string()
    };
    let error = load("shadow = { roles_anyy = [\"a\"] }");
    support::assert_mentions(&error, &["`shadow`", "roles_anyy"]);
    let error = load("shadow = {}");
    support::assert_mentions(&error, &["[[route]] #1", "`shadow` is empty"]);
    let error = load("auth = \"public\"\nshadow = { roles_any = [\"a\"] }");
    support::assert_mentions(&error, &["[[route]] #1", "`shadow`", "public"]);
    let error = load("shadow = { roles_any = [] }");
    support::assert_mentions(&error, &["[[route]] #1", "`shadow`", "roles_any"]);
    let error = load("shadow = { issuers = [\"https://nobody.example\"] }");
    support::assert_mentions(&error, &["[[route]] #1", "`shadow`", "nobody"]);
}
