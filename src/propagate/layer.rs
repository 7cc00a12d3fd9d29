use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use tower_layer::Layer;

use super::ContextPropagation;
use super::headers::{HeaderNames, Options, Propagator};
use super::signed::{ContextSigner, DEFAULT_CONTEXT_ISSUER, DEFAULT_CONTEXT_LIFETIME};
use crate::clock::Clock;
use crate::config_error::ConfigError;
use crate::keys::SigningKey;

/// Applies [`ContextPropagation`]: see the [module docs](crate::propagate).
#[derive(Debug, Clone)]
#[must_use]
pub struct ContextPropagationLayer {
    propagator: Arc<Propagator>,
}

impl ContextPropagationLayer {
    /// The layer with the default header names, no claims forwarded, `Authorization`
    /// dropped and no signed context.
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
    issuer: String,
    request_id: String,
    claims: String,
    context: String,
    forward_claims: Vec<String>,
    also_strip: Vec<String>,
    keep_authorization: bool,
    sensitive: bool,
    plain_headers: bool,
    signing_key: Option<SigningKey>,
    context_issuer: String,
    context_audience: Option<String>,
    context_lifetime: Duration,
    context_reuse: bool,
    clock: Clock,
}

impl Default for PropagationBuilder {
    fn default() -> Self {
        PropagationBuilder {
            user_id: "x-user-id".into(),
            roles: "x-user-roles".into(),
            scopes: "x-user-scopes".into(),
            tenant: "x-tenant-id".into(),
            issuer: "x-user-issuer".into(),
            request_id: "x-request-id".into(),
            claims: "x-auth-claims".into(),
            context: "x-auth-context".into(),
            forward_claims: Vec::new(),
            also_strip: Vec::new(),
            keep_authorization: false,
            sensitive: false,
            plain_headers: true,
            signing_key: None,
            context_issuer: DEFAULT_CONTEXT_ISSUER.into(),
            context_audience: None,
            context_lifetime: DEFAULT_CONTEXT_LIFETIME,
            context_reuse: true,
            clock: Clock::system(),
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

    /// The header carrying the issuer that vouched for the caller (default `x-user-issuer`):
    /// the token's `iss`, or the authenticator's name for API keys and introspection, so
    /// that services behind a multi-issuer gateway can tell `alice` of one issuer from
    /// `alice` of another.
    pub fn issuer_header(mut self, name: impl Into<String>) -> Self {
        self.issuer = name.into();
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

    /// The header carrying the signed context (default `x-auth-context`). It is owned like
    /// the others: stripped from every inbound request, whether signing is on or not.
    pub fn context_header(mut self, name: impl Into<String>) -> Self {
        self.context = name.into();
        self
    }

    /// Mints a signed context with `key` on every authenticated request: a compact JWS
    /// (`typ` `gatekeeper-ctx+jwt`, the key's `kid` in the header) in the context header,
    /// valid for [`context_lifetime`](Self::context_lifetime). Services verify it with
    /// [`TrustedContextLayer::signed`](crate::TrustedContextLayer::signed) and the key's
    /// public half ([`SigningKey::verifying_key`]).
    ///
    /// The key must have a `kid` ([`SigningKey::with_kid`]): during a rotation services
    /// trust the old and the new public key and pick by `kid`. Ed25519
    /// ([`SigningKey::generate_ed25519`]) is the recommended algorithm: small, fast, and
    /// the services only ever hold public keys.
    ///
    /// # Reuse
    ///
    /// A signature costs tens of microseconds, far more than a request served from a token
    /// cache. So a context minted for a *cached* identity (an
    /// [`AuthContext`](crate::AuthContext) that outlives the request: one a
    /// [`CachedAuthenticator`](crate::authenticate::CachedAuthenticator) holds, or an API
    /// key's) is kept and sent again with that identity's later requests to the same
    /// method and path, byte for byte, while more than half of its lifetime remains; then
    /// the next such request mints a fresh one. So the service never receives a context
    /// with less than half its lifetime left, and every check of
    /// [`TrustedContextLayer`](crate::TrustedContextLayer) holds for a reused context as for
    /// a fresh one: signature, `typ`, `iss`, `aud`, `exp`, `iat`, the lifetime, and the
    /// binding to the request's method (`htm`) and path (`htu`), which are part of what
    /// the reuse is keyed by. Contexts are never shared between identities: the key is the
    /// cached context object itself, so a token verified again (after its cache entry was
    /// evicted or invalidated) gets new contexts, and a revoked token is refused before any
    /// context is looked up. A reused context carries the `rid` of the request it was
    /// minted for; the request's own id is in the request id header.
    ///
    /// What is kept is bounded per layer: at most 4096 contexts and 4 MiB (paths over
    /// 1 KiB are never kept), with the token cache's scan-resistant eviction, so a flood
    /// of distinct paths cycles through it without growing memory. Requests whose identity
    /// is not cached mint every time. [`context_reuse(false)`](Self::context_reuse) turns
    /// reuse off.
    pub fn sign_context(mut self, key: SigningKey) -> Self {
        self.signing_key = Some(key);
        self
    }

    /// Whether a signed context minted for a cached identity is reused for its later
    /// requests to the same method and path (default `true`; see
    /// [`sign_context`](Self::sign_context)). Off, every request mints its own context,
    /// which then always carries that request's `rid`.
    pub fn context_reuse(mut self, reuse: bool) -> Self {
        self.context_reuse = reuse;
        self
    }

    /// The `iss` of signed contexts (default `tower-gatekeeper`); services check it.
    pub fn context_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.context_issuer = issuer.into();
        self
    }

    /// The `aud` of signed contexts: the service behind this layer (for example
    /// `orders-svc`). A context minted for one service is then refused by every other.
    /// Default: no `aud`, which services must accept explicitly.
    pub fn context_audience(mut self, audience: impl Into<String>) -> Self {
        self.context_audience = Some(audience.into());
        self
    }

    /// How long a signed context is valid (default 5 s, at most 5 minutes). Keep it short:
    /// it only has to cover one hop, and it bounds how long a captured context can be
    /// replayed.
    pub fn context_lifetime(mut self, lifetime: Duration) -> Self {
        self.context_lifetime = lifetime;
        self
    }

    /// The clock for `iat`/`exp` of signed contexts (tests).
    pub fn context_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Whether the plain context headers (`x-user-id`, `x-user-issuer`, `x-user-roles`,
    /// `x-user-scopes`, `x-tenant-id`, `x-auth-claims`) are sent (default `true`). With a signed context,
    /// turning them off leaves the signed header as the only source of identity downstream.
    pub fn plain_headers(mut self, send: bool) -> Self {
        self.plain_headers = send;
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

    /// Whether `Authorization` and the `DPoP` proof are forwarded downstream (default `false`: dropped, so the
    /// raw token stops here). Only for upstreams that must verify the token themselves;
    /// when kept, the client's single header is forwarded unchanged, never duplicated.
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
    /// `host`, `content-type`, `te`, `grpc-*`, hop-by-hop headers) or used twice; or, with
    /// [`sign_context`](Self::sign_context), a key without `kid`, an empty issuer or
    /// audience, or a lifetime outside 1 s ..= 5 min.
    pub fn build(self) -> Result<ContextPropagationLayer, ConfigError> {
        let names = self.header_names()?;
        let mut also = Vec::with_capacity(self.also_strip.len());
        for name in &self.also_strip {
            also.push(check_name(name)?);
        }
        let signer = match self.signing_key {
            Some(key) => Some(ContextSigner::new(
                key,
                self.context_issuer,
                self.context_audience,
                self.context_lifetime,
                self.clock,
                self.context_reuse,
            )?),
            None => None,
        };
        let options = Options {
            forward_claims: self.forward_claims,
            keep_authorization: self.keep_authorization,
            sensitive: self.sensitive,
            plain_headers: self.plain_headers,
            signer,
        };
        let propagator = Propagator::new(names, also, options)?;
        Ok(ContextPropagationLayer {
            propagator: Arc::new(propagator),
        })
    }
}

impl PropagationBuilder {
    /// The configured header names, checked.
    pub(crate) fn header_names(&self) -> Result<HeaderNames, ConfigError> {
        Ok(HeaderNames {
            user_id: check_name(&self.user_id)?,
            roles: check_name(&self.roles)?,
            scopes: check_name(&self.scopes)?,
            tenant: check_name(&self.tenant)?,
            issuer: check_name(&self.issuer)?,
            request_id: check_name(&self.request_id)?,
            claims: check_name(&self.claims)?,
            context: check_name(&self.context)?,
        })
    }
}

const RESERVED: &[&str] = &[
    "authorization",
    "dpop",
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
    // The default names as static names: cloning one (once or twice per request) is then a
    // copy, not a reference-count update on shared bytes.
    Ok(DEFAULT_NAMES
        .iter()
        .find(|default| **default == lower)
        .map_or(header, |default| HeaderName::from_static(default)))
}

const DEFAULT_NAMES: &[&str] = &[
    "x-user-id",
    "x-user-roles",
    "x-user-scopes",
    "x-tenant-id",
    "x-user-issuer",
    "x-request-id",
    "x-auth-claims",
    "x-auth-context",
];
