//! The whole stack against the raw `jsonwebtoken::decode` floor, cache cold and warm, in one
//! run so the ratios hold on a noisy machine: see `benches/README.md`.
//!
//! - `baseline/service_fn`: the trivial inner service alone;
//! - `floor/<ALG>`: `jsonwebtoken::decode` into a `serde_json::Map` with the same key, token
//!   and rules (`iss`, `aud`, `exp` required). jsonwebtoken has no ES512, so `floor/ES512` is
//!   the same work by hand ([`Es512Floor`]): base64url-decode the three segments, parse the
//!   header and check its `alg`, `serde_json::from_slice::<Map>` of the claims, aws-lc-rs
//!   `ECDSA_P521_SHA512_FIXED` with a key parsed once (as jsonwebtoken's aws-lc-rs provider
//!   would for the other curves), then the same `iss`/`aud`/`exp` checks;
//! - `nocache/<ALG>`: authenticate + authorize + propagate, no cache;
//! - `cold/<ALG>`: the same with a [`CachedAuthenticator`] whose (long-lived) cache does not
//!   hold the token: a miss, the verification, then the insert;
//! - `warm/<ALG>`: the same, token cached;
//! - `warm-revocation/<ALG>`: warm, with a [`Revocable`] in-memory revocation set (holding
//!   other tokens and subjects) checked on every hit;
//! - `signed/warm/<ALG>`: warm, with a signed context (`sign_context`, Ed25519) for the same
//!   request repeated;
//! - `signed/warm-new-path/<ALG>`: the same with a new path on every request, so that every
//!   request mints (and signs) a new context.
//!
//! Every iteration builds nothing: the request is made in criterion's setup, the future is
//! polled once with a no-op waker (every part is ready at once) inside a tokio runtime
//! context.
//!
//! Run: `cargo bench --bench stack -- --noplot`.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use aws_lc_rs::signature::{self as lc, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::crypto::{CryptoProvider, aws_lc, rust_crypto};
use serde_json::{Map, Value, json};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_gatekeeper::authenticate::{CacheConfig, CachedAuthenticator};
use tower_gatekeeper::authorize::roles_any;
use tower_gatekeeper::jwt::Validation;
use tower_gatekeeper::keys::{SigningKey, StaticKeys, VerifyingKey};
use tower_gatekeeper::revocation::{MemoryRevocations, Revocable, Revocation, RevocationStore};
use tower_gatekeeper::{
    Algorithm, AuthenticateLayer, Authenticator, AuthorizeLayer, CRYPTO_BACKEND,
    ContextPropagationLayer, JwtAuthenticator,
};

#[path = "support/fixtures.rs"]
mod fixtures;
use fixtures::{configure, fixture};

const ISSUER: &str = "https://idp.example.test";
const AUDIENCE: &str = "api://orders";
const ALGS: [Algorithm; 5] = [
    Algorithm::RS256,
    Algorithm::ES256,
    Algorithm::ES512,
    Algorithm::EdDSA,
    Algorithm::HS256,
];

/// Key material, token and rules of one algorithm (the committed test keys).
struct Case {
    alg: Algorithm,
    signing: Signing,
    verifying: VerifyingKey,
    /// jsonwebtoken's key, for the floor (none for ES512, which jsonwebtoken lacks).
    decoding: Option<DecodingKey>,
}

/// How a case's token is signed: this crate's [`SigningKey`], or for ES512 (which it only
/// verifies) aws-lc-rs directly.
enum Signing {
    Key(SigningKey),
    Es512(lc::EcdsaKeyPair),
}

/// The DER inside a PEM file.
fn pem_der(pem: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(pem).expect("PEM text");
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).expect("PEM base64")
}

