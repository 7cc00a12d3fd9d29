//! Token verification (and the `explain` walk) on arbitrary bytes, with the real fixture keys
//! (RSA, EC, Ed25519 JWKS and an HMAC secret) configured.
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use tower_gatekeeper::JwtAuthenticator;
use tower_gatekeeper::jwt::Validation;
use tower_gatekeeper::keys::StaticKeys;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/keys/");

fn auth() -> &'static JwtAuthenticator<StaticKeys> {
    static AUTH: OnceLock<JwtAuthenticator<StaticKeys>> = OnceLock::new();
    AUTH.get_or_init(|| {
        let jwks = StaticKeys::from_jwks_file(format!("{FIXTURES}jwks.json")).unwrap();
        let hmac = StaticKeys::from_hmac_secret_file(format!("{FIXTURES}hmac.secret")).unwrap();
        JwtAuthenticator::new(
            jwks,
            Validation::new("https://idp.example.test").audiences(["api://orders"]),
        )
        .unwrap()
        .with_issuer(
            hmac,
            Validation::new("https://hmac.example.test").audiences(["api://orders"]),
        )
        .unwrap()
    })
}

/// Static keys answer at once: one poll finishes the future.
fn now<F: Future>(fut: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(fut).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("static keys never wait"),
    }
}

fuzz_target!(|data: &[u8]| {
    let token = String::from_utf8_lossy(data);
    let verdict = now(auth().verify(&token));
    let report = now(tower_gatekeeper::explain::explain(auth(), &token));
    assert_eq!(
        verdict.is_ok(),
        report.accepted(),
        "explain disagrees with verify"
    );
    // Descriptions are fixed texts (without dots): a dotted token can never be in one. (An
    // undotted input such as "malformed toke" is legitimately a substring of one.)
    if let Err(rejection) = verdict
        && token.len() >= 8
        && token.contains('.')
    {
        assert!(!rejection.description().contains(&*token));
    }
});
