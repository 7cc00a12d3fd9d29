use std::sync::Arc;

use http::HeaderName;
use tower_layer::Layer;

use super::ContextPropagation;
use super::headers::{HeaderNames, Propagator};
use crate::jwt::ConfigError;

/// Applies [`ContextPropagation`]: see the [module docs](crate::propagate).
#[derive(Debug, Clone)]
#[must_use]
pub struct ContextPropagationLayer {
    propagator: Arc<Propagator>,
}

impl ContextPropagationLayer {
    /// The layer with the default header names, no claims forwarded and `Authorization`
    /// dropped.
    pub fn new() -> Self {
        PropagationBuilder::default()
            .build()
            .expect("the default configuration is valid")
    }

    /// Starts configuring a layer.
    pub fn builder() -> PropagationBuilder {
        PropagationBuilder::default()
    }
}

impl Default for ContextPropagationLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for ContextPropagationLayer {
    type Service = ContextPropagation<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ContextPropagation::from_parts(inner, Arc::clone(&self.propagator))
    }
}

/// Configures a [`ContextPropagationLayer`]. Names are checked by [`build`](Self::build).
///
/// ```
/// use tower_gatekeeper::ContextPropagationLayer;
///
/// let layer = ContextPropagationLayer::builder()
///     .user_id_header("x-subject")
///     .forward_claims(["email", "org"])
///     .build()
///     .unwrap();
/// assert!(ContextPropagationLayer::builder().user_id_header("grpc-status").build().is_err());
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct PropagationBuilder {
    user_id: String,
    roles: String,
    scopes: String,
    tenant: String,
    request_id: String,
    claims: String,
    forward_claims: Vec<String>,
    also_strip: Vec<String>,
    keep_authorization: bool,
    sensitive: bool,
}

impl Default for PropagationBuilder {
    fn default() -> Self {
        PropagationBuilder {
            user_id: "x-user-id".into(),
            roles: "x-user-roles".into(),
            scopes: "x-user-scopes".into(),
            tenant: "x-tenant-id".into(),
            request_id: "x-request-id".into(),
            claims: "x-auth-claims".into(),
            forward_claims: Vec::new(),
            also_strip: Vec::new(),
            keep_authorization: false,
            sensitive: false,
        }
    }
}

impl PropagationBuilder {
    /// The header carrying `sub` (default `x-user-id`).
    pub fn user_id_header(mut self, name: impl Into<String>) -> Self {
        self.user_id = name.into();
        self
    }

    /// The header carrying roles (default `x-user-roles`).
    pub fn roles_header(mut self, name: impl Into<String>) -> Self {
        self.roles = name.into();
        self
    }

    /// The header carrying scopes (default `x-user-scopes`).
    pub fn scopes_header(mut self, name: impl Into<String>) -> Self {
        self.scopes = name.into();
        self
    }

    /// The header carrying the tenant (default `x-tenant-id`).
    pub fn tenant_header(mut self, name: impl Into<String>) -> Self {
        self.tenant = name.into();
        self
    }

    /// The request id header (default `x-request-id`).
    pub fn request_id_header(mut self, name: impl Into<String>) -> Self {
        self.request_id = name.into();
        self
    }

    /// The header carrying the allow-listed claims (default `x-auth-claims`).
    pub fn claims_header(mut self, name: impl Into<String>) -> Self {
        self.claims = name.into();
        self
    }

    /// The claims forwarded in the claims header (top-level names). Empty (the default)
    /// forwards none and never sends the header: least privilege.
    pub fn forward_claims<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.forward_claims = names.into_iter().map(Into::into).collect();
        self
    }

    /// More inbound headers to strip (in any case and underscore spelling), e.g. identity
    /// headers of a previous gateway generation.
    pub fn also_strip<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.also_strip = names.into_iter().map(Into::into).collect();
        self
    }

    /// Forwards `Authorization` downstream (default: dropped). Only for upstreams that must
    /// verify the token themselves.
    pub fn keep_authorization(mut self, keep: bool) -> Self {
        self.keep_authorization = keep;
        self
    }

    /// Marks inserted values as sensitive, so `tower-http`'s tracing and other loggers
    /// that honour `HeaderValue::is_sensitive` do not print them.
    pub fn sensitive(mut self, sensitive: bool) -> Self {
        self.sensitive = sensitive;
        self
    }

    /// Checks the names and builds the layer.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming a header name that is invalid, reserved (`authorization`,
    /// `host`, `content-type`, `te`, `grpc-*`, hop-by-hop headers) or used twice.
    pub fn build(self) -> Result<ContextPropagationLayer, ConfigError> {
        let names = HeaderNames {
            user_id: check_name(&self.user_id)?,
            roles: check_name(&self.roles)?,
            scopes: check_name(&self.scopes)?,
            tenant: check_name(&self.tenant)?,
            request_id: check_name(&self.request_id)?,
            claims: check_name(&self.claims)?,
        };
        let mut also = Vec::with_capacity(self.also_strip.len());
        for name in &self.also_strip {
            also.push(check_name(name)?);
        }
        let propagator = Propagator::new(
            names,
            also,
            self.forward_claims,
            self.keep_authorization,
            self.sensitive,
        )?;
        Ok(ContextPropagationLayer {
            propagator: Arc::new(propagator),
        })
    }
}

const RESERVED: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "host",
    "content-type",
    "content-length",
    "transfer-encoding",
    "te",
    "trailer",
    "connection",
    "keep-alive",
    "upgrade",
    "cookie",
    "user-agent",
];

fn check_name(name: &str) -> Result<HeaderName, ConfigError> {
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| ConfigError::invalid(format!("{name:?} is not a valid header name")))?;
    let lower = header.as_str();
    if RESERVED.contains(&lower) || lower.starts_with("grpc-") || lower.starts_with(':') {
        return Err(ConfigError::invalid(format!(
            "{name:?} is reserved and cannot carry the propagated context; choose another header name"
        )));
    }
    Ok(header)
}
