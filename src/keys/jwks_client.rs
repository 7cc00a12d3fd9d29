//! jwks-client-rs as a fetcher under our cache (feature `jwks-client-rs`).

use std::fmt;

use jwks_client_rs::JsonWebKey;
use jwks_client_rs::source::JwksSource;
use serde_json::{Map, Value, json};

use super::fetch::{FetchError, FetchFuture, JwksDocument, JwksFetcher};

/// A jwks-client-rs [`JwksSource`] (e.g. its `WebSource`) as a [`JwksFetcher`], so a team
/// that already configures jwks-client-rs can keep its fetcher while
/// [`RemoteJwks`](crate::keys::RemoteJwks) does the caching, throttling and key rules.
///
/// Only the fetch is used: jwks-client-rs's own cache is bypassed, because it refetches the
/// whole set under a write lock for every unknown `kid`, never checks `iss`, and fails the
/// whole set on one odd key (see the README). Two limits of the source remain: it rejects
/// a set holding any key without `kid` or of a type it does not know (so the tolerant parsing
/// cannot help there), and it has no response size limit.
///
/// ```no_run
/// use jwks_client_rs::source::WebSource;
/// use tower_gatekeeper::keys::{JwksClientFetcher, RemoteJwks};
///
/// let source = WebSource::builder()
///     .build("http://127.0.0.1:9000/jwks".parse().unwrap())
///     .unwrap();
/// let keys = RemoteJwks::with_fetcher(JwksClientFetcher::new(source, "idp jwks"))
///     .issuer("https://idp.example.test")
///     .build()
///     .unwrap();
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "jwks-client-rs")))]
pub struct JwksClientFetcher<S> {
    source: S,
    label: String,
}

impl<S> JwksClientFetcher<S> {
    /// Wraps `source`; `label` names it in logs and errors (e.g. its URL).
    pub fn new(source: S, label: impl Into<String>) -> Self {
        JwksClientFetcher {
            source,
            label: label.into(),
        }
    }
}

impl<S> fmt::Debug for JwksClientFetcher<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwksClientFetcher")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl<S> JwksFetcher for JwksClientFetcher<S>
where
    S: JwksSource + Send + Sync + 'static,
{
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let set = self
                .source
                .fetch_keys()
                .await
                .map_err(|e| FetchError::Other(format!("{}: {e}", self.label)))?;
            Ok(JwksDocument::new(set.keys().iter().map(to_jwk).collect()))
        })
    }

    fn describe(&self) -> String {
        self.label.clone()
    }
}

/// jwks-client-rs's key as a JWK JSON value, for our own parser.
fn to_jwk(key: &JsonWebKey) -> Value {
    let mut jwk = match key {
        JsonWebKey::Rsa(rsa) => {
            let mut jwk = json!({"kty": "RSA", "n": rsa.modulus(), "e": rsa.exponent()});
            if let Some(use_) = rsa.r#use() {
                // `Use` is not exported by jwks-client-rs; its Debug names the variant.
                jwk["use"] = Value::from(format!("{use_:?}").to_ascii_lowercase());
            }
            jwk
        }
        JsonWebKey::Ec(ec) => json!({"kty": "EC", "crv": ec.curve(), "x": ec.x(), "y": ec.y()}),
        JsonWebKey::Okp(okp) => json!({"kty": "OKP", "crv": okp.curve(), "x": okp.x()}),
    };
    let map: &mut Map<String, Value> = jwk.as_object_mut().expect("built as an object");
    map.insert("kid".to_owned(), Value::from(key.key_id()));
    if let Some(alg) = key.alg() {
        map.insert("alg".to_owned(), Value::from(alg));
    }
    jwk
}
