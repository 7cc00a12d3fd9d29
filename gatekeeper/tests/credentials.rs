//! Credentials other than a JWT verified with local keys, through the gateway over real
//! loopback HTTP: API keys (and their file rotated while serving), revocation (in memory and
//! shared by replicas through Redis), opaque tokens checked by introspection (and its results
//! shared by replicas through Redis), and remote keys from `jwks_url` and `discovery_url`.

mod support;

use std::path::Path;
use std::time::Duration;

use http::StatusCode;

use support::{
    BOUND, CI_KEY, NEXT_KEY, Running, Upstream, client, credentials_toml, gateway_dir, header,
    json_body, key_entry, token,
};

/// Replaces `path` atomically (write, then rename), as a deployment tool would.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
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
    let gw = Running::start(gatekeeper::load_config(&path).unwrap_or_else(|e| panic!("{e}"))).await;

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
    let gw = Running::start(gatekeeper::load_config(&path).unwrap_or_else(|e| panic!("{e}"))).await;
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
    let config = gatekeeper::load_config(&path).unwrap_or_else(|e| panic!("{e}"));
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
    use std::sync::Arc;

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use serde_json::json;

    use support::http_server;

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
                       "scope": "orders:read", "aud": "api://orders", "exp": 4102444800u64})
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
             audiences = [\"api://orders\"]\ntimeout_seconds = 5\ncache_ttl_seconds = 30\nnegative_ttl_seconds = 1\n"
        ),
    ));
    let gw = Running::start(gatekeeper::load_config(&path).unwrap_or_else(|e| panic!("{e}"))).await;

    let response = get_with(&gw, "authorization", "Bearer goodopaque").await;
    assert_eq!(response.status(), StatusCode::OK);
    let echo = json_body(response).await;
    assert_eq!(echo["headers"]["x-user-id"], "opaque-user");
    assert_eq!(echo["headers"]["x-user-roles"], "clerk");
    // No `issuer` configured: the endpoint vouches for the caller and names it.
    assert_eq!(
        echo["headers"]["x-user-issuer"],
        format!("http://{idp}/introspect")
    );
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

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_replicas_share_revocations_through_redis() {
    use tower_gatekeeper::revocation::{Revocation, RevocationStore};
    let Some(redis) = support::redis_server::RedisServer::start() else {
        return;
    };
    let upstream = Upstream::start().await;
    let section = format!(
        "[revocation]\nredis_url = \"{}\"\nprefix = \"gw-test\"\nfail_mode = \"open\"\n",
        redis.url()
    );
    let (dir_a, dir_b) = (gateway_dir(), gateway_dir());
    let mut replicas = Vec::new();
    for dir in [&dir_a, &dir_b] {
        let path = dir.write_config(&credentials_toml(upstream.addr, &section));
        let config = gatekeeper::load_config(&path).unwrap_or_else(|e| panic!("{e}"));
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

// ---------------------------------------------------------------------------------------------
// Introspection results shared by two replicas through Redis
// ---------------------------------------------------------------------------------------------

#[cfg(all(feature = "introspection", feature = "redis"))]
mod introspection_redis {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use redis::aio::MultiplexedConnection;
    use serde_json::{Value, json};
    use sha2::{Digest, Sha256};
    use tokio::net::TcpListener;
    use tokio::time::{Instant, sleep, timeout};

    use super::support::http_server::serve;
    use super::support::redis_server::RedisServer;
    use super::support::{BOUND, TempDir};

    const ISS: &str = "https://idp.example.test";

    /// A connection of the test's own, to look at what replicas store.
    async fn connect(redis: &RedisServer) -> MultiplexedConnection {
        redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// The Redis key of `token`'s result for an authenticator of `endpoint` without a client
    /// id: the prefix, then the hex SHA-256 of the length-prefixed endpoint and client id and
    /// the token (the documented format, computed independently here).
    fn key(endpoint: &str, prefix: &str, token: &str) -> String {
        let mut hash = Sha256::new();
        for part in [endpoint, ""] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        hash.update(token.as_bytes());
        let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        format!("{prefix}{hex}")
    }

    async fn get(conn: &mut MultiplexedConnection, key: &str) -> Option<Vec<u8>> {
        redis::cmd("GET").arg(key).query_async(conn).await.unwrap()
    }

    /// Waits until a replica has written `key` (writes happen after the answer) and returns
    /// the value as JSON.
    async fn stored(conn: &mut MultiplexedConnection, key: &str) -> Value {
        let deadline = Instant::now() + BOUND;
        loop {
            if let Some(value) = get(conn, key).await {
                return serde_json::from_slice(&value).expect("a JSON value");
            }
            assert!(Instant::now() < deadline, "{key} was never written");
            sleep(Duration::from_millis(5)).await;
        }
    }

    /// The identity provider: counts requests per token.
    #[derive(Default)]
    struct Idp {
        counts: Mutex<HashMap<String, usize>>,
    }

    impl Idp {
        fn count(&self, token: &str) -> usize {
            self.counts.lock().unwrap().get(token).copied().unwrap_or(0)
        }
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    /// `inactive` is inactive; every other token is an active clerk of `ISS`.
    async fn answer(idp: Arc<Idp>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let token = String::from_utf8(body.to_vec())
            .unwrap()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "token")
            .map(|(_, v)| {
                percent_encoding::percent_decode_str(v)
                    .decode_utf8()
                    .unwrap()
                    .into_owned()
            })
            .unwrap_or_default();
        *idp.counts.lock().unwrap().entry(token.clone()).or_default() += 1;
        let far = now() + 3600;
        let body = match token.as_str() {
            // Whatever else an inactive answer says is not shared.
            "inactive" => json!({"active": false, "sub": "not-shared", "note": "revoked"}),
            _ => json!({
                "active": true, "sub": format!("user-of-{token}"), "iss": ISS,
                "aud": ["api://orders"], "scope": "orders:read", "exp": far,
                "roles": ["clerk"],
            }),
        };
        Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
    }

    async fn start_idp() -> (SocketAddr, Arc<Idp>) {
        let idp = Arc::new(Idp::default());
        let state = Arc::clone(&idp);
        let addr = serve(move |req| answer(Arc::clone(&state), req)).await;
        (addr, idp)
    }

    /// An upstream that answers 200 with the `x-user-id` it received.
    async fn start_upstream() -> SocketAddr {
        serve(|req: Request<Incoming>| async move {
            let user = req
                .headers()
                .get("x-user-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            Response::new(Full::new(Bytes::from(user)))
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_gateway_replicas_share_introspection_results_through_redis() {
        let Some(redis) = RedisServer::start() else {
            return;
        };
        let mut conn = connect(&redis).await;
        let (idp_addr, idp) = start_idp().await;
        let upstream = start_upstream().await;
        let route = format!(
            "\n[[route]]\npath = \"/orders/{{*rest}}\"\nupstream = \"http://{upstream}\"\n"
        );
        let toml = format!(
            "{route}[introspection]\nendpoint = \"http://{idp_addr}/introspect\"\n\
             auth_method = \"none\"\naudiences = [\"api://orders\"]\ncache_ttl_seconds = 30\n\
             redis_url = \"{}\"\nredis_prefix = \"gw-test:introspection:\"\n",
            redis.url()
        );
        let (dir_a, dir_b) = (
            TempDir::new("introspection-redis"),
            TempDir::new("introspection-redis"),
        );
        let mut replicas = Vec::new();
        for dir in [&dir_a, &dir_b] {
            let config =
                gatekeeper::load_config(dir.write_config(&toml)).unwrap_or_else(|e| panic!("{e}"));
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(gatekeeper::run(config, listener, async {
                let _ = rx.await;
            }));
            replicas.push((addr, tx, task));
        }
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let call = |addr: SocketAddr, token: &'static str| {
            let client = client.clone();
            async move {
                client
                    .get(format!("http://{addr}/orders/1"))
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap()
            }
        };

        let response = call(replicas[0].0, "gw-opaque").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.text().await.unwrap(), "user-of-gw-opaque");
        stored(
            &mut conn,
            &key(
                &format!("http://{idp_addr}/introspect"),
                "gw-test:introspection:",
                "gw-opaque",
            ),
        )
        .await;
        let response = call(replicas[1].0, "gw-opaque").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.text().await.unwrap(), "user-of-gw-opaque");
        assert_eq!(
            idp.count("gw-opaque"),
            1,
            "replica B used replica A's result"
        );

        let response = call(replicas[0].0, "inactive").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        stored(
            &mut conn,
            &key(
                &format!("http://{idp_addr}/introspect"),
                "gw-test:introspection:",
                "inactive",
            ),
        )
        .await;
        let response = call(replicas[1].0, "inactive").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(idp.count("inactive"), 1);

        for (_, tx, task) in replicas {
            tx.send(()).unwrap();
            timeout(BOUND, task).await.unwrap().unwrap().unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Remote keys: `jwks_url`, `discovery_url` and several `[[issuer]]` blocks
// ---------------------------------------------------------------------------------------------

#[cfg(feature = "remote")]
mod remote_keys {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::Full;
    use hyper::body::Incoming;
    use hyper_util::rt::TokioIo;
    use serde_json::{Value, json};
    use tokio::net::TcpListener;
    use tower_gatekeeper::Algorithm;
    use tower_gatekeeper::keys::SigningKey;

    use super::support::http_server;
    use super::support::{BOUND, TempDir, fixtures};

    const ISS: &str = "https://idp.example.test";
    const AUD: &str = "api://orders";

    /// The public JWK of a fixture key (`rsa-1`, `ed-1`).
    fn jwk(kid: &str) -> Value {
        let text = std::fs::read_to_string(fixtures().join("keys/jwks.json")).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        doc["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid)
            .unwrap()
            .clone()
    }

    fn jwks(kids: &[&str]) -> Value {
        json!({ "keys": kids.iter().map(|k| jwk(k)).collect::<Vec<_>>() })
    }

    fn signer(kid: &str) -> SigningKey {
        let (alg, file) = match kid {
            "rsa-1" => (Algorithm::RS256, "keys/rsa-1.key.pem"),
            "ed-1" => (Algorithm::EdDSA, "keys/ed-1.key.pem"),
            other => panic!("no signer {other}"),
        };
        let pem = std::fs::read(fixtures().join(file)).unwrap();
        SigningKey::from_pem(alg, &pem).unwrap().with_kid(kid)
    }

    fn token(signer: &SigningKey, iss: &str) -> String {
        signer
            .sign(&json!({"iss": iss, "aud": AUD, "sub": "user-1", "exp": 4102444800u64}))
            .unwrap()
    }

    #[derive(Debug, Clone)]
    enum Mode {
        Serve,
        Status(u16),
    }

    struct IdpState {
        jwks: Value,
        mode: Mode,
        issuer: String,
    }

    /// A JWKS and OpenID Connect discovery server on loopback that can be told to fail.
    #[derive(Clone)]
    struct Idp {
        addr: SocketAddr,
        state: Arc<Mutex<IdpState>>,
    }

    impl Idp {
        async fn start(jwks: Value) -> Idp {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let idp = Idp {
                addr,
                state: Arc::new(Mutex::new(IdpState {
                    jwks,
                    mode: Mode::Serve,
                    issuer: ISS.to_owned(),
                })),
            };
            let server = idp.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let server = server.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let server = server.clone();
                            async move { Ok::<_, std::convert::Infallible>(server.answer(req)) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            idp
        }

        fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }

        fn set(&self, f: impl FnOnce(&mut IdpState)) {
            f(&mut self.state.lock().unwrap());
        }

        fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
            let json = |status: u16, body: String| {
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap()
            };
            let state = self.state.lock().unwrap();
            if req.uri().path() == "/.well-known/openid-configuration" {
                let doc = json!({"issuer": state.issuer, "jwks_uri": self.url("/jwks")});
                return json(200, doc.to_string());
            }
            match state.mode {
                Mode::Serve => json(200, state.jwks.to_string()),
                Mode::Status(status) => json(status, "{}".into()),
            }
        }
    }

    async fn ok_upstream() -> SocketAddr {
        http_server::serve(|_req| async { Response::new(Full::new(Bytes::from("ok"))) }).await
    }

    #[tokio::test]
    async fn gateway_serves_issuers_from_jwks_url_and_discovery_url() {
        const OTHER: &str = "https://other.example.test";
        let idp_a = Idp::start(jwks(&["rsa-1"])).await;
        let idp_b = Idp::start(jwks(&["ed-1"])).await;
        idp_b.set(|s| s.issuer = OTHER.to_owned());
        idp_a.set(|s| s.mode = Mode::Status(503)); // A is not up yet
        let upstream = ok_upstream().await;
        let dir = TempDir::new("remote");
        let file = dir.write_config(&format!(
            r#"
[[issuer]]
issuer = "{ISS}"
audiences = ["{AUD}"]
jwks_url = "{}"

[[issuer]]
issuer = "{OTHER}"
audiences = ["{AUD}"]
algorithms = ["EdDSA"]
discovery_url = "{}"

[[route]]
path = "/orders/{{*rest}}"
upstream = "http://{upstream}"
"#,
            idp_a.url("/jwks"),
            idp_b.url(""),
        ));
        let config = gatekeeper::load_config(&file).unwrap();
        drop(dir);
        let ready = config.keys_ready();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(gatekeeper::run(config, listener, async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::new();
        let get = |token: String| {
            client
                .get(format!("http://{addr}/orders/1"))
                .bearer_auth(token)
                .send()
        };
        // Before A's keys are in: 503 with Retry-After, never 200.
        let response = get(token(&signer("rsa-1"), ISS)).await.unwrap();
        assert_eq!(response.status(), 503);
        assert!(response.headers().contains_key("retry-after"));
        // A comes up: readiness resolves, both issuers verify.
        idp_a.set(|s| s.mode = Mode::Serve);
        tokio::time::timeout(BOUND, ready).await.unwrap().unwrap();
        assert_eq!(
            get(token(&signer("rsa-1"), ISS)).await.unwrap().status(),
            200
        );
        assert_eq!(
            get(token(&signer("ed-1"), OTHER)).await.unwrap().status(),
            200
        );
        // Wrong issuer for the key, unknown issuer, random kid: 401.
        assert_eq!(
            get(token(&signer("ed-1"), ISS)).await.unwrap().status(),
            401
        );
        assert_eq!(
            get(token(&signer("rsa-1"), "https://evil.test"))
                .await
                .unwrap()
                .status(),
            401
        );
        let _ = stop.send(());
        tokio::time::timeout(BOUND, server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
