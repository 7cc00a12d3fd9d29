//! What a DPoP request costs against a Bearer request, both with a warm verified-token
//! cache, through `DpopAuthenticator(CachedAuthenticator(JwtAuthenticator))`:
//!
//! - `dpop/bearer_warm_cache`: an unbound token as `Bearer` (a cache hit plus the wrapper's
//!   `cnf` check);
//! - `dpop/dpop_warm_cache`: the bound token as `DPoP` with a fresh ES256 proof each time
//!   (the proof is minted outside the measurement): proof parsing, the jwk's key, the
//!   signature, `htm`/`htu`/`iat`/`ath`, the RFC 7638 thumbprint, the token cache hit and the
//!   in-memory `jti` replay check.
//!
//! Run: `cargo bench --bench dpop -- --noplot`.

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::Request;
use serde_json::{Map, Value, json};
use tower_gatekeeper::authenticate::{CacheConfig, CachedAuthenticator, Started};
use tower_gatekeeper::credential::RequestHead;
use tower_gatekeeper::dpop::{DpopAuthenticator, DpopConfig, access_token_hash, jwk_thumbprint};
use tower_gatekeeper::jwt::Validation;
use tower_gatekeeper::keys::{SigningKey, StaticKeys};
use tower_gatekeeper::{Algorithm, Authenticator, JwtAuthenticator};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn bench(c: &mut Criterion) {
    let issuer = SigningKey::generate_ed25519().unwrap();
    let pem = std::fs::read(format!("{FIXTURES}/ec256-1.key.pem")).unwrap();
    let client = SigningKey::from_pem(Algorithm::ES256, &pem).unwrap();
    let jwks: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{FIXTURES}/jwks.json")).unwrap())
            .unwrap();
    let mut jwk: Map<String, Value> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == "ec256-1")
        .unwrap()
        .as_object()
        .unwrap()
        .clone();
    jwk.retain(|k, _| ["kty", "crv", "x", "y"].contains(&k.as_str()));
    let jkt = jwk_thumbprint(&jwk).unwrap();

    let claims = |cnf: Option<Value>| {
        let mut c = json!({
            "iss": "https://idp.example.test", "aud": "api://orders", "sub": "user-1",
            "roles": ["clerk"], "exp": 4102444800u64,
        });
        if let Some(cnf) = cnf {
            c["cnf"] = cnf;
        }
        issuer.sign(&c).unwrap()
    };
    let bound = claims(Some(json!({"jkt": jkt})));
    let unbound = claims(None);

    let jwt = JwtAuthenticator::new(
        StaticKeys::new([issuer.verifying_key().clone()]),
        Validation::new("https://idp.example.test").audiences(["api://orders"]),
    )
    .unwrap();
    let cached = CachedAuthenticator::new(jwt, CacheConfig::default()).unwrap();
    let auth = DpopAuthenticator::new(
        cached,
        DpopConfig::new()
            .public_origin("https://api.example.test")
            .unwrap(),
    );
    let mut counter = 0u64;
    let mut proof = || {
        counter += 1;
        let mut header = Map::new();
        header.insert("typ".into(), "dpop+jwt".into());
        header.insert("jwk".into(), Value::Object(jwk.clone()));
        client
            .sign_with_header(
                header,
                &json!({"jti": format!("bench-{counter}"), "htm": "GET",
                        "htu": "https://api.example.test/orders/1", "iat": now(),
                        "ath": access_token_hash(&bound)}),
            )
            .unwrap()
    };
    let request = |auth: String, proof: Option<String>| {
        let mut req = Request::get("/orders/1")
            .header("authorization", auth)
            .body(())
            .unwrap();
        if let Some(p) = proof {
            req.headers_mut().insert("dpop", p.parse().unwrap());
        }
        req
    };
    let ready = |auth: &DpopAuthenticator<_>, req: &Request<()>| match auth
        .start(&RequestHead::of(req))
    {
        Ok(Started::Ready(ctx)) => ctx,
        Ok(Started::Pending(_)) => panic!("a warm cache and a memory replay cache answer at once"),
        Err(e) => panic!("{e}"),
    };
    // Warm the cache with both tokens.
    let warm_bearer = request(format!("Bearer {unbound}"), None);
    let warm_dpop = request(format!("DPoP {bound}"), Some(proof()));
    for req in [&warm_bearer, &warm_dpop] {
        if let Ok(Started::Pending(fut)) = auth.start(&RequestHead::of(req)) {
            futures_executor_block_on(fut).unwrap();
        }
    }

    let mut group = c.benchmark_group("dpop");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group.bench_function("bearer_warm_cache", |b| {
        b.iter(|| black_box(ready(&auth, black_box(&warm_bearer))));
    });
    group.bench_function("dpop_warm_cache", |b| {
        b.iter_batched(
            || request(format!("DPoP {bound}"), Some(proof())),
            |req| black_box(ready(&auth, &req)),
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

/// Drives the first (pending) verification of each token to completion.
fn futures_executor_block_on<F: std::future::Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(fut)
}

criterion_group!(benches, bench);
criterion_main!(benches);
