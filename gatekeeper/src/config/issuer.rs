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
    match (raw.issuer.is_empty(), raw.issuer_template.is_some()) {
        (true, false) => {
            return Err(format!(
                "[[issuer]] #{n}: `issuer` must not be empty (or set `issuer_template` for a multi-tenant issuer)"
            ));
        }
        (false, true) => {
            return Err(format!(
                "[[issuer]] #{n} (issuer {:?}): `issuer` and `issuer_template` are both set; set `issuer` for one issuer or `issuer_template` for a multi-tenant issuer",
                raw.issuer
            ));
        }
        _ => {}
    }
    let at = format!("[[issuer]] #{n} (issuer {:?})", raw.name());
    if raw.audiences.is_empty() {
        return Err(format!(
            "{at}: `audiences` must list at least one audience the tokens must carry"
        ));
    }

    let (keys, validation) = if raw.issuer_template.is_some() {
        tenant_issuer(&at, &raw)?
    } else {
        tenant_keys_unset(&at, &raw)?;
        (
            single_issuer_keys(&at, &raw, base)?,
            Validation::new(raw.issuer.clone()),
        )
    };
    let mut validation = validation.audiences(raw.audiences);
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

/// The keys of a single issuer: exactly one of [`KEY_SOURCES`].
fn single_issuer_keys(at: &str, raw: &FileIssuer, base: &Path) -> Result<IssuerKeys, String> {
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
    let keys: IssuerKeys = if let Some(keys) = &raw.keys {
        keys.clone().into()
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
        remote_keys(at, raw)?
    };
    Ok(keys)
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

/// `issuer_template` as written: one template, or a list (one provider's several issuer
/// forms, e.g. Entra ID's v2 and v1 issuers).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
pub(crate) enum Templates {
    One(String),
    Many(Vec<String>),
}

impl Templates {
    fn list(&self) -> Vec<String> {
        match self {
            Templates::One(one) => vec![one.clone()],
            Templates::Many(many) => many.clone(),
        }
    }
}

impl FileIssuer {
    /// The issuer's name: `issuer`, or the first `issuer_template` as written.
    pub(crate) fn name(&self) -> String {
        match &self.issuer_template {
            Some(templates) if self.issuer.is_empty() => {
                templates.list().into_iter().next().unwrap_or_default()
            }
            _ => self.issuer.clone(),
        }
    }
}

/// The multi-tenant keys, refused on a single issuer.
fn tenant_keys_unset(at: &str, raw: &FileIssuer) -> Result<(), String> {
    for (key, set) in [
        (
            "discovery_url_template",
            raw.discovery_url_template.is_some(),
        ),
        ("jwks_url_template", raw.jwks_url_template.is_some()),
        ("tenants", raw.tenants.is_some()),
        ("any_tenant", raw.any_tenant.is_some()),
        ("max_tenants", raw.max_tenants.is_some()),
    ] {
        if set {
            return Err(format!(
                "{at}: `{key}` is only for a multi-tenant issuer; set `issuer_template` instead of `issuer`, or remove `{key}`"
            ));
        }
    }
    Ok(())
}

/// A multi-tenant issuer (`issuer_template`): its rules and its per-tenant key sources.
fn tenant_issuer(at: &str, raw: &FileIssuer) -> Result<(IssuerKeys, Validation), String> {
    use tower_gatekeeper::keys::TenantIssuer;
    for (key, set) in [
        ("jwks_file", raw.jwks_file.is_some()),
        ("hmac_secret_file", raw.hmac_secret_file.is_some()),
        ("jwks_url", raw.jwks_url.is_some()),
        ("discovery_url", raw.discovery_url.is_some()),
    ] {
        if set {
            return Err(format!(
                "{at}: `{key}` cannot be used with `issuer_template`; set `discovery_url_template` or `jwks_url_template` (with {{tenant}})"
            ));
        }
    }
    let templates = raw
        .issuer_template
        .as_ref()
        .map(Templates::list)
        .unwrap_or_default();
    if templates.is_empty() {
        return Err(format!(
            "{at}: `issuer_template` is an empty list; give at least one issuer with {{tenant}}"
        ));
    }
    let Some(claim) = raw.tenant_claim.clone() else {
        return Err(format!(
            "{at}: `tenant_claim` is required with `issuer_template`: the claim that must name the tenant of the token's `iss` (Entra ID: \"tid\")"
        ));
    };
    let tenants = match (&raw.tenants, raw.any_tenant) {
        (Some(list), None | Some(false)) => {
            TenantIssuer::listed(templates, claim, list.iter().cloned())
                .map_err(|e| format!("{at}: `tenants` / `issuer_template`: {e}"))?
        }
        (None, Some(true)) => TenantIssuer::any_tenant(templates, claim)
            .map_err(|e| format!("{at}: `issuer_template`: {e}"))?,
        (Some(_), Some(true)) => {
            return Err(format!(
                "{at}: `tenants` and `any_tenant = true` are both set; set exactly one of them"
            ));
        }
        (None, _) => {
            return Err(format!(
                "{at}: a multi-tenant issuer needs `tenants = [...]` (the tenants trusted) or an explicit `any_tenant = true`; set exactly one of them"
            ));
        }
    };
    let keys = tenant_keys(at, raw, &tenants)?;
    Ok((keys, Validation::for_tenants(tenants)))
}

#[cfg(feature = "remote")]
fn tenant_keys(
    at: &str,
    raw: &FileIssuer,
    tenants: &tower_gatekeeper::keys::TenantIssuer,
) -> Result<IssuerKeys, String> {
    use tower_gatekeeper::keys::TenantJwks;
    let (key, builder) = match (&raw.discovery_url_template, &raw.jwks_url_template) {
        (Some(url), None) => (
            "discovery_url_template",
            TenantJwks::discovery(tenants.clone(), url.clone()),
        ),
        (None, Some(url)) => (
            "jwks_url_template",
            TenantJwks::jwks_url(tenants.clone(), url.clone()),
        ),
        (Some(_), Some(_)) => {
            return Err(format!(
                "{at}: `discovery_url_template` and `jwks_url_template` are both set; set exactly one of them"
            ));
        }
        (None, None) => {
            return Err(format!(
                "{at}: no key source; a multi-tenant issuer needs `discovery_url_template` or `jwks_url_template` (with {{tenant}})"
            ));
        }
    };
    let builder = match raw.max_tenants {
        Some(0) => {
            return Err(format!("{at}: `max_tenants` must be at least 1"));
        }
        Some(max) => builder.max_tenants(max),
        None => builder,
    };
    builder
        .build()
        .map(IssuerKeys::from)
        .map_err(|e| format!("{at}: `{key}`: {e}"))
}

#[cfg(not(feature = "remote"))]
fn tenant_keys(
    at: &str,
    _raw: &FileIssuer,
    _tenants: &tower_gatekeeper::keys::TenantIssuer,
) -> Result<IssuerKeys, String> {
    Err(format!(
        "{at}: `issuer_template` needs the `remote` feature (add `rustls` for https): build gatekeeper with its default features"
    ))
}
