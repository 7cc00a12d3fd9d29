//! OpenID Connect discovery as a [`JwksFetcher`]: reads `issuer` and `jwks_uri` from
//! `/.well-known/openid-configuration`, then fetches the JWKS.

use std::sync::{Mutex, PoisonError};

use super::fetch::{FetchError, FetchFuture, Http, JwksDocument, JwksFetcher};

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
        let doc: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| FetchError::NotJson {
                url: self.url.clone(),
                reason: e.to_string(),
            })?;
        let wrong = |reason: &str| FetchError::WrongContent {
            url: self.url.clone(),
            reason: reason.to_owned(),
        };
        let issuer = doc
            .get("issuer")
            .and_then(|v| v.as_str())
            .ok_or_else(|| wrong("not an OpenID provider configuration: no \"issuer\""))?;
        if issuer != self.issuer {
            return Err(FetchError::IssuerMismatch {
                url: self.url.clone(),
                expected: self.issuer.clone(),
                found: issuer.to_owned(),
            });
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .ok_or_else(|| wrong("the provider configuration has no \"jwks_uri\""))?;
        super::remote::check_url("jwks_uri", jwks_uri).map_err(|e| wrong(&e.to_string()))?;
        if self.url.starts_with("https:") && !jwks_uri.starts_with("https:") {
            return Err(wrong(
                "the provider configuration was fetched over https but its jwks_uri is not https",
            ));
        }
        Ok(jwks_uri.to_owned())
    }
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
