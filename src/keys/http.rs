//! The HTTP side of key fetching: the URL rules ([`check_url`]), the client shared by the
//! JWKS and discovery fetchers ([`Http`]: timeouts, no redirects, JSON only, a size limit)
//! and the plain JWKS-over-HTTP fetcher ([`HttpJwks`]).

use std::time::Duration;

use super::fetch::{FetchError, FetchFuture, JwksDocument, JwksFetcher};
use crate::config_error::ConfigError;

/// Checks that `url` (named `what` in the error) is an `http://` URL, or an `https://` one
/// when the `rustls` feature is on.
pub(crate) fn check_url(what: &str, url: &str) -> Result<(), ConfigError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ConfigError::invalid(format!("the {what} {url:?} is not a URL: {e}")))?;
    match parsed.scheme() {
        "http" => Ok(()),
        "https" if cfg!(feature = "rustls") => Ok(()),
        "https" => Err(ConfigError::invalid(format!(
            "the {what} {url:?} is https, which needs the `rustls` feature of tower-gatekeeper"
        ))),
        other => Err(ConfigError::invalid(format!(
            "the {what} {url:?} has scheme {other:?}; use http:// or https://"
        ))),
    }
}

/// The HTTP client shared by the built-in fetchers: timeouts, no redirects, a size limit.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    max_bytes: usize,
}

impl Http {
    pub(crate) fn new(timeout: Duration, max_bytes: usize) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tower-gatekeeper/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Http { client, max_bytes })
    }

    /// GETs `url`, checks status, content type and size, and returns the JSON body and
    /// the `Cache-Control: max-age`.
    pub(crate) async fn get_json(
        &self,
        url: &str,
    ) -> Result<(Vec<u8>, Option<Duration>), FetchError> {
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                FetchError::Timeout {
                    url: url.to_owned(),
                }
            } else {
                FetchError::Unreachable {
                    url: url.to_owned(),
                    reason: error_chain(&e),
                }
            }
        };
        let mut response = self
            .client
            .get(url)
            .header(
                reqwest::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status {
                url: url.to_owned(),
                status: status.as_u16(),
            });
        }
        if let Some(ct) = response.headers().get(reqwest::header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
            let essence = ct.split(';').next().unwrap_or("").trim();
            if !(essence == "application/json" || essence.ends_with("+json")) {
                return Err(FetchError::NotJson {
                    url: url.to_owned(),
                    reason: format!("content type is {essence:?}, expected application/json"),
                });
            }
        }
        let too_large = || FetchError::TooLarge {
            url: url.to_owned(),
            limit: self.max_bytes,
        };
        if response
            .content_length()
            .is_some_and(|len| len > self.max_bytes as u64)
        {
            return Err(too_large());
        }
        let max_age = response
            .headers()
            .get_all(reqwest::header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(parse_max_age);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, max_age))
    }
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// How long a response may be cached per one `Cache-Control` value: `max-age=N`, or zero
/// for `no-cache`/`no-store` (the cache's lower bound then applies).
pub(crate) fn parse_max_age(value: &str) -> Option<Duration> {
    let mut result = None;
    for directive in value.split(',') {
        let directive = directive.trim();
        let (name, arg) = match directive.split_once('=') {
            Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
            None => (directive, None),
        };
        if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store") {
            return Some(Duration::ZERO);
        }
        if name.eq_ignore_ascii_case("max-age") {
            result = arg
                .and_then(|a| a.parse::<u64>().ok())
                .map(Duration::from_secs);
        }
    }
    result
}

/// The plain JWKS-over-HTTP fetcher.
#[derive(Debug)]
pub(crate) struct HttpJwks {
    pub(crate) http: Http,
    pub(crate) url: String,
}

impl JwksFetcher for HttpJwks {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let (body, max_age) = self.http.get_json(&self.url).await?;
            Ok(JwksDocument::from_json(&self.url, &body)?.max_age(max_age))
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
    fn cache_control_max_age() {
        assert_eq!(
            parse_max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            parse_max_age("Max-Age=\"60\", must-revalidate"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_max_age("no-cache"), Some(Duration::ZERO));
        assert_eq!(parse_max_age("public"), None);
        assert_eq!(parse_max_age("max-age=soon"), None);
    }

    #[test]
    fn url_rules() {
        assert!(check_url("JWKS URL", "http://idp.test/jwks").is_ok());
        let error = check_url("JWKS URL", "ftp://idp.test/jwks").unwrap_err();
        assert!(error.to_string().contains("\"ftp\""), "{error}");
        assert!(check_url("JWKS URL", "not a url").is_err());
        assert_eq!(
            check_url("JWKS URL", "https://idp.test/jwks").is_ok(),
            cfg!(feature = "rustls")
        );
    }
}
