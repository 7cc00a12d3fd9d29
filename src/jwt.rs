//! JWT verification rules on top of jsonwebtoken's keys and crypto.
//!
//! jsonwebtoken checks signatures well; this module closes what a gateway must close around
//! them (RFC 7515, RFC 7519, RFC 8725 "JWT Best Current Practices", RFC 9068):
//!
//! - tokens larger than [`Validation::max_token_bytes`] (16 KiB) are refused before parsing;
//! - segments must be canonical base64url without padding; header and claims must be JSON
//!   objects **without duplicate member names** (RFC 7515 §5.2 allows rejecting them, and
//!   ambiguous claims are how parser-differential attacks work);
//! - `alg` must name a supported algorithm exactly (never `none`, in any casing), be in the
//!   issuer's allow-list and be bound to the key that verifies it (see [`crate::keys`]);
//! - `crit` (RFC 7515 §4.1.11) listing anything not explicitly understood is refused;
//! - `jku`, `x5u`, `jwk` and `x5c` headers are never used to find keys: keys come only from
//!   the configured [`KeySource`](crate::keys::KeySource);
//! - `typ` is checked when configured (`at+jwt` for RFC 9068 access tokens; the
//!   `application/` prefix and case are ignored, RFC 7515 §4.1.9); when it is not, explicit
//!   typing (RFC 8725 §3.11) still applies: only an absent `typ`, `JWT` or `at+jwt` is an
//!   access token, so a DPoP proof (`dpop+jwt`), a logout token (`logout+jwt`), a security
//!   event token (`secevent+jwt`) or any other typed JWT signed by the same key is refused;
//! - `iss` must equal the configured issuer exactly; `aud` (string or array) must contain a
//!   configured audience; `exp` is required by default, `nbf` honoured, `iat` must not be in
//!   the future, all with leeway, and each must be a number;
//! - `sub` is required (non-empty) unless [`Validation::require_subject`] turns that off, and
//!   the identity must be forwardable exactly ([`AuthContext::check_forwardable`]): a `sub`
//!   with control characters, non-ASCII or spaces at either end, or roles, scopes or a tenant
//!   with control characters, are refused rather than forwarded half-built;
//! - a token without `kid` that several keys could verify is rejected, not guessed.

use std::cell::RefCell;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::algorithm::{Algorithm, AlgorithmSet};
pub use crate::clock::Clock;
pub use crate::config_error::ConfigError;
use crate::context::{AuthContext, ClaimSource, CredentialKind, IdentityError, map_identity};
use crate::credential::DEFAULT_MAX_TOKEN_BYTES;
use crate::keys::{KeyError, TenantIssuer, VerifyingKey};
use crate::reject::Rejection;

mod scan;

