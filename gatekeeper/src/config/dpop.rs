//! `[dpop]`, `[[issuer]] dpop` and `public_origin`: sender-constrained tokens (RFC 9449 DPoP;
//! RFC 8705 certificate-bound tokens are checked whatever these say).

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use tower_gatekeeper::Algorithm;
use tower_gatekeeper::dpop::{DpopConfig, DpopMode, NonceSource};

/// `[dpop]` as written (every key optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileDpop {
    pub(crate) algorithms: Option<Vec<String>>,
    pub(crate) max_age_seconds: Option<u64>,
    pub(crate) nonce: Option<bool>,
    pub(crate) nonce_secret_file: Option<std::path::PathBuf>,
    pub(crate) redis_url: Option<String>,
}

/// Builds the DPoP configuration: `modes` are each `[[issuer]]`'s (issuer, `dpop` as
/// written); issuers without `dpop` are `allowed`.
pub(crate) fn compile_dpop(
    raw: Option<FileDpop>,
    public_origin: Option<&str>,
    modes: &[(String, Option<String>)],
    base: &Path,
) -> Result<DpopConfig, String> {
    let raw = raw.unwrap_or_default();
    let mut config = DpopConfig::new();
    for (n, (issuer, mode)) in modes.iter().enumerate() {
        if let Some(mode) = mode {
            let mode: DpopMode = mode
                .parse()
                .map_err(|e| format!("[[issuer]] #{} (issuer {issuer:?}): `dpop`: {e}", n + 1))?;
            config = config.issuer_mode(issuer.clone(), mode);
        }
    }
    if let Some(origin) = public_origin {
        config = config
            .public_origin(origin)
            .map_err(|e| format!("`public_origin`: {e}"))?;
    }
    if let Some(names) = raw.algorithms {
        let algorithms = names
            .iter()
            .map(|name| {
                name.parse::<Algorithm>().map_err(|_| {
                    format!("[dpop]: `algorithms`: unknown algorithm {name:?}; names are exact and case-sensitive (e.g. ES256, EdDSA, PS256)")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        config = config
            .algorithms(algorithms)
            .map_err(|e| format!("[dpop]: `algorithms`: {e}"))?;
    }
    if let Some(secs) = raw.max_age_seconds {
        if secs == 0 || secs > 3600 {
            return Err(format!(
                "[dpop]: `max_age_seconds` = {secs} must be between 1 and 3600"
            ));
        }
        config = config.max_age(Duration::from_secs(secs));
    }
    match (raw.nonce.unwrap_or(false), &raw.nonce_secret_file) {
        (true, None) => {
            return Err(
                "[dpop]: `nonce = true` needs `nonce_secret_file` (at least 32 bytes, the same file on every replica)"
                    .to_owned(),
            );
        }
        (false, Some(_)) => {
            return Err(
                "[dpop]: `nonce_secret_file` is set but `nonce` is not true; set `nonce = true` or remove it"
                    .to_owned(),
            );
        }
        (true, Some(file)) => {
            let at = format!(
                "[dpop]: `nonce_secret_file` {:?}",
                file.display().to_string()
            );
            let mut secret = std::fs::read(base.join(file)).map_err(|e| format!("{at}: {e}"))?;
            if secret.last() == Some(&b'\n') {
                secret.pop();
                if secret.last() == Some(&b'\r') {
                    secret.pop();
                }
            }
            let nonces = NonceSource::new(&secret).map_err(|e| format!("{at}: {e}"))?;
            config = config.nonces(nonces);
        }
        (false, None) => {}
    }
    if let Some(url) = raw.redis_url {
        config = config.replay_cache(redis_replay(&url)?);
    }
    Ok(config)
}

#[cfg(feature = "redis")]
fn redis_replay(url: &str) -> Result<tower_gatekeeper::dpop::ReplayCache, String> {
    tower_gatekeeper::dpop::ReplayCache::redis(
        url,
        tower_gatekeeper::dpop::DEFAULT_REPLAY_CAPACITY,
        Duration::from_millis(250),
    )
    .map_err(|e| format!("[dpop]: `redis_url`: {e}"))
}

#[cfg(not(feature = "redis"))]
fn redis_replay(_url: &str) -> Result<tower_gatekeeper::dpop::ReplayCache, String> {
    Err(
        "[dpop]: `redis_url` needs the `redis` feature: build gatekeeper with its default features"
            .to_owned(),
    )
}
