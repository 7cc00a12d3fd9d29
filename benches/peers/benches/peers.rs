//! tower-gatekeeper next to jwt-authorizer 0.15 and axum-jwt-auth 0.6, in one run: the same
//! token and key behind an axum 0.8 `Router` with one route whose handler reads the caller's
//! subject, each library configured as its README shows. See `../README.md`.
//!
//! Ids: `peers/baseline/axum-router` (the router and handler alone), then
//! `peers/<ALG>/{jwt-authorizer,gatekeeper-cold,gatekeeper-nocache,gatekeeper-warm,axum-jwt-auth}`
//! (`cold`: a running cache that does not hold the token, so a miss, the verification and
//! the insert; `nocache`: no cache at all).

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{Request, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tower::{ServiceBuilder, ServiceExt};
use tower_gatekeeper::authenticate::{CacheConfig, CachedAuthenticator, TokenCache};
use tower_gatekeeper::authorize::AllowAll;
use tower_gatekeeper::jwt::Validation;
use tower_gatekeeper::keys::{SigningKey, StaticKeys, VerifyingKey};
use tower_gatekeeper::{
    Algorithm, AuthContext, AuthenticateLayer, AuthorizeLayer, ContextPropagationLayer,
    JwtAuthenticator,
};

const ISSUER: &str = "https://idp.example.test";
const AUDIENCE: &str = "api://orders";

fn fixture(name: &str) -> Vec<u8> {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "..",
        "tests",
        "fixtures",
        "keys",
        name,
    ]
    .iter()
    .collect();
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[derive(Debug, Clone, Deserialize)]
struct User {
    sub: String,
}

/// Polls once with a no-op waker (inside the runtime context): every stack here is ready.
fn now<F: Future>(fut: F) -> F::Output {
    match pin!(fut).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the benchmarked stack must not wait"),
    }
}

fn request(bearer: &str) -> Request<Body> {
    Request::builder()
        .uri("/orders")
        .header("authorization", bearer)
        .body(Body::empty())
        .expect("request")
}

fn request07(bearer: &str) -> Request<axum07::body::Body> {
    Request::builder()
        .uri("/orders")
        .header("authorization", bearer)
        .body(axum07::body::Body::empty())
        .expect("request")
}

struct Case {
    alg: Algorithm,
    jwt_alg: jsonwebtoken_10::Algorithm,
    /// PEM public key, or the HMAC secret.
    public: Vec<u8>,
    signing: SigningKey,
    verifying: VerifyingKey,
}

impl Case {
    fn new(alg: Algorithm) -> Self {
        let (base, kid) = match alg {
            Algorithm::RS256 => ("rsa-1", "rsa-1"),
            Algorithm::ES256 => ("ec256-1", "ec256-1"),
            Algorithm::EdDSA => ("ed-1", "ed-1"),
            _ => ("hmac", "hmac"),
        };
        let (public, signing, verifying) = if alg.is_hmac() {
            let secret = fixture("hmac.secret");
            let s = SigningKey::hmac(alg, &secret).unwrap();
            let v = VerifyingKey::hmac(&secret).unwrap();
            (secret, s, v)
        } else {
            let public = fixture(&format!("{base}.pub.pem"));
            let s = SigningKey::from_pem(alg, &fixture(&format!("{base}.key.pem"))).unwrap();
            let v = VerifyingKey::from_pem(&public).unwrap();
            (public, s, v)
        };
        Case {
            alg,
            jwt_alg: alg.as_str().parse().unwrap(),
            public,
            signing: signing.with_kid(kid),
            verifying: verifying.with_kid(kid),
        }
    }

    fn token(&self) -> String {
        self.signing
            .sign(&json!({
                "iss": ISSUER, "aud": AUDIENCE, "sub": "user-123", "roles": ["clerk"],
                "scope": "orders:read orders:write", "tenant_id": "acme",
                "iat": 1_700_000_000u64, "nbf": 1_700_000_000u64, "exp": 4_102_444_800u64,
            }))
            .unwrap()
    }

    /// Ours in a router, with a verified-token cache (also returned) or without.
    fn gatekeeper(&self, cache: bool) -> (Router, Option<TokenCache>) {
        let jwt = JwtAuthenticator::new(
            StaticKeys::new([self.verifying.clone()]),
            Validation::new(ISSUER).audiences([AUDIENCE]),
        )
        .unwrap();
        let handler = get(|req: Request<Body>| async move {
            let ctx = req.extensions().get::<AuthContext>().expect("context");
            ctx.subject().unwrap_or_default().to_owned()
        });
        let propagate = ContextPropagationLayer::new();
        let authorize = AuthorizeLayer::new(AllowAll);
        if cache {
            let auth = CachedAuthenticator::new(jwt, CacheConfig::default()).unwrap();
            let tokens = auth.cache().clone();
            let router = Router::new().route("/orders", handler).route_layer(
                ServiceBuilder::new()
                    .layer(AuthenticateLayer::new(auth))
                    .layer(authorize)
                    .layer(propagate),
            );
            (router, Some(tokens))
        } else {
            let router = Router::new().route("/orders", handler).route_layer(
                ServiceBuilder::new()
                    .layer(AuthenticateLayer::new(jwt))
                    .layer(authorize)
                    .layer(propagate),
            );
            (router, None)
        }
    }

