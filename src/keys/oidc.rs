//! OpenID Connect discovery as a [`JwksFetcher`]: reads `issuer` and `jwks_uri` from
//! `/.well-known/openid-configuration`, then fetches the JWKS.

use std::sync::{Mutex, PoisonError};

use super::fetch::{FetchError, FetchFuture, JwksDocument, JwksFetcher};
use super::http::{Http, check_url};

const WELL_KNOWN: &str = "/.well-known/openid-configuration";

/// The discovery URL for `url`: itself when it already ends with the well-known path, else
/// the path appended (for an issuer base URL).
pub(crate) fn well_known_url(url: &str) -> String {
    if url.ends_with(WELL_KNOWN) {
        url.to_owned()
    } else {
        format!("{}{WELL_KNOWN}", url.trim_end_matches('/'))
    }
}

#[derive(Debug)]
pub(crate) struct Discovery {
    http: Http,
    url: String,
    issuer: String,
    /// The `jwks_uri` from the last successful discovery; cleared when a JWKS fetch fails,
    /// so the next attempt discovers again.
    jwks_uri: Mutex<Option<String>>,
}

impl Discovery {
    pub(crate) fn new(http: Http, url: String, issuer: String) -> Self {
        Discovery {
            http,
            url,
            issuer,
            jwks_uri: Mutex::new(None),
        }
    }

    async fn discover(&self) -> Result<String, FetchError> {
        let (body, _) = self.http.get_json(&self.url).await?;
        provider_jwks_uri(&self.url, &body, &self.issuer)
    }
}

/// Reads an OpenID provider configuration (`/.well-known/openid-configuration`, fetched from
/// `url`) and returns its `jwks_uri`, after the checks OpenID Connect Discovery §4.3 asks
/// for: the document's `issuer` must equal `expected_issuer` exactly, and `jwks_uri` must be
/// a usable URL (https when the configuration itself came over https).
///
/// ```
/// use tower_gatekeeper::keys::provider_jwks_uri;
///
/// let url = "https://idp.example.test/.well-known/openid-configuration";
/// let doc = br#"{"issuer":"https://idp.example.test","jwks_uri":"https://idp.example.test/jwks"}"#;
/// assert_eq!(provider_jwks_uri(url, doc, "https://idp.example.test").unwrap(), "https://idp.example.test/jwks");
/// assert!(provider_jwks_uri(url, doc, "https://other.example.test").is_err());
/// ```
///
/// # Errors
///
/// [`FetchError::NotJson`], [`FetchError::IssuerMismatch`] or [`FetchError::WrongContent`].
pub fn provider_jwks_uri(
    url: &str,
    body: &[u8],
    expected_issuer: &str,
) -> Result<String, FetchError> {
    let doc: serde_json::Value = serde_json::from_slice(body).map_err(|e| FetchError::NotJson {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    let wrong = |reason: &str| FetchError::WrongContent {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let issuer = doc
        .get("issuer")
        .and_then(|v| v.as_str())
        .ok_or_else(|| wrong("not an OpenID provider configuration: no \"issuer\""))?;
    if issuer != expected_issuer {
        return Err(FetchError::IssuerMismatch {
            url: url.to_owned(),
            expected: expected_issuer.to_owned(),
            found: issuer.to_owned(),
        });
    }
    let jwks_uri = doc
        .get("jwks_uri")
        .and_then(|v| v.as_str())
        .ok_or_else(|| wrong("the provider configuration has no \"jwks_uri\""))?;
    check_url("jwks_uri", jwks_uri).map_err(|e| wrong(&e.to_string()))?;
    if url.starts_with("https:") && !jwks_uri.starts_with("https:") {
        return Err(wrong(
            "the provider configuration was fetched over https but its jwks_uri is not https",
        ));
    }
    Ok(jwks_uri.to_owned())
}

impl JwksFetcher for Discovery {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let cached = self
                .jwks_uri
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let jwks_uri = match cached {
                Some(uri) => uri,
                None => self.discover().await?,
            };
            let fetched = async {
                let (body, max_age) = self.http.get_json(&jwks_uri).await?;
                Ok(JwksDocument::from_json(&jwks_uri, &body)?.max_age(max_age))
            }
            .await;
            *self.jwks_uri.lock().unwrap_or_else(PoisonError::into_inner) =
                fetched.is_ok().then_some(jwks_uri);
            fetched
        })
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_path_is_appended_once() {
        assert_eq!(
            well_known_url("http://idp.test/realms/a/"),
            "http://idp.test/realms/a/.well-known/openid-configuration"
        );
        assert_eq!(
            well_known_url("http://idp.test/.well-known/openid-configuration"),
            "http://idp.test/.well-known/openid-configuration"
        );
    }
}
