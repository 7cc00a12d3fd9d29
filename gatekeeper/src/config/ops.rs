use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::config::file::FileCache;
use crate::config::file::FileLimits;
use tower_gatekeeper::audit::JsonLines;
use tower_gatekeeper::authenticate::{CacheConfig, TokenCache};
use tower_gatekeeper::limits::Limits;
use tower_gatekeeper::{AuthenticateLayer, AuthorizeLayer};

/// The cache the `[cache]` section asks for (default: on, library defaults), or `None`.
pub(crate) fn compile_cache(section: Option<FileCache>) -> Result<Option<TokenCache>, String> {
    let section = section.unwrap_or_default();
    if section.enabled == Some(false) {
        return Ok(None);
    }
    let mut config = CacheConfig::default();
    if let Some(n) = section.max_entries {
        config = config.max_entries(n);
    }
    if let Some(n) = section.max_bytes {
        config = config.max_bytes(n);
    }
    if let Some(secs) = section.max_ttl_seconds {
        config = config.max_ttl(Duration::from_secs(secs));
    }
    TokenCache::new(config)
        .map(Some)
        .map_err(|e| format!("[cache]: {e}"))
}

/// The checked operations settings.
#[derive(Debug, Default)]
pub(crate) struct Ops {
    pub(crate) admin_listen: Option<SocketAddr>,
    pub(crate) audit: Option<JsonLines>,
    pub(crate) limits: Limits,
    /// Strips and injects identity headers; mints the signed context with `[context]`.
    pub(crate) propagation: tower_gatekeeper::ContextPropagationLayer,
    /// The external authorizer (`[ext_authz]`), asked by every authenticating route that
    /// does not opt out.
    pub(crate) ext_authz: Option<tower_gatekeeper::authorize::BoxPolicy>,
}

pub(crate) fn compile_ops(
    admin_listen: Option<String>,
    audit_log: Option<String>,
    limits: Option<FileLimits>,
    base: &Path,
) -> Result<Ops, String> {
    let admin_listen = admin_listen
        .map(|text| {
            text.parse().map_err(|_| {
                format!(
                    "`admin_listen` {text:?} is not an IP address and port, e.g. \"127.0.0.1:9091\""
                )
            })
        })
        .transpose()?;
    let audit = audit_log
        .map(|target| open_audit_log(&target, base))
        .transpose()?;
    let mut checked = Limits::default();
    if let Some(raw) = limits {
        let mut builder = Limits::builder();
        if let Some(n) = raw.max_credential_header_bytes {
            builder = builder.max_credential_header_bytes(n);
        }
        if let Some(n) = raw.max_claims_bytes {
            builder = builder.max_claims_bytes(n);
        }
        if let Some(n) = raw.max_roles {
            builder = builder.max_roles(n);
        }
        if let Some(n) = raw.max_scopes {
            builder = builder.max_scopes(n);
        }
        checked = builder.build().map_err(|e| format!("[limits]: {e}"))?;
    }
    Ok(Ops {
        admin_listen,
        audit,
        limits: checked,
        ..Ops::default()
    })
}

impl Ops {
    pub(crate) fn authenticate_layer<A, R>(
        &self,
        layer: AuthenticateLayer<A, R>,
    ) -> AuthenticateLayer<A, R> {
        let layer = layer.limits(self.limits);
        match &self.audit {
            Some(audit) => layer.on_decision(audit.clone()),
            None => layer,
        }
    }

    pub(crate) fn authorize_layer<P, R>(
        &self,
        layer: AuthorizeLayer<P, R>,
    ) -> AuthorizeLayer<P, R> {
        match &self.audit {
            Some(audit) => layer.on_decision(audit.clone()),
            None => layer,
        }
    }
}

/// The audit log `audit_log` names: "stdout" or a file (appended to). One record per request
/// (the authorize layer's, which sees the caller), or per denial by the layer that denied.
fn open_audit_log(target: &str, base: &Path) -> Result<JsonLines, String> {
    let log = match target {
        "" => {
            return Err(
                "`audit_log` is empty; use \"stdout\" or a file path (appended to)".to_owned(),
            );
        }
        "stdout" => JsonLines::new(std::io::stdout())
            .map_err(|e| format!("`audit_log`: cannot start the writer: {e}"))?,
        path => {
            let path = base.join(path);
            JsonLines::append_to(&path)
                .map_err(|e| format!("`audit_log` {:?}: cannot open: {e}", path.display()))?
        }
    };
    Ok(log.once_per_request())
}
