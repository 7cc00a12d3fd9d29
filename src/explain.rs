//! Explains, step by step, why a token would be accepted or rejected: for operators
//! (`cargo run --example gateway -- explain --config gateway.toml TOKEN`) and support tools.
//!
//! [`explain`] runs the same checks as [`JwtAuthenticator`], in the same order, and reports
//! each one: the token's size and shape, its header (`alg`, `kid`, `typ`, `crit`), the issuer,
//! each checked claim (`aud`, `exp`, `nbf`, `iat`, `sub`), the key lookup, the signature and
//! whether the identity can be forwarded exactly. The `typ` step names explicit typing (RFC
//! 8725 §3.11: without a configured `typ`, only none, `JWT` or `at+jwt`), the `iat` step a
//! token issued in the future, the `sub` step a missing or empty subject, and the `identity`
//! step a subject, issuer, tenant, role or scope that no header can carry exactly.
//! Like the authenticator it stops at the first failure; later steps are reported as not
//! reached. The verdict is the authenticator's own, so it cannot drift from what a request
//! would get. Nothing is sent anywhere except key fetches of remote key sources. The report
//! never contains the token or its signature.
//!
//! ```
//! use serde_json::json;
//! use tower_gatekeeper::{JwtAuthenticator, jwt::Validation};
//! use tower_gatekeeper::explain::{StepStatus, explain};
//! use tower_gatekeeper::keys::{SigningKey, StaticKeys};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let signer = SigningKey::generate_ed25519().unwrap().with_kid("k1");
//! let keys = StaticKeys::new([signer.verifying_key().clone()]);
//! let auth = JwtAuthenticator::new(keys, Validation::new("https://idp").audiences(["api"])).unwrap();
//!
//! let token = signer.sign(&json!({"iss": "https://idp", "aud": "other", "exp": 4102444800u64})).unwrap();
//! let report = explain(&auth, &token).await;
//! assert!(!report.accepted());
//! let aud = report.steps().iter().find(|s| s.name() == "aud").unwrap();
//! assert_eq!(aud.status(), StepStatus::Failed);
//! println!("{report}");
//! # }
//! ```

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use crate::context::AuthContext;
use crate::jwt::{self, Validation, VerifyError};
use crate::keys::{KeyQuery, KeySource};
use crate::reject::Rejection;
use crate::{JwtAuthenticator, RejectionKind};

/// How one step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StepStatus {
    /// The check passed.
    Passed,
    /// The check failed: this is why the token is rejected.
    Failed,
    /// Not checked: an earlier step failed (the authenticator stops there too).
    NotReached,
    /// Information only (no rule applies).
    Info,
}

impl StepStatus {
    fn tag(self) -> &'static str {
        match self {
            StepStatus::Passed => "ok  ",
            StepStatus::Failed => "FAIL",
            StepStatus::NotReached => " -  ",
            StepStatus::Info => "info",
        }
    }
}

/// One step of an [`Explanation`].
#[derive(Debug, Clone)]
pub struct Step {
    name: &'static str,
    status: StepStatus,
    detail: String,
}

impl Step {
    /// What was checked: `size`, `header`, `alg`, `crit`, `typ`, `iss`, `aud`, `exp`, `nbf`,
    /// `iat`, `sub`, `key`, `signature`, `identity`, and with [`explain_request`] `proof` and
    /// `binding`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// How it went.
    pub fn status(&self) -> StepStatus {
        self.status
    }

    /// What was seen and why it passed or failed.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

/// The report of [`explain`]: the steps, then the verdict. `Display` prints it for people.
#[derive(Debug)]
pub struct Explanation {
    steps: Vec<Step>,
    verdict: Result<AuthContext, Rejection>,
}

impl Explanation {
    /// The steps, in the order the authenticator runs them.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Whether a request with this token would be authenticated.
    pub fn accepted(&self) -> bool {
        self.verdict.is_ok()
    }

    /// The authenticator's verdict: the caller's context, or the rejection a request gets.
    pub fn verdict(&self) -> Result<&AuthContext, &Rejection> {
        self.verdict.as_ref()
    }

