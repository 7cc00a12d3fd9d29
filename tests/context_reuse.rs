//! Reuse of signed contexts (`PropagationBuilder::sign_context`) for identities served from
//! a token cache: the whole gateway stack (cache, authenticate, propagate with signing) in
//! front of a capturing service, and `TrustedContextLayer` checking what it forwarded.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt};
use tower_gatekeeper::authenticate::{CacheConfig, CachedAuthenticator, TokenCache};
use tower_gatekeeper::jwt::{Clock, Validation};
use tower_gatekeeper::keys::{SigningKey, StaticKeys};
use tower_gatekeeper::propagate::SignedContextValidation;
use tower_gatekeeper::revocation::{MemoryRevocations, Revocable, Revocation, RevocationStore};
use tower_gatekeeper::{
    AuthContext, AuthenticateLayer, Authenticator, ContextPropagationLayer, JwtAuthenticator,
    TrustedContextLayer,
};

const ISSUER: &str = "https://idp.example.test";
const AUDIENCE: &str = "api://orders";
const SERVICE: &str = "orders-svc";

/// A clock that tests move forward by hand, starting on a whole second.
#[derive(Clone)]
struct TestClock {
    start: SystemTime,
    millis: Arc<AtomicU64>,
}

impl TestClock {
    fn new() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        TestClock {
            start: UNIX_EPOCH + Duration::from_secs(secs),
            millis: Arc::default(),
        }
    }

    fn advance(&self, by: Duration) {
        self.millis
            .fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    fn clock(&self) -> Clock {
        let this = self.clone();
        Clock::from_fn(move || {
            this.start + Duration::from_millis(this.millis.load(Ordering::SeqCst))
        })
    }
}

struct Setup {
    idp: SigningKey,
    context_key: SigningKey,
    clock: TestClock,
}

impl Setup {
    fn new() -> Self {
        Setup {
            idp: SigningKey::generate_ed25519().unwrap().with_kid("idp-1"),
            context_key: SigningKey::generate_ed25519().unwrap().with_kid("ctx-1"),
            clock: TestClock::new(),
        }
    }

    fn token(&self, sub: &str, jti: &str) -> String {
        self.idp
            .sign(&json!({
                "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "roles": ["clerk"],
                "jti": jti, "iat": 1_700_000_000u64, "exp": 4_102_444_800u64,
            }))
            .unwrap()
    }

    fn jwt(&self) -> JwtAuthenticator<StaticKeys> {
        JwtAuthenticator::new(
            StaticKeys::new([self.idp.verifying_key().clone()]),
            Validation::new(ISSUER)
                .audiences([AUDIENCE])
                .clock(self.clock.clock()),
        )
        .unwrap()
    }

    fn cached(&self) -> CachedAuthenticator<JwtAuthenticator<StaticKeys>> {
        CachedAuthenticator::new(self.jwt(), CacheConfig::default().clock(self.clock.clock()))
            .unwrap()
    }

    fn propagation(&self, lifetime: Duration, reuse: bool) -> ContextPropagationLayer {
        ContextPropagationLayer::builder()
            .sign_context(self.context_key.clone())
            .context_audience(SERVICE)
            .context_lifetime(lifetime)
            .context_clock(self.clock.clock())
            .context_reuse(reuse)
            .build()
            .unwrap()
    }

    /// The service side: accepts a request only with a context valid for it.
    fn trusted(&self) -> BoxCloneService<Request<()>, Response<()>, Infallible> {
        let layer = TrustedContextLayer::signed(
            StaticKeys::new([self.context_key.verifying_key().clone()]),
            SignedContextValidation::new()
                .audience(SERVICE)
                .clock(self.clock.clock()),
        )
        .unwrap();
        let service = ServiceBuilder::new()
            .layer(layer)
            .service_fn(|req: Request<()>| async move {
                assert!(req.extensions().get::<AuthContext>().is_some());
                Ok::<_, Infallible>(Response::new(()))
            })
            .map_response(|r| r.map(|_| ()));
        BoxCloneService::new(service)
    }
}

/// The gateway: `auth`, then propagation, in front of a service that records the headers
/// it receives.
struct Gateway {
    service: BoxCloneService<Request<()>, Response<()>, Infallible>,
    seen: Arc<Mutex<Option<HeaderMap>>>,
}

