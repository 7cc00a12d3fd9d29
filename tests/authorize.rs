//! Authorization over real loopback HTTP: every rule kind allowed and denied, route tables,
//! shadow mode and the external authorizer (a real HTTP server started here).

#[cfg(feature = "ext-authz")]
#[path = "support/http_server.rs"]
mod http_server;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderName, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};
use tower_gatekeeper::authorize::{
    AllowAll, ClientAddr, PolicyEvaluator, RouteTable, all_of, any_of, claim_contains,
    claim_equals, client_ip, header, not, path_param, roles_all, roles_any, scopes_any, shadow,
    subject, tenant, time_window,
};
use tower_gatekeeper::credential::RequestHead;
use tower_gatekeeper::jwt::{Clock, Validation};
use tower_gatekeeper::keys::{SigningKey, StaticKeys};
use tower_gatekeeper::{
    Algorithm, AuthContext, AuthMode, AuthenticateLayer, AuthorizeLayer, Decision, JwtAuthenticator,
};

const ISSUER: &str = "https://idp.authorize.test";
const AUDIENCE: &str = "api://authorize";

fn signer() -> SigningKey {
    SigningKey::hmac(Algorithm::HS256, &[7u8; 32])
        .unwrap()
        .with_kid("k")
}

fn token(claims: Value) -> String {
    let mut claims = claims;
    claims["iss"] = ISSUER.into();
    claims["aud"] = AUDIENCE.into();
    claims["exp"] = 4102444800u64.into();
    signer().sign(&claims).unwrap()
}

