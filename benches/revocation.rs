//! What the revocation check adds to every authenticated request.
//!
//! - `revocation/check/<n>`: `RevocationStore::check` on the facts of a context, with `n`
//!   revoked tokens and `n / 10` revoked subjects in the set (the token is not revoked: the
//!   common case, two hash lookups).
//! - `revocation/authenticate/{bare,revocable}`: an authenticator whose future is ready at
//!   once, alone and wrapped in `Revocable`: the difference is the per-request overhead.
//!
//! Run: `cargo bench --bench revocation -- --noplot`.

use std::future::{Ready, ready};
use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use futures_lite_poll::poll_ready;
use http::Request;
use tower_gatekeeper::credential::RequestHead;
use tower_gatekeeper::revocation::{
    MemoryRevocations, Revocable, Revocation, RevocationStore, TokenFacts,
};
use tower_gatekeeper::{AuthContext, Authenticator, CredentialKind, Rejection};

/// An authenticator that returns a fixed context at once (as a verified-token cache hit).
#[derive(Clone)]
struct Fixed(AuthContext);

impl Authenticator for Fixed {
    type Future = Ready<Result<AuthContext, Rejection>>;

    fn authenticate(&self, _: &RequestHead<'_>) -> Result<Self::Future, Rejection> {
        Ok(ready(Ok(self.0.clone())))
    }
}

mod futures_lite_poll {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    /// Polls a future that is expected to be ready on the first poll.
    pub(crate) fn poll_ready<F: Future>(fut: F) -> F::Output {
        let mut cx = Context::from_waker(Waker::noop());
        match pin!(fut).poll(&mut cx) {
            Poll::Ready(out) => out,
            Poll::Pending => unreachable!("the benchmark's futures are ready at once"),
        }
    }
}

fn context() -> AuthContext {
    AuthContext::builder(CredentialKind::Jwt)
        .subject("user-12345")
        .issuer("https://idp.example.test")
        .roles(["clerk"])
        .claim("jti", "4f1c2b9e-6a77-4c1e-9d0b-3f5e2a1c7d88")
        .claim("iat", 1_900_000_000u64)
        .claim("exp", 4_102_444_800u64)
        .build()
}

fn store(n: usize) -> MemoryRevocations {
    let store = MemoryRevocations::new();
    let exp = UNIX_EPOCH + Duration::from_secs(4_102_444_800);
    for i in 0..n {
        poll_ready(store.revoke(Revocation::token(format!("revoked-{i}"), exp))).unwrap();
        if i % 10 == 0 {
            poll_ready(store.revoke(Revocation::subject(format!("user-{i}"), SystemTime::now())))
                .unwrap();
        }
    }
    store
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("revocation");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let ctx = context();
    for n in [0usize, 1_000, 100_000] {
        let store = store(n);
        group.bench_function(format!("check/{n}"), |b| {
            b.iter(|| black_box(store.check(&TokenFacts::of(black_box(&ctx)))))
        });
    }

    let req = Request::new(());
    let head = RequestHead::of(&req);
    let bare = Fixed(ctx.clone());
    let revocable = Revocable::new(bare.clone(), store(100_000));
    group.bench_function("authenticate/bare", |b| {
        b.iter(|| poll_ready(bare.authenticate(black_box(&head)).unwrap()).unwrap())
    });
    group.bench_function("authenticate/revocable", |b| {
        b.iter(|| poll_ready(revocable.authenticate(black_box(&head)).unwrap()).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