impl Case {
    fn new(alg: Algorithm) -> Self {
        if alg == Algorithm::ES512 {
            let pkcs8 = pem_der(&fixture("ec521-1.key.pem"));
            let pair = lc::EcdsaKeyPair::from_pkcs8(&lc::ECDSA_P521_SHA512_FIXED_SIGNING, &pkcs8)
                .expect("P-521 key");
            let verifying = VerifyingKey::from_pem(&fixture("ec521-1.pub.pem"))
                .expect("verifying key")
                .with_kid("ec521-1");
            let spki = pem_der(&fixture("ec521-1.pub.pem"));
            assert_eq!(
                pair.public_key().as_ref(),
                &spki[spki.len() - 133..],
                "the committed P-521 key pair"
            );
            return Case {
                alg,
                signing: Signing::Es512(pair),
                verifying,
                decoding: None,
            };
        }
        let (base, kid) = match alg {
            Algorithm::RS256 => ("rsa-1", "rsa-1"),
            Algorithm::ES256 => ("ec256-1", "ec256-1"),
            Algorithm::EdDSA => ("ed-1", "ed-1"),
            _ => ("hmac", "hmac"),
        };
        let (signing, verifying, decoding) = if alg.is_hmac() {
            let secret = fixture("hmac.secret");
            (
                SigningKey::hmac(alg, &secret),
                VerifyingKey::hmac(&secret),
                DecodingKey::from_secret(&secret),
            )
        } else {
            let public = fixture(&format!("{base}.pub.pem"));
            let decoding = match alg {
                Algorithm::RS256 => {
                    let jwk: Value = serde_json::from_slice(&fixture("rsa-1.jwk.json")).unwrap();
                    DecodingKey::from_rsa_components(
                        jwk["n"].as_str().unwrap(),
                        jwk["e"].as_str().unwrap(),
                    )
                    .unwrap()
                }
                Algorithm::ES256 => DecodingKey::from_ec_pem(&public).unwrap(),
                _ => DecodingKey::from_ed_pem(&public).unwrap(),
            };
            (
                SigningKey::from_pem(alg, &fixture(&format!("{base}.key.pem"))),
                VerifyingKey::from_pem(&public),
                decoding,
            )
        };
        Case {
            alg,
            signing: Signing::Key(signing.expect("signing key").with_kid(kid)),
            verifying: verifying.expect("verifying key").with_kid(kid),
            decoding: Some(decoding),
        }
    }

    fn token(&self) -> String {
        let claims = json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": "user-123", "roles": ["clerk"],
            "scope": "orders:read orders:write", "tenant_id": "acme",
            "iat": 1_700_000_000u64, "nbf": 1_700_000_000u64, "exp": 4_102_444_800u64,
            "jti": format!("bench-{}", self.alg),
        });
        match &self.signing {
            Signing::Key(key) => key.sign(&claims).expect("token"),
            Signing::Es512(pair) => {
                // The header `SigningKey::sign` writes.
                let header = json!({"typ": "JWT", "kid": "ec521-1", "alg": "ES512"});
                let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
                token.push('.');
                token.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
                let rng = aws_lc_rs::rand::SystemRandom::new();
                let signature = pair.sign(&rng, token.as_bytes()).expect("ES512 signature");
                token.push('.');
                token.push_str(&URL_SAFE_NO_PAD.encode(signature.as_ref()));
                token
            }
        }
    }

    fn authenticator(&self) -> JwtAuthenticator<StaticKeys> {
        JwtAuthenticator::new(
            StaticKeys::new([self.verifying.clone()]),
            Validation::new(ISSUER).audiences([AUDIENCE]),
        )
        .expect("authenticator")
    }
}

/// The ES512 floor: what `jsonwebtoken::decode::<Map>` does for the other algorithms, by hand
/// (see the module docs), with the P-521 key parsed once.
struct Es512Floor {
    key: lc::ParsedPublicKey,
}

impl Es512Floor {
    fn new() -> Self {
        let spki = pem_der(&fixture("ec521-1.pub.pem"));
        // The uncompressed point ends the SubjectPublicKeyInfo: 0x04 || X || Y, 133 bytes.
        let point = &spki[spki.len() - 133..];
        Es512Floor {
            key: lc::ParsedPublicKey::new(&lc::ECDSA_P521_SHA512_FIXED, point).expect("P-521"),
        }
    }

    fn decode(&self, token: &str, now: u64) -> Result<Map<String, Value>, &'static str> {
        let mut parts = token.rsplitn(2, '.');
        let (Some(signature), Some(signing_input)) = (parts.next(), parts.next()) else {
            return Err("segments");
        };
        let Some((header, claims)) = signing_input.split_once('.') else {
            return Err("segments");
        };
        let header = URL_SAFE_NO_PAD.decode(header).map_err(|_| "header")?;
        let header: Map<String, Value> = serde_json::from_slice(&header).map_err(|_| "header")?;
        if header.get("alg").and_then(Value::as_str) != Some("ES512") {
            return Err("alg");
        }
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| "signature")?;
        self.key
            .verify_sig(signing_input.as_bytes(), &signature)
            .map_err(|_| "signature")?;
        let claims = URL_SAFE_NO_PAD.decode(claims).map_err(|_| "claims")?;
        let claims: Map<String, Value> = serde_json::from_slice(&claims).map_err(|_| "claims")?;
        if claims.get("iss").and_then(Value::as_str) != Some(ISSUER) {
            return Err("iss");
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(aud)) => aud == AUDIENCE,
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(AUDIENCE)),
            _ => false,
        };
        if !aud_ok {
            return Err("aud");
        }
        // jsonwebtoken's default leeway: 60 s.
        match claims.get("exp").and_then(Value::as_u64) {
            Some(exp) if exp >= now.saturating_sub(60) => Ok(claims),
            _ => Err("exp"),
        }
    }
}

