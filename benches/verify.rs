//! Verification benchmarks: see `benches/README.md`.
//!
//! - `backend/<ALG>/<backend>`: jsonwebtoken's `aws_lc` and `rust_crypto` providers side by
//!   side, one fixed signature, `verifier_factory` + `verify` per iteration (what every token
//!   costs: the providers parse the key inside `verify`). Used to pick the default backend.
//! - `verify/<ALG>/gatekeeper/<backend>`: [`tower_gatekeeper::jwt::verify_with_key`] with the
//!   compiled-in backend; `verify/<ALG>/jsonwebtoken-decode/<backend>`: the raw
//!   `jsonwebtoken::decode` floor with the same key and the same provider.
//! - `stack/<ALG>/<backend>`: authenticate + authorize + propagate around a trivial service,
//!   one `oneshot` per iteration on a current-thread tokio runtime.
//!
//! Run: `cargo bench --bench verify -- --noplot` (filter with e.g. `-- backend/`).

use std::convert::Infallible;
use std::hint::black_box;

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{BatchSize, BenchmarkGroup, Criterion, criterion_group, criterion_main};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use jsonwebtoken::crypto::{CryptoProvider, aws_lc, rust_crypto};
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde_json::{Map, Value, json};
use tower::{ServiceBuilder, ServiceExt};
use tower_gatekeeper::authorize::roles_any;
use tower_gatekeeper::jwt::{Validation, verify_with_key};
use tower_gatekeeper::keys::{SigningKey, StaticKeys, VerifyingKey};
use tower_gatekeeper::{
    Algorithm, AuthenticateLayer, AuthorizeLayer, CRYPTO_BACKEND, ContextPropagationLayer,
    JwtAuthenticator,
};

#[path = "support/fixtures.rs"]
mod fixtures;
use fixtures::{configure, fixture};

const ISSUER: &str = "https://idp.example.test";
const HMAC_ISSUER: &str = "https://hmac.example.test";
const AUDIENCE: &str = "api://orders";

/// One benchmarked algorithm and the committed test key it is signed and verified with.
struct Case {
    alg: Algorithm,
    /// Private key PEM (asymmetric) or secret (HMAC).
    private: Vec<u8>,
    /// Public key PEM (asymmetric) or the same secret (HMAC).
    public: Vec<u8>,
    kid: Option<&'static str>,
    issuer: &'static str,
}

impl Case {
    fn new(alg: Algorithm) -> Self {
        let (base, kid) = match alg {
            Algorithm::RS256 | Algorithm::PS256 => ("rsa-1", Some("rsa-1")),
            Algorithm::ES256 => ("ec256-1", Some("ec256-1")),
            Algorithm::ES384 => ("ec384-1", Some("ec384-1")),
            Algorithm::EdDSA => ("ed-1", Some("ed-1")),
            Algorithm::HS256 => ("hmac", None),
            other => panic!("no benchmark case for {other}"),
        };
        if alg.is_hmac() {
            let secret = fixture("hmac.secret");
            return Case {
                alg,
                private: secret.clone(),
                public: secret,
                kid,
                issuer: HMAC_ISSUER,
            };
        }
        Case {
            alg,
            private: fixture(&format!("{base}.key.pem")),
            public: fixture(&format!("{base}.pub.pem")),
            kid,
            issuer: ISSUER,
        }
    }

