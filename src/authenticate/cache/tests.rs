use std::future::Ready;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use http::Request;
use serde_json::json;

use super::*;
use crate::Algorithm;
use crate::JwtAuthenticator;
use crate::RejectionKind;
use crate::jwt::Validation;
use crate::keys::{KeyError, KeyQuery, KeySource, SigningKey, StaticKeys, VerifyingKey};

const ISS: &str = "https://idp.example.test";
const AUD: &str = "api://orders";
/// 2030-01-01T00:00:00Z: the fake clock's start.
const T0: u64 = 1_893_456_000;

/// A clock tests move by hand (seconds since the epoch).
#[derive(Clone)]
struct FakeTime(Arc<AtomicU64>);

impl FakeTime {
    fn new() -> Self {
        FakeTime(Arc::new(AtomicU64::new(T0)))
    }
    fn clock(&self) -> Clock {
        let t = Arc::clone(&self.0);
        Clock::from_fn(move || UNIX_EPOCH + Duration::from_secs(t.load(Ordering::SeqCst)))
    }
    fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

/// A key source whose one key can be taken out of the set (rotation).
#[derive(Clone)]
struct Rotating {
    keys: StaticKeys,
    present: Arc<AtomicBool>,
}

impl KeySource for Rotating {
    type Future = Ready<Result<VerifyingKey, KeyError>>;

    fn key(&self, query: &KeyQuery<'_>) -> Self::Future {
        if self.present.load(Ordering::SeqCst) {
            self.keys.key(query)
        } else {
            std::future::ready(Err(KeyError::UnknownKid))
        }
    }

    fn contains_kid(&self, _issuer: Option<&str>, kid: Option<&str>) -> bool {
        self.present.load(Ordering::SeqCst) && kid == Some("k1")
    }
}

/// Counts how often the wrapped authenticator is really asked.
#[derive(Clone)]
struct Counting<A> {
    inner: A,
    calls: Arc<AtomicUsize>,
}

impl<A: Authenticator> Authenticator for Counting<A> {
    type Future = A::Future;

    fn authenticate(&self, head: &RequestHead<'_>) -> Result<Self::Future, Rejection> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.authenticate(head)
    }

    fn still_trusted(&self, ctx: &AuthContext) -> bool {
        self.inner.still_trusted(ctx)
    }
}

struct Fixture {
    signer: SigningKey,
    time: FakeTime,
    present: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    auth: CachedAuthenticator<Counting<JwtAuthenticator<Rotating>>>,
}

impl Fixture {
    fn new(config: CacheConfig) -> Self {
        let signer = SigningKey::hmac(Algorithm::HS256, &[7u8; 32])
            .unwrap()
            .with_kid("k1");
        let time = FakeTime::new();
        let present = Arc::new(AtomicBool::new(true));
        let keys = Rotating {
            keys: StaticKeys::new([signer.verifying_key().clone()]),
            present: Arc::clone(&present),
        };
        let validation = Validation::new(ISS)
            .audiences([AUD])
            .leeway(Duration::ZERO)
            .clock(time.clock());
        let calls = Arc::new(AtomicUsize::new(0));
        let inner = Counting {
            inner: JwtAuthenticator::new(keys, validation).unwrap(),
            calls: Arc::clone(&calls),
        };
        let auth = CachedAuthenticator::new(inner, config.clock(time.clock())).unwrap();
        Fixture {
            signer,
            time,
            present,
            calls,
            auth,
        }
    }

    fn token(&self, sub: &str, exp_in: u64) -> String {
        self.signer
            .sign(&json!({"iss": ISS, "aud": AUD, "sub": sub, "exp": T0 + exp_in}))
            .unwrap()
    }

