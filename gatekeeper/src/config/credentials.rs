use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::Revocations;
use crate::config::file::FileApiKeys;
use crate::config::file::FileFailMode;
use crate::config::file::FileIntrospection;
use crate::config::file::FileKeys;
use crate::config::file::FileRevocation;
use crate::config::file::Secret;
use crate::config::seconds;
use crate::credentials::ApiKeySource;
use crate::credentials::Credentials;
use crate::credentials::OpaqueAuth;
use tower_gatekeeper::authenticate::{ApiKeyAuthenticator, ApiKeyEntry, ApiKeyHash};
use tower_gatekeeper::revocation::MemoryRevocations;

pub(crate) fn compile_credentials(
    api_keys: Option<FileApiKeys>,
    introspection: Option<FileIntrospection>,
    revocation: Option<FileRevocation>,
    base: &Path,
) -> Result<Credentials, String> {
    let mut names = Vec::new();
    if let Some(raw) = &api_keys {
        names.push(
            raw.issuer
                .clone()
                .unwrap_or_else(|| ApiKeyAuthenticator::DEFAULT_ISSUER.to_owned()),
        );
    }
    if let Some(raw) = &introspection {
        names.push(raw.issuer.clone().unwrap_or_else(|| raw.endpoint.clone()));
    }
    Ok(Credentials {
        api_keys: api_keys
            .map(|raw| compile_api_keys(raw, base))
            .transpose()?,
        introspection: introspection
            .map(|raw| compile_introspection(raw, base))
            .transpose()?,
        revocations: revocation.map(compile_revocation).transpose()?,
        names,
    })
}

pub(crate) fn compile_api_keys(raw: FileApiKeys, base: &Path) -> Result<ApiKeySource, String> {
    let file = base.join(&raw.file);
    let interval = seconds(
        "[api_keys]: `reload_interval_seconds`",
        raw.reload_interval_seconds,
        Duration::from_secs(5),
    )?;
    let bytes =
        std::fs::read(&file).map_err(|e| format!("[api_keys]: `file` {}: {e}", file.display()))?;
    let entries = parse_api_keys(&bytes, &file).map_err(|e| format!("[api_keys]: {e}"))?;
    let mut keys = ApiKeyAuthenticator::new(entries)
        .map_err(|e| format!("[api_keys]: {}: {e}", file.display()))?;
    if let Some(header) = &raw.header {
        keys = keys
            .with_header(header)
            .map_err(|e| format!("[api_keys]: `header`: {e}"))?;
    }
    if let Some(name) = &raw.issuer {
        keys = keys
            .with_issuer(name)
            .map_err(|e| format!("[api_keys]: `issuer`: {e}"))?;
    }
    Ok(ApiKeySource {
        keys,
        file,
        interval,
        loaded: Arc::new(bytes),
    })
}

/// Parses a keys file; errors name the file and the entry.
pub(crate) fn parse_api_keys(bytes: &[u8], file: &Path) -> Result<Vec<ApiKeyEntry>, String> {
    let at = file.display();
    let text = std::str::from_utf8(bytes).map_err(|_| format!("{at}: not UTF-8"))?;
    let parsed: FileKeys = toml::from_str(text).map_err(|e| format!("{at}: {e}"))?;
    parsed
        .keys
        .into_iter()
        .enumerate()
        .map(|(i, key)| {
            let n = i + 1;
            let hash = ApiKeyHash::from_hex(&key.sha256)
                .map_err(|e| format!("{at}: [[key]] #{n}: `sha256`: {e}"))?;
            if key.subject.is_empty() {
                return Err(format!("{at}: [[key]] #{n}: `subject` must not be empty"));
            }
            let mut entry = ApiKeyEntry::new(hash, key.subject)
                .roles(key.roles)
                .scopes(key.scopes);
            if let Some(tenant) = key.tenant {
                entry = entry.tenant(tenant);
            }
            Ok(entry)
        })
        .collect()
}

