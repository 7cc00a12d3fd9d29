//! Token introspection (RFC 7662) against an identity provider started here on loopback:
//! active, inactive, expired, foreign audience, slow (timeout), down (503), cached (the IdP
//! counts requests), single flight, client authentication (basic and post).
#![cfg(feature = "introspection")]

#[path = "support/http_server.rs"]
mod http_server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::{Instant, sleep, timeout};
use tower_gatekeeper::authenticate::{ClientAuth, IntrospectionAuthenticator, IntrospectionConfig};
use tower_gatekeeper::{CredentialKind, RejectionKind};

use http_server::serve;

const BOUND: Duration = Duration::from_secs(30);
const ISS: &str = "https://idp.example.test";

/// One request's client authentication: Authorization header, form client_id, form
/// client_secret.
type ClientAuthSeen = (Option<String>, Option<String>, Option<String>);

#[derive(Default)]
struct Idp {
    /// Requests per token.
    counts: Mutex<HashMap<String, usize>>,
    /// Every request's client authentication (Authorization header, form client_id/secret).
    auth_seen: Mutex<Vec<ClientAuthSeen>>,
    down: AtomicBool,
    /// Holds back answers for the token `gate` until notified.
    gate: Notify,
    waiting: AtomicUsize,
    /// The fixed `exp` of the token `short`, set on first use.
    short_exp: std::sync::OnceLock<u64>,
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

async fn answer(idp: Arc<Idp>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let authorization = req
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let form: HashMap<String, String> = String::from_utf8(body.to_vec())
        .unwrap()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            (
                k.to_owned(),
                percent_encoding::percent_decode_str(v)
                    .decode_utf8()
                    .unwrap()
                    .into_owned(),
            )
        })
        .collect();
    let token = form.get("token").cloned().unwrap_or_default();
    *idp.counts.lock().unwrap().entry(token.clone()).or_default() += 1;
    idp.auth_seen.lock().unwrap().push((
        authorization,
        form.get("client_id").cloned(),
        form.get("client_secret").cloned(),
    ));
    if idp.down.load(Ordering::SeqCst) {
        return Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(Full::default())
            .unwrap();
    }
    let far = now() + 3600;
    let body = match token.as_str() {
        "inactive" => json!({"active": false}),
        "expired" => json!({"active": true, "sub": "u", "exp": now() - 10}),
        "foreign" => json!({"active": true, "sub": "u", "aud": "api://other", "exp": far}),
        "huge-exp" => {
            json!({"active": true, "sub": "far-future", "iss": ISS, "aud": "api://orders",
                   "exp": 1e20})
        }
        "no-iss" => json!({"active": true, "sub": "u", "aud": "api://orders", "exp": far}),
        junk if junk.starts_with("junk-") => json!({"active": false}),
        "slow" => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        "gate" => {
            idp.waiting.fetch_add(1, Ordering::SeqCst);
            idp.gate.notified().await;
            json!({"active": true, "sub": "gated", "iss": ISS, "aud": "api://orders", "exp": far})
        }
        "no-sub" | "empty-sub" | "crlf-sub" | "nul-tenant" => {
            let mut body = json!({"active": true, "sub": "u", "iss": "https://idp.example.test",
                "aud": "api://orders", "exp": far, "tenant_id": "acme"});
            match token.as_str() {
                "no-sub" => {
                    body.as_object_mut().unwrap().remove("sub");
                }
                "empty-sub" => body["sub"] = json!(""),
                "crlf-sub" => body["sub"] = json!("u\r\nx-user-roles: admin"),
                _ => body["tenant_id"] = json!("acme\u{0}"),
            }
            body
        }
        "short" => {
            let exp = *idp.short_exp.get_or_init(|| now() + 1);
            json!({"active": true, "sub": "u", "aud": "api://orders", "exp": exp})
        }
        _ => json!({
            "active": true, "sub": format!("user-of-{token}"), "iss": "https://idp.example.test",
            "aud": ["api://orders"], "scope": "orders:read orders:write", "exp": far,
            "roles": ["clerk"], "tenant_id": "acme", "department": "sales",
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

fn config(addr: SocketAddr) -> IntrospectionConfig {
    IntrospectionConfig::new(
        format!("http://{addr}/introspect"),
        ClientAuth::Basic {
            client_id: "gate way".into(),
            client_secret: "s3cr:et".into(),
        },
    )
    .issuer(ISS)
    .audiences(["api://orders"])
    .tenant_claim("tenant_id")
    .timeout(Duration::from_millis(300))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_token_maps_into_the_context_and_is_cached() {
    let (addr, idp) = start_idp().await;
    let auth = IntrospectionAuthenticator::new(config(addr)).unwrap();
    let ctx = auth.verify("opaque-1").await.unwrap();
    assert_eq!(ctx.credential_kind(), CredentialKind::Introspected);
    assert_eq!(ctx.subject(), Some("user-of-opaque-1"));
    assert_eq!(ctx.issuer(), Some("https://idp.example.test"));
    assert_eq!(ctx.scopes(), ["orders:read", "orders:write"]);
    assert_eq!(ctx.roles(), ["clerk"]);
    assert_eq!(ctx.tenant(), Some("acme"));
    assert!(ctx.expires_at().is_some());
    assert_eq!(ctx.claim("department"), Some(&json!("sales")));

    for _ in 0..5 {
        auth.verify("opaque-1").await.unwrap();
    }
    assert_eq!(idp.count("opaque-1"), 1, "served from the cache");

    // Basic client authentication: form-encoded id and secret, then base64.
    let seen = idp.auth_seen.lock().unwrap().clone();
    use base64::Engine as _;
    let expected = base64::engine::general_purpose::STANDARD.encode("gate%20way:s3cr%3Aet");
    assert_eq!(seen[0].0.as_deref(), Some(&*format!("Basic {expected}")));
    assert_eq!(seen[0].1, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inactive_expired_and_foreign_are_401_and_negative_results_are_cached() {
    let (addr, idp) = start_idp().await;
    let auth = IntrospectionAuthenticator::new(config(addr)).unwrap();
    for token in ["inactive", "expired", "foreign"] {
        let rejection = auth.verify(token).await.unwrap_err();
        assert_eq!(rejection.kind(), RejectionKind::InvalidToken, "{token}");
        auth.verify(token).await.unwrap_err();
        assert_eq!(idp.count(token), 1, "{token}: negative result cached");
    }
}

/// An answer naming no subject, or an identity no header can carry exactly, is 401: never an
/// authenticated caller forwarded half-built. Without a configured issuer, the context's
/// issuer is the endpoint (the authenticator's name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_without_a_forwardable_subject_are_401() {
    let (addr, _idp) = start_idp().await;
    let auth = IntrospectionAuthenticator::new(config(addr)).unwrap();
    for token in ["no-sub", "empty-sub", "crlf-sub", "nul-tenant"] {
        let rejection = auth.verify(token).await.unwrap_err();
        assert_eq!(rejection.kind(), RejectionKind::InvalidToken, "{token}");
    }
    let optional = IntrospectionAuthenticator::new(config(addr).require_subject(false)).unwrap();
    for token in ["no-sub", "empty-sub"] {
        let ctx = optional.verify(token).await.unwrap();
        assert_eq!(ctx.subject(), None, "{token}");
        assert_eq!(ctx.issuer(), Some("https://idp.example.test"));
    }
    assert!(optional.verify("crlf-sub").await.is_err());

    let endpoint = format!("http://{addr}/introspect");
    let unnamed = IntrospectionAuthenticator::new(
        IntrospectionConfig::new(endpoint.clone(), ClientAuth::None).audiences(["api://orders"]),
    )
    .unwrap();
    let ctx = unnamed.verify("opaque-2").await.unwrap();
    assert_eq!(ctx.issuer(), Some(endpoint.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_down_are_503_and_not_cached_but_cached_results_survive() {
    let (addr, idp) = start_idp().await;
    let auth = IntrospectionAuthenticator::new(config(addr)).unwrap();
    let rejection = timeout(BOUND, auth.verify("slow"))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(rejection.kind(), RejectionKind::KeysUnavailable);
    assert!(rejection.retry_after().is_some());

    auth.verify("known").await.unwrap();
    idp.down.store(true, Ordering::SeqCst);
    let rejection = auth.verify("unknown").await.unwrap_err();
    assert_eq!(rejection.kind(), RejectionKind::KeysUnavailable);
    auth.verify("unknown").await.unwrap_err();
    assert_eq!(idp.count("unknown"), 2, "failures are not cached");
    // What was cached before the outage still authenticates.
    assert_eq!(
        auth.verify("known").await.unwrap().subject(),
        Some("user-of-known")
    );
    idp.down.store(false, Ordering::SeqCst);
    auth.verify("unknown").await.unwrap();

    // Nothing listening at all: 503 too.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let auth = IntrospectionAuthenticator::new(config(closed)).unwrap();
    assert_eq!(
        auth.verify("x").await.unwrap_err().kind(),
        RejectionKind::KeysUnavailable
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_for_one_token_make_one_request() {
    let (addr, idp) = start_idp().await;
    let auth = IntrospectionAuthenticator::new(config(addr).timeout(BOUND)).unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let auth = auth.clone();
            tokio::spawn(async move { auth.verify("gate").await })
        })
        .collect();
    let deadline = Instant::now() + BOUND;
    while idp.waiting.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the IdP never saw the request");
        sleep(Duration::from_millis(5)).await;
    }
    // Give the other 15 every chance to (wrongly) send their own request: yield a lot.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    idp.gate.notify_waiters();
    for task in tasks {
        assert_eq!(
            task.await.unwrap().unwrap().subject(),
            Some("gated"),
            "every waiter gets the shared result"
        );
    }
    assert_eq!(idp.count("gate"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_never_outlives_exp_and_post_auth_sends_the_form() {
    let (addr, idp) = start_idp().await;
    let config = IntrospectionConfig::new(
        format!("http://{addr}/introspect"),
        ClientAuth::Post {
            client_id: "gw".into(),
            client_secret: "pw".into(),
        },
    )
    .audiences(["api://orders"])
    .cache_ttl(Duration::from_secs(3600));
    let auth = IntrospectionAuthenticator::new(config).unwrap();
    auth.verify("short").await.unwrap();
    let seen = idp.auth_seen.lock().unwrap()[0].clone();
    assert_eq!(seen, (None, Some("gw".into()), Some("pw".into())));
    // The token's exp is at most a second away: the cache entry goes with it, and the IdP
    // is asked again (and then says it expired).
    let deadline = Instant::now() + BOUND;
    loop {
        match auth.verify("short").await {
            Ok(_) => {
                assert!(Instant::now() < deadline, "cached past exp");
                sleep(Duration::from_millis(50)).await;
            }
            Err(rejection) => {
                assert_eq!(rejection.kind(), RejectionKind::InvalidToken);
                break;
            }
        }
    }
    assert_eq!(idp.count("short"), 2);
}

#[test]
fn configuration_mistakes_are_named() {
    let none = ClientAuth::None;
    let err = IntrospectionAuthenticator::new(IntrospectionConfig::new("not a url", none.clone()))
        .unwrap_err();
    assert!(err.to_string().contains("introspection endpoint"), "{err}");
    let err = IntrospectionAuthenticator::new(IntrospectionConfig::new(
        "ftp://idp.example.test/",
        none.clone(),
    ))
    .unwrap_err();
    assert!(err.to_string().contains("http"), "{err}");
    let err = IntrospectionAuthenticator::new(
        IntrospectionConfig::new("http://idp.example.test/", none).timeout(Duration::ZERO),
    )
    .unwrap_err();
    assert!(err.to_string().contains("timeout"), "{err}");
    let secret = ClientAuth::Basic {
        client_id: "id".into(),
        client_secret: "top-secret".into(),
    };
    assert!(!format!("{secret:?}").contains("top-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_exp_is_clamped_and_never_wedges_the_token() {
    let (addr, idp) = start_idp().await;
    let auth = IntrospectionAuthenticator::new(config(addr)).unwrap();
    for _ in 0..3 {
        let ctx = timeout(BOUND, auth.verify("huge-exp"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ctx.subject(), Some("far-future"));
    }
    assert_eq!(
        idp.count("huge-exp"),
        1,
        "cached (for cache_ttl), not in flight forever"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_retry_once_when_the_leader_vanishes() {
    let (addr, idp) = start_idp().await;
    let auth = IntrospectionAuthenticator::new(config(addr).timeout(BOUND)).unwrap();
    // The leader runs on a runtime of its own, which is dropped while it waits for the IdP:
    // its task is cancelled without an answer.
    let leader_runtime = {
        let auth = auth.clone();
        let idp = Arc::clone(&idp);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                tokio::spawn(async move { auth.verify("gate").await });
                let deadline = Instant::now() + BOUND;
                while idp.waiting.load(Ordering::SeqCst) == 0 {
                    assert!(Instant::now() < deadline, "the IdP never saw the request");
                    sleep(Duration::from_millis(5)).await;
                }
            });
            runtime
        })
        .join()
        .unwrap()
    };
    // A waiter joins the leader's flight...
    let waiter = {
        let auth = auth.clone();
        tokio::spawn(async move { auth.verify("gate").await })
    };
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(idp.count("gate"), 1, "the waiter joined the flight");
    // ...which vanishes: the waiter leads a new request instead of failing.
    tokio::task::spawn_blocking(move || drop(leader_runtime))
        .await
        .unwrap();
    let deadline = Instant::now() + BOUND;
    while idp.waiting.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "the waiter never asked again");
        sleep(Duration::from_millis(5)).await;
    }
    idp.gate.notify_waiters();
    let ctx = timeout(BOUND, waiter).await.unwrap().unwrap().unwrap();
    assert_eq!(ctx.subject(), Some("gated"));
    // And the token is not wedged: served from the cache now.
    assert_eq!(auth.verify("gate").await.unwrap().subject(), Some("gated"));
    assert_eq!(idp.count("gate"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_invalid_tokens_never_evicts_active_results() {
    let (addr, idp) = start_idp().await;
    let auth = IntrospectionAuthenticator::new(config(addr).cache_capacity(64)).unwrap();
    auth.verify("valued").await.unwrap();
    for i in 0..1000 {
        let junk = format!("junk-{i}");
        assert_eq!(
            auth.verify(&junk).await.unwrap_err().kind(),
            RejectionKind::InvalidToken
        );
    }
    auth.verify("valued").await.unwrap();
    assert_eq!(
        idp.count("valued"),
        1,
        "the active result survived the flood"
    );
    // Active results are bounded too: distinct valid tokens evict each other, never grow.
    for i in 0..200 {
        auth.verify(&format!("many-{i}")).await.unwrap();
    }
    auth.verify("many-199").await.unwrap();
    assert_eq!(idp.count("many-199"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audiences_are_required_and_iss_is_checked_when_an_issuer_is_set() {
    let (addr, idp) = start_idp().await;
    let endpoint = format!("http://{addr}/introspect");
    let err = IntrospectionAuthenticator::new(IntrospectionConfig::new(
        endpoint.clone(),
        ClientAuth::None,
    ))
    .unwrap_err();
    assert!(err.to_string().contains("audience"), "{err}");
    // The explicit opt-out: another API's token is then accepted, by choice.
    let any = IntrospectionAuthenticator::new(
        IntrospectionConfig::new(endpoint, ClientAuth::None).any_audience(),
    )
    .unwrap();
    assert_eq!(any.verify("foreign").await.unwrap().subject(), Some("u"));
    // With an issuer configured, an answer without `iss` is refused.
    let auth = IntrospectionAuthenticator::new(config(addr)).unwrap();
    assert_eq!(
        auth.verify("no-iss").await.unwrap_err().kind(),
        RejectionKind::InvalidToken
    );
    // Without one, it is accepted, and the context names the endpoint as its issuer (the
    // authenticator's name, forwarded as x-user-issuer).
    let endpoint = format!("http://{addr}/introspect");
    let lax = IntrospectionAuthenticator::new(
        IntrospectionConfig::new(endpoint.clone(), ClientAuth::None).audiences(["api://orders"]),
    )
    .unwrap();
    assert_eq!(
        lax.verify("no-iss").await.unwrap().issuer(),
        Some(endpoint.as_str())
    );
    assert_eq!(idp.count("no-iss"), 2);
}
