//! Key sets shaped like identity providers publish them (minted by
//! `tests/fixtures/generate_keysets.py` with PyJWT + cryptography) load under the same
//! tolerant rules from a file, a JWKS URL and OIDC discovery: keys the library cannot use are
//! skipped with a warning naming their `kid` and the reason, the usable ones verify tokens,
//! and a set without a usable key is refused with every reason.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tower_gatekeeper::JwtAuthenticator;
use tower_gatekeeper::jwt::Validation;
use tower_gatekeeper::keys::{KeySet, KeySource, StaticKeys};

fn keysets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keysets")
}

struct Tokens {
    issuer: String,
    audience: String,
    keycloak_rs256: String,
}

fn tokens() -> Tokens {
    let doc: Value =
        serde_json::from_slice(&std::fs::read(keysets().join("tokens.json")).unwrap()).unwrap();
    let token = doc["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "keycloak_rs256")
        .unwrap();
    Tokens {
        issuer: doc["issuer"].as_str().unwrap().to_owned(),
        audience: doc["audience"].as_str().unwrap().to_owned(),
        keycloak_rs256: token["token"].as_str().unwrap().to_owned(),
    }
}

/// The keys of a Keycloak realm's set that no verifier may use, and a word of each reason.
/// Its ES512 (P-521) key is left out of the assertions: whether it is usable depends on the
/// algorithms the crate supports, not on the tolerant rules.
const REALM_SKIPPED: [(&str, &str); 2] = [("kc-rsa-oaep", "\"enc\""), ("legacy-1024", "2048")];

/// Every key of `unusable.jwks.json` and a word of the reason it is refused.
const UNUSABLE: [(&str, &str); 4] = [
    ("only-enc", "\"enc\""),
    ("only-1024", "2048"),
    ("only-secp256k1", "secp256k1"),
    ("leaked-private", "private key material"),
];

fn kids(set: &KeySet) -> Vec<String> {
    set.keys()
        .iter()
        .map(|k| k.kid().unwrap_or("<none>").to_owned())
        .collect()
}

/// A `MakeWriter` into a shared buffer, to read what was logged.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + 'static {
        tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .finish()
    }
}

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

/// One warning line per skipped key, naming its `kid` and reason.
fn assert_warned(log: &str, skipped: &[(&str, &str)]) {
    for (kid, reason) in skipped {
        let line = log
            .lines()
            .find(|l| l.contains("JWKS key skipped") && l.contains(&format!("kid={kid:?}")))
            .unwrap_or_else(|| panic!("no warning for {kid} in:\n{log}"));
        assert!(line.contains("WARN") && line.contains(reason), "{line}");
    }
}

async fn assert_verifies<K: KeySource>(keys: K) {
    let tokens = tokens();
    let auth = JwtAuthenticator::new(
        keys,
        Validation::new(&tokens.issuer).audiences([&tokens.audience]),
    )
    .unwrap();
    auth.ready().await.unwrap();
    let ctx = auth.verify(&tokens.keycloak_rs256).await.unwrap();
    assert_eq!(ctx.subject(), Some("f3b2c1d0-user"));
}

#[tokio::test]
async fn a_keycloak_realm_file_loads_with_its_signature_key_usable() {
    let capture = Capture::default();
    let keys = tracing::subscriber::with_default(capture.subscriber(), || {
        StaticKeys::from_jwks_file(keysets().join("keycloak-realm.jwks.json")).unwrap()
    });
    let loaded = kids(keys.key_set());
    assert!(loaded.iter().any(|k| k == "kc-rs256"), "{loaded:?}");
    for (kid, _) in REALM_SKIPPED {
        assert!(!loaded.iter().any(|k| k == kid), "{kid} loaded: {loaded:?}");
    }
    let log = capture.text();
    assert_warned(&log, &REALM_SKIPPED);
    assert!(log.contains("keycloak-realm.jwks.json"), "{log}");
    assert!(!log.contains("kid=\"kc-rs256\""), "{log}");
    assert_verifies(keys).await;
}