/// Why a token failed verification. Texts are fixed and never contain token content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The token is larger than the configured limit.
    #[error("token too large")]
    TooLarge,
    /// The token is not a well-formed compact JWS.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg` is missing, `none`, or not a supported algorithm.
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    /// `alg` is not in the issuer's allow-list.
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    /// The header lists a critical extension this verifier does not understand.
    #[error("unsupported critical header parameter")]
    UnsupportedCritical,
    /// `typ` is not the configured token type.
    #[error("wrong token type")]
    WrongType,
    /// No `typ` is configured and the header's `typ` is not one of an access token (absent,
    /// `JWT`, `at+jwt`): a DPoP proof, a logout token, a security event token... (RFC 8725
    /// §3.11 explicit typing).
    #[error("token type is not an access token type (explicit typing)")]
    NotAccessTokenType,
    /// `iss` is missing or not a trusted issuer.
    #[error("untrusted issuer")]
    UntrustedIssuer,
    /// The tenant named by the `iss` of a multi-tenant issuer is not trusted.
    #[error("tenant not allowed")]
    TenantNotAllowed,
    /// The token's tenant claim does not name the tenant of its `iss`.
    #[error("tenant claim does not match the issuer's tenant")]
    TenantMismatch,
    /// The JWS header carries a `nonce` (as Microsoft Graph access tokens do): such tokens
    /// are meant for their own resource only and cannot be verified by third parties.
    #[error("token header carries a nonce (a token for another resource, e.g. Microsoft Graph)")]
    HeaderNonce,
    /// `aud` is missing or contains none of the configured audiences.
    #[error("invalid audience")]
    InvalidAudience,
    /// `exp` is in the past (beyond leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` is in the future (beyond leeway).
    #[error("token issued in the future")]
    IssuedInFuture,
    /// A required claim is missing.
    #[error("missing required claim {0}")]
    MissingClaim(&'static str),
    /// A registered claim has the wrong type.
    #[error("invalid {0} claim")]
    InvalidClaim(&'static str),
    /// No usable key was found.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The signature does not verify.
    #[error("invalid signature")]
    BadSignature,
    /// The verified token's identity cannot be forwarded exactly (see
    /// [`AuthContext::check_forwardable`]).
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

impl VerifyError {
    /// The fixed, client-safe description used in `error_description`.
    pub fn description(&self) -> &'static str {
        match self {
            VerifyError::TooLarge => "token too large",
            VerifyError::Malformed(_) => "malformed token",
            VerifyError::UnsupportedAlgorithm => "unsupported algorithm",
            VerifyError::AlgorithmNotAllowed => "algorithm not allowed",
            VerifyError::UnsupportedCritical => "unsupported critical header parameter",
            VerifyError::WrongType => "wrong token type",
            VerifyError::NotAccessTokenType => "token type is not an access token type",
            VerifyError::UntrustedIssuer => "untrusted issuer",
            VerifyError::TenantNotAllowed => "tenant not allowed",
            VerifyError::TenantMismatch => "tenant claim does not match the issuer's tenant",
            VerifyError::HeaderNonce => {
                "token header carries a nonce; it is meant for another resource"
            }
            VerifyError::InvalidAudience => "invalid audience",
            VerifyError::Expired => "token expired",
            VerifyError::NotYetValid => "token not yet valid",
            VerifyError::IssuedInFuture => "token issued in the future",
            VerifyError::MissingClaim(_) => "missing required claim",
            VerifyError::InvalidClaim(_) => "invalid claim",
            VerifyError::Key(KeyError::AlgorithmMismatch) => "algorithm not allowed for key",
            VerifyError::Key(KeyError::AmbiguousKey) => "token must name its key (kid)",
            VerifyError::Key(KeyError::UnknownIssuer) => "untrusted issuer",
            VerifyError::Key(_) => "no matching key",
            VerifyError::BadSignature => "invalid signature",
            VerifyError::Identity(error) => error.description(),
        }
    }

    /// The rejection this error becomes: 503 when keys are unavailable, else 401
    /// `invalid_token`.
    pub fn into_rejection(self) -> Rejection {
        match self {
            VerifyError::Key(KeyError::Unavailable { retry_after }) => {
                Rejection::keys_unavailable(retry_after).with_source(self)
            }
            _ => Rejection::invalid_token(self.description()).with_source(self),
        }
    }
}

/// How tokens of one issuer are verified and mapped into an [`AuthContext`].
///
/// ```
/// use std::time::Duration;
/// use tower_gatekeeper::{Algorithm, jwt::Validation};
///
/// let validation = Validation::new("https://idp.example.test")
///     .audiences(["api://orders"])
///     .algorithms([Algorithm::RS256, Algorithm::ES256])
///     .leeway(Duration::from_secs(30))
///     .roles_claim("realm_access.roles")
///     .tenant_claim("tenant_id")
///     .required_typ("at+jwt");
/// assert_eq!(validation.issuer(), "https://idp.example.test");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Validation {
    issuer: String,
    audiences: Vec<String>,
    any_audience: bool,
    algorithms: Option<AlgorithmSet>,
    leeway: Duration,
    required_typ: Option<String>,
    require_exp: bool,
    require_subject: bool,
    roles_claim: String,
    tenant_claim: Option<String>,
    understood_crit: Vec<String>,
    max_token_bytes: usize,
    clock: Clock,
    tenants: Option<TenantIssuer>,
}

/// The default leeway for `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

