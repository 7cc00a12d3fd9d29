//! `[context]` (the signed context minted for upstreams), `[ext_authz]` (the external
//! authorizer) and each route's report-only `shadow` rules.

use std::path::Path;
use std::time::Duration;

use tower_gatekeeper::authorize::{BoxPolicy, RuleConfig, Shadow, all_of, shadow};
use tower_gatekeeper::keys::SigningKey;
use tower_gatekeeper::{Algorithm, ContextPropagationLayer, PolicyEvaluator};

use crate::config::file::{FileContext, FileExtAuthz, RouteAuth};
use crate::config::route::RouteSpec;
use crate::config::seconds;

/// The propagation layer every route uses: with `[context]`, it also mints the signed
/// context; without, the library's defaults.
pub(crate) fn compile_context(
    section: Option<FileContext>,
    base: &Path,
) -> Result<ContextPropagationLayer, String> {
    let Some(raw) = section else {
        return Ok(ContextPropagationLayer::new());
    };
    let file = base.join(&raw.sign_key_file);
    let pem = std::fs::read(&file).map_err(|e| {
        format!(
            "[context]: `sign_key_file` {:?}: {e}",
            file.display().to_string()
        )
    })?;
    // PKCS#8 says which curve the key is on: Ed25519 signs EdDSA, P-256 signs ES256.
    let key = SigningKey::from_pem(Algorithm::EdDSA, &pem)
        .or_else(|_| SigningKey::from_pem(Algorithm::ES256, &pem))
        .map_err(|_| {
            format!(
                "[context]: `sign_key_file` {:?} is not a PKCS#8 PEM Ed25519 or P-256 private key (`openssl genpkey -algorithm ed25519` makes one)",
                file.display().to_string()
            )
        })?;
    if raw.kid.is_empty() {
        return Err("[context]: `kid` must not be empty".to_owned());
    }
    if raw.audience.is_empty() {
        return Err(
            "[context]: `audience` must not be empty: it names the services the context is for"
                .to_owned(),
        );
    }
    let mut builder = ContextPropagationLayer::builder()
        .sign_context(key.with_kid(raw.kid))
        .context_audience(raw.audience);
    if let Some(issuer) = raw.issuer {
        builder = builder.context_issuer(issuer);
    }
    if let Some(secs) = raw.lifetime_seconds {
        builder = builder.context_lifetime(seconds(
            "[context]: `lifetime_seconds`",
            Some(secs),
            Duration::ZERO,
        )?);
    }
    builder.build().map_err(|e| format!("[context]: {e}"))
}

/// The external authorizer `[ext_authz]` configures, as a policy.
#[cfg(feature = "ext-authz")]
pub(crate) fn compile_ext_authz(
    section: Option<FileExtAuthz>,
) -> Result<Option<BoxPolicy>, String> {
    use tower_gatekeeper::authorize::ext_authz::ExtAuthz;
    let Some(raw) = section else {
        return Ok(None);
    };
    if raw.url.starts_with("https://") {
        return Err(format!(
            "[ext_authz]: `url` {:?}: https is not supported by the external authorizer client; run the authorizer on loopback or a trusted network (a sidecar) and use http://",
            raw.url
        ));
    }
    let mut builder = ExtAuthz::builder(raw.url);
    if let Some(secs) = raw.timeout_seconds {
        builder = builder.timeout(seconds(
            "[ext_authz]: `timeout_seconds`",
            Some(secs),
            Duration::ZERO,
        )?);
    }
    if let Some(n) = raw.max_connections {
        if n == 0 {
            return Err("[ext_authz]: `max_connections` must be at least 1".to_owned());
        }
        builder = builder.max_connections(n);
    }
    let authorizer = builder.build().map_err(|e| format!("[ext_authz]: {e}"))?;
    Ok(Some(authorizer.boxed()))
}

#[cfg(not(feature = "ext-authz"))]
pub(crate) fn compile_ext_authz(
    section: Option<FileExtAuthz>,
) -> Result<Option<BoxPolicy>, String> {
    match section {
        None => Ok(None),
        Some(_) => Err("[ext_authz] needs the `ext-authz` feature: build gatekeeper with its default features (cargo install --path gatekeeper)".to_owned()),
    }
}

/// A route's `shadow` rules: checked like its enforced rules, then run report-only.
pub(crate) fn compile_shadow(
    label: &str,
    rules: Option<RuleConfig>,
    auth: RouteAuth,
    issuers: &[String],
    base: &Path,
) -> Result<Option<Shadow<BoxPolicy>>, String> {
    let Some(mut rules) = rules else {
        return Ok(None);
    };
    if auth == RouteAuth::Public {
        return Err(format!(
            "{label}: `shadow` rules need an authenticated caller; they cannot be used with auth = \"public\""
        ));
    }
    if rules.is_empty() {
        return Err(format!(
            "{label}: `shadow` is empty; give it rule keys (e.g. shadow = {{ roles_any = [\"admin\"] }}) or remove it"
        ));
    }
    rules
        .check_issuers(issuers)
        .map_err(|e| format!("{label}: `shadow`: {e}"))?;
    if let Some(rego) = &mut rules.rego {
        rego.policy = base.join(&rego.policy);
        rego.data = rego.data.as_ref().map(|data| base.join(data));
    }
    let policy = rules
        .compile()
        .map_err(|e| format!("{label}: `shadow`: {e}"))?;
    Ok(Some(shadow(label.to_owned(), policy)))
}

/// Checks each route's `ext_authz` key against whether `[ext_authz]` is configured.
pub(crate) fn check_ext_authz_keys(routes: &[RouteSpec], configured: bool) -> Result<(), String> {
    for route in routes {
        match route.ext_authz {
            Some(_) if !configured => {
                return Err(format!(
                    "{}: `ext_authz` applies when [ext_authz] is configured; add [ext_authz] or remove the key",
                    route.label
                ));
            }
            Some(true) if route.auth == RouteAuth::Public => {
                return Err(format!(
                    "{}: `ext_authz = true` needs a route that authenticates; it cannot be used with auth = \"public\"",
                    route.label
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The policy a route enforces: its rules, then (report-only) its shadow rules, then the
/// external authorizer unless the route opts out.
pub(crate) fn route_policy(route: &RouteSpec, ext_authz: Option<&BoxPolicy>) -> BoxPolicy {
    let ext_authz = ext_authz.filter(|_| route.ext_authz != Some(false));
    if route.shadow.is_none() && ext_authz.is_none() {
        return route.policy.clone();
    }
    // Synchronous members are asked first, so the authorizer is only called for requests
    // the route's own rules allow.
    let mut members = vec![route.policy.clone()];
    if let Some(shadow) = &route.shadow {
        members.push(shadow.clone().boxed());
    }
    if let Some(authorizer) = ext_authz {
        members.push(authorizer.clone());
    }
    all_of(members).boxed()
}
