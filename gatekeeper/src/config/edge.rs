//! `[cors]`, `[resource_metadata]` and `[[route]] rate_limit`: their schema and checks.

use std::num::NonZeroU32;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::uri::Uri;
use http::{Method, Uri as HttpUri};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer, ExposeHeaders};

use crate::metadata::ResourceMetadata;
use crate::rate_limit::{RateLimitKey, RateLimitSpec};

/// `[cors]`: cross-origin requests from browsers, answered at the edge.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileCors {
    pub(crate) allow_origins: Vec<String>,
    pub(crate) allow_methods: Option<Vec<String>>,
    pub(crate) allow_headers: Option<Vec<String>>,
    pub(crate) expose_headers: Option<Vec<String>>,
    pub(crate) max_age_seconds: Option<u64>,
    pub(crate) allow_credentials: Option<bool>,
}

/// The methods a preflight may ask for when `allow_methods` is absent.
pub(crate) const DEFAULT_CORS_METHODS: [&str; 6] =
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
/// The request headers a preflight may ask for when `allow_headers` is absent.
pub(crate) const DEFAULT_CORS_HEADERS: [&str; 2] = ["authorization", "content-type"];

/// Checks `[cors]` and builds tower-http's layer; messages name the key.
pub(crate) fn compile_cors(raw: FileCors) -> Result<CorsLayer, String> {
    let credentials = raw.allow_credentials.unwrap_or(false);
    let wildcard = |list: &[String]| list.iter().any(|s| s == "*");
    let only_wildcard = |key: &str, list: &[String]| -> Result<bool, String> {
        if !wildcard(list) {
            return Ok(false);
        }
        if list.len() > 1 {
            return Err(format!(
                "[cors]: `{key}`: \"*\" stands for everything; it cannot be listed with other values"
            ));
        }
        if credentials {
            return Err(format!(
                "[cors]: `{key}` = [\"*\"] cannot be used with allow_credentials = true (browsers refuse it); list the values"
            ));
        }
        Ok(true)
    };

    if raw.allow_origins.is_empty() {
        return Err("[cors]: `allow_origins` is empty; list origins such as \"https://app.example.com\", or \"*\"".to_owned());
    }
    let origins = if only_wildcard("allow_origins", &raw.allow_origins)? {
        AllowOrigin::any()
    } else {
        let mut values = Vec::with_capacity(raw.allow_origins.len());
        for text in &raw.allow_origins {
            let origin = parse_origin(text)
                .map_err(|why| format!("[cors]: `allow_origins`: {text:?} {why}"))?;
            values.push(origin);
        }
        // A predicate shares the list (an `Arc`) instead of copying it for every request.
        let values: std::sync::Arc<[HeaderValue]> = values.into();
        AllowOrigin::predicate(move |origin, _| values.contains(origin))
    };

    let methods_list: Vec<String> = raw
        .allow_methods
        .unwrap_or_else(|| DEFAULT_CORS_METHODS.map(str::to_owned).to_vec());
    if methods_list.is_empty() {
        return Err(
            "[cors]: `allow_methods` is empty; list methods or remove the key for the defaults"
                .to_owned(),
        );
    }
    let methods = if only_wildcard("allow_methods", &methods_list)? {
        AllowMethods::any()
    } else {
        let mut methods = Vec::with_capacity(methods_list.len());
        for name in &methods_list {
            let method = Method::from_bytes(name.as_bytes())
                .ok()
                .filter(|_| !name.bytes().any(|b| b.is_ascii_lowercase()))
                .ok_or_else(|| {
                    format!("[cors]: `allow_methods`: {name:?} is not an HTTP method (methods are upper case, e.g. \"GET\")")
                })?;
            methods.push(method);
        }
        AllowMethods::list(methods)
    };

    let headers_list: Vec<String> = raw
        .allow_headers
        .unwrap_or_else(|| DEFAULT_CORS_HEADERS.map(str::to_owned).to_vec());
    let headers = if only_wildcard("allow_headers", &headers_list)? {
        AllowHeaders::any()
    } else {
        AllowHeaders::list(header_names("allow_headers", &headers_list)?)
    };

    let expose_list = raw.expose_headers.unwrap_or_default();
    let expose = if only_wildcard("expose_headers", &expose_list)? {
        ExposeHeaders::any()
    } else {
        ExposeHeaders::list(header_names("expose_headers", &expose_list)?)
    };

    let mut layer = CorsLayer::new()
        .allow_origin(origins)
        .allow_methods(methods)
        .allow_headers(headers)
        .expose_headers(expose)
        .allow_credentials(credentials);
    if let Some(secs) = raw.max_age_seconds {
        layer = layer.max_age(Duration::from_secs(secs));
    }
    Ok(layer)
}