impl Validation {
    /// Rules for tokens whose `iss` is exactly `issuer`.
    ///
    /// Defaults: audiences must be set (or [`any_audience`](Self::any_audience) chosen),
    /// algorithms are those the keys are bound to, leeway 30 s, `exp` and `sub` required,
    /// `typ` absent, `JWT` or `at+jwt`, roles from `roles`, tenant from `tenant_id`, no `crit`
    /// understood, 16 KiB size limit.
    pub fn new(issuer: impl Into<String>) -> Self {
        Validation {
            issuer: issuer.into(),
            audiences: Vec::new(),
            any_audience: false,
            algorithms: None,
            leeway: DEFAULT_LEEWAY,
            required_typ: None,
            require_exp: true,
            require_subject: true,
            roles_claim: "roles".to_owned(),
            tenant_claim: Some("tenant_id".to_owned()),
            understood_crit: Vec::new(),
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            clock: Clock::system(),
            tenants: None,
        }
    }

    /// Accepted audiences: the token's `aud` must contain at least one.
    pub fn audiences<I, S>(mut self, audiences: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.audiences = audiences.into_iter().map(Into::into).collect();
        self
    }

    /// Accepts any `aud` (or none). Only for issuers that mint tokens for this API alone.
    pub fn any_audience(mut self) -> Self {
        self.any_audience = true;
        self
    }