fn gateway<A: Authenticator>(auth: A, propagation: ContextPropagationLayer) -> Gateway {
    let seen = Arc::new(Mutex::new(None));
    let record = Arc::clone(&seen);
    let service = ServiceBuilder::new()
        .layer(AuthenticateLayer::new(auth))
        .layer(propagation)
        .service_fn(move |req: Request<()>| {
            *record.lock().unwrap() = Some(req.headers().clone());
            async { Ok::<_, Infallible>(Response::new(())) }
        })
        .map_response(|r| r.map(|_| ()));
    Gateway {
        service: BoxCloneService::new(service),
        seen,
    }
}

impl Gateway {
    /// Sends `method path` with `token`; the headers forwarded upstream (none when refused).
    async fn send(&self, method: Method, path: &str, token: &str) -> Option<HeaderMap> {
        *self.seen.lock().unwrap() = None;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap();
        let response = self.service.clone().oneshot(request).await.unwrap();
        let seen = self.seen.lock().unwrap().take();
        assert_eq!(seen.is_some(), response.status() == StatusCode::OK);
        seen
    }

    /// The signed context forwarded for `method path`.
    async fn context(&self, method: Method, path: &str, token: &str) -> String {
        let headers = self.send(method, path, token).await.expect("forwarded");
        headers["x-auth-context"].to_str().unwrap().to_owned()
    }
}

