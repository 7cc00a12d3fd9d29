use std::path::Path;
use std::time::Duration;

use crate::config::KEY_SOURCES;
use crate::config::file::FileIssuer;
use tower_gatekeeper::Algorithm;
use tower_gatekeeper::jwt::Validation;
use tower_gatekeeper::keys::{IssuerKeys, StaticKeys};

pub(crate) fn compile_issuer(
    n: usize,
    raw: FileIssuer,
    base: &Path,
) -> Result<(IssuerKeys, Validation), String> {
    if raw.issuer.is_empty() {
        return Err(format!("[[issuer]] #{n}: `issuer` must not be empty"));
    }
    let at = format!("[[issuer]] #{n} (issuer {:?})", raw.issuer);
    if raw.audiences.is_empty() {
        return Err(format!(
            "{at}: `audiences` must list at least one audience the tokens must carry"
        ));
    }

    let mut sources = Vec::new();
    for (key, set) in [
        ("jwks_file", raw.jwks_file.is_some()),
        ("hmac_secret_file", raw.hmac_secret_file.is_some()),
        ("jwks_url", raw.jwks_url.is_some()),
        ("discovery_url", raw.discovery_url.is_some()),
    ] {
        if set {
            sources.push(format!("`{key}`"));
        }
    }
    match (sources.len(), raw.keys.is_some()) {
        (0, false) => {
            return Err(format!(
                "{at}: no key source; set exactly one of {KEY_SOURCES}"
            ));
        }
        (0, true) | (1, false) => {}
        _ => {
            return Err(format!(
                "{at}: {} are all set; set exactly one of {KEY_SOURCES}",
                sources.join(" and ")
            ));
        }
    }
    let keys: IssuerKeys = if let Some(keys) = raw.keys {
        keys.into()
    } else if let Some(file) = &raw.jwks_file {
        StaticKeys::from_jwks_file(base.join(file))
            .map_err(|e| format!("{at}: `jwks_file` {:?}: {e}", file.display().to_string()))?
            .into()
    } else if let Some(file) = &raw.hmac_secret_file {
        StaticKeys::from_hmac_secret_file(base.join(file))
            .map_err(|e| {
                format!(
                    "{at}: `hmac_secret_file` {:?}: {e}",
                    file.display().to_string()
                )
            })?
            .into()
    } else {
        remote_keys(&at, &raw)?
    };

    let mut validation = Validation::new(raw.issuer.clone()).audiences(raw.audiences);
    if let Some(names) = raw.algorithms {
        if names.is_empty() {
            return Err(format!(
                "{at}: `algorithms` is empty; list the allowed algorithms or remove the key to allow what the keys support"
            ));
        }
        let algorithms = names
            .iter()
            .map(|name| {
                name.parse::<Algorithm>().map_err(|_| {
                    let known: Vec<&str> = Algorithm::ALL.iter().map(|a| a.as_str()).collect();
                    format!(
                        "{at}: `algorithms`: unknown algorithm {name:?}; names are exact and case-sensitive, one of {}",
                        known.join(", ")
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        validation = validation.algorithms(algorithms);
    }
    if let Some(path) = raw.roles_claim {
        validation = validation.roles_claim(path);
    }
    if let Some(path) = raw.tenant_claim {
        validation = validation.tenant_claim(path);
    }
    if let Some(secs) = raw.leeway_seconds {
        validation = validation.leeway(Duration::from_secs(secs));
    }
    if let Some(require) = raw.require_subject {
        validation = validation.require_subject(require);
    }
    if let Some(typ) = raw.typ {
        if typ.is_empty() {
            return Err(format!(
                "{at}: `typ` must not be empty (remove it to accept any token type)"
            ));
        }
        validation = validation.required_typ(typ);
    }
    Ok((keys, validation))
}

/// An issuer's `jwks_url` or `discovery_url` source. Nothing is fetched here: the keys arrive
/// in the background, and [`Config::keys_ready`] waits for them.
#[cfg(feature = "remote")]
pub(crate) fn remote_keys(at: &str, raw: &FileIssuer) -> Result<IssuerKeys, String> {
    use tower_gatekeeper::keys::RemoteJwks;
    let (key, builder) = match (&raw.jwks_url, &raw.discovery_url) {
        (Some(url), _) => (
            "jwks_url",
            RemoteJwks::builder(url.clone()).issuer(raw.issuer.clone()),
        ),
        (None, Some(url)) => (
            "discovery_url",
            RemoteJwks::discovery(url.clone(), raw.issuer.clone()),
        ),
        (None, None) => unreachable!("exactly one key source is set"),
    };
    builder
        .build()
        .map(IssuerKeys::from)
        .map_err(|e| format!("{at}: `{key}`: {e}"))
}

#[cfg(not(feature = "remote"))]
pub(crate) fn remote_keys(at: &str, raw: &FileIssuer) -> Result<IssuerKeys, String> {
    let key = if raw.jwks_url.is_some() {
        "jwks_url"
    } else {
        "discovery_url"
    };
    Err(format!(
        "{at}: `{key}` needs the `remote` feature (add `rustls` for https): build gatekeeper with its default features (cargo install --path gatekeeper)"
    ))
}
