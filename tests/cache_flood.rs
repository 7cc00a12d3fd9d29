//! Memory under a flood of unique tokens: one million distinct valid tokens go
//! through a [`CachedAuthenticator`] with the default bounds, while one hot token keeps
//! coming back. The cache's weighted size must stay within `max_bytes`, its entry count
//! within `max_entries`, the hot token must stay cached, and the process RSS is reported.
//!
//! Ignored by default (about 10-20 s in release). Run it with
//!
//! ```sh
//! cargo test --release --test cache_flood -- --ignored --nocapture
//! # fewer tokens: FLOOD_TOKENS=100000 cargo test --release --test cache_flood -- --ignored --nocapture
//! ```

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use http::Request;
use serde_json::json;
use tower_gatekeeper::authenticate::cache::{DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES};
use tower_gatekeeper::authenticate::{CacheConfig, CachedAuthenticator};
use tower_gatekeeper::credential::RequestHead;
use tower_gatekeeper::jwt::Validation;
use tower_gatekeeper::keys::{SigningKey, StaticKeys, VerifyingKey};
use tower_gatekeeper::{Algorithm, AuthContext, Authenticator, JwtAuthenticator, Rejection};

const ISS: &str = "https://idp.example.test";
const AUD: &str = "api://orders";

/// Counts how often the wrapped authenticator is asked (cache misses).
#[derive(Clone)]
struct Counting<A> {
    inner: A,
    calls: Arc<AtomicU64>,
}

impl<A: Authenticator> Authenticator for Counting<A> {
    type Future = A::Future;

    fn authenticate(&self, head: &RequestHead<'_>) -> Result<Self::Future, Rejection> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.authenticate(head)
    }

    fn still_trusted(&self, ctx: &AuthContext) -> bool {
        self.inner.still_trusted(ctx)
    }
}

fn now<F: Future>(fut: F) -> F::Output {
    match pin!(fut).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("must be ready at once"),
    }
}

/// Resident set size in KiB (Linux), or 0 elsewhere.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn authenticate<A: Authenticator>(auth: &A, token: &str) -> Result<AuthContext, Rejection> {
    let req = Request::builder()
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap();
    now(auth.authenticate(&RequestHead::of(&req))?)
}

#[test]
#[ignore = "a million tokens: run explicitly, in release (see the file's docs)"]
fn flood_of_unique_tokens_stays_within_the_bound() {
    let n: u64 = std::env::var("FLOOD_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let secret = [7u8; 32];
    let signer = SigningKey::hmac(Algorithm::HS256, &secret)
        .unwrap()
        .with_kid("k1");
    let jwt = JwtAuthenticator::new(
        StaticKeys::new([VerifyingKey::hmac(&secret).unwrap().with_kid("k1")]),
        Validation::new(ISS).audiences([AUD]),
    )
    .unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let config = CacheConfig::default();
    let (max_entries, max_bytes) = (DEFAULT_MAX_ENTRIES, DEFAULT_MAX_BYTES);
    let auth = CachedAuthenticator::new(
        Counting {
            inner: jwt,
            calls: Arc::clone(&calls),
        },
        config,
    )
    .unwrap();
    let cache = auth.cache().clone();
    let token = |sub: &str| {
        signer
            .sign(
                &json!({"iss": ISS, "aud": AUD, "sub": sub, "roles": ["clerk"],
                "scope": "orders:read", "exp": 4_102_444_800u64}),
            )
            .unwrap()
    };

    let hot = token("hot-user");
    for _ in 0..10 {
        authenticate(&auth, &hot).unwrap();
    }
    cache.run_pending_tasks();
    let rss_before = rss_kib();
    let mut hot_misses = 0;
    let mut peak_weight = 0;
    for i in 0..n {
        authenticate(&auth, &token(&format!("flood-{i}"))).unwrap();
        if i % 100 == 0 {
            let before = calls.load(Ordering::Relaxed);
            authenticate(&auth, &hot).unwrap();
            hot_misses += calls.load(Ordering::Relaxed) - before;
        }
        if i % 100_000 == 99_999 {
            cache.run_pending_tasks();
            peak_weight = peak_weight.max(cache.weighted_size());
            println!(
                "{:>8} tokens: {} entries, weighted size {} B, RSS {} KiB",
                i + 1,
                cache.entry_count(),
                cache.weighted_size(),
                rss_kib()
            );
            assert!(cache.entry_count() <= max_entries);
            assert!(cache.weighted_size() <= max_bytes);
        }
    }
    cache.run_pending_tasks();
    let rss_after = rss_kib();
    println!(
        "flood of {n} unique tokens: {} entries (max {max_entries}), weighted size {} B (peak {peak_weight}, max {max_bytes}), \
         RSS {rss_before} KiB before, {rss_after} KiB after; hot token re-verified {hot_misses} times in {} requests",
        cache.entry_count(),
        cache.weighted_size(),
        n / 100
    );
    assert!(cache.entry_count() <= max_entries);
    assert!(cache.weighted_size() <= max_bytes);
    assert_eq!(hot_misses, 0, "the hot token was evicted by the flood");
}