    /// The algorithm allow-list for this issuer. Keys narrow it further.
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = Some(algorithms.into_iter().collect());
        self
    }

    /// Tolerance for clock skew on `exp` and `nbf`.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Requires the `typ` header to be this media type (e.g. `at+jwt`). Without it, explicit
    /// typing still refuses every `typ` but `JWT` and `at+jwt` (or none).
    pub fn required_typ(mut self, typ: impl Into<String>) -> Self {
        self.required_typ = Some(typ.into());
        self
    }

    /// Whether `exp` is required (default `true`). Tokens without expiry live forever; only
    /// turn this off for issuers that really cannot set it.
    pub fn require_exp(mut self, require: bool) -> Self {
        self.require_exp = require;
        self
    }

    /// Whether a non-empty `sub` is required (default `true`): a token without a subject
    /// would be forwarded as an authenticated request that names nobody. Turn it off only
    /// for issuers whose tokens (e.g. client credentials) really have none; their requests
    /// are then forwarded without the user id header.
    pub fn require_subject(mut self, require: bool) -> Self {
        self.require_subject = require;
        self
    }

    /// Requires a non-empty `sub` (the default); the same as `require_subject(true)`.
    pub fn require_sub(self) -> Self {
        self.require_subject(true)
    }

    /// The claim holding roles, as a dotted path (`"realm_access.roles"`); a string or an
    /// array of strings.
    pub fn roles_claim(mut self, path: impl Into<String>) -> Self {
        self.roles_claim = path.into();
        self
    }

    /// The claim holding the tenant, as a dotted path; `None` for no tenant.
    pub fn tenant_claim(mut self, path: impl Into<String>) -> Self {
        self.tenant_claim = Some(path.into());
        self
    }

    /// Maps no tenant.
    pub fn no_tenant(mut self) -> Self {
        self.tenant_claim = None;
        self
    }

    /// Critical header parameters (`crit`) this deployment understands. Only list names
    /// whose semantics something in front of or behind the gateway really enforces.
    pub fn understood_crit<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.understood_crit = names.into_iter().map(Into::into).collect();
        self
    }

    /// The largest token accepted, in bytes (default 16 KiB).
    pub fn max_token_bytes(mut self, max: usize) -> Self {
        self.max_token_bytes = max;
        self
    }

    /// The clock used for `exp` and `nbf` (tests).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The issuer.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Rules for the tokens of a multi-tenant issuer: an `iss` matching one of `tenants`'
    /// templates, naming a trusted tenant, with the tenant claim naming the same tenant
    /// (else 401: [`VerifyError::UntrustedIssuer`], [`VerifyError::TenantNotAllowed`],
    /// [`VerifyError::TenantMismatch`]). The issuer's name
    /// ([`issuer`](Self::issuer), [`AuthContext::issuer`](crate::AuthContext::issuer)) is the
    /// first template as written; the tenant is [`AuthContext::tenant`](crate::AuthContext::tenant).
    /// Pair it with a [`TenantJwks`](crate::keys::TenantJwks) of the same `tenants`.
    ///
    /// ```
    /// use tower_gatekeeper::jwt::Validation;
    /// use tower_gatekeeper::keys::TenantIssuer;
    ///
    /// let tenants = TenantIssuer::any_tenant(["https://login.example.com/{tenant}/v2.0"], "tid")?;
    /// let validation = Validation::for_tenants(tenants).audiences(["api://orders"]);
    /// assert_eq!(validation.issuer(), "https://login.example.com/{tenant}/v2.0");
    /// # Ok::<(), tower_gatekeeper::ConfigError>(())
    /// ```
    pub fn for_tenants(tenants: TenantIssuer) -> Self {
        let mut validation = Validation::new(tenants.name());
        validation.tenant_claim = Some(tenants.claim().to_owned());
        validation.tenants = Some(tenants);
        validation
    }

    /// The multi-tenant rules, when this is a multi-tenant issuer.
    pub fn tenant_issuer(&self) -> Option<&TenantIssuer> {
        self.tenants.as_ref()
    }

    /// Whether a token's `iss` belongs to this issuer: equal to it, or for a multi-tenant
    /// issuer, matching one of its templates (the tenant checks come later).
    pub(crate) fn matches_issuer(&self, iss: &str) -> bool {
        match &self.tenants {
            Some(tenants) => tenants.tenant_of(iss).is_some(),
            None => iss == self.issuer,
        }
    }

    /// The configured allow-list, if any.
    pub fn allowed_algorithms(&self) -> Option<AlgorithmSet> {
        self.algorithms
    }

    /// The required `typ`, if any.
    pub fn required_type(&self) -> Option<&str> {
        self.required_typ.as_deref()
    }

    /// Whether a non-empty `sub` is required.
    pub fn subject_required(&self) -> bool {
        self.require_subject
    }

    /// The size limit.
    pub fn token_limit(&self) -> usize {
        self.max_token_bytes
    }

    /// Checks the configuration.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming what to fix.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.issuer.is_empty() {
            return Err(ConfigError::invalid("issuer must not be empty"));
        }
        if !crate::context::is_exact_header_text(&self.issuer) {
            return Err(ConfigError::invalid(format!(
                "issuer {:?}: an issuer is forwarded in a header and must be visible ASCII",
                self.issuer
            )));
        }
        if self.audiences.is_empty() && !self.any_audience {
            return Err(ConfigError::invalid(format!(
                "issuer {:?}: no audience configured; set the audiences this API accepts (or choose any_audience explicitly)",
                self.issuer
            )));
        }
        if self.audiences.iter().any(String::is_empty) {
            return Err(ConfigError::invalid(format!(
                "issuer {:?}: empty audience",
                self.issuer
            )));
        }
        if self.algorithms.is_some_and(AlgorithmSet::is_empty) {
            return Err(ConfigError::invalid(format!(
                "issuer {:?}: the algorithm allow-list is empty",
                self.issuer
            )));
        }
        if self.roles_claim.is_empty() || self.tenant_claim.as_deref() == Some("") {
            return Err(ConfigError::invalid(format!(
                "issuer {:?}: empty claim path",
                self.issuer
            )));
        }
        if self.max_token_bytes < 64 {
            return Err(ConfigError::invalid(
                "max_token_bytes is too small to hold any JWT",
            ));
        }
        Ok(())
    }

    /// Checks an unverified token's claims and header against these rules (everything but
    /// the signature).
    pub(crate) fn check_token(&self, token: &UnverifiedToken<'_>) -> Result<(), VerifyError> {
        if token.header_nonce {
            return Err(VerifyError::HeaderNonce);
        }
        if self
            .algorithms
            .is_some_and(|allowed| !allowed.contains(token.alg))
        {
            return Err(VerifyError::AlgorithmNotAllowed);
        }
        if let Some(crit) = &token.crit {
            let understood = |name: &String| self.understood_crit.contains(name);
            if crit.is_empty() || !crit.iter().all(understood) {
                return Err(VerifyError::UnsupportedCritical);
            }
        }
        match (&self.required_typ, token.typ.as_deref()) {
            (Some(required), typ) => {
                if !typ.is_some_and(|typ| media_type_eq(typ, required)) {
                    return Err(VerifyError::WrongType);
                }
            }
            (None, None) => {}
            (None, Some(typ)) => {
                if !ACCESS_TOKEN_TYPES.iter().any(|t| media_type_eq(typ, t)) {
                    return Err(VerifyError::NotAccessTokenType);
                }
            }
        }
        // iss was matched exactly (or by a tenant template) when the issuer was chosen.
        if let Some(tenants) = &self.tenants {
            tenants.check_claims(&token.claims.view(&[tenants.claim()]))?;
        }
        self.check_audience(token.claims.get(Registered::Aud))?;
        let now = self.clock.now_unix();
        let leeway = self.leeway.as_secs_f64();
        match token.claims.get(Registered::Exp) {
            Some(exp) => {
                let exp = exp.as_f64().ok_or(VerifyError::InvalidClaim("exp"))?;
                if now - leeway >= exp {
                    return Err(VerifyError::Expired);
                }
            }
            None if self.require_exp => return Err(VerifyError::MissingClaim("exp")),
            None => {}
        }
        if let Some(nbf) = token.claims.get(Registered::Nbf) {
            let nbf = nbf.as_f64().ok_or(VerifyError::InvalidClaim("nbf"))?;
            if now + leeway < nbf {
                return Err(VerifyError::NotYetValid);
            }
        }
        if let Some(iat) = token.claims.get(Registered::Iat) {
            let iat = iat.as_f64().ok_or(VerifyError::InvalidClaim("iat"))?;
            if now + leeway < iat {
                return Err(VerifyError::IssuedInFuture);
            }
        }
        match token.claims.get(Registered::Sub) {
            Some(Value::String(sub)) if !sub.is_empty() => {}
            Some(Value::String(_)) | None if self.require_subject => {
                return Err(VerifyError::MissingClaim("sub"));
            }
            Some(Value::String(_)) | None => {}
            Some(_) => return Err(VerifyError::InvalidClaim("sub")),
        }
        Ok(())
    }

    fn check_audience(&self, aud: Option<&Value>) -> Result<(), VerifyError> {
        let accepted = |aud: &str| self.audiences.iter().any(|a| a == aud);
        match aud {
            Some(Value::String(aud)) => {
                if self.any_audience || accepted(aud) {
                    Ok(())
                } else {
                    Err(VerifyError::InvalidAudience)
                }
            }
            Some(Value::Array(items)) => {
                let mut found = false;
                for item in items {
                    let aud = item.as_str().ok_or(VerifyError::InvalidClaim("aud"))?;
                    found |= accepted(aud);
                }
                if self.any_audience || found {
                    Ok(())
                } else {
                    Err(VerifyError::InvalidAudience)
                }
            }
            Some(_) => Err(VerifyError::InvalidClaim("aud")),
            None if self.any_audience => Ok(()),
            None => Err(VerifyError::InvalidAudience),
        }
    }

    /// Builds the [`AuthContext`] of a verified token, refusing an identity that cannot be
    /// forwarded exactly.
    fn context(
        &self,
        token: UnverifiedToken<'_>,
        key: &VerifyingKey,
    ) -> Result<AuthContext, VerifyError> {
        let claims = token.claims;
        let paths = [
            self.roles_claim.as_str(),
            self.tenant_claim.as_deref().unwrap_or(""),
        ];
        let mut builder = map_identity(
            AuthContext::builder(CredentialKind::Jwt).issuer(self.issuer.clone()),
            &claims.view(&paths),
            &self.roles_claim,
            self.tenant_claim.as_deref(),
        );
        if let Some(exp) = claims.get(Registered::Exp).and_then(Value::as_f64) {
            builder = builder.expires_at_unix(exp);
        }
        if let Some(kid) = key.kid() {
            builder = builder.key_id(kid);
        }
        let ctx = builder
            .key_fingerprint(key.fingerprint())
            .claims_json(claims.json, claims.tree_bytes)
            .build();
        ctx.check_forwardable()?;
        Ok(ctx)
    }
}