type Req = Request<Full<Bytes>>;

async fn echo(req: Req) -> Result<Response<Full<Bytes>>, Infallible> {
    let user = req
        .headers()
        .get("x-user-id")
        .map(|v| Bytes::copy_from_slice(v.as_bytes()))
        .unwrap_or_default();
    Ok(Response::new(Full::new(user)))
}

/// Authenticate + authorize + propagate around [`echo`].
fn gateway<A: Authenticator>(
    auth: A,
) -> impl Service<Req, Response = Response<impl Sized>, Error = Infallible, Future: Send> + Clone {
    gateway_with(auth, ContextPropagationLayer::new())
}

/// As [`gateway`], with `propagate` as the propagation layer.
fn gateway_with<A: Authenticator>(
    auth: A,
    propagate: ContextPropagationLayer,
) -> impl Service<Req, Response = Response<impl Sized>, Error = Infallible, Future: Send> + Clone {
    ServiceBuilder::new()
        .layer(AuthenticateLayer::new(auth))
        .layer(AuthorizeLayer::new(roles_any(["clerk"])))
        .layer(propagate)
        .service_fn(echo)
}

/// Propagation with a signed context (Ed25519, the recommended algorithm).
fn signing_layer() -> ContextPropagationLayer {
    let key = SigningKey::from_pem(Algorithm::EdDSA, &fixture("ed-1.key.pem"))
        .expect("signing key")
        .with_kid("ctx-1");
    ContextPropagationLayer::builder()
        .sign_context(key)
        .context_audience("orders-svc")
        .build()
        .expect("propagation")
}

/// An in-memory revocation set holding other tokens and subjects (not the benchmarked one).
fn revocations(rt: &tokio::runtime::Runtime) -> MemoryRevocations {
    let store = MemoryRevocations::new();
    let far = std::time::UNIX_EPOCH + std::time::Duration::from_secs(4_102_444_800);
    rt.block_on(async {
        for i in 0..1_000 {
            store
                .revoke(Revocation::token(format!("revoked-{i}"), far))
                .await
                .expect("revoke");
        }
        for i in 0..100 {
            store
                .revoke(Revocation::subject(
                    format!("gone-{i}"),
                    std::time::SystemTime::now(),
                ))
                .await
                .expect("revoke");
        }
    });
    store
}

/// Polls `fut` once with a no-op waker: the stack under test is ready at once.
fn now<F: Future>(fut: F) -> F::Output {
    match pin!(fut).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the benchmarked stack must not wait"),
    }
}

fn request(bearer: &str) -> Req {
    request_to("/", bearer)
}

fn request_to(path: &str, bearer: &str) -> Req {
    Request::builder()
        .uri(path)
        .header("authorization", bearer)
        .body(Full::default())
        .expect("request")
}