/// A browser origin, `scheme://host[:port]`, exactly as browsers serialise it.
fn parse_origin(text: &str) -> Result<HeaderValue, String> {
    const SHAPE: &str =
        "is not an origin: scheme://host[:port], without a path, e.g. \"https://app.example.com\"";
    let uri: HttpUri = text.parse().map_err(|_| SHAPE.to_owned())?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(SHAPE.to_owned());
    };
    if !matches!(scheme, "http" | "https") {
        return Err("is not an origin: the scheme must be http or https".to_owned());
    }
    if authority.as_str().contains('@') {
        return Err("is not an origin: it must not contain user info".to_owned());
    }
    let canonical = format!(
        "{}://{}",
        scheme.to_ascii_lowercase(),
        authority.as_str().to_ascii_lowercase()
    );
    if canonical != text {
        return Err(format!(
            "is not an origin as browsers send it (no path, no trailing slash, lower case): write {canonical:?}"
        ));
    }
    HeaderValue::from_str(text).map_err(|_| SHAPE.to_owned())
}

fn header_names(key: &str, names: &[String]) -> Result<Vec<HeaderName>, String> {
    names
        .iter()
        .map(|name| {
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("[cors]: `{key}`: {name:?} is not a header name"))
        })
        .collect()
}

/// `[resource_metadata]`: the RFC 9728 protected resource metadata document.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileResourceMetadata {
    pub(crate) resource: String,
    pub(crate) authorization_servers: Option<Vec<String>>,
    pub(crate) scopes_supported: Option<Vec<String>>,
    pub(crate) bearer_methods_supported: Option<Vec<String>>,
    pub(crate) resource_name: Option<String>,
    pub(crate) resource_documentation: Option<String>,
    pub(crate) resource_policy_uri: Option<String>,
    pub(crate) resource_tos_uri: Option<String>,
}

/// Checks `[resource_metadata]`; `issuers` (the `[[issuer]]` names) are the default
/// `authorization_servers` where they are URLs.
pub(crate) fn compile_resource_metadata(
    raw: FileResourceMetadata,
    issuers: &[String],
) -> Result<ResourceMetadata, String> {
    let resource = check_url("resource", &raw.resource)?;
    if resource.query().is_some() {
        return Err(format!(
            "[resource_metadata]: `resource` {:?} must not have a query (RFC 9728 §2)",
            raw.resource
        ));
    }
    let mut document = Map::new();
    let servers = match raw.authorization_servers {
        Some(servers) => {
            for server in &servers {
                check_url("authorization_servers", server)?;
            }
            servers
        }
        None => issuers
            .iter()
            .filter(|issuer| issuer.starts_with("https://") || issuer.starts_with("http://"))
            .filter(|issuer| check_url("authorization_servers", issuer).is_ok())
            .cloned()
            .collect(),
    };
    if !servers.is_empty() {
        document.insert("authorization_servers".to_owned(), json!(servers));
    }
    if let Some(scopes) = raw.scopes_supported {
        for scope in &scopes {
            let token = !scope.is_empty()
                && scope
                    .bytes()
                    .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b));
            if !token {
                return Err(format!(
                    "[resource_metadata]: `scopes_supported`: {scope:?} is not a scope (RFC 6749 §3.3: no spaces, quotes or backslashes)"
                ));
            }
        }
        document.insert("scopes_supported".to_owned(), json!(scopes));
    }
    if let Some(methods) = raw.bearer_methods_supported {
        for method in &methods {
            if !matches!(method.as_str(), "header" | "body" | "query") {
                return Err(format!(
                    "[resource_metadata]: `bearer_methods_supported`: {method:?} is not one of \"header\", \"body\", \"query\""
                ));
            }
        }
        document.insert("bearer_methods_supported".to_owned(), json!(methods));
    }
    if let Some(name) = raw.resource_name {
        if name.trim().is_empty() {
            return Err("[resource_metadata]: `resource_name` must not be empty".to_owned());
        }
        document.insert("resource_name".to_owned(), Value::String(name));
    }
    for (key, value) in [
        ("resource_documentation", raw.resource_documentation),
        ("resource_policy_uri", raw.resource_policy_uri),
        ("resource_tos_uri", raw.resource_tos_uri),
    ] {
        if let Some(url) = value {
            check_url(key, &url)?;
            document.insert(key.to_owned(), Value::String(url));
        }
    }
    Ok(ResourceMetadata::new(&resource, &raw.resource, document))
}