    fn push(&mut self, name: &'static str, status: StepStatus, detail: impl Into<String>) {
        self.steps.push(Step {
            name,
            status,
            detail: detail.into(),
        });
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in &self.steps {
            writeln!(
                f,
                "[{}] {:<9} {}",
                step.status.tag(),
                step.name,
                step.detail
            )?;
        }
        match &self.verdict {
            Ok(ctx) => {
                write!(
                    f,
                    "ACCEPTED: subject {:?}",
                    ctx.subject().unwrap_or("(none)")
                )?;
                if let Some(tenant) = ctx.tenant() {
                    write!(f, ", tenant {tenant:?}")?;
                }
                write!(
                    f,
                    ", roles [{}], scopes [{}]",
                    ctx.roles().join(", "),
                    ctx.scopes().join(" ")
                )
            }
            Err(rejection) => {
                let kind = rejection.kind();
                write!(
                    f,
                    "REJECTED: HTTP {} {}: {}",
                    kind.http_status().as_u16(),
                    kind.body_code(),
                    rejection.description()
                )?;
                if kind == RejectionKind::KeysUnavailable {
                    write!(
                        f,
                        " (the keys could not be had: check the key source and the logs)"
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// Explains how `auth`, wrapped in a [`DpopAuthenticator`](crate::dpop::DpopAuthenticator)
/// with `config`, judges `token` sent with `request`: the steps of [`explain`], then the
/// sender-constraint checks (RFC 9449 DPoP, RFC 8705 §3 certificate binding):
///
/// - `proof`: the `DPoP` header of `request` (when it has one) checked against its method
///   and URI (an absolute URI gives scheme and host, unless `config` has a public origin),
///   with what the proof says (`alg`, `htm`, `htu`, `iat`, key thumbprint);
/// - `binding`: the token's `cnf` (`jkt`, `x5t#S256`) against the proof's key and the
///   [`PeerCertificate`](crate::credential::PeerCertificate) in `request`'s extensions, and
///   the issuer's [`DpopMode`](crate::dpop::DpopMode).
///
/// The token is sent as `DPoP <token>` when `request` has a `DPoP` header, else as
/// `Bearer <token>`. The verdict is the wrapper's own. The proof's `jti` is checked against
/// an empty replay cache of its own: explaining records nothing and asks no Redis.
///
/// ```
/// use serde_json::json;
/// use tower_gatekeeper::{JwtAuthenticator, jwt::Validation};
/// use tower_gatekeeper::dpop::DpopConfig;
/// use tower_gatekeeper::explain::explain_request;
/// use tower_gatekeeper::keys::{SigningKey, StaticKeys};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let signer = SigningKey::generate_ed25519().unwrap();
/// let keys = StaticKeys::new([signer.verifying_key().clone()]);
/// let auth = JwtAuthenticator::new(keys, Validation::new("https://idp").audiences(["api"])).unwrap();
/// // A DPoP-bound token presented without its proof.
/// let token = signer.sign(&json!({
///     "iss": "https://idp", "aud": "api", "sub": "u", "exp": 4102444800u64,
///     "cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"},
/// })).unwrap();
/// let request = http::Request::get("https://api.example/orders").body(()).unwrap();
/// let report = explain_request(&auth, &DpopConfig::new(), &token, request).await;
/// assert!(!report.accepted());
/// assert!(report.to_string().contains("requires a DPoP proof"));
/// # }
/// ```
pub async fn explain_request<K: KeySource>(
    auth: &JwtAuthenticator<K>,
    config: &crate::dpop::DpopConfig,
    token: &str,
    request: http::Request<()>,
) -> Explanation {
    use crate::authenticate::Authenticator as _;
    let mut report = explain(auth, token).await;
    let (mut parts, ()) = request.into_parts();
    let proof = parts
        .headers
        .get(crate::dpop::DPOP)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let scheme = if proof.is_some() { "DPoP" } else { "Bearer" };
    match http::HeaderValue::try_from(format!("{scheme} {token}")) {
        Ok(value) => {
            parts.headers.insert(http::header::AUTHORIZATION, value);
        }
        Err(_) => return report,
    }
    let wrapper = crate::dpop::DpopAuthenticator::new(
        auth.clone(),
        config
            .clone()
            .replay_cache(crate::dpop::ReplayCache::memory(16)),
    );
    let head = crate::credential::RequestHead::from_parts(&parts);
    let verdict = match wrapper.authenticate(&head) {
        Ok(fut) => fut.await,
        Err(rejection) => Err(rejection),
    };
    let dpop_error = verdict
        .as_ref()
        .err()
        .and_then(|r| r.dpop_challenge())
        .and_then(|c| c.error);
    match &proof {
        None => report.push(
            "proof",
            StepStatus::Info,
            "no DPoP header: the token is sent as Bearer",
        ),
        Some(proof) => {
            let detail = describe_proof(proof);
            match dpop_error {
                Some(_) => {
                    let why = verdict
                        .as_ref()
                        .err()
                        .map(Rejection::description)
                        .unwrap_or_default();
                    report.push("proof", StepStatus::Failed, format!("{why}; {detail}"));
                }
                None => report.push("proof", StepStatus::Passed, detail),
            }
        }
    }
    if report.accepted() {
        let cnf = report
            .verdict
            .as_ref()
            .ok()
            .and_then(|ctx| ctx.claims_map().get("cnf"))
            .map_or_else(|| "no cnf claim".to_owned(), ToString::to_string);
        match (&verdict, dpop_error) {
            (Err(rejection), None) => report.push(
                "binding",
                StepStatus::Failed,
                format!("{}; the token's cnf: {cnf}", rejection.description()),
            ),
            (Ok(_), _) => report.push(
                "binding",
                StepStatus::Passed,
                format!("the token's cnf: {cnf}"),
            ),
            (Err(_), Some(_)) => report.push("binding", StepStatus::NotReached, "the proof failed"),
        }
    } else {
        report.push("binding", StepStatus::NotReached, "the token failed");
    }
    report.verdict = verdict;
    report
}

/// What a proof says, unverified, for the report: never the signature.
fn describe_proof(proof: &str) -> String {
    let mut parts = proof.split('.');
    let (Some(header), Some(claims)) = (parts.next(), parts.next()) else {
        return "not a compact JWS".to_owned();
    };
    let (Ok(header), Ok(claims)) = (jwt::decode_object(header), jwt::decode_object(claims)) else {
        return "header or claims are not JSON objects".to_owned();
    };
    let text = |v: Option<&Value>| v.map_or_else(|| "(none)".to_owned(), ToString::to_string);
    let jkt = match header.get("jwk") {
        Some(Value::Object(jwk)) => {
            crate::dpop::jwk_thumbprint(jwk).unwrap_or_else(|| "(no thumbprint)".to_owned())
        }
        _ => "(no jwk)".to_owned(),
    };
    let age = claims.get("iat").and_then(Value::as_f64).map(|iat| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        format!("{:.0} s ago", now - iat)
    });
    format!(
        "typ {}, alg {}, key thumbprint {jkt}, htm {}, htu {}, iat {} ({})",
        text(header.get("typ")),
        text(header.get("alg")),
        text(claims.get("htm")),
        text(claims.get("htu")),
        text(claims.get("iat")),
        age.unwrap_or_else(|| "no iat".to_owned()),
    )
}

/// Explains how `auth` judges `token` (a bare compact JWT, without `Bearer `). See the
/// [module docs](self).
pub async fn explain<K: KeySource>(auth: &JwtAuthenticator<K>, token: &str) -> Explanation {
    let verdict = auth.verify(token).await;
    let mut report = Explanation {
        steps: Vec::new(),
        verdict,
    };
    walk(auth, token, &mut report).await;
    // The verdict is authoritative; if the walk found nothing wrong but the authenticator
    // did (it should not happen), say so rather than contradict it silently.
    if let Err(rejection) = &report.verdict
        && !report.steps.iter().any(|s| s.status == StepStatus::Failed)
    {
        let detail = format!("the authenticator rejects the token: {rejection}");
        report.push("verdict", StepStatus::Failed, detail);
    }
    report
}

async fn walk<K: KeySource>(auth: &JwtAuthenticator<K>, token: &str, report: &mut Explanation) {
    const LATER: [&str; 15] = [
        "header",
        "iss",
        "nonce",
        "alg",
        "crit",
        "typ",
        "tenant",
        "aud",
        "exp",
        "nbf",
        "iat",
        "sub",
        "key",
        "signature",
        "identity",
    ];
    let not_reached = |report: &mut Explanation, from: &str| {
        let start = LATER.iter().position(|s| *s == from).unwrap_or(0);
        for name in &LATER[start..] {
            report.push(name, StepStatus::NotReached, "not checked");
        }
    };

    let limit = auth.max_token_bytes();
    let segments = token.split('.').count();
    if token.len() > limit {
        report.push(
            "size",
            StepStatus::Failed,
            format!("{} bytes, more than the limit of {limit}", token.len()),
        );
        return not_reached(report, "header");
    }
    report.push(
        "size",
        StepStatus::Passed,
        format!("{} bytes (limit {limit}), {segments} segments", token.len()),
    );

    // What the header says, for people; `jwt::parse` decides.
    let header = token.split('.').next().and_then(decode_segment);
    let parsed = match jwt::parse(token, limit) {
        Ok(parsed) => parsed,
        Err(error) => {
            let seen = header
                .as_ref()
                .map_or_else(|| "not a base64url JSON object".to_owned(), describe_header);
            report.push(
                "header",
                StepStatus::Failed,
                format!("{error}; header: {seen}"),
            );
            return not_reached(report, "iss");
        }
    };
    report.push(
        "header",
        StepStatus::Passed,
        header.as_ref().map_or_else(String::new, describe_header),
    );

    let Some(iss) = parsed.issuer().map(str::to_owned) else {
        report.push(
            "iss",
            StepStatus::Failed,
            "no `iss` string claim: the issuer cannot be chosen",
        );
        return not_reached(report, "alg");
    };
    let Some((validation, keys)) = auth
        .issuer_parts()
        .find(|(validation, _)| validation.matches_issuer(&iss))
    else {
        let known: Vec<String> = auth.issuers().map(|i| format!("{i:?}")).collect();
        report.push(
            "iss",
            StepStatus::Failed,
            format!(
                "{iss:?} is not a configured issuer (configured: {})",
                known.join(", ")
            ),
        );
        return not_reached(report, "alg");
    };
    let configured = match validation.tenant_issuer() {
        Some(tenants) => format!(
            "{iss:?} matches the multi-tenant issuer {:?}",
            tenants.name()
        ),
        None => format!("{iss:?} is configured"),
    };
    report.push("iss", StepStatus::Passed, configured);
    if token.len() > validation.token_limit() {
        report.push(
            "size",
            StepStatus::Failed,
            format!(
                "{} bytes, more than this issuer's limit of {}",
                token.len(),
                validation.token_limit()
            ),
        );
        return not_reached(report, "alg");
    }

    // `Validation::check_token` runs these checks in this order and stops at the first
    // failure; the failing one is identified from its error.
    let claims = &parsed.claims.to_map();
    let checks: [(&str, String); 10] = [
        (
            "nonce",
            if header.as_ref().is_some_and(|h| h.contains_key("nonce")) {
                "the header carries a nonce: a token for another resource (e.g. Microsoft Graph), which third parties cannot verify".to_owned()
            } else {
                "no nonce in the header".to_owned()
            },
        ),
        (
            "alg",
            format!(
                "{} (allowed: {})",
                parsed.alg.as_str(),
                validation
                    .allowed_algorithms()
                    .map_or_else(|| "what the keys support".to_owned(), |a| format!("{a:?}"))
            ),
        ),
        ("crit", header_field(header.as_ref(), "crit")),
        (
            "typ",
            format!(
                "{} (accepted: {})",
                header_field(header.as_ref(), "typ"),
                validation
                    .required_type()
                    .map_or_else(|| "none, JWT or at+jwt".to_owned(), |t| format!("{t:?}"))
            ),
        ),
        ("tenant", describe_tenant(validation, claims)),
        ("aud", claim_text(claims.get("aud"))),
        ("exp", time_claim(claims.get("exp"))),
        ("nbf", time_claim(claims.get("nbf"))),
        ("iat", time_claim(claims.get("iat"))),
        (
            "sub",
            format!(
                "{} ({})",
                claim_text(claims.get("sub")),
                if validation.subject_required() {
                    "a non-empty subject is required"
                } else {
                    "a subject is optional"
                }
            ),
        ),
    ];
    let failed = validation.check_token(&parsed).err();
    let failed_at = failed.as_ref().map(failing_check);
    let mut reached = true;
    for (name, seen) in checks {
        if !reached {
            report.push(name, StepStatus::NotReached, format!("not checked; {seen}"));
            continue;
        }
        if Some(name) == failed_at {
            let error = failed.as_ref().map(ToString::to_string).unwrap_or_default();
            report.push(name, StepStatus::Failed, format!("{error}: {seen}"));
            reached = false;
        } else {
            report.push(name, StepStatus::Passed, seen);
        }
    }
    if !reached {
        return not_reached(report, "key");
    }

    let query = KeyQuery::new(Some(&iss), parsed.kid.as_deref(), parsed.alg);
    let key = match keys.key(&query).await {
        Ok(key) => key,
        Err(error) => {
            let status = StepStatus::Failed;
            let kid = parsed.kid.as_deref().unwrap_or("(none)");
            report.push(
                "key",
                status,
                format!(
                    "no key for kid {kid:?} and {}: {error}",
                    parsed.alg.as_str()
                ),
            );
            return not_reached(report, "signature");
        }
    };
    report.push(
        "key",
        StepStatus::Passed,
        format!(
            "kid {:?}, may verify {:?}",
            key.kid().unwrap_or("(none)"),
            key.algorithms()
        ),
    );
    match jwt::finish(validation, parsed, &key) {
        Ok(_) => {
            report.push("signature", StepStatus::Passed, "verifies with this key");
            report.push(
                "identity",
                StepStatus::Passed,
                "sub, iss, tenant, roles and scopes can be forwarded exactly",
            );
        }
        Err(VerifyError::Identity(error)) => {
            report.push("signature", StepStatus::Passed, "verifies with this key");
            report.push("identity", StepStatus::Failed, error.to_string());
        }
        Err(error) => {
            report.push("signature", StepStatus::Failed, error.to_string());
            report.push("identity", StepStatus::NotReached, "not checked");
        }
    }
}

/// The step `check_token`'s error belongs to.
fn failing_check(error: &VerifyError) -> &'static str {
    match error {
        VerifyError::HeaderNonce => "nonce",
        VerifyError::TenantNotAllowed
        | VerifyError::TenantMismatch
        | VerifyError::UntrustedIssuer
        | VerifyError::InvalidClaim("iss") => "tenant",
        VerifyError::AlgorithmNotAllowed => "alg",
        VerifyError::UnsupportedCritical => "crit",
        VerifyError::WrongType | VerifyError::NotAccessTokenType => "typ",
        VerifyError::InvalidAudience | VerifyError::InvalidClaim("aud") => "aud",
        VerifyError::Expired
        | VerifyError::InvalidClaim("exp")
        | VerifyError::MissingClaim("exp") => "exp",
        VerifyError::NotYetValid | VerifyError::InvalidClaim("nbf") => "nbf",
        VerifyError::IssuedInFuture | VerifyError::InvalidClaim("iat") => "iat",
        _ => "sub",
    }
}

/// The tenant checks of a multi-tenant issuer: the tenant the `iss` names, whether it is
/// trusted, and the tenant claim it must equal.
fn describe_tenant(validation: &Validation, claims: &serde_json::Map<String, Value>) -> String {
    let Some(tenants) = validation.tenant_issuer() else {
        return "not a multi-tenant issuer".to_owned();
    };
    let tenant = claims
        .get("iss")
        .and_then(Value::as_str)
        .and_then(|iss| tenants.tenant_of(iss))
        .unwrap_or("(none)");
    let trusted = if tenants.trusts_any_tenant() {
        "any tenant is trusted"
    } else if tenants.is_allowed(tenant) {
        "in the allow-list"
    } else {
        "not in the allow-list"
    };
    format!(
        "iss names tenant {tenant:?} ({trusted}); claim {:?} is {}",
        tenants.claim(),
        claim_text(crate::context::claim_at_path(claims, tenants.claim()))
    )
}

fn decode_segment(segment: &str) -> Option<serde_json::Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn describe_header(header: &serde_json::Map<String, Value>) -> String {
    let mut parts = Vec::new();
    for name in ["alg", "kid", "typ", "crit"] {
        if let Some(value) = header.get(name) {
            parts.push(format!("{name}={}", short(value)));
        }
    }
    if parts.is_empty() {
        "no alg, kid, typ or crit".to_owned()
    } else {
        parts.join(" ")
    }
}

fn header_field(header: Option<&serde_json::Map<String, Value>>, name: &str) -> String {
    match header.and_then(|h| h.get(name)) {
        Some(value) => format!("{name}={}", short(value)),
        None => format!("no {name}"),
    }
}

fn claim_text(value: Option<&Value>) -> String {
    value.map_or_else(|| "absent".to_owned(), short)
}

/// A JSON value for a report line, cut to 200 characters.
fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 200 {
        let cut: String = text.chars().take(200).collect();
        format!("{cut}…")
    } else {
        text
    }
}

fn time_claim(value: Option<&Value>) -> String {
    let Some(value) = value else {
        return "absent".to_owned();
    };
    let Some(secs) = value.as_f64() else {
        return format!("{} (not a number)", short(value));
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let delta = secs - now;
    let when = if delta >= 0.0 {
        format!("in {}", human(delta))
    } else {
        format!("{} ago", human(-delta))
    };
    format!("{} ({when})", utc(secs))
}

fn human(secs: f64) -> String {
    let secs = secs.round() as u64;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86400, secs % 86400 / 3600),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
fn utc(secs: f64) -> String {
    if !secs.is_finite() || secs.abs() > 253_402_300_799.0 {
        return format!("{secs}");
    }
    let secs = secs.floor() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each check added for explicit typing, `iat`, the subject and forwardable identities
    /// is a named step that fails alone, the earlier ones passed.
    #[tokio::test]
    async fn the_new_checks_are_named() {
        use serde_json::{Map, json};

        use crate::keys::{SigningKey, StaticKeys};
        use crate::{Algorithm, JwtAuthenticator, jwt::Validation};

        let signer = SigningKey::hmac(Algorithm::HS256, &[7; 32]).unwrap();
        let auth = JwtAuthenticator::new(
            StaticKeys::new([signer.verifying_key().clone()]),
            Validation::new("https://idp").audiences(["api"]),
        )
        .unwrap();
        let token = |typ: &str, over: serde_json::Value| {
            let mut claims = json!({"iss": "https://idp", "aud": "api", "sub": "alice",
                "iat": 1_700_000_000u64, "exp": 4_102_444_800u64});
            for (k, v) in over.as_object().unwrap() {
                if v.is_null() {
                    claims.as_object_mut().unwrap().remove(k);
                } else {
                    claims[k] = v.clone();
                }
            }
            let mut header = Map::new();
            header.insert("typ".into(), typ.into());
            signer.sign_with_header(header, &claims).unwrap()
        };
        let cases = [
            ("typ", token("logout+jwt", json!({})), "explicit typing"),
            (
                "iat",
                token("JWT", json!({"iat": 4_000_000_000u64})),
                "issued in the future",
            ),
            (
                "iat",
                token("JWT", json!({"iat": "1700000000"})),
                "invalid iat",
            ),
            (
                "sub",
                token("JWT", json!({"sub": null})),
                "missing required claim sub",
            ),
            (
                "sub",
                token("JWT", json!({"sub": ""})),
                "missing required claim sub",
            ),
            (
                "identity",
                token("JWT", json!({"sub": "alice\r\nx: y"})),
                "cannot be forwarded",
            ),
            (
                "identity",
                token("JWT", json!({"tenant_id": "a\u{0}"})),
                "tenant",
            ),
        ];
        for (step, token, says) in cases {
            let report = explain(&auth, &token).await;
            assert!(!report.accepted(), "{step}: {report}");
            let failed: Vec<_> = report
                .steps()
                .iter()
                .filter(|s| s.status() == StepStatus::Failed)
                .collect();
            assert_eq!(failed.len(), 1, "{report}");
            assert_eq!(failed[0].name(), step, "{report}");
            assert!(failed[0].detail().contains(says), "{report}");
            if step == "identity" {
                let signature = report.steps().iter().find(|s| s.name() == "signature");
                assert_eq!(signature.unwrap().status(), StepStatus::Passed, "{report}");
            }
        }
        let report = explain(&auth, &token("at+jwt", json!({"tenant_id": "acmé"}))).await;
        assert!(report.accepted(), "{report}");
        let typ = report.steps().iter().find(|s| s.name() == "typ").unwrap();
        assert!(typ.detail().contains("none, JWT or at+jwt"), "{report}");
        let identity = report
            .steps()
            .iter()
            .find(|s| s.name() == "identity")
            .unwrap();
        assert_eq!(identity.status(), StepStatus::Passed);
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(4102444800.0), "2100-01-01T00:00:00Z");
        assert_eq!(utc(951782400.0), "2000-02-29T00:00:00Z");
    }
}