/// The `typ`s of an access token, accepted when no `typ` is configured (RFC 8725 §3.11):
/// `JWT` (RFC 7519 §5.1) and `at+jwt` (RFC 9068), compared as media types.
const ACCESS_TOKEN_TYPES: [&str; 2] = ["JWT", "at+jwt"];

/// Compares media types as RFC 7515 §4.1.9 asks: case-insensitive, `application/` optional.
fn media_type_eq(a: &str, b: &str) -> bool {
    fn strip(s: &str) -> &str {
        match s.get(..12) {
            Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &s[12..],
            _ => s,
        }
    }
    strip(a).eq_ignore_ascii_case(strip(b))
}

/// A parsed but not yet verified compact JWS.
pub(crate) struct UnverifiedToken<'a> {
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<String>,
    typ: Option<String>,
    crit: Option<Vec<String>>,
    /// Whether the header has a `nonce` member.
    header_nonce: bool,
    pub(crate) claims: TokenClaims,
    /// `header.payload`, the JWS signing input.
    signing_input: &'a str,
    signature: Vec<u8>,
}

impl UnverifiedToken<'_> {
    /// The `iss` claim, when it is a string.
    pub(crate) fn issuer(&self) -> Option<&str> {
        self.claims.get(Registered::Iss).and_then(Value::as_str)
    }
}