    fn name(&self) -> &'static str {
        self.alg.as_str()
    }

    fn signing_key(&self) -> SigningKey {
        let key = if self.alg.is_hmac() {
            SigningKey::hmac(self.alg, &self.private)
        } else {
            SigningKey::from_pem(self.alg, &self.private)
        }
        .expect("signing key");
        match self.kid {
            Some(kid) => key.with_kid(kid),
            None => key,
        }
    }

    fn verifying_key(&self) -> VerifyingKey {
        let key = if self.alg.is_hmac() {
            VerifyingKey::hmac(&self.public)
        } else {
            VerifyingKey::from_pem(&self.public)
        }
        .expect("verifying key");
        match self.kid {
            Some(kid) => key.with_kid(kid),
            None => key,
        }
    }

    fn validation(&self) -> Validation {
        Validation::new(self.issuer).audiences([AUDIENCE])
    }

    /// A token with the fixtures' default claims (tests/fixtures/README.md).
    fn token(&self) -> String {
        self.signing_key()
            .sign(&json!({
                "iss": self.issuer,
                "aud": AUDIENCE,
                "sub": "user-123",
                "roles": ["clerk"],
                "scope": "orders:read orders:write",
                "tenant_id": "acme",
                "iat": 1_700_000_000u64,
                "nbf": 1_700_000_000u64,
                "exp": 4_102_444_800u64,
                "jti": format!("bench-{}", self.name()),
            }))
            .expect("token")
    }

    /// jsonwebtoken's key in the form this crate's `VerifyingKey` holds it: RSA as raw
    /// (n, e) components, EC as the SEC1 point from the SPKI PEM, Ed25519 as the raw point,
    /// HMAC as the secret.
    fn decoding_key(&self) -> DecodingKey {
        match self.alg {
            Algorithm::RS256 | Algorithm::PS256 => {
                let jwk: Value =
                    serde_json::from_slice(&fixture("rsa-1.jwk.json")).expect("rsa-1.jwk.json");
                DecodingKey::from_rsa_components(
                    jwk["n"].as_str().expect("n"),
                    jwk["e"].as_str().expect("e"),
                )
                .expect("rsa components")
            }
            Algorithm::ES256 | Algorithm::ES384 => {
                DecodingKey::from_ec_pem(&self.public).expect("ec pem")
            }
            Algorithm::EdDSA => DecodingKey::from_ed_pem(&self.public).expect("ed pem"),
            Algorithm::HS256 => DecodingKey::from_secret(&self.public),
            other => panic!("no decoding key for {other}"),
        }
    }

    fn encoding_key(&self) -> EncodingKey {
        match self.alg {
            Algorithm::RS256 | Algorithm::PS256 => EncodingKey::from_rsa_pem(&self.private),
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&self.private),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&self.private),
            Algorithm::HS256 => Ok(EncodingKey::from_secret(&self.private)),
            other => panic!("no encoding key for {other}"),
        }
        .expect("encoding key")
    }

    fn jwt_alg(&self) -> jsonwebtoken::Algorithm {
        self.alg.as_str().parse().expect("jsonwebtoken algorithm")
    }
}

const BACKEND_ALGS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
    Algorithm::HS256,
];

const DECODE_ALGS: [Algorithm; 4] = [
    Algorithm::RS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
    Algorithm::HS256,
];

const PROVIDERS: [(&str, &CryptoProvider); 2] = [
    ("aws-lc-rs", &aws_lc::DEFAULT_PROVIDER),
    ("rust-crypto", &rust_crypto::DEFAULT_PROVIDER),
];

/// The provider this crate was compiled with (src/crypto.rs), for the raw decode floor.
fn compiled_provider() -> &'static CryptoProvider {
    match CRYPTO_BACKEND {
        "aws-lc-rs" => &aws_lc::DEFAULT_PROVIDER,
        _ => &rust_crypto::DEFAULT_PROVIDER,
    }
}

/// Benchmarks `verifier_factory` + `verify` of one provider on one fixed signature, after
/// checking that the signature verifies and a tampered one does not (so the error path is
/// never what gets measured).
fn bench_backend(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: &str,
    provider: &'static CryptoProvider,
    alg: jsonwebtoken::Algorithm,
    key: &DecodingKey,
    message: &[u8],
    signature: &Vec<u8>,
) {
    let verify = |msg: &[u8], sig: &Vec<u8>| {
        (provider.verifier_factory)(&alg, key)
            .expect("verifier")
            .verify(msg, sig)
            .is_ok()
    };
    assert!(verify(message, signature), "{id}: signature must verify");
    let mut tampered = signature.clone();
    tampered[0] ^= 1;
    assert!(
        !verify(message, &tampered),
        "{id}: tampered signature must fail"
    );
    group.bench_function(id, |b| {
        b.iter(|| {
            let verifier =
                (provider.verifier_factory)(black_box(&alg), black_box(key)).expect("verifier");
            black_box(verifier.verify(black_box(message), black_box(signature))).is_ok()
        });
    });
}