    async fn run(&self, token: &str) -> Result<AuthContext, Rejection> {
        let req = Request::builder()
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap();
        self.auth.authenticate(&RequestHead::of(&req))?.await
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn verifies_once_then_serves_from_the_cache() {
    let f = Fixture::new(CacheConfig::default());
    let token = f.token("alice", 3600);
    for _ in 0..5 {
        let ctx = f.run(&token).await.unwrap();
        assert_eq!(ctx.subject(), Some("alice"));
    }
    assert_eq!(f.calls(), 1);
    // Another token is another entry.
    let other = f.token("bob", 3600);
    assert_eq!(f.run(&other).await.unwrap().subject(), Some("bob"));
    assert_eq!(f.calls(), 2);
    f.auth.cache().run_pending_tasks();
    assert_eq!(f.auth.cache().entry_count(), 2);
}

#[tokio::test]
async fn a_hit_starts_ready_and_an_invalidated_token_is_verified_again() {
    let f = Fixture::new(CacheConfig::default());
    let token = f.token("alice", 3600);
    let req = Request::builder()
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap();
    // A miss: the wrapped authenticator's future.
    let Ok(Started::Pending(fut)) = f.auth.start(&RequestHead::of(&req)) else {
        panic!("a miss must be pending");
    };
    fut.await.unwrap();
    // A hit: the context at once, nothing to await.
    let Ok(Started::Ready(ctx)) = f.auth.start(&RequestHead::of(&req)) else {
        panic!("a hit must be ready");
    };
    assert_eq!(ctx.subject(), Some("alice"));
    assert_eq!(f.calls(), 1);

    f.auth.cache().invalidate(&token);
    f.run(&token).await.unwrap();
    assert_eq!(f.calls(), 2);
    f.run(&token).await.unwrap();
    assert_eq!(f.calls(), 2);
}

#[tokio::test]
async fn the_hit_shares_the_context() {
    let f = Fixture::new(CacheConfig::default());
    let token = f.token("alice", 3600);
    let a = f.run(&token).await.unwrap();
    let b = f.run(&token).await.unwrap();
    // Same allocation: the hit is a reference-count increment, not a copy.
    assert!(std::ptr::eq(a.claims_map(), b.claims_map()));
}

#[tokio::test]
async fn failures_are_never_cached() {
    let f = Fixture::new(CacheConfig::default());
    let mut bad = f.token("alice", 3600);
    bad.pop();
    bad.push('A');
    let expired = f.token("alice", 0);
    for token in [&bad, &expired, &"not.a.jwt".to_owned()] {
        for _ in 0..3 {
            let err = f.run(token).await.unwrap_err();
            assert_eq!(err.kind(), RejectionKind::InvalidToken);
        }
    }
    assert_eq!(f.calls(), 9);
    f.auth.cache().run_pending_tasks();
    assert_eq!(f.auth.cache().entry_count(), 0);
}

#[tokio::test]
async fn requests_without_a_bearer_token_pass_through() {
    let f = Fixture::new(CacheConfig::default());
    let req = Request::builder().body(()).unwrap();
    let err = f
        .auth
        .authenticate(&RequestHead::of(&req))
        .map(|_| ())
        .expect_err("no credential");
    assert_eq!(err.kind(), RejectionKind::MissingCredential);
    let req = Request::builder()
        .header("authorization", "Bearer a")
        .header("authorization", "Bearer b")
        .body(())
        .unwrap();
    let err = f
        .auth
        .authenticate(&RequestHead::of(&req))
        .map(|_| ())
        .expect_err("two headers");
    assert_eq!(err.kind(), RejectionKind::InvalidRequest);
    assert_eq!(f.calls(), 2);
}

#[tokio::test]
async fn an_entry_never_outlives_exp() {
    let f = Fixture::new(CacheConfig::default());
    let token = f.token("alice", 60);
    f.run(&token).await.unwrap();
    f.time.advance(59);
    f.run(&token).await.unwrap();
    assert_eq!(f.calls(), 1, "still valid: served from the cache");
    f.time.advance(1);
    let err = f.run(&token).await.unwrap_err();
    assert_eq!(err.kind(), RejectionKind::InvalidToken);
    assert_eq!(f.calls(), 2, "expired: the verifier was asked, and refused");
}

#[tokio::test]
async fn expired_entries_are_swept_out_of_memory() {
    let f = Fixture::new(CacheConfig::default());
    let short = f.token("alice", 10);
    let long = f.token("bob", 3600);
    f.run(&short).await.unwrap();
    f.run(&long).await.unwrap();
    assert_eq!(f.auth.cache().entry_count(), 2);
    // Expired, never requested again: gone at the next sweep...
    f.time.advance(11);
    f.auth.cache().run_pending_tasks();
    assert_eq!(f.auth.cache().entry_count(), 1);
    // ...which an insert runs by itself once the last one is 30 s old.
    let brief = f.token("carol", 20);
    f.run(&brief).await.unwrap();
    assert_eq!(f.auth.cache().entry_count(), 2);
    f.time.advance(40);
    f.run(&f.token("dave", 3600)).await.unwrap();
    assert_eq!(f.auth.cache().entry_count(), 2, "carol's entry was swept");
    assert_eq!(f.calls(), 4);
}

#[tokio::test]
async fn an_entry_never_outlives_max_ttl() {
    let f = Fixture::new(CacheConfig::default().max_ttl(Duration::from_secs(30)));
    let token = f.token("alice", 3600);
    f.run(&token).await.unwrap();
    f.time.advance(29);
    f.run(&token).await.unwrap();
    assert_eq!(f.calls(), 1);
    f.time.advance(1);
    f.run(&token).await.unwrap();
    assert_eq!(f.calls(), 2, "max_ttl reached: verified again");
    f.run(&token).await.unwrap();
    assert_eq!(f.calls(), 2, "and cached again");
}

#[tokio::test]
async fn a_key_that_left_the_set_stops_vouching() {
    let f = Fixture::new(CacheConfig::default());
    let token = f.token("alice", 3600);
    f.run(&token).await.unwrap();
    f.run(&token).await.unwrap();
    assert_eq!(f.calls(), 1);
    f.present.store(false, Ordering::SeqCst);
    let err = f.run(&token).await.unwrap_err();
    assert_eq!(err.kind(), RejectionKind::InvalidToken);
    assert_eq!(f.calls(), 2);
    f.auth.cache().run_pending_tasks();
    assert_eq!(f.auth.cache().entry_count(), 0, "the entry was dropped");
}

#[test]
fn contexts_of_keys_not_in_the_set_are_not_trusted() {
    let f = Fixture::new(CacheConfig::default());
    let ctx = |iss: &str, kid: &str| {
        AuthContext::builder(crate::CredentialKind::Jwt)
            .issuer(iss)
            .key_id(kid)
            .build()
    };
    assert!(f.auth.still_trusted(&ctx(ISS, "k1")));
    assert!(!f.auth.still_trusted(&ctx(ISS, "k2")));
    assert!(
        !f.auth
            .still_trusted(&ctx("https://other.example.test", "k1"))
    );
}

#[tokio::test]
async fn bounded_in_entries() {
    let f = Fixture::new(CacheConfig::default().max_entries(50));
    for i in 0..400 {
        f.run(&f.token(&format!("user-{i}"), 3600)).await.unwrap();
    }
    let cache = f.auth.cache();
    cache.run_pending_tasks();
    assert!(cache.entry_count() <= 50, "{} entries", cache.entry_count());
    assert!(cache.weighted_size() <= cache.config().max_bytes);
}

#[tokio::test]
async fn bounded_in_bytes() {
    // Room for about 10 entries of ~1 KiB, whatever max_entries says.
    let f = Fixture::new(
        CacheConfig::default()
            .max_entries(10_000)
            .max_bytes(10 * 1024),
    );
    let roles: Vec<String> = (0..20).map(|i| format!("role-number-{i:02}")).collect();
    for i in 0..200 {
        let token = f
            .signer
            .sign(&json!({"iss": ISS, "aud": AUD, "sub": format!("user-{i}"),
                "exp": T0 + 3600, "roles": roles}))
            .unwrap();
        f.run(&token).await.unwrap();
    }
    let cache = f.auth.cache();
    cache.run_pending_tasks();
    assert!(
        cache.weighted_size() <= 10 * 1024,
        "{}",
        cache.weighted_size()
    );
    assert!(cache.entry_count() <= 10, "{} entries", cache.entry_count());
    // ...and a small budget still caches: it is not spread over shards too small to hold
    // an entry.
    assert!(cache.entry_count() >= 2, "{} entries", cache.entry_count());
}

#[tokio::test]
async fn a_flood_of_unique_tokens_does_not_evict_hot_entries() {
    let f = Fixture::new(CacheConfig::default().max_entries(100));
    let hot: Vec<String> = (0..10)
        .map(|i| f.token(&format!("hot-{i}"), 3600))
        .collect();
    // Fill the cache, then use the hot tokens often.
    for i in 0..100 {
        f.run(&f.token(&format!("fill-{i}"), 3600)).await.unwrap();
    }
    for token in &hot {
        f.run(token).await.unwrap();
    }
    f.auth.cache().run_pending_tasks();
    for _ in 0..10 {
        for token in &hot {
            f.run(token).await.unwrap();
        }
    }
    f.auth.cache().run_pending_tasks();
    let before = f.calls();
    for token in &hot {
        f.run(token).await.unwrap();
    }
    assert_eq!(f.calls(), before, "the hot tokens are cached");
    // A flood of 2,000 unique valid tokens, each seen once.
    for i in 0..2_000 {
        f.run(&f.token(&format!("flood-{i}"), 3600)).await.unwrap();
        if i % 100 == 0 {
            f.auth.cache().run_pending_tasks();
        }
    }
    let cache = f.auth.cache();
    cache.run_pending_tasks();
    assert!(cache.entry_count() <= 100);
    let before = f.calls();
    for token in &hot {
        f.run(token).await.unwrap();
    }
    let misses = f.calls() - before;
    assert!(
        misses <= 2,
        "{misses} of 10 hot tokens were evicted by the flood"
    );
}

#[test]
fn cache_keys_are_keyed_per_cache_and_cover_the_whole_token() {
    let a = TokenCache::new(CacheConfig::default()).unwrap();
    let b = TokenCache::new(CacheConfig::default()).unwrap();
    assert_ne!(a.key_of("x.y.z"), b.key_of("x.y.z"), "per-cache secret");
    assert_eq!(a.key_of("x.y.z"), a.key_of("x.y.z"));
    assert_ne!(a.key_of("x.y.z"), a.key_of("x.y.Z"));
    assert_ne!(a.key_of("X.y.z"), a.key_of("x.y.z"));
}

#[test]
fn bad_sizes_fail_at_build_time() {
    let err = TokenCache::new(CacheConfig::default().max_entries(0)).unwrap_err();
    assert!(err.to_string().contains("max_entries"), "{err}");
    let err = TokenCache::new(CacheConfig::default().max_bytes(10)).unwrap_err();
    assert!(err.to_string().contains("max_bytes"), "{err}");
    let err = TokenCache::new(CacheConfig::default().max_ttl(Duration::ZERO)).unwrap_err();
    assert!(err.to_string().contains("max_ttl"), "{err}");
}

#[test]
fn weights_grow_with_the_claims() {
    let small = AuthContext::builder(crate::CredentialKind::Jwt)
        .subject("a")
        .build();
    let big = AuthContext::builder(crate::CredentialKind::Jwt)
        .subject("a")
        .claim("blob", "x".repeat(10_000))
        .build();
    assert!(context_bytes(&small) >= ENTRY_OVERHEAD);
    assert!(context_bytes(&big) >= 10_000 + ENTRY_OVERHEAD);
}

/// The hit path's cheap extraction never disagrees with `bearer_token` on a token it
/// accepts, and never offers a candidate where `bearer_token` finds no usable token for a
/// reason other than its characters.
#[test]
fn bearer_candidate_matches_bearer_token() {
    let cases: &[&[&[u8]]] = &[
        &[],
        &[b"Bearer abc.def.ghi"],
        &[b"bearer   abc.def.ghi"],
        &[b"BEARER abc"],
        &[b"Bearer"],
        &[b"Bearer "],
        &[b"Bearer    "],
        &[b"Bearer\tabc"],
        &[b"Bearerabc"],
        &[b"Basic abc"],
        &[b"Bearer a*b"],
        &[b"Bearer abc==.def"],
        &[b"Bearer abc="],
        &[b"Bearer abc", b"Bearer abc"],
        &[b"Bearer 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdefX"],
    ];
    for values in cases {
        let mut req = Request::new(());
        for v in *values {
            req.headers_mut().append(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_bytes(v).unwrap(),
            );
        }
        let head = RequestHead::of(&req);
        let candidate = bearer_candidate(&head, 64);
        match bearer_token(&head, 64) {
            Ok(Some(token)) => assert_eq!(candidate, Some(token.as_bytes()), "{values:?}"),
            Ok(None) => assert_eq!(candidate, None, "{values:?}"),
            // Only the character checks may reject a candidate.
            Err(e)
                if matches!(
                    e.description(),
                    "malformed token" | "malformed bearer token"
                ) && candidate.is_some() => {}
            Err(_) => assert_eq!(candidate, None, "{values:?}"),
        }
    }
}

#[tokio::test]
async fn authenticators_sharing_a_cache_never_serve_each_others_entries() {
    let signer = SigningKey::hmac(Algorithm::HS256, &[7u8; 32])
        .unwrap()
        .with_kid("k1");
    let keys = StaticKeys::new([signer.verifying_key().clone()]);
    let cache = TokenCache::new(CacheConfig::default()).unwrap();
    let for_audience = |aud: &str| {
        let jwt =
            JwtAuthenticator::new(keys.clone(), Validation::new(ISS).audiences([aud])).unwrap();
        CachedAuthenticator::with_cache(jwt, cache.clone())
    };
    let (a, b) = (for_audience("api://a"), for_audience("api://b"));
    let token = signer
        .sign(&json!({"iss": ISS, "aud": "api://a", "sub": "alice", "exp": 4102444800u64}))
        .unwrap();
    let run = |auth: &CachedAuthenticator<JwtAuthenticator<StaticKeys>>| {
        let req = Request::builder()
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap();
        let fut = auth.authenticate(&RequestHead::of(&req));
        async move { fut?.await }
    };
    assert_eq!(run(&a).await.unwrap().subject(), Some("alice"));
    assert_eq!(run(&a).await.unwrap().subject(), Some("alice"));
    cache.run_pending_tasks();
    assert_eq!(cache.entry_count(), 1, "A cached it");
    // B's audience is another: B verifies for itself, and refuses.
    assert_eq!(
        run(&b).await.unwrap_err().kind(),
        RejectionKind::InvalidToken
    );
    // A clone of A shares A's entries.
    assert_eq!(run(&a.clone()).await.unwrap().subject(), Some("alice"));
    // Invalidating the token reaches every scope.
    cache.invalidate(&token);
    cache.run_pending_tasks();
    assert_eq!(cache.entry_count(), 0);
}

/// An authenticator whose verification waits until released.
#[derive(Clone)]
struct Gated {
    release: Arc<tokio::sync::Notify>,
    calls: Arc<AtomicUsize>,
}

impl Authenticator for Gated {
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<AuthContext, Rejection>> + Send>>;

    fn authenticate(&self, _head: &RequestHead<'_>) -> Result<Self::Future, Rejection> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let release = Arc::clone(&self.release);
        Ok(Box::pin(async move {
            release.notified().await;
            Ok(AuthContext::builder(crate::CredentialKind::Jwt)
                .subject("before-the-purge")
                .build())
        }))
    }
}

#[tokio::test]
async fn invalidate_all_is_not_undone_by_a_verification_in_flight() {
    let gated = Gated {
        release: Arc::new(tokio::sync::Notify::new()),
        calls: Arc::new(AtomicUsize::new(0)),
    };
    let auth = CachedAuthenticator::new(gated.clone(), CacheConfig::default()).unwrap();
    let req = Request::builder()
        .header("authorization", "Bearer abc.def.ghi")
        .body(())
        .unwrap();
    let in_flight = auth.authenticate(&RequestHead::of(&req)).unwrap();
    let in_flight = tokio::spawn(in_flight);
    tokio::task::yield_now().await;
    // The key is purged while that verification runs...
    auth.cache().invalidate_all();
    gated.release.notify_one();
    assert!(in_flight.await.unwrap().is_ok());
    // ...so its result is not cached: the next request is verified again.
    auth.cache().run_pending_tasks();
    assert_eq!(auth.cache().entry_count(), 0);
    let next = auth.authenticate(&RequestHead::of(&req)).unwrap();
    let next = tokio::spawn(next);
    tokio::task::yield_now().await;
    gated.release.notify_one();
    next.await.unwrap().unwrap();
    assert_eq!(gated.calls.load(Ordering::SeqCst), 2);
    // A verification that began after the purge is cached as usual.
    auth.cache().run_pending_tasks();
    assert_eq!(auth.cache().entry_count(), 1);
}