/// The registered claims the rules check, by their place in [`REGISTERED`] (the other kept
/// members are read by name, through [`ClaimsView`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Registered {
    Iss,
    Aud,
    Exp,
    Nbf,
    Iat,
    Sub,
}

/// The member names of [`Registered`], in its order: the registered claims the rules check,
/// the scope claims, and the default roles and tenant claims (so the default mapping needs
/// no second look at the text).
const REGISTERED: [&str; 10] = [
    "iss",
    "aud",
    "exp",
    "nbf",
    "iat",
    "sub",
    "scope",
    "scp",
    "roles",
    "tenant_id",
];

/// A token's claims as the verification reads them: the JSON text (kept whole, for
/// [`AuthContext::claims_map`] and [`AuthContext::claims`] later) and the few members the
/// rules check, found by one scan that also refuses duplicate member names at every depth
/// (see `jwt::scan`). No `serde_json` tree of the other claims is built.
pub(crate) struct TokenClaims {
    json: String,
    registered: [Option<Value>; REGISTERED.len()],
    /// The estimated heap of a `serde_json` tree of all claims.
    tree_bytes: usize,
}

impl TokenClaims {
    fn scan(json: String) -> Result<Self, ()> {
        let scanned = scan::scan_object(&json, &REGISTERED)?;
        Ok(TokenClaims {
            json,
            registered: scanned.values,
            tree_bytes: scanned.tree_bytes,
        })
    }

    /// One of the kept claims.
    pub(crate) fn get(&self, claim: Registered) -> Option<&Value> {
        self.registered[claim as usize].as_ref()
    }

    /// All claims as a map (parsed from the text; for diagnostics, not the request path).
    pub(crate) fn to_map(&self) -> Map<String, Value> {
        serde_json::from_str(&self.json).unwrap_or_default()
    }

    /// A [`ClaimSource`] that can answer for `paths` (and every top-level kept member):
    /// paths that are not kept members are looked up in the text once, here.
    fn view<'a>(&'a self, paths: &[&str]) -> ClaimsView<'a> {
        let kept = |path: &&str| path.is_empty() || REGISTERED.contains(path);
        let others = if paths.iter().all(kept) {
            None
        } else {
            Some(scan::members_for_paths(&self.json, paths))
        };
        ClaimsView {
            claims: self,
            others,
        }
    }
}

/// See [`TokenClaims::view`].
struct ClaimsView<'a> {
    claims: &'a TokenClaims,
    /// The top-level members the asked-for paths may select, when not all are kept ones.
    others: Option<Map<String, Value>>,
}

impl ClaimSource for ClaimsView<'_> {
    fn member(&self, name: &str) -> Option<&Value> {
        match REGISTERED.iter().position(|n| *n == name) {
            Some(i) => self.claims.registered[i].as_ref(),
            None => self.others.as_ref()?.get(name),
        }
    }

    fn at_path(&self, path: &str) -> Option<&Value> {
        match (REGISTERED.iter().position(|n| *n == path), &self.others) {
            (Some(i), _) => self.claims.registered[i].as_ref(),
            (None, Some(others)) => crate::context::claim_at_path(others, path),
            (None, None) => None,
        }
    }
}

