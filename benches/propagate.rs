//! The cost of context propagation per request (criterion 0.8): the
//! `ContextPropagationLayer` in front of a no-op service, with plain headers only and with a
//! signed context, and the downstream `TrustedContextLayer` verifying that context.
//!
//! ```sh
//! cargo bench --bench propagate -- --noplot
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Request, Response};
use tower::{Service, ServiceBuilder};
use tower_gatekeeper::keys::{SigningKey, StaticKeys};
use tower_gatekeeper::propagate::SignedContextValidation;
use tower_gatekeeper::{AuthContext, ContextPropagationLayer, CredentialKind, TrustedContextLayer};

/// Polls a future that the services here complete without waiting.
fn now<F: Future>(fut: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(fut).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the benchmarked services never wait"),
    }
}

fn caller() -> AuthContext {
    AuthContext::builder(CredentialKind::Jwt)
        .subject("user-1")
        .issuer("https://idp.example.test")
        .roles(["clerk", "admin"])
        .scopes(["orders:read", "orders:write"])
        .tenant("acme")
        .claim("email", "u@example.test")
        .build()
}

/// A request as a client sends it: a token, a request id, a spoofed header, ordinary headers.
fn request(ctx: &AuthContext) -> Request<()> {
    let mut req = Request::builder()
        .uri("/orders/42")
        .header(
            "authorization",
            "Bearer eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1In0.c2ln",
        )
        .header("x-request-id", "req-1234")
        .header("x_user_id", "spoofed")
        .header("accept", "application/json")
        .header("user-agent", "bench")
        .body(())
        .unwrap();
    req.extensions_mut().insert(ctx.clone());
    req
}

fn bench(c: &mut Criterion) {
    let ctx = caller();
    let key = SigningKey::generate_ed25519().unwrap().with_kid("ctx-1");
    let mut group = c.benchmark_group("propagate");

    let mut none =
        tower::service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
    group.bench_function("baseline_no_layer", |b| {
        b.iter(|| now(none.call(request(&ctx))).unwrap())
    });

    let mut plain = ServiceBuilder::new()
        .layer(
            ContextPropagationLayer::builder()
                .forward_claims(["email"])
                .build()
                .unwrap(),
        )
        .service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
    group.bench_function("plain_headers", |b| {
        b.iter(|| now(plain.call(request(&ctx))).unwrap())
    });

    let signing = ContextPropagationLayer::builder()
        .forward_claims(["email"])
        .sign_context(key.clone())
        .context_audience("orders-svc")
        .build()
        .unwrap();
    let mut signed = ServiceBuilder::new()
        .layer(signing.clone())
        .service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
    group.bench_function("signed_eddsa", |b| {
        b.iter(|| now(signed.call(request(&ctx))).unwrap())
    });

    // The downstream side: verify the signed context and rebuild the AuthContext.
    let (tx, rx) = std::sync::mpsc::channel::<HeaderMap>();
    let mut capture = ServiceBuilder::new()
        .layer(signing)
        .service_fn(move |req: Request<()>| {
            tx.send(req.headers().clone()).unwrap();
            async { Ok::<_, Infallible>(Response::new(())) }
        });
    now(capture.call(request(&ctx))).unwrap();
    let forwarded = rx.recv().unwrap();
    let mut trusted = ServiceBuilder::new()
        .layer(
            TrustedContextLayer::signed(
                StaticKeys::new([key.verifying_key().clone()]),
                SignedContextValidation::new().audience("orders-svc"),
            )
            .unwrap(),
        )
        .service_fn(|req: Request<()>| async move {
            assert!(req.extensions().get::<AuthContext>().is_some());
            Ok::<_, Infallible>(Response::new(()))
        });
    group.bench_function("trusted_verify_eddsa", |b| {
        b.iter(|| {
            let mut req = Request::new(());
            *req.headers_mut() = forwarded.clone();
            let response = now(trusted.call(req)).unwrap();
            assert_eq!(response.status(), 200);
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
