//! The signed context: a short-lived compact JWS minted by the gateway and verified by the
//! services behind it. The claim layout is shared by both sides and lives here.

use std::time::{Duration, UNIX_EPOCH};

use http::HeaderValue;
use serde_json::{Map, Value};

use crate::clock::Clock;
use crate::config_error::ConfigError;
use crate::context::{AuthContext, CredentialKind};
use crate::keys::{KeyError, SigningKey};

/// The JWS `typ` of a signed context (RFC 8725 §3.11 explicit typing): an access token signed
/// by the same key can never pass for a context, nor a context for an access token that is
/// checked for `typ`.
pub const CONTEXT_TYP: &str = "gatekeeper-ctx+jwt";

/// The default `iss` of minted contexts.
pub const DEFAULT_CONTEXT_ISSUER: &str = "tower-gatekeeper";

/// The default lifetime of a signed context.
pub const DEFAULT_CONTEXT_LIFETIME: Duration = Duration::from_secs(5);

/// The longest lifetime accepted: a context is for one hop, not a session.
pub(crate) const MAX_CONTEXT_LIFETIME: Duration = Duration::from_secs(300);

/// Claim names of the signed context.
pub(crate) mod claim {
    /// The caller's roles (array of strings).
    pub(crate) const ROLES: &str = "roles";
    /// The caller's tenant (string).
    pub(crate) const TENANT: &str = "tenant";
    /// Where the caller's credential came from: `{"iss", "kind", "exp", "kid"}`.
    pub(crate) const SOURCE: &str = "src";
    /// The allow-listed claims of the caller's credential (object).
    pub(crate) const CLAIMS: &str = "claims";
    /// The request id the gateway forwarded with this context.
    pub(crate) const REQUEST_ID: &str = "rid";
    /// The method of the request the context was minted for (as DPoP's `htm`).
    pub(crate) const METHOD: &str = "htm";
    /// The path of the request the context was minted for, without the query (as DPoP's
    /// `htu`, the path alone: the gateway and the service see different authorities).
    pub(crate) const PATH: &str = "htu";
}

/// Mints signed contexts; part of the propagation rules.
#[derive(Debug)]
pub(crate) struct ContextSigner {
    key: SigningKey,
    issuer: String,
    audience: Option<String>,
    lifetime_secs: u64,
    clock: Clock,
}

impl ContextSigner {
    pub(crate) fn new(
        key: SigningKey,
        issuer: String,
        audience: Option<String>,
        lifetime: Duration,
        clock: Clock,
    ) -> Result<Self, ConfigError> {
        if key.kid().is_none() {
            return Err(ConfigError::invalid(
                "the context signing key has no kid; set one with SigningKey::with_kid so that services can pick the right key while keys rotate",
            ));
        }
        if issuer.is_empty() {
            return Err(ConfigError::invalid("context_issuer must not be empty"));
        }
        if audience.as_deref() == Some("") {
            return Err(ConfigError::invalid("context_audience must not be empty"));
        }
        if lifetime < Duration::from_secs(1) || lifetime > MAX_CONTEXT_LIFETIME {
            return Err(ConfigError::invalid(format!(
                "context_lifetime must be between 1 s and {} s (a context is for one hop); got {lifetime:?}",
                MAX_CONTEXT_LIFETIME.as_secs()
            )));
        }
        // Whole seconds, rounded up: NumericDate claims are compared in seconds.
        let lifetime_secs = lifetime.as_secs() + u64::from(lifetime.subsec_nanos() > 0);
        Ok(ContextSigner {
            key,
            issuer,
            audience,
            lifetime_secs,
            clock,
        })
    }

    /// Signs the context of one request: `method` and `path` (without the query) are the
    /// request's, and bind the context to it.
    pub(crate) fn mint(
        &self,
        ctx: &AuthContext,
        claims: Map<String, Value>,
        request_id: &HeaderValue,
        method: &http::Method,
        path: &str,
    ) -> Result<String, KeyError> {
        let now = self
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut payload = Map::new();
        payload.insert("iss".into(), self.issuer.clone().into());
        if let Some(aud) = &self.audience {
            payload.insert("aud".into(), aud.clone().into());
        }
        payload.insert("iat".into(), now.into());
        payload.insert("exp".into(), (now + self.lifetime_secs).into());
        if let Some(sub) = ctx.subject() {
            payload.insert("sub".into(), sub.into());
        }
        if !ctx.roles().is_empty() {
            payload.insert(claim::ROLES.into(), ctx.roles().into());
        }
        if !ctx.scopes().is_empty() {
            payload.insert("scope".into(), ctx.scopes().join(" ").into());
        }
        if let Some(tenant) = ctx.tenant() {
            payload.insert(claim::TENANT.into(), tenant.into());
        }
        let mut source = Map::new();
        if let Some(iss) = ctx.issuer() {
            source.insert("iss".into(), iss.into());
        }
        source.insert("kind".into(), ctx.credential_kind().as_str().into());
        if let Some(exp) = ctx
            .expires_at()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        {
            source.insert("exp".into(), exp.as_secs().into());
        }
        if let Some(kid) = ctx.key_id() {
            source.insert("kid".into(), kid.into());
        }
        payload.insert(claim::SOURCE.into(), Value::Object(source));
        if !claims.is_empty() {
            payload.insert(claim::CLAIMS.into(), Value::Object(claims));
        }
        if let Ok(rid) = request_id.to_str() {
            payload.insert(claim::REQUEST_ID.into(), rid.into());
        }
        payload.insert(claim::METHOD.into(), method.as_str().into());
        payload.insert(claim::PATH.into(), path.into());
        let mut header = Map::new();
        header.insert("typ".into(), CONTEXT_TYP.into());
        self.key.sign_with_header(header, &Value::Object(payload))
    }
}

/// Rebuilds the caller's [`AuthContext`] from a verified signed context. `verified` is the
/// context of the JWS itself (issuer: the gateway); the result describes the caller.
pub(crate) fn rebuild(verified: &AuthContext) -> AuthContext {
    let claims = verified.claims_map();
    let source = claims.get(claim::SOURCE).and_then(Value::as_object);
    let source_str = |name: &str| source.and_then(|s| s.get(name)).and_then(Value::as_str);
    let kind = match source_str("kind") {
        Some("jwt") => CredentialKind::Jwt,
        Some("introspected") => CredentialKind::Introspected,
        Some("api_key") => CredentialKind::ApiKey,
        _ => CredentialKind::Forwarded,
    };
    let mut builder = AuthContext::builder(kind)
        .roles(verified.roles().iter().cloned())
        .scopes(verified.scopes().iter().cloned());
    if let Some(sub) = verified.subject() {
        builder = builder.subject(sub);
    }
    if let Some(tenant) = verified.tenant() {
        builder = builder.tenant(tenant);
    }
    if let Some(iss) = source_str("iss") {
        builder = builder.issuer(iss);
    }
    if let Some(kid) = source_str("kid") {
        builder = builder.key_id(kid);
    }
    if let Some(exp) = source.and_then(|s| s.get("exp")).and_then(Value::as_f64) {
        builder = builder.expires_at_unix(exp);
    }
    if let Some(Value::Object(forwarded)) = claims.get(claim::CLAIMS) {
        builder = builder.claims(forwarded.clone());
    }
    builder.build()
}