/// The claims of a signed context (already verified elsewhere, or to be).
fn payload(context: &str) -> Value {
    let part = context.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// Whether the service accepts `context` on `method path`.
async fn accepted(
    trusted: &BoxCloneService<Request<()>, Response<()>, Infallible>,
    context: &str,
    method: Method,
    path: &str,
) -> bool {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("x-auth-context", context)
        .body(())
        .unwrap();
    let response = trusted.clone().oneshot(request).await.unwrap();
    response.status() == StatusCode::OK
}

#[tokio::test]
async fn a_repeated_request_reuses_its_context_and_others_get_their_own() {
    let setup = Setup::new();
    let gw = gateway(
        setup.cached(),
        setup.propagation(Duration::from_secs(10), true),
    );
    let trusted = setup.trusted();
    let token = setup.token("user-1", "t-1");

    let first = gw.send(Method::GET, "/orders/1", &token).await.unwrap();
    let context = first["x-auth-context"].to_str().unwrap().to_owned();
    assert_eq!(
        payload(&context)["rid"],
        first["x-request-id"].to_str().unwrap()
    );
    for _ in 0..3 {
        let again = gw.send(Method::GET, "/orders/1", &token).await.unwrap();
        // The same bytes, with each request its own request id.
        assert_eq!(again["x-auth-context"], context.as_str());
        assert_ne!(again["x-request-id"], first["x-request-id"]);
    }
    assert!(accepted(&trusted, &context, Method::GET, "/orders/1").await);

    // Another path or method: another context, accepted for its own request only.
    let requests = [
        (Method::GET, "/orders/1"),
        (Method::GET, "/orders/2"),
        (Method::POST, "/orders/1"),
    ];
    let mut contexts = Vec::new();
    for (method, path) in &requests {
        contexts.push(gw.context(method.clone(), path, &token).await);
    }
    assert_eq!(contexts[0], context);
    assert_ne!(contexts[1], contexts[0]);
    assert_ne!(contexts[2], contexts[0]);
    assert_ne!(contexts[2], contexts[1]);
    for (i, context) in contexts.iter().enumerate() {
        assert_eq!(payload(context)["sub"], "user-1");
        for (j, (method, path)) in requests.iter().enumerate() {
            assert_eq!(
                accepted(&trusted, context, method.clone(), path).await,
                i == j,
                "context of {:?} on {method} {path}",
                requests[i]
            );
        }
    }
    // Each repeated: its own context again.
    for ((method, path), context) in requests.iter().zip(&contexts) {
        assert_eq!(&gw.context(method.clone(), path, &token).await, context);
    }
}

#[tokio::test]
async fn a_context_is_minted_again_once_half_its_lifetime_is_gone() {
    let setup = Setup::new();
    let lifetime = Duration::from_secs(10);
    let gw = gateway(setup.cached(), setup.propagation(lifetime, true));
    let trusted = setup.trusted();
    let token = setup.token("user-1", "t-1");

    let first = gw.context(Method::GET, "/a", &token).await;
    let iat = payload(&first)["iat"].as_u64().unwrap();
    assert_eq!(payload(&first)["exp"].as_u64().unwrap(), iat + 10);
    // More than half of the lifetime left: reused.
    setup.clock.advance(Duration::from_millis(4_900));
    assert_eq!(gw.context(Method::GET, "/a", &token).await, first);
    assert!(accepted(&trusted, &first, Method::GET, "/a").await);
    // Half of it left: minted again.
    setup.clock.advance(Duration::from_millis(100));
    let second = gw.context(Method::GET, "/a", &token).await;
    assert_ne!(second, first);
    assert_eq!(payload(&second)["iat"].as_u64().unwrap(), iat + 5);
    assert!(accepted(&trusted, &second, Method::GET, "/a").await);
    // And that one is reused in turn.
    setup.clock.advance(Duration::from_secs(2));
    assert_eq!(gw.context(Method::GET, "/a", &token).await, second);
    // Never served to a clock that went back before its `iat`.
    setup.clock.millis.store(0, Ordering::SeqCst);
    let third = gw.context(Method::GET, "/a", &token).await;
    assert_ne!(third, second);
    assert_eq!(payload(&third)["iat"].as_u64().unwrap(), iat);
}

/// The request id of the request a context was minted for.
fn minted_for(headers: &HeaderMap) -> bool {
    let context = headers["x-auth-context"].to_str().unwrap();
    payload(context)["rid"] == headers["x-request-id"].to_str().unwrap()
}

#[tokio::test]
async fn never_reused_across_identities_after_eviction_or_without_a_cache() {
    let setup = Setup::new();
    let auth = setup.cached();
    let cache: TokenCache = auth.cache().clone();
    let gw = gateway(auth, setup.propagation(Duration::from_secs(10), true));
    let alice = setup.token("alice", "t-a");
    let alice_again = setup.token("alice", "t-a2");
    let bob = setup.token("bob", "t-b");

    let a = gw.send(Method::GET, "/x", &alice).await.unwrap();
    assert!(minted_for(&a));
    assert!(!minted_for(
        &gw.send(Method::GET, "/x", &alice).await.unwrap()
    ));
    // Another identity, and the same subject with another token: their own contexts.
    for token in [&bob, &alice_again] {
        let headers = gw.send(Method::GET, "/x", token).await.unwrap();
        assert!(minted_for(&headers));
        assert_ne!(headers["x-auth-context"], a["x-auth-context"]);
    }
    assert_eq!(
        payload(
            gw.send(Method::GET, "/x", &bob).await.unwrap()["x-auth-context"]
                .to_str()
                .unwrap()
        )["sub"],
        "bob"
    );
    // The token's entry evicted: verified again, a new identity, a new context.
    cache.invalidate(&alice);
    let after = gw.send(Method::GET, "/x", &alice).await.unwrap();
    assert!(minted_for(&after));
    assert_ne!(after["x-auth-context"], a["x-auth-context"]);
    cache.invalidate_all();
    assert!(minted_for(
        &gw.send(Method::GET, "/x", &alice).await.unwrap()
    ));

    // Without a token cache, or with reuse turned off: every request mints.
    let uncached = gateway(
        setup.jwt(),
        setup.propagation(Duration::from_secs(10), true),
    );
    let off = gateway(
        setup.cached(),
        setup.propagation(Duration::from_secs(10), false),
    );
    for _ in 0..3 {
        assert!(minted_for(
            &uncached.send(Method::GET, "/x", &alice).await.unwrap()
        ));
        assert!(minted_for(
            &off.send(Method::GET, "/x", &alice).await.unwrap()
        ));
    }
}

#[tokio::test]
async fn a_revoked_token_gets_no_context() {
    let setup = Setup::new();
    let store = MemoryRevocations::new();
    let gw = gateway(
        Revocable::new(setup.cached(), store.clone()),
        setup.propagation(Duration::from_secs(10), true),
    );
    let token = setup.token("user-1", "t-revoked");
    let first = gw.context(Method::GET, "/x", &token).await;
    assert_eq!(gw.context(Method::GET, "/x", &token).await, first);
    store
        .revoke(Revocation::token(
            "t-revoked",
            UNIX_EPOCH + Duration::from_secs(4_102_444_800),
        ))
        .await
        .unwrap();
    // Refused on the cache hit, before any context is looked up or forwarded.
    assert!(gw.send(Method::GET, "/x", &token).await.is_none());
}