    /// jwt-authorizer 0.15 needs axum 0.7: its own router, same request.
    async fn jwt_authorizer(&self) -> axum07::Router {
        use jwt_authorizer::{IntoLayer, JwtAuthorizer, JwtClaims};
        let text = std::str::from_utf8(&self.public).unwrap();
        let builder = match self.alg {
            Algorithm::RS256 => JwtAuthorizer::<User>::from_rsa_pem_text(text),
            Algorithm::ES256 => JwtAuthorizer::<User>::from_ec_pem_text(text),
            Algorithm::EdDSA => JwtAuthorizer::<User>::from_ed_pem_text(text),
            _ => JwtAuthorizer::<User>::from_secret(text),
        };
        let auth = builder
            .validation(
                jwt_authorizer::Validation::new()
                    .iss(&[ISSUER])
                    .aud(&[AUDIENCE]),
            )
            .build()
            .await
            .unwrap();
        axum07::Router::new()
            .route(
                "/orders",
                axum07::routing::get(|JwtClaims(user): JwtClaims<User>| async move { user.sub }),
            )
            .layer(auth.into_layer())
    }

    fn axum_jwt_auth(&self) -> Router {
        use axum_jwt_auth::{Claims, Decoder, LocalDecoder};
        use jsonwebtoken_10::DecodingKey;
        let key = match self.alg {
            Algorithm::RS256 => DecodingKey::from_rsa_pem(&self.public),
            Algorithm::ES256 => DecodingKey::from_ec_pem(&self.public),
            Algorithm::EdDSA => DecodingKey::from_ed_pem(&self.public),
            _ => Ok(DecodingKey::from_secret(&self.public)),
        }
        .unwrap();
        let mut validation = jsonwebtoken_10::Validation::new(self.jwt_alg);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        let decoder: Decoder<User> = Arc::new(
            LocalDecoder::builder()
                .keys(vec![key])
                .validation(validation)
                .build()
                .unwrap(),
        );
        Router::new()
            .route(
                "/orders",
                get(|user: Claims<User>| async move { user.claims.sub }),
            )
            .with_state(decoder)
    }
}

fn peers(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _enter = rt.enter();
    let mut group = c.benchmark_group("peers");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    // What the router and handler alone cost, without any authentication.
    let bare = Router::new().route(
        "/orders",
        get(|req: Request<Body>| async move { req.uri().path().to_owned() }),
    );
    group.bench_function("baseline/axum-router", |b| {
        b.iter_batched(
            || (bare.clone(), request("Bearer x")),
            |(svc, req)| -> Result<_, Infallible> { now(svc.oneshot(req)) },
            BatchSize::SmallInput,
        );
    });
    for alg in [
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
        Algorithm::HS256,
    ] {
        let case = Case::new(alg);
        // One token for every contender (ECDSA signatures differ at each signing).
        let token = case.token();
        let bearer = format!("Bearer {token}");
        let authorizer = rt.block_on(case.jwt_authorizer());
        let response = rt
            .block_on(authorizer.clone().oneshot(request07(&bearer)))
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "jwt-authorizer {alg}");
        group.bench_function(format!("{alg}/jwt-authorizer"), |b| {
            b.iter_batched(
                || (authorizer.clone(), request07(&bearer)),
                |(svc, req)| -> Result<_, Infallible> { now(svc.oneshot(req)) },
                BatchSize::SmallInput,
            );
        });
        // Cold: a running cache that does not hold the token (its entry is dropped before
        // every iteration, untimed; `PerIteration` times each iteration alone).
        let (cold, tokens) = case.gatekeeper(true);
        let tokens = tokens.expect("cache");
        let response = rt.block_on(cold.clone().oneshot(request(&bearer))).unwrap();
        assert_eq!(response.status(), StatusCode::OK, "gatekeeper-cold {alg}");
        group.bench_function(format!("{alg}/gatekeeper-cold"), |b| {
            b.iter_batched(
                || {
                    tokens.invalidate(&token);
                    (cold.clone(), request(&bearer))
                },
                |(svc, req)| -> Result<_, Infallible> { now(svc.oneshot(req)) },
                BatchSize::PerIteration,
            );
        });
        let routers = [
            ("gatekeeper-nocache", case.gatekeeper(false).0),
            ("gatekeeper-warm", case.gatekeeper(true).0),
            ("axum-jwt-auth", case.axum_jwt_auth()),
        ];
        for (name, router) in routers {
            let response = rt
                .block_on(router.clone().oneshot(request(&bearer)))
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{name} {alg}");
            group.bench_function(format!("{alg}/{name}"), |b| {
                b.iter_batched(
                    || (router.clone(), request(&bearer)),
                    |(svc, req)| -> Result<_, Infallible> { now(svc.oneshot(req)) },
                    BatchSize::SmallInput,
                );
            });
        }
    }
    group.finish();
}

criterion_group!(benches, peers);
criterion_main!(benches);