/// The most a `kid` may be; longer ones are refused before any lookup.
const MAX_KID_BYTES: usize = 256;

/// Splits and decodes a compact JWS without verifying it.
pub(crate) fn parse(token: &str, max_bytes: usize) -> Result<UnverifiedToken<'_>, VerifyError> {
    if token.len() > max_bytes {
        return Err(VerifyError::TooLarge);
    }
    const SEGMENTS: VerifyError = VerifyError::Malformed("a JWS has three segments");
    let (header_b64, rest) = token.split_once('.').ok_or(SEGMENTS)?;
    let (payload_b64, signature_b64) = rest.split_once('.').ok_or(SEGMENTS)?;
    if signature_b64.contains('.') {
        return Err(SEGMENTS);
    }
    let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
    let Header {
        alg,
        kid,
        typ,
        crit,
        nonce: header_nonce,
    } = header(header_b64)?;
    let claims = decode_text(payload_b64)
        .and_then(TokenClaims::scan)
        .map_err(|()| VerifyError::Malformed("claims"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| VerifyError::Malformed("signature"))?;
    if signature.is_empty() {
        return Err(VerifyError::Malformed("signature"));
    }
    Ok(UnverifiedToken {
        alg,
        kid,
        typ,
        crit,
        header_nonce,
        claims,
        signing_input,
        signature,
    })
}

/// The header members the rules read, checked.
#[derive(Clone)]
struct Header {
    alg: Algorithm,
    kid: Option<String>,
    typ: Option<String>,
    crit: Option<Vec<String>>,
    /// Whether the header has a `nonce` member.
    nonce: bool,
}

/// The longest encoded header [`header`] remembers.
const MAX_REMEMBERED_HEADER: usize = 512;

thread_local! {
    /// The last header this thread accepted, by its exact encoded text: the tokens of one
    /// key share one header, so most tokens skip decoding and scanning it again. Only
    /// accepted headers are kept; the same text always gives the same result.
    static LAST_HEADER: RefCell<Option<(String, Header)>> = const { RefCell::new(None) };
}

/// Decodes and checks the encoded header `encoded` (see [`parse_header`]), reusing the result
/// of the last identical header this thread saw.
fn header(encoded: &str) -> Result<Header, VerifyError> {
    if encoded.len() > MAX_REMEMBERED_HEADER {
        return parse_header(encoded);
    }
    LAST_HEADER.with_borrow_mut(|last| {
        if let Some((text, header)) = last.as_ref()
            && text == encoded
        {
            return Ok(header.clone());
        }
        let header = parse_header(encoded)?;
        match last {
            Some((text, kept)) => {
                text.clear();
                text.push_str(encoded);
                kept.clone_from(&header);
            }
            None => *last = Some((encoded.to_owned(), header.clone())),
        }
        Ok(header)
    })
}

/// Decodes the encoded header: one JSON object without duplicate member names, a supported
/// `alg`, a short non-empty string `kid`, a string `typ`, `crit` a list of names, no `b64`.
fn parse_header(encoded: &str) -> Result<Header, VerifyError> {
    let [alg, kid, typ, crit, nonce, b64] = decode_text(encoded)
        .and_then(|json| scan::scan_object(&json, &HEADER_MEMBERS))
        .map_err(|()| VerifyError::Malformed("header"))?
        .values;
    let alg = match alg {
        Some(Value::String(alg)) => alg.parse().map_err(|_| VerifyError::UnsupportedAlgorithm)?,
        _ => return Err(VerifyError::UnsupportedAlgorithm),
    };
    let kid = match kid {
        None => None,
        Some(Value::String(kid)) if !kid.is_empty() && kid.len() <= MAX_KID_BYTES => Some(kid),
        Some(_) => return Err(VerifyError::Malformed("kid")),
    };
    let typ = match typ {
        None => None,
        Some(Value::String(typ)) => Some(typ),
        Some(_) => return Err(VerifyError::Malformed("typ")),
    };
    let crit = match crit {
        None => None,
        Some(Value::Array(items)) => Some(
            items
                .into_iter()
                .map(|v| match v {
                    Value::String(name) => Some(name),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .ok_or(VerifyError::UnsupportedCritical)?,
        ),
        Some(_) => return Err(VerifyError::UnsupportedCritical),
    };
    // RFC 7797 unencoded payloads change what is signed; they are never accepted.
    if b64.is_some() {
        return Err(VerifyError::UnsupportedCritical);
    }
    Ok(Header {
        alg,
        kid,
        typ,
        crit,
        nonce: nonce.is_some(),
    })
}

/// The header members the rules read.
const HEADER_MEMBERS: [&str; 6] = ["alg", "kid", "typ", "crit", "nonce", "b64"];

/// A base64url segment decoded to UTF-8 text.
fn decode_text(segment: &str) -> Result<String, ()> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|_| ())?;
    String::from_utf8(bytes).map_err(|_| ())
}