#[cfg(feature = "introspection")]
pub(crate) fn compile_introspection(
    raw: FileIntrospection,
    base: &Path,
) -> Result<OpaqueAuth, String> {
    use crate::config::file::IntrospectionAuthMethod;
    use tower_gatekeeper::authenticate::{
        ClientAuth, IntrospectionAuthenticator, IntrospectionConfig,
    };
    let secret = match (raw.client_secret, &raw.client_secret_file) {
        (Some(_), Some(_)) => {
            return Err(
                "[introspection]: `client_secret` and `client_secret_file` are both set; set one"
                    .to_owned(),
            );
        }
        (Some(secret), None) => Some(secret.0),
        (None, Some(file)) => {
            let text = std::fs::read_to_string(base.join(file)).map_err(|e| {
                format!(
                    "[introspection]: `client_secret_file` {:?}: {e}",
                    file.display().to_string()
                )
            })?;
            Some(text.trim_end_matches(['\r', '\n']).to_owned())
        }
        (None, None) => None,
    };
    let method = raw.auth_method.unwrap_or_default();
    let auth = match (method, raw.client_id, secret) {
        (IntrospectionAuthMethod::None, None, None) => ClientAuth::None,
        (IntrospectionAuthMethod::None, _, _) => {
            return Err(
                "[introspection]: auth_method = \"none\" takes no `client_id` or client secret"
                    .to_owned(),
            );
        }
        (_, Some(client_id), Some(client_secret)) if !client_secret.is_empty() => {
            if method == IntrospectionAuthMethod::Basic {
                ClientAuth::Basic {
                    client_id,
                    client_secret,
                }
            } else {
                ClientAuth::Post {
                    client_id,
                    client_secret,
                }
            }
        }
        _ => {
            return Err(
                "[introspection]: auth_method \"basic\" and \"post\" need `client_id` and a non-empty `client_secret` or `client_secret_file`"
                    .to_owned(),
            );
        }
    };
    let mut config = IntrospectionConfig::new(raw.endpoint, auth);
    if let Some(issuer) = raw.issuer {
        config = config.issuer(issuer);
    }
    match (raw.audiences, raw.any_audience) {
        (Some(_), Some(true)) => {
            return Err(
                "[introspection]: `audiences` and `any_audience = true` are both set; keep one"
                    .to_owned(),
            );
        }
        (Some(audiences), _) => config = config.audiences(audiences),
        (None, Some(true)) => config = config.any_audience(),
        (None, _) => {
            return Err(
                "[introspection]: `audiences` is required: list this API's identifiers (the `aud` the authorization server puts in its answers), or set `any_audience = true` to accept answers for any audience"
                    .to_owned(),
            );
        }
    }
    if let Some(require) = raw.require_subject {
        config = config.require_subject(require);
    }
    if let Some(claim) = raw.roles_claim {
        config = config.roles_claim(claim);
    }
    if let Some(claim) = raw.tenant_claim {
        config = config.tenant_claim(claim);
    }
    if let Some(secs) = raw.timeout_seconds {
        let timeout = seconds(
            "[introspection]: `timeout_seconds`",
            Some(secs),
            Duration::ZERO,
        )?;
        config = config.timeout(timeout);
    }
    if let Some(secs) = raw.cache_ttl_seconds {
        config = config.cache_ttl(Duration::from_secs(secs));
    }
    if let Some(secs) = raw.negative_ttl_seconds {
        config = config.negative_ttl(Duration::from_secs(secs));
    }
    if let Some(n) = raw.cache_capacity {
        config = config.cache_capacity(n);
    }
    match raw.redis_url {
        Some(url) => config = shared_introspection_cache(config, url, raw.redis_prefix)?,
        None if raw.redis_prefix.is_some() => {
            return Err(
                "[introspection]: `redis_prefix` applies to the shared Redis cache; set `redis_url` or remove it"
                    .to_owned(),
            );
        }
        None => {}
    }
    IntrospectionAuthenticator::new(config).map_err(|e| format!("[introspection]: {e}"))
}

/// Shares introspection results with the other replicas through Redis (connected lazily).
#[cfg(all(feature = "introspection", feature = "redis"))]
pub(crate) fn shared_introspection_cache(
    config: tower_gatekeeper::authenticate::IntrospectionConfig,
    url: Secret,
    prefix: Option<String>,
) -> Result<tower_gatekeeper::authenticate::IntrospectionConfig, String> {
    let mut builder = tower_gatekeeper::authenticate::RedisIntrospectionCache::builder(url.0);
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err("[introspection]: `redis_prefix` must not be empty".to_owned());
        }
        builder = builder.prefix(prefix);
    }
    let cache = builder
        .build()
        .map_err(|e| format!("[introspection]: `redis_url`: {e}"))?;
    Ok(config.shared_cache(cache))
}

#[cfg(all(feature = "introspection", not(feature = "redis")))]
pub(crate) fn shared_introspection_cache(
    _: tower_gatekeeper::authenticate::IntrospectionConfig,
    _: Secret,
    _: Option<String>,
) -> Result<tower_gatekeeper::authenticate::IntrospectionConfig, String> {
    Err("[introspection]: `redis_url` needs the `redis` feature: build gatekeeper with its default features (cargo install --path gatekeeper)".to_owned())
}

#[cfg(not(feature = "introspection"))]
pub(crate) fn compile_introspection(_: FileIntrospection, _: &Path) -> Result<OpaqueAuth, String> {
    Err("[introspection] needs the `introspection` feature: build gatekeeper with its default features (cargo install --path gatekeeper)".to_owned())
}

pub(crate) fn compile_revocation(raw: FileRevocation) -> Result<Revocations, String> {
    let Some(url) = raw.redis_url else {
        if raw.prefix.is_some() || raw.fail_mode.is_some() {
            return Err(
                "[revocation]: `prefix` and `fail_mode` apply to the shared Redis store; set `redis_url` or remove them"
                    .to_owned(),
            );
        }
        let mut store = MemoryRevocations::new();
        if let Some(secs) = raw.subject_retention_seconds {
            store = store.subject_retention(Duration::from_secs(secs));
        }
        return Ok(Revocations::Memory(store));
    };
    redis_revocations(
        url,
        raw.prefix,
        raw.fail_mode,
        raw.subject_retention_seconds,
    )
}

/// Opens the shared store (needs a tokio runtime: `load_config` is called inside one).
#[cfg(feature = "redis")]
pub(crate) fn redis_revocations(
    url: Secret,
    prefix: Option<String>,
    fail_mode: Option<FileFailMode>,
    retention: Option<u64>,
) -> Result<Revocations, String> {
    let mut builder = tower_gatekeeper::revocation::RedisRevocations::builder(url.0);
    if let Some(prefix) = prefix {
        builder = builder.prefix(prefix);
    }
    if let Some(mode) = fail_mode {
        builder = builder.fail_mode(mode.into());
    }
    if let Some(secs) = retention {
        builder = builder.subject_retention(Duration::from_secs(secs));
    }
    builder
        .build()
        .map(Revocations::Redis)
        .map_err(|e| format!("[revocation]: `redis_url`: {e}"))
}

#[cfg(not(feature = "redis"))]
pub(crate) fn redis_revocations(
    _: Secret,
    _: Option<String>,
    _: Option<FileFailMode>,
    _: Option<u64>,
) -> Result<Revocations, String> {
    Err("[revocation]: `redis_url` needs the `redis` feature: build gatekeeper with its default features (cargo install --path gatekeeper)".to_owned())
}