/// 1. jsonwebtoken's two providers, same key, same signature, adjacent in one run.
fn backend(c: &mut Criterion) {
    let mut group = c.benchmark_group("backend");
    configure(&mut group);
    for alg in BACKEND_ALGS {
        let case = Case::new(alg);
        let jwt_alg = case.jwt_alg();
        // A realistic signing input: the header.payload of the token the other groups use.
        let token = case.token();
        let (message, _) = token.rsplit_once('.').expect("compact JWS");
        let signature = (aws_lc::DEFAULT_PROVIDER.signer_factory)(&jwt_alg, &case.encoding_key())
            .expect("signer")
            .try_sign(message.as_bytes())
            .expect("signature");
        let key = case.decoding_key();
        for (backend, provider) in PROVIDERS {
            let id = format!("{}/{backend}", case.name());
            bench_backend(
                &mut group,
                &id,
                provider,
                jwt_alg,
                &key,
                message.as_bytes(),
                &signature,
            );
        }
        if alg == Algorithm::RS256 {
            // The same key as PKCS#1 DER (what `DecodingKey::from_rsa_pem` gives), to show
            // whether the key form matters: the providers parse it on every verify.
            let der = DecodingKey::from_rsa_pem(&case.public).expect("rsa pem");
            for (backend, provider) in PROVIDERS {
                let id = format!("RS256-pkcs1-der/{backend}");
                bench_backend(
                    &mut group,
                    &id,
                    provider,
                    jwt_alg,
                    &der,
                    message.as_bytes(),
                    &signature,
                );
            }
        }
    }
    group.finish();
}

/// 2. `verify_with_key` with the compiled-in backend, and the raw `jsonwebtoken::decode` floor.
fn verify(c: &mut Criterion) {
    // jsonwebtoken::decode uses the process default provider, which panics when both of its
    // backends are compiled in (as in this bench): install the one this crate uses.
    let _ = CryptoProvider::install_default(compiled_provider());
    let mut group = c.benchmark_group("verify");
    configure(&mut group);
    for alg in BACKEND_ALGS {
        let case = Case::new(alg);
        let token = case.token();
        let key = case.verifying_key();
        let validation = case.validation();
        let ctx = verify_with_key(&validation, &token, &key).expect("token must verify");
        assert_eq!(ctx.subject(), Some("user-123"));
        group.bench_function(
            format!("{}/gatekeeper/{CRYPTO_BACKEND}", case.name()),
            |b| {
                b.iter(|| {
                    verify_with_key(
                        black_box(&validation),
                        black_box(token.as_str()),
                        black_box(&key),
                    )
                    .expect("verify")
                });
            },
        );

        if DECODE_ALGS.contains(&alg) {
            let decoding_key = case.decoding_key();
            let mut jwt_validation = jsonwebtoken::Validation::new(case.jwt_alg());
            jwt_validation.set_issuer(&[case.issuer]);
            jwt_validation.set_audience(&[AUDIENCE]);
            jwt_validation.set_required_spec_claims(&["exp", "iss", "aud"]);
            let decode = || {
                jsonwebtoken::decode::<Map<String, Value>>(
                    black_box(token.as_str()),
                    black_box(&decoding_key),
                    black_box(&jwt_validation),
                )
            };
            let data = decode().expect("jsonwebtoken::decode must accept the token");
            assert_eq!(data.claims["sub"], "user-123");
            group.bench_function(
                format!("{}/jsonwebtoken-decode/{CRYPTO_BACKEND}", case.name()),
                |b| b.iter(|| decode().expect("decode")),
            );
        }
    }
    group.finish();
}

/// 3. The full stack around a trivial service, one request per iteration.
fn stack(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    let mut group = c.benchmark_group("stack");
    configure(&mut group);
    for alg in DECODE_ALGS {
        let case = Case::new(alg);
        let token = case.token();
        let authenticator =
            JwtAuthenticator::new(StaticKeys::new([case.verifying_key()]), case.validation())
                .expect("authenticator");
        let gateway = ServiceBuilder::new()
            .layer(AuthenticateLayer::new(authenticator))
            .layer(AuthorizeLayer::new(roles_any(["clerk"])))
            .layer(ContextPropagationLayer::new())
            .service_fn(|req: Request<Full<Bytes>>| async move {
                let user = req
                    .headers()
                    .get("x-user-id")
                    .map(|v| Bytes::copy_from_slice(v.as_bytes()))
                    .unwrap_or_default();
                Ok::<_, Infallible>(Response::new(Full::new(user)))
            });
        let bearer = format!("Bearer {token}");
        let request = || {
            Request::builder()
                .header("authorization", bearer.as_str())
                .body(Full::default())
                .expect("request")
        };
        let response = rt
            .block_on(gateway.clone().oneshot(request()))
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK, "{}", case.name());
        group.bench_function(format!("{}/{CRYPTO_BACKEND}", case.name()), |b| {
            b.iter_batched(
                || (gateway.clone(), request()),
                |(svc, req)| rt.block_on(svc.oneshot(req)).expect("infallible"),
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn all(c: &mut Criterion) {
    backend(c);
    verify(c);
    stack(c);
}

criterion_group!(benches, all);
criterion_main!(benches);
