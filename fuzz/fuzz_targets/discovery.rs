//! OpenID provider configurations and fetched JWKS documents on arbitrary input, parsed as
//! the remote key source parses them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_gatekeeper::AlgorithmSet;
use tower_gatekeeper::keys::{JwksDocument, provider_jwks_uri};

const ISSUER: &str = "https://idp.example.test";

fuzz_target!(|data: &[u8]| {
    for url in [
        "https://idp.example.test/.well-known/openid-configuration",
        "http://127.0.0.1:9/.well-known/openid-configuration",
    ] {
        if let Ok(jwks_uri) = provider_jwks_uri(url, data, ISSUER) {
            // Accepted only with the exact issuer and the jwks_uri it returned.
            let doc: serde_json::Value = serde_json::from_slice(data).unwrap();
            assert_eq!(doc["issuer"].as_str(), Some(ISSUER));
            assert_eq!(doc["jwks_uri"].as_str(), Some(jwks_uri.as_str()));
            if url.starts_with("https:") {
                assert!(jwks_uri.starts_with("https:"), "https downgraded");
            }
        }
    }
    if let Ok(doc) = JwksDocument::from_json("https://idp.example.test/jwks", data)
        && let Ok((set, _skipped)) = doc.usable_keys()
    {
        assert!(!set.keys().is_empty());
        for key in set.keys() {
            // Bound to something, and never an HMAC secret from a public document.
            assert!(!key.algorithms().is_empty());
            assert!(key.algorithms().intersection(AlgorithmSet::HMAC).is_empty());
        }
    }
});
