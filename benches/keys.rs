//! The cost of a cached key lookup: `RemoteJwks` (lock-free snapshot) next to `StaticKeys`.
//!
//! `cargo bench --bench keys --features remote`

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::Value;
use tower_gatekeeper::Algorithm;
use tower_gatekeeper::keys::{
    FetchFuture, JwksDocument, JwksFetcher, KeyQuery, KeySource, RemoteJwks, StaticKeys,
};

#[derive(Debug)]
struct Fixed(Vec<Value>);

impl JwksFetcher for Fixed {
    fn fetch(&self) -> FetchFuture<'_> {
        let keys = self.0.clone();
        Box::pin(async move { Ok(JwksDocument::new(keys)) })
    }
    fn describe(&self) -> String {
        "fixture".into()
    }
}

fn poll_ready<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a cached lookup must be ready at once"),
    }
}

fn lookups(c: &mut Criterion) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/keys/jwks.json"
    ))
    .unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let keys = doc["keys"].as_array().unwrap().clone();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let remote = RemoteJwks::with_fetcher(Fixed(keys))
        .issuer("https://idp.example.test")
        .build()
        .unwrap();
    runtime.block_on(async { remote.ready(None).await.unwrap() });
    let statics = StaticKeys::from_jwks_str(&text).unwrap();
    let query = KeyQuery::new(
        Some("https://idp.example.test"),
        Some("ed-1"),
        Algorithm::EdDSA,
    );

    let mut group = c.benchmark_group("cached key lookup");
    group.bench_function("RemoteJwks (4 keys, hit)", |b| {
        b.iter(|| poll_ready(remote.key(black_box(&query))).unwrap())
    });
    group.bench_function("StaticKeys (4 keys, hit)", |b| {
        b.iter(|| poll_ready(statics.key(black_box(&query))).unwrap())
    });
    group.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
