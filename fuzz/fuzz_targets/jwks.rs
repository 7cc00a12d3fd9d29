//! JWKS documents and single JWKs on arbitrary input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_gatekeeper::keys::{KeySet, VerifyingKey};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(set) = KeySet::from_jwks_str(text) {
        for key in set.keys() {
            // Every accepted key is bound to at least one algorithm.
            assert!(!key.algorithms().is_empty());
        }
    }
    let _ = VerifyingKey::from_jwk_str(text);
});
