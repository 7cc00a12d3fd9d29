//! RFC 9728 protected resource metadata: the document at
//! `/.well-known/oauth-protected-resource` (and its path-suffixed forms, RFC 9728 §3.1),
//! answered by the gateway before routing.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::Uri;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Map, Value};

use crate::response::gateway_error;
use crate::serve::GatewayBody;
use tower_gatekeeper::reject::Protocol;

/// The well-known path prefix of RFC 9728 §3.
pub(crate) const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The checked `[resource_metadata]`.
#[derive(Debug)]
pub(crate) struct ResourceMetadata {
    /// `scheme://authority` of `resource`.
    origin: String,
    /// The path of `resource`, without a trailing `/` (`""` for none).
    resource_path: String,
    /// `resource` as configured.
    resource: String,
    /// Every member but `resource`.
    document: Map<String, Value>,
    /// The absolute URL of the document for `resource` (what challenges carry).
    url: String,
}

impl ResourceMetadata {
    /// `resource` parsed from `text`, as configured.
    pub(crate) fn new(resource: &Uri, text: &str, document: Map<String, Value>) -> Self {
        let origin = format!(
            "{}://{}",
            resource.scheme_str().unwrap_or("https"),
            resource.authority().map_or("", |a| a.as_str())
        );
        let resource_path = resource.path().trim_end_matches('/').to_owned();
        let url = format!("{origin}{WELL_KNOWN}{resource_path}");
        ResourceMetadata {
            origin,
            resource_path,
            resource: text.to_owned(),
            document,
            url,
        }
    }

    /// The document's absolute URL, for `resource_metadata="…"` in challenges.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The answer to a request for a metadata document, or `None` when the request is for
    /// something else. `routed` tells whether a path is served by a route: a path-suffixed
    /// document is only served for the resource itself and for routed paths below it.
    pub(crate) fn answer<B>(
        &self,
        req: &Request<B>,
        routed: impl Fn(&str) -> bool,
    ) -> Option<Response<GatewayBody>> {
        let path = req.uri().path();
        let suffix = path.strip_prefix(WELL_KNOWN)?;
        if !(suffix.is_empty() || suffix.starts_with('/')) {
            return None;
        }
        let protocol = Protocol::of(req);
        let resource = if suffix.trim_end_matches('/') == self.resource_path {
            self.resource.clone()
        } else if (self.resource_path.is_empty()
            || suffix
                .strip_prefix(self.resource_path.as_str())
                .is_some_and(|rest| rest.starts_with('/')))
            && routed(suffix)
        {
            format!("{}{suffix}", self.origin)
        } else {
            return Some(gateway_error(
                protocol,
                StatusCode::NOT_FOUND,
                "not_found",
                "no protected resource metadata at this path",
            ));
        };
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            let mut response = gateway_error(
                protocol,
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "the metadata document is read with GET",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Some(response);
        }
        let mut document = Map::with_capacity(self.document.len() + 1);
        document.insert("resource".to_owned(), Value::String(resource));
        document.extend(self.document.iter().map(|(k, v)| (k.clone(), v.clone())));
        let body = Bytes::from(Value::Object(document).to_string());
        let mut response = Response::new(Full::new(body).map_err(|e| match e {}).boxed());
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        Some(response)
    }
}