fn stack(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let _enter = rt.enter();
    let store = revocations(&rt);
    let _ = CryptoProvider::install_default(match CRYPTO_BACKEND {
        "aws-lc-rs" => &aws_lc::DEFAULT_PROVIDER,
        _ => &rust_crypto::DEFAULT_PROVIDER,
    });

    let mut group = c.benchmark_group("baseline");
    configure(&mut group);
    let svc = service_fn(echo);
    group.bench_function("service_fn", |b| {
        b.iter_batched(
            || (svc, request("Bearer x")),
            |(svc, req)| now(svc.oneshot(req)),
            BatchSize::SmallInput,
        );
    });
    group.finish();

    let mut group = c.benchmark_group("stack");
    configure(&mut group);
    for alg in ALGS {
        let case = Case::new(alg);
        let token = case.token();
        let bearer = format!("Bearer {token}");

        match &case.decoding {
            Some(decoding) => {
                let mut validation = jsonwebtoken::Validation::new(alg.as_str().parse().unwrap());
                validation.set_issuer(&[ISSUER]);
                validation.set_audience(&[AUDIENCE]);
                validation.set_required_spec_claims(&["exp", "iss", "aud"]);
                let decode = || {
                    jsonwebtoken::decode::<Map<String, Value>>(
                        black_box(token.as_str()),
                        black_box(decoding),
                        black_box(&validation),
                    )
                };
                assert_eq!(decode().expect("decode").claims["sub"], "user-123");
                group.bench_function(format!("floor/{alg}"), |b| {
                    b.iter(|| decode().expect("decode"));
                });
            }
            None => {
                let floor = Es512Floor::new();
                // jsonwebtoken reads the clock for every token too.
                let now = || {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs())
                };
                assert_eq!(
                    floor.decode(&token, now()).expect("decode")["sub"],
                    "user-123"
                );
                let mut tampered = token.clone();
                tampered.replace_range(token.len() - 4.., "AAAA");
                assert_eq!(floor.decode(&tampered, now()), Err("signature"));
                group.bench_function(format!("floor/{alg}"), |b| {
                    b.iter(|| floor.decode(black_box(&token), now()).expect("decode"));
                });
            }
        }

        let plain = gateway(case.authenticator());
        let ok = now(plain.clone().oneshot(request(&bearer))).unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        group.bench_function(format!("nocache/{alg}"), |b| {
            b.iter_batched(
                || (plain.clone(), request(&bearer)),
                |(svc, req)| now(svc.oneshot(req)),
                BatchSize::SmallInput,
            );
        });

        // Cold: a running cache (the gateway's) that does not hold this token: its entry is
        // dropped before every iteration (untimed), so each one misses, verifies and inserts.
        // `PerIteration`, since a batch's setups all run before its iterations; each iteration
        // is then timed alone (two clock reads, some 40 ns, are in the figure).
        let jwt = case.authenticator();
        let auth = CachedAuthenticator::new(jwt.clone(), CacheConfig::default()).expect("cache");
        let cold = gateway(auth.clone());
        group.bench_function(format!("cold/{alg}"), |b| {
            b.iter_batched(
                || {
                    auth.cache().invalidate(&token);
                    (cold.clone(), request(&bearer))
                },
                |(svc, req)| now(svc.oneshot(req)),
                BatchSize::PerIteration,
            );
        });

        let auth = CachedAuthenticator::new(jwt.clone(), CacheConfig::default()).expect("cache");
        let warm = gateway(auth.clone());
        let ok = now(warm.clone().oneshot(request(&bearer))).unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        auth.cache().run_pending_tasks();
        assert_eq!(auth.cache().entry_count(), 1);
        group.bench_function(format!("warm/{alg}"), |b| {
            b.iter_batched(
                || (warm.clone(), request(&bearer)),
                |(svc, req)| now(svc.oneshot(req)),
                BatchSize::SmallInput,
            );
        });

        let auth = CachedAuthenticator::new(jwt.clone(), CacheConfig::default()).expect("cache");
        let revocable = gateway(Revocable::new(auth.clone(), store.clone()));
        let ok = now(revocable.clone().oneshot(request(&bearer))).unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(auth.cache().entry_count(), 1);
        group.bench_function(format!("warm-revocation/{alg}"), |b| {
            b.iter_batched(
                || (revocable.clone(), request(&bearer)),
                |(svc, req)| now(svc.oneshot(req)),
                BatchSize::SmallInput,
            );
        });

        let auth = CachedAuthenticator::new(jwt.clone(), CacheConfig::default()).expect("cache");
        let signed = gateway_with(auth.clone(), signing_layer());
        let ok = now(signed.clone().oneshot(request_to("/orders/1", &bearer))).unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        group.bench_function(format!("signed/warm/{alg}"), |b| {
            b.iter_batched(
                || (signed.clone(), request_to("/orders/1", &bearer)),
                |(svc, req)| now(svc.oneshot(req)),
                BatchSize::SmallInput,
            );
        });
        if alg == Algorithm::HS256 {
            let mut n = 0u64;
            group.bench_function(format!("signed/warm-new-path/{alg}"), |b| {
                b.iter_batched(
                    || {
                        n += 1;
                        (signed.clone(), request_to(&format!("/orders/{n}"), &bearer))
                    },
                    |(svc, req)| now(svc.oneshot(req)),
                    BatchSize::SmallInput,
                );
            });
        }
    }
    group.finish();
}

criterion_group!(benches, stack);
criterion_main!(benches);