/// Serves `policy` behind a real authenticate layer (optional mode, so anonymous requests
/// reach the policy) on a loopback port; the inner service answers 200 and counts calls.
async fn serve<P: PolicyEvaluator>(policy: P) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let keys = StaticKeys::new([signer().verifying_key().clone()]);
    let authenticator =
        JwtAuthenticator::new(keys, Validation::new(ISSUER).audiences([AUDIENCE])).unwrap();
    let counter = Arc::clone(&hits);
    let stack = ServiceBuilder::new()
        .layer(AuthenticateLayer::new(authenticator).mode(AuthMode::Optional))
        .layer(AuthorizeLayer::new(policy))
        .service_fn(move |_req: Request<Incoming>| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok")))) }
        });
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let stack = stack.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(ClientAddr(peer));
                    stack.clone().oneshot(req)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, hits)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn status(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = client().request(method, format!("http://{addr}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

fn at(secs: u64) -> Clock {
    Clock::from_fn(move || UNIX_EPOCH + Duration::from_secs(secs))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_kind_allows_and_denies_over_http() {
    let noon = at(12 * 3600);
    let table: RouteTable = RouteTable::builder()
        .route([Method::GET], "/roles-all", roles_all(["a", "b"]).boxed())
        .route(
            [Method::GET],
            "/scopes-any",
            scopes_any(["x:read", "x:admin"]).boxed(),
        )
        .route(
            [Method::GET],
            "/claim",
            claim_equals("tier", "gold").boxed(),
        )
        .route(
            [Method::GET],
            "/any",
            any_of([
                roles_any(["admin"]).boxed(),
                claim_contains("groups", "eng").boxed(),
            ])
            .boxed(),
        )
        .route([Method::GET], "/not", not(roles_any(["guest"])).boxed())
        .route(
            [Method::GET],
            "/closure",
            (|ctx: Option<&AuthContext>, req: &RequestHead<'_>| {
                if ctx.is_some() && req.headers().contains_key("x-ok") {
                    Decision::Allow
                } else {
                    Decision::deny("closure says no")
                }
            })
            .boxed(),
        )
        .any_method(
            "/users/{user_id}",
            any_of([
                path_param("user_id").equals(subject()).boxed(),
                roles_any(["admin"]).boxed(),
            ])
            .boxed(),
        )
        .route(
            [Method::GET],
            "/tenants/{tenant}/{*rest}",
            path_param("tenant").equals(tenant()).boxed(),
        )
        .route(
            [Method::GET],
            "/loopback",
            client_ip()
                .in_networks(["127.0.0.0/8", "::1"])
                .unwrap()
                .boxed(),
        )
        .route(
            [Method::GET],
            "/private",
            client_ip().in_networks(["10.0.0.0/8"]).unwrap().boxed(),
        )
        .route(
            [Method::GET],
            "/office",
            time_window()
                .daily_utc(8 * 3600, 18 * 3600)
                .clock(noon.clone())
                .boxed(),
        )
        .route(
            [Method::GET],
            "/night",
            time_window()
                .daily_utc(22 * 3600, 6 * 3600)
                .clock(noon)
                .boxed(),
        )
        .route(
            [Method::GET],
            "/versioned",
            header(HeaderName::from_static("x-api-version"))
                .one_of(["2", "3"])
                .boxed(),
        )
        .route([Method::GET], "/public", AllowAll.boxed())
        .build()
        .unwrap();
    let (addr, hits) = serve(table).await;

    let user = token(json!({
        "sub": "u1", "roles": ["a", "b"], "scope": "x:read", "tenant_id": "acme",
        "tier": "gold", "groups": ["eng"],
    }));
    let other = token(json!({
        "sub": "u2", "roles": ["a", "guest"], "scope": "y", "tenant_id": "globex",
        "tier": "silver", "groups": "sales",
    }));
    let admin = token(json!({ "sub": "root", "roles": ["admin"] }));

    let get = Method::GET;
    let mut allowed = 0;
    for (method, path, who, headers, expected) in [
        (&get, "/roles-all", Some(&user), &[][..], 200),
        (&get, "/roles-all", Some(&other), &[], 403),
        (&get, "/scopes-any", Some(&user), &[], 200),
        (&get, "/claim", Some(&user), &[], 200),
        (&get, "/claim", Some(&other), &[], 403),
        (&get, "/claim", None, &[], 401),
        (&get, "/any", Some(&user), &[], 200),
        (&get, "/any", Some(&admin), &[], 200),
        (&get, "/any", Some(&other), &[], 403),
        (&get, "/not", Some(&user), &[], 200),
        (&get, "/not", Some(&other), &[], 403),
        (&get, "/closure", Some(&user), &[("x-ok", "1")], 200),
        (&get, "/closure", Some(&user), &[], 403),
        (&get, "/users/u1", Some(&user), &[], 200),
        (&Method::DELETE, "/users/u1", Some(&user), &[], 200),
        (&get, "/users/u1", Some(&other), &[], 403),
        (&get, "/users/u1", Some(&admin), &[], 200),
        (&get, "/users/u1", None, &[], 401),
        (&get, "/tenants/acme/orders/1", Some(&user), &[], 200),
        (&get, "/tenants/acme/orders/1", Some(&other), &[], 403),
        (&get, "/tenants/acme/orders/1", Some(&admin), &[], 403),
        (&get, "/loopback", Some(&user), &[], 200),
        (&get, "/private", Some(&user), &[], 403),
        (&get, "/office", Some(&user), &[], 200),
        (&get, "/night", Some(&user), &[], 403),
        (
            &get,
            "/versioned",
            Some(&user),
            &[("x-api-version", "3")],
            200,
        ),
        (
            &get,
            "/versioned",
            Some(&user),
            &[("x-api-version", "1")],
            403,
        ),
        (&get, "/versioned", Some(&user), &[], 403),
        (&get, "/public", None, &[], 200),
        // Default deny without a route; 405 for a route without this method.
        (&get, "/nowhere", Some(&user), &[], 403),
        (&Method::POST, "/claim", Some(&user), &[], 405),
        (&get, "/nowhere", None, &[], 401),
    ] {
        let response = status(addr, method.clone(), path, who.map(String::as_str), headers).await;
        assert_eq!(response.status().as_u16(), expected, "{method} {path}");
        if expected == 200 {
            allowed += 1;
        }
    }
    assert_eq!(hits.load(Ordering::SeqCst), allowed);

    // scopes_any: a denial names every acceptable scope in the challenge (RFC 6750 §3).
    let response = status(addr, Method::GET, "/scopes-any", Some(&other), &[]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains(r#"error="insufficient_scope""#)
            && challenge.ends_with(r#"scope="x:read x:admin""#),
        "{challenge}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_of_merges_the_missing_scopes_of_every_rule() {
    let policy = all_of([
        scopes_any(["orders:read"]).boxed(),
        tower_gatekeeper::authorize::scopes_all(["orders:write", "orders:ship"]).boxed(),
    ]);
    let (addr, hits) = serve(policy).await;
    let caller = token(json!({ "sub": "u", "scope": "orders:ship" }));
    let response = status(addr, Method::GET, "/", Some(&caller), &[]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.ends_with(r#"scope="orders:read orders:write""#),
        "{challenge}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_policies_count_and_log_but_allow() {
    let candidate = shadow("admins-only", roles_any(["admin"]));
    let stats = candidate.stats();
    let policy = all_of([roles_any(["clerk", "admin"]).boxed(), candidate.boxed()]);
    let (addr, hits) = serve(policy).await;
    let clerk = token(json!({ "sub": "c", "roles": ["clerk"] }));
    let admin = token(json!({ "sub": "a", "roles": ["admin"] }));
    let guest = token(json!({ "sub": "g", "roles": ["guest"] }));
    for _ in 0..3 {
        let response = status(addr, Method::GET, "/", Some(&clerk), &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let response = status(addr, Method::GET, "/", Some(&admin), &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    // The enforced rule still denies (the shadow rule is asked too: all_of asks every
    // synchronous member, to name all missing scopes).
    let response = status(addr, Method::GET, "/", Some(&guest), &[]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(hits.load(Ordering::SeqCst), 4);
    assert_eq!((stats.denied(), stats.allowed()), (4, 1));
    assert_eq!(stats.name(), "admins-only");
}

#[cfg(feature = "rego")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rego_policies_with_and_without_data_over_http() {
    use tower_gatekeeper::authorize::rego::RegoPolicy;

    let with_data = RegoPolicy::builder()
        .policy(
            "tenants.rego",
            r#"
            package tenants
            default allow := false
            allow if {
                some plan in data.plans[input.caller.tenant]
                plan == input.request.path_params.feature
            }
            "#,
        )
        .data(json!({ "plans": { "acme": ["reports", "export"] } }))
        .build()
        .unwrap();
    let without_data = RegoPolicy::builder()
        .policy(
            "hours.rego",
            r#"
            package hours
            allow if {
                input.request.method == "GET"
                input.environment.now % 86400 >= 8 * 3600
                input.request.client_ip == "127.0.0.1"
            }
            "#,
        )
        .clock(at(12 * 3600))
        .build()
        .unwrap();
    let table: RouteTable = RouteTable::builder()
        .any_method("/features/{feature}", with_data.boxed())
        .any_method("/status", without_data.boxed())
        .build()
        .unwrap();
    let (addr, hits) = serve(table).await;
    let acme = token(json!({ "sub": "u", "tenant_id": "acme" }));
    let globex = token(json!({ "sub": "u", "tenant_id": "globex" }));
    for (method, path, who, expected) in [
        (Method::GET, "/features/reports", Some(&acme), 200),
        (Method::GET, "/features/billing", Some(&acme), 403),
        (Method::GET, "/features/reports", Some(&globex), 403),
        (Method::GET, "/features/reports", None, 401),
        (Method::GET, "/status", Some(&globex), 200),
        (Method::GET, "/status", None, 200),
        (Method::POST, "/status", Some(&globex), 403),
    ] {
        let response = status(addr, method.clone(), path, who.map(String::as_str), &[]).await;
        assert_eq!(response.status().as_u16(), expected, "{method} {path}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[cfg(feature = "ext-authz")]
mod ext_authz {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use tower_gatekeeper::authorize::ext_authz::ExtAuthz;

    /// The external authorizer: answers by the checked request's path, records the inputs.
    struct Authorizer {
        addr: SocketAddr,
        inputs: Arc<Mutex<VecDeque<Value>>>,
    }

    async fn start_authorizer() -> Authorizer {
        let inputs = Arc::new(Mutex::new(VecDeque::new()));
        let recorded = Arc::clone(&inputs);
        let addr = super::http_server::serve(move |req: Request<Incoming>| {
            let recorded = Arc::clone(&recorded);
            async move {
                use http_body_util::BodyExt;
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let input: Value = serde_json::from_slice(&body).unwrap();
                let path = input["request"]["path"].as_str().unwrap().to_owned();
                recorded.lock().unwrap().push_back(input);
                let status = match path.as_str() {
                    "/allow" => 200,
                    "/deny" => 403,
                    "/broken" => 500,
                    _ => {
                        // "/slow": never answers.
                        std::future::pending::<()>().await;
                        unreachable!()
                    }
                };
                let mut response = Response::new(Full::new(Bytes::new()));
                *response.status_mut() = StatusCode::from_u16(status).unwrap();
                response
            }
        })
        .await;
        Authorizer { addr, inputs }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn allow_deny_and_fail_closed() {
        let authorizer = start_authorizer().await;
        let policy = ExtAuthz::builder(format!("http://{}/check", authorizer.addr))
            .timeout(Duration::from_millis(300))
            .max_connections(4)
            .retry_after(Duration::from_secs(2))
            .build()
            .unwrap();
        let (addr, hits) = serve(policy).await;
        let caller = token(json!({ "sub": "u1", "roles": ["clerk"] }));

        let response = status(addr, Method::GET, "/allow", Some(&caller), &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        let input = authorizer.inputs.lock().unwrap().pop_front().unwrap();
        assert_eq!(input["caller"]["subject"], "u1");
        assert_eq!(input["request"]["method"], "GET");
        assert_eq!(input["request"]["client_ip"], "127.0.0.1");
        assert!(input["request"]["headers"].get("authorization").is_none());
        assert!(
            !input.to_string().contains(&caller),
            "the token never leaves"
        );

        let response = status(addr, Method::GET, "/deny", Some(&caller), &[]).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let response = status(addr, Method::GET, "/deny", None, &[]).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

        // An authorizer error, or no answer in time: 503 with Retry-After, fail closed.
        for path in ["/broken", "/slow"] {
            let started = std::time::Instant::now();
            let response = status(addr, Method::GET, path, Some(&caller), &[]).await;
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
            assert_eq!(response.headers()["retry-after"], "2");
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "bounded by the timeout"
            );
            let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
            assert_eq!(body["error"], "temporarily_unavailable");
        }
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_authorizer_is_503() {
        let closed = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap()
        };
        let policy = ExtAuthz::builder(format!("http://{closed}/check"))
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let (addr, hits) = serve(policy).await;
        let caller = token(json!({ "sub": "u1" }));
        let response = status(addr, Method::GET, "/allow", Some(&caller), &[]).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().get("www-authenticate").is_none());
        assert_eq!(hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn local_rules_run_first_and_spare_the_call() {
        let authorizer = start_authorizer().await;
        let remote = ExtAuthz::builder(format!("http://{}/check", authorizer.addr))
            .build()
            .unwrap();
        let policy = all_of([roles_any(["clerk"]).boxed(), remote.boxed()]);
        let (addr, _hits) = serve(policy).await;
        let guest = token(json!({ "sub": "g", "roles": ["guest"] }));
        let response = status(addr, Method::GET, "/allow", Some(&guest), &[]).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(authorizer.inputs.lock().unwrap().is_empty());
        let clerk = token(json!({ "sub": "c", "roles": ["clerk"] }));
        let response = status(addr, Method::GET, "/allow", Some(&clerk), &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(authorizer.inputs.lock().unwrap().len(), 1);
    }
}

#[test]
fn time_is_injectable() {
    // Compile-time check that the system clock type is the one rules take.
    let _ = time_window().clock(Clock::from_fn(SystemTime::now));
}