#[test]
fn a_file_with_only_unusable_keys_is_refused_naming_every_reason() {
    let error = StaticKeys::from_jwks_file(keysets().join("unusable.jwks.json"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("no usable key"), "{error}");
    for (kid, reason) in UNUSABLE {
        let part = error
            .split("; ")
            .find(|p| p.contains(&format!("kid {kid:?}")))
            .unwrap_or_else(|| panic!("{kid} not named in {error}"));
        assert!(part.contains(reason), "{kid}: {part}");
    }
}

#[cfg(feature = "remote")]
#[path = "support/http_server.rs"]
mod http_server;

#[cfg(feature = "remote")]
mod remote {
    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::Full;
    use hyper::body::Incoming;
    use tower_gatekeeper::keys::{FetchError, KeyError, RemoteJwks};

    use super::*;
    use crate::http_server;

    /// Serves `file` at `/jwks` and a discovery document naming it at the well-known path.
    async fn idp(file: &str) -> String {
        let jwks = Bytes::from(std::fs::read(keysets().join(file)).unwrap());
        let issuer = tokens().issuer;
        let base = Arc::new(Mutex::new(String::new()));
        let handler_base = Arc::clone(&base);
        let addr = http_server::serve(move |req: Request<Incoming>| {
            let jwks = jwks.clone();
            let issuer = issuer.clone();
            let base = handler_base.lock().unwrap().clone();
            async move {
                let body = match req.uri().path() {
                    "/jwks" => jwks,
                    _ => Bytes::from(
                        serde_json::json!({"issuer": issuer, "jwks_uri": format!("{base}/jwks")})
                            .to_string(),
                    ),
                };
                Response::builder()
                    .header("content-type", "application/json")
                    .body(Full::new(body))
                    .unwrap()
            }
        })
        .await;
        let url = format!("http://{addr}");
        *base.lock().unwrap() = url.clone();
        url
    }

    fn sources(base: &str) -> [(&'static str, RemoteJwks); 2] {
        let issuer = tokens().issuer;
        [
            (
                "jwks_url",
                RemoteJwks::builder(format!("{base}/jwks"))
                    .issuer(&issuer)
                    .build()
                    .unwrap(),
            ),
            (
                "discovery",
                RemoteJwks::discovery(base, &issuer).build().unwrap(),
            ),
        ]
    }

    #[tokio::test]
    async fn the_same_realm_set_served_over_http_loads_the_same_keys() {
        let file = StaticKeys::from_jwks_file(keysets().join("keycloak-realm.jwks.json")).unwrap();
        let base = idp("keycloak-realm.jwks.json").await;
        for (name, keys) in sources(&base) {
            let capture = Capture::default();
            let _guard = tracing::subscriber::set_default(capture.subscriber());
            keys.ready(None).await.unwrap();
            assert_eq!(
                kids(&keys.key_set().unwrap()),
                kids(file.key_set()),
                "{name}"
            );
            assert_warned(&capture.text(), &REALM_SKIPPED);
            assert_verifies(keys).await;
        }
    }

    #[tokio::test]
    async fn a_served_set_with_only_unusable_keys_is_refused_naming_every_reason() {
        let base = idp("unusable.jwks.json").await;
        for (name, keys) in sources(&base) {
            let error = keys.ready(None).await.unwrap_err();
            let KeyError::Fetch(FetchError::NoUsableKeys { report, .. }) = &error else {
                panic!("{name}: {error:?}");
            };
            for (kid, reason) in UNUSABLE {
                let part = report
                    .split("; ")
                    .find(|p| p.contains(&format!("kid {kid:?}")))
                    .unwrap_or_else(|| panic!("{name}: {kid} not named in {report}"));
                assert!(part.contains(reason), "{name}: {kid}: {part}");
            }
        }
    }
}