/// A base64url segment decoded as one JSON object without duplicate member names at any
/// depth, as a map.
pub(crate) fn decode_object(segment: &str) -> Result<Map<String, Value>, ()> {
    let json = URL_SAFE_NO_PAD.decode(segment).map_err(|_| ())?;
    let mut de = serde_json::Deserializer::from_slice(&json);
    let scan::StrictValue(value) = serde::Deserialize::deserialize(&mut de).map_err(|_| ())?;
    de.end().map_err(|_| ())?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(()),
    }
}

/// Verifies a parsed token's signature with `key` and checks the token again against
/// `validation`, then maps it into an [`AuthContext`].
pub(crate) fn finish(
    validation: &Validation,
    token: UnverifiedToken<'_>,
    key: &VerifyingKey,
) -> Result<AuthContext, VerifyError> {
    if !key.algorithms().contains(token.alg) {
        return Err(VerifyError::Key(KeyError::AlgorithmMismatch));
    }
    if !key.verify_vec(token.alg, token.signing_input.as_bytes(), &token.signature) {
        return Err(VerifyError::BadSignature);
    }
    validation.context(token, key)
}

/// Parses `token` and checks everything but the signature: header rules, issuer (exactly
/// `validation`'s), audience and times.
pub(crate) fn precheck<'a>(
    validation: &Validation,
    token: &'a str,
) -> Result<UnverifiedToken<'a>, VerifyError> {
    let parsed = parse(token, validation.max_token_bytes)?;
    match parsed.claims.get(Registered::Iss) {
        Some(Value::String(iss)) if validation.matches_issuer(iss) => {}
        Some(Value::String(_)) | None => return Err(VerifyError::UntrustedIssuer),
        Some(_) => return Err(VerifyError::InvalidClaim("iss")),
    }
    validation.check_token(&parsed)?;
    Ok(parsed)
}

/// Verifies `token` synchronously against `validation` and `key`: the whole rule set, for
/// callers that already hold the key (tests, tools).
///
/// # Errors
///
/// The first [`VerifyError`] found.
pub fn verify_with_key(
    validation: &Validation,
    token: &str,
    key: &VerifyingKey,
) -> Result<AuthContext, VerifyError> {
    let parsed = precheck(validation, token)?;
    if let (Some(kid), Some(key_kid)) = (&parsed.kid, key.kid())
        && kid != key_kid
    {
        return Err(VerifyError::Key(KeyError::UnknownKid));
    }
    finish(validation, parsed, key)
}

/// The owned remainder of a token between the key lookup and the signature check.
pub(crate) struct PendingToken {
    alg: Algorithm,
    claims: TokenClaims,
    signing_input: String,
    signature: Vec<u8>,
}

impl UnverifiedToken<'_> {
    pub(crate) fn into_pending(self) -> PendingToken {
        PendingToken {
            alg: self.alg,
            claims: self.claims,
            signing_input: self.signing_input.to_owned(),
            signature: self.signature,
        }
    }
}

impl PendingToken {
    pub(crate) fn finish(
        self,
        validation: &Validation,
        key: &VerifyingKey,
    ) -> Result<AuthContext, VerifyError> {
        let token = UnverifiedToken {
            alg: self.alg,
            kid: None,
            typ: None,
            crit: None,
            header_nonce: false,
            claims: self.claims,
            signing_input: &self.signing_input,
            signature: self.signature,
        };
        finish(validation, token, key)
    }
}

#[cfg(test)]
mod tests;