/// An absolute `https` URL without a fragment (`http` only for loopback hosts, for local use).
fn check_url(key: &str, text: &str) -> Result<Uri, String> {
    let bad = |why: &str| format!("[resource_metadata]: `{key}` {text:?} {why}");
    let uri: Uri = text
        .parse()
        .map_err(|_| bad("is not an absolute URL, e.g. \"https://api.example.com\""))?;
    let Some(authority) = uri.authority() else {
        return Err(bad(
            "is not an absolute URL, e.g. \"https://api.example.com\"",
        ));
    };
    if text.contains('#') {
        return Err(bad("must not have a fragment"));
    }
    if authority.as_str().contains('@') {
        return Err(bad("must not contain user info"));
    }
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if is_loopback(authority.host()) => Ok(uri),
        Some("http") => Err(bad(
            "must use https (http only for localhost and loopback addresses)",
        )),
        _ => Err(bad(
            "is not an absolute https URL, e.g. \"https://api.example.com\"",
        )),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `[[route]] rate_limit = { key = "subject", per_second = 10, burst = 20 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRateLimit {
    pub(crate) key: RateLimitKey,
    pub(crate) per_second: f64,
    pub(crate) burst: Option<u32>,
    pub(crate) max_keys: Option<usize>,
}

/// How many identities one route's limiter tracks by default.
pub(crate) const DEFAULT_RATE_LIMIT_KEYS: usize = 100_000;

/// Checks a route's `rate_limit`; `public`: the route does not authenticate; `api_keys`:
/// `[api_keys]` is configured.
pub(crate) fn compile_rate_limit(
    label: &str,
    raw: FileRateLimit,
    public: bool,
    api_keys: bool,
) -> Result<RateLimitSpec, String> {
    let period = Some(raw.per_second)
        .filter(|rate| rate.is_finite() && *rate > 0.0)
        .and_then(|rate| Duration::try_from_secs_f64(1.0 / rate).ok())
        .filter(|period| !period.is_zero())
        .ok_or_else(|| {
            format!(
                "{label}: `rate_limit`: per_second = {} must be a positive number (at most 1e9)",
                raw.per_second
            )
        })?;
    let burst = match raw.burst {
        Some(0) => {
            return Err(format!("{label}: `rate_limit`: burst must be at least 1"));
        }
        Some(burst) => burst,
        // One second's worth, at least one request.
        None => raw.per_second.ceil().clamp(1.0, f64::from(u32::MAX)) as u32,
    };
    let max_keys = match raw.max_keys {
        Some(0) => {
            return Err(format!(
                "{label}: `rate_limit`: max_keys must be at least 1"
            ));
        }
        Some(n) => n,
        None => DEFAULT_RATE_LIMIT_KEYS,
    };
    if public && raw.key != RateLimitKey::ClientIp {
        return Err(format!(
            "{label}: `rate_limit`: key = \"{}\" needs a route that authenticates; with auth = \"public\" only key = \"client_ip\" works",
            raw.key
        ));
    }
    if raw.key == RateLimitKey::ApiKey && !api_keys {
        return Err(format!(
            "{label}: `rate_limit`: key = \"api_key\" needs [api_keys]"
        ));
    }
    Ok(RateLimitSpec {
        key: raw.key,
        period,
        burst: NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN),
        max_keys,
    })
}
