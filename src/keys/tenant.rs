//! Multi-tenant issuers: [`TenantIssuer`] (which `iss` values are trusted, and the tenant
//! each names) and [`TenantJwks`] (one remote key source per tenant, created on first use).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::config_error::ConfigError;
use crate::jwt::VerifyError;

/// The placeholder of a tenant in issuer and URL templates.
pub const TENANT_PLACEHOLDER: &str = "{tenant}";
/// The longest tenant an `iss` may name (bytes); longer ones are refused before any lookup.
pub const MAX_TENANT_BYTES: usize = 128;

/// Whether `tenant` may be put in an issuer or a URL: 1 to [`MAX_TENANT_BYTES`] of ASCII
/// letters, digits, `-`, `_` and `.`, not only dots. So no `/`, `?`, `#`, `%`, spaces or
/// other characters that could change which URL is fetched.
///
/// ```
/// use tower_gatekeeper::keys::is_valid_tenant;
///
/// assert!(is_valid_tenant("9188040d-6c67-4c5b-b112-36a304b66dad"));
/// assert!(is_valid_tenant("contoso.onmicrosoft.com"));
/// for bad in ["", ".", "..", "a/b", "a?b", "a#b", "a%2fb", "a b"] {
///     assert!(!is_valid_tenant(bad));
/// }
/// ```
pub fn is_valid_tenant(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant.len() <= MAX_TENANT_BYTES
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !tenant.bytes().all(|b| b == b'.')
}

/// A text with exactly one `{tenant}` placeholder: an issuer (`https://login.example.com/{tenant}/v2.0`)
/// or a URL (`https://login.example.com/{tenant}/discovery/v2.0/keys`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantTemplate {
    text: String,
    at: usize,
}

impl TenantTemplate {
    /// Parses `template`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when `template` does not hold `{tenant}` exactly once.
    pub fn new(template: impl Into<String>) -> Result<Self, ConfigError> {
        let text = template.into();
        let mut found = text.match_indices(TENANT_PLACEHOLDER);
        match (found.next(), found.next()) {
            (Some((at, _)), None) => Ok(TenantTemplate { text, at }),
            _ => Err(ConfigError::invalid(format!(
                "template {text:?} must contain {TENANT_PLACEHOLDER} exactly once"
            ))),
        }
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The template with `tenant` in place of the placeholder.
    pub fn render(&self, tenant: &str) -> String {
        let mut out = String::with_capacity(self.text.len() + tenant.len());
        out.push_str(&self.text[..self.at]);
        out.push_str(tenant);
        out.push_str(&self.text[self.at + TENANT_PLACEHOLDER.len()..]);
        out
    }

    /// The tenant `value` names when it is this template with a valid tenant in place of
    /// the placeholder (exact match otherwise; see [`is_valid_tenant`]).
    pub fn tenant_of<'a>(&self, value: &'a str) -> Option<&'a str> {
        let prefix = &self.text[..self.at];
        let suffix = &self.text[self.at + TENANT_PLACEHOLDER.len()..];
        let tenant = value.strip_prefix(prefix)?.strip_suffix(suffix)?;
        is_valid_tenant(tenant).then_some(tenant)
    }
}

/// Which tenants a [`TenantIssuer`] trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tenants {
    Listed(BTreeSet<String>),
    Any,
}

/// The rules of a multi-tenant issuer: the `iss` templates (`{tenant}` placeholder), the
/// tenants trusted (an allow-list, or any tenant by explicit choice), and the claim that must
/// name the same tenant as the `iss` (e.g. Entra ID's `tid`).
///
/// Give it to [`Validation::for_tenants`](crate::jwt::Validation::for_tenants) and to
/// [`TenantJwks`]. Several templates serve one provider's several issuer forms, e.g. Entra
/// ID's v2 `https://login.microsoftonline.com/{tenant}/v2.0` and v1
/// `https://sts.windows.net/{tenant}/`: the first template is the issuer's name (in
/// [`AuthContext::issuer`](crate::AuthContext::issuer)) and the issuer a discovery document
/// must name.
///
/// ```
/// use tower_gatekeeper::keys::TenantIssuer;
///
/// let entra = TenantIssuer::listed(
///     [
///         "https://login.microsoftonline.com/{tenant}/v2.0",
///         "https://sts.windows.net/{tenant}/",
///     ],
///     "tid",
///     ["9188040d-6c67-4c5b-b112-36a304b66dad"],
/// )
/// .unwrap();
/// let tenant = entra.tenant_of("https://sts.windows.net/9188040d-6c67-4c5b-b112-36a304b66dad/");
/// assert_eq!(tenant, Some("9188040d-6c67-4c5b-b112-36a304b66dad"));
/// assert!(entra.is_allowed(tenant.unwrap()));
/// assert!(!entra.is_allowed("another-tenant"));
/// assert_eq!(entra.tenant_of("https://sts.windows.net/a/b/"), None);
/// ```
#[derive(Debug, Clone)]
pub struct TenantIssuer {
    inner: Arc<TenantIssuerInner>,
}

#[derive(Debug)]
struct TenantIssuerInner {
    templates: Vec<TenantTemplate>,
    claim: String,
    tenants: Tenants,
}

impl TenantIssuer {
    /// Trusts the tenants in `tenants` only.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when there is no template, a template lacks the placeholder (or has it
    /// twice), `claim` is empty, `tenants` is empty or names an invalid tenant.
    pub fn listed<T, S>(
        templates: impl IntoIterator<Item = T>,
        claim: impl Into<String>,
        tenants: impl IntoIterator<Item = S>,
    ) -> Result<Self, ConfigError>
    where
        T: Into<String>,
        S: Into<String>,
    {
        let tenants: BTreeSet<String> = tenants.into_iter().map(Into::into).collect();
        if tenants.is_empty() {
            return Err(ConfigError::invalid(
                "the tenant allow-list is empty; list the tenants, or trust any tenant explicitly",
            ));
        }
        if let Some(bad) = tenants.iter().find(|t| !is_valid_tenant(t)) {
            return Err(ConfigError::invalid(format!(
                "tenant {bad:?} is not a valid tenant (1 to {MAX_TENANT_BYTES} ASCII letters, digits, '-', '_' or '.', not only dots)"
            )));
        }
        Self::build(templates, claim.into(), Tenants::Listed(tenants))
    }

    /// Trusts every tenant whose `iss` matches a template: key sources are then created for
    /// any tenant a token names (bounded by [`TenantJwksBuilder::max_tenants`]).
    ///
    /// # Errors
    ///
    /// As [`listed`](Self::listed), without the tenant checks.
    pub fn any_tenant<T: Into<String>>(
        templates: impl IntoIterator<Item = T>,
        claim: impl Into<String>,
    ) -> Result<Self, ConfigError> {
        Self::build(templates, claim.into(), Tenants::Any)
    }

    fn build<T: Into<String>>(
        templates: impl IntoIterator<Item = T>,
        claim: String,
        tenants: Tenants,
    ) -> Result<Self, ConfigError> {
        let templates = templates
            .into_iter()
            .map(TenantTemplate::new)
            .collect::<Result<Vec<_>, _>>()?;
        if templates.is_empty() {
            return Err(ConfigError::invalid("no issuer template given"));
        }
        if claim.is_empty() {
            return Err(ConfigError::invalid("the tenant claim must not be empty"));
        }
        Ok(TenantIssuer {
            inner: Arc::new(TenantIssuerInner {
                templates,
                claim,
                tenants,
            }),
        })
    }

    /// The issuer templates; the first names the issuer.
    pub fn templates(&self) -> &[TenantTemplate] {
        &self.inner.templates
    }

    /// The first template, as written: the issuer's name.
    pub fn name(&self) -> &str {
        self.inner.templates[0].as_str()
    }

    /// The claim that must name the same tenant as the `iss`.
    pub fn claim(&self) -> &str {
        &self.inner.claim
    }

    /// Whether any tenant is trusted (no allow-list).
    pub fn trusts_any_tenant(&self) -> bool {
        self.inner.tenants == Tenants::Any
    }

    /// The allow-list (`None` with [`any_tenant`](Self::any_tenant)).
    pub fn allowed_tenants(&self) -> Option<impl Iterator<Item = &str>> {
        match &self.inner.tenants {
            Tenants::Listed(set) => Some(set.iter().map(String::as_str)),
            Tenants::Any => None,
        }
    }

    /// The tenant `iss` names, when it matches a template (see [`TenantTemplate::tenant_of`]).
    pub fn tenant_of<'a>(&self, iss: &'a str) -> Option<&'a str> {
        self.inner.templates.iter().find_map(|t| t.tenant_of(iss))
    }

    /// Whether `tenant` is trusted.
    pub fn is_allowed(&self, tenant: &str) -> bool {
        match &self.inner.tenants {
            Tenants::Listed(set) => set.contains(tenant),
            Tenants::Any => true,
        }
    }

    /// The first template rendered for `tenant`: the issuer a tenant's discovery document
    /// names.
    pub fn primary_issuer(&self, tenant: &str) -> String {
        self.inner.templates[0].render(tenant)
    }

    /// Checks an unverified token's `iss` and tenant claim: the tenant named by the `iss`
    /// must be trusted and equal the tenant claim.
    pub(crate) fn check_claims<C: crate::context::ClaimSource + ?Sized>(
        &self,
        claims: &C,
    ) -> Result<(), VerifyError> {
        let tenant = match claims.member("iss") {
            Some(Value::String(iss)) => self.tenant_of(iss).ok_or(VerifyError::UntrustedIssuer)?,
            Some(_) => return Err(VerifyError::InvalidClaim("iss")),
            None => return Err(VerifyError::UntrustedIssuer),
        };
        if !self.is_allowed(tenant) {
            return Err(VerifyError::TenantNotAllowed);
        }
        match claims.at_path(&self.inner.claim) {
            Some(Value::String(claimed)) if claimed == tenant => Ok(()),
            _ => Err(VerifyError::TenantMismatch),
        }
    }
}

impl fmt::Display for TenantIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(feature = "remote")]
pub use remote::{DEFAULT_MAX_TENANTS, TenantJwks, TenantJwksBuilder};

#[cfg(feature = "remote")]
mod remote {
    use std::collections::HashMap;
    use std::fmt;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, PoisonError, RwLock};

    use super::{TenantIssuer, TenantTemplate};
    use crate::algorithm::{Algorithm, AlgorithmSet};
    use crate::config_error::ConfigError;
    use crate::keys::{
        FetchError, FetchFuture, JwksFetcher, KeyError, KeyFingerprint, KeyFuture, KeyQuery,
        KeySource, ReadyFuture, RemoteJwks, RemoteJwksBuilder,
    };

    /// Default bound of the per-tenant key sources of one [`TenantJwks`].
    pub const DEFAULT_MAX_TENANTS: usize = 1000;

    type FetcherFactory = dyn Fn(&str) -> Arc<dyn JwksFetcher> + Send + Sync;
    type Configure = dyn Fn(RemoteJwksBuilder) -> RemoteJwksBuilder + Send + Sync;

    #[derive(Clone)]
    enum Source {
        JwksUrl(TenantTemplate),
        Discovery(TenantTemplate),
        Fetcher(Arc<FetcherFactory>),
    }

    /// Builds a [`TenantJwks`].
    #[must_use]
    pub struct TenantJwksBuilder {
        issuer: TenantIssuer,
        source: Result<Source, ConfigError>,
        max_tenants: usize,
        configure: Option<Arc<Configure>>,
    }

    impl fmt::Debug for TenantJwksBuilder {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("TenantJwksBuilder")
                .field("issuer", &self.issuer.name())
                .field("max_tenants", &self.max_tenants)
                .finish_non_exhaustive()
        }
    }

    /// One [`RemoteJwks`] per tenant of a multi-tenant issuer, created when a token of that
    /// tenant first needs a key. Cheap to clone; clones share the sources.
    ///
    /// - A token's `iss` picks its tenant through the [`TenantIssuer`]'s templates; a tenant
    ///   not trusted (or an `iss` matching no template) is refused with
    ///   [`KeyError::UnknownIssuer`] before anything is created or fetched.
    /// - Each tenant's source is a [`RemoteJwks`] with every rule of one: single flight,
    ///   scheduled refresh, at most one unknown-`kid` refetch per interval, outage staleness.
    ///   [`configure`](TenantJwksBuilder::configure) sets them for every tenant.
    /// - The first token of a tenant waits for that tenant's first fetch (one fetch however
    ///   many requests wait, bounded by the fetch timeout); when it fails, requests get 503
    ///   with `Retry-After` while the source retries with backoff, as any remote JWKS.
    /// - The number of sources is bounded by [`max_tenants`](TenantJwksBuilder::max_tenants)
    ///   (default [`DEFAULT_MAX_TENANTS`]). When a new tenant arrives at the bound, the least
    ///   recently used source is dropped (its background task stops); a later token of that
    ///   tenant creates it again, which costs one fetch. Memory and background tasks stay
    ///   bounded; with [`TenantIssuer::any_tenant`], each new tenant name a caller invents
    ///   costs one fetch from the identity provider, so prefer an allow-list where you can.
    ///
    /// ```no_run
    /// use tower_gatekeeper::keys::{TenantIssuer, TenantJwks};
    /// use tower_gatekeeper::{JwtAuthenticator, jwt::Validation};
    ///
    /// let entra = TenantIssuer::listed(
    ///     ["https://login.microsoftonline.com/{tenant}/v2.0", "https://sts.windows.net/{tenant}/"],
    ///     "tid",
    ///     ["9188040d-6c67-4c5b-b112-36a304b66dad"],
    /// )?;
    /// let keys = TenantJwks::discovery(
    ///     entra.clone(),
    ///     "https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration",
    /// )
    /// .max_tenants(100)
    /// .build()?;
    /// let auth = JwtAuthenticator::new(keys, Validation::for_tenants(entra).audiences(["api://orders"]))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[derive(Clone)]
    pub struct TenantJwks {
        shared: Arc<Shared>,
    }

    struct Shared {
        issuer: TenantIssuer,
        source: Source,
        max_tenants: usize,
        configure: Option<Arc<Configure>>,
        sources: RwLock<HashMap<String, Entry>>,
        clock: AtomicU64,
        created: AtomicU64,
    }

    struct Entry {
        keys: RemoteJwks,
        used: AtomicU64,
    }

    impl fmt::Debug for TenantJwks {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("TenantJwks")
                .field("issuer", &self.shared.issuer.name())
                .field("tenants", &self.tenant_count())
                .field("max_tenants", &self.shared.max_tenants)
                .finish_non_exhaustive()
        }
    }

    impl TenantJwks {
        /// Keys from the JWKS at `url_template` with the tenant in place of `{tenant}`.
        pub fn jwks_url(
            issuer: TenantIssuer,
            url_template: impl Into<String>,
        ) -> TenantJwksBuilder {
            TenantJwksBuilder::new(
                issuer,
                TenantTemplate::new(url_template).map(Source::JwksUrl),
            )
        }

        /// Keys found through OpenID Connect discovery at `url_template` (the tenant in place
        /// of `{tenant}`); each tenant's document must name the issuer's first template
        /// rendered for that tenant ([`TenantIssuer::primary_issuer`]).
        pub fn discovery(
            issuer: TenantIssuer,
            url_template: impl Into<String>,
        ) -> TenantJwksBuilder {
            TenantJwksBuilder::new(
                issuer,
                TenantTemplate::new(url_template).map(Source::Discovery),
            )
        }

        /// Keys from the fetcher `fetcher` makes for each tenant (tests, custom transports).
        pub fn with_fetchers(
            issuer: TenantIssuer,
            fetcher: impl Fn(&str) -> Arc<dyn JwksFetcher> + Send + Sync + 'static,
        ) -> TenantJwksBuilder {
            TenantJwksBuilder::new(issuer, Ok(Source::Fetcher(Arc::new(fetcher))))
        }

        /// The issuer's rules.
        pub fn issuer(&self) -> &TenantIssuer {
            &self.shared.issuer
        }

        /// How many tenant sources exist now.
        pub fn tenant_count(&self) -> usize {
            self.read().len()
        }

        /// How many tenant sources were created so far (a dropped and recreated one counts
        /// twice).
        pub fn created_count(&self) -> u64 {
            self.shared.created.load(Ordering::Relaxed)
        }

        /// The source of `tenant`, when it exists now (nothing is created).
        pub fn tenant(&self, tenant: &str) -> Option<RemoteJwks> {
            self.read().get(tenant).map(|e| e.keys.clone())
        }

        /// How many fetches the current tenant sources started, together.
        pub fn fetch_count(&self) -> u64 {
            self.read().values().map(|e| e.keys.fetch_count()).sum()
        }

        /// [`RemoteJwks::refresh_now`] for every current tenant source, one after the
        /// other (after a key compromise). Tenants without a source fetch on first use anyway.
        ///
        /// # Errors
        ///
        /// The first [`FetchError`] (every source is still asked).
        pub async fn refresh_now(&self) -> Result<(), FetchError> {
            let sources: Vec<RemoteJwks> = self.read().values().map(|e| e.keys.clone()).collect();
            let mut first = Ok(());
            for keys in sources {
                if let Err(error) = keys.refresh_now().await
                    && first.is_ok()
                {
                    first = Err(error);
                }
            }
            first
        }

        fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Entry>> {
            self.shared
                .sources
                .read()
                .unwrap_or_else(PoisonError::into_inner)
        }

        fn tick(&self) -> u64 {
            self.shared.clock.fetch_add(1, Ordering::Relaxed)
        }

        /// The source of a trusted `tenant`, created when missing.
        fn source(&self, tenant: &str) -> Result<RemoteJwks, KeyError> {
            if let Some(entry) = self.read().get(tenant) {
                entry.used.store(self.tick(), Ordering::Relaxed);
                return Ok(entry.keys.clone());
            }
            let mut sources = self
                .shared
                .sources
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = sources.get(tenant) {
                entry.used.store(self.tick(), Ordering::Relaxed);
                return Ok(entry.keys.clone());
            }
            let keys = self
                .shared
                .make(tenant)
                .map_err(|e| KeyError::InvalidKey(e.to_string()))?;
            if sources.len() >= self.shared.max_tenants {
                let oldest = sources
                    .iter()
                    .min_by_key(|(_, e)| e.used.load(Ordering::Relaxed))
                    .map(|(t, _)| t.clone());
                if let Some(oldest) = oldest {
                    tracing::info!(
                        issuer = self.shared.issuer.name(),
                        max_tenants = self.shared.max_tenants,
                        "tenant key sources at their bound: dropping the least recently used"
                    );
                    sources.remove(&oldest);
                }
            }
            self.shared.created.fetch_add(1, Ordering::Relaxed);
            sources.insert(
                tenant.to_owned(),
                Entry {
                    keys: keys.clone(),
                    used: AtomicU64::new(self.tick()),
                },
            );
            Ok(keys)
        }

        /// The trusted tenant `issuer` names.
        fn trusted_tenant<'a>(&self, issuer: Option<&'a str>) -> Option<&'a str> {
            let tenant = self.shared.issuer.tenant_of(issuer?)?;
            self.shared.issuer.is_allowed(tenant).then_some(tenant)
        }
    }

    impl Shared {
        fn make(&self, tenant: &str) -> Result<RemoteJwks, ConfigError> {
            let issuer = self.issuer.primary_issuer(tenant);
            let builder = match &self.source {
                Source::JwksUrl(url) => RemoteJwks::builder(url.render(tenant)).issuer(issuer),
                Source::Discovery(url) => RemoteJwks::discovery(url.render(tenant), issuer),
                Source::Fetcher(make) => {
                    RemoteJwks::with_fetcher(SharedFetcher(make(tenant))).issuer(issuer)
                }
            };
            match &self.configure {
                Some(configure) => configure(builder),
                None => builder,
            }
            .build()
        }
    }

    impl TenantJwksBuilder {
        fn new(issuer: TenantIssuer, source: Result<Source, ConfigError>) -> Self {
            TenantJwksBuilder {
                issuer,
                source,
                max_tenants: DEFAULT_MAX_TENANTS,
                configure: None,
            }
        }

        /// The most tenant sources kept at once (default [`DEFAULT_MAX_TENANTS`]); see
        /// [`TenantJwks`] for what happens beyond.
        pub fn max_tenants(mut self, max: usize) -> Self {
            self.max_tenants = max;
            self
        }

        /// Settings for every tenant's [`RemoteJwks`] (refresh bounds, unknown-`kid`
        /// interval, timeouts...).
        pub fn configure(
            mut self,
            configure: impl Fn(RemoteJwksBuilder) -> RemoteJwksBuilder + Send + Sync + 'static,
        ) -> Self {
            self.configure = Some(Arc::new(configure));
            self
        }

        /// Checks the settings (by building one tenant's source, which fetches nothing) and
        /// builds the source. Nothing is fetched until a token needs a key.
        ///
        /// # Errors
        ///
        /// [`ConfigError`] for a URL template without `{tenant}` (or with it twice), a URL
        /// that is not `http(s)://`, a zero `max_tenants`, or any [`RemoteJwksBuilder`] error.
        pub fn build(self) -> Result<TenantJwks, ConfigError> {
            let source = self.source?;
            if self.max_tenants == 0 {
                return Err(ConfigError::invalid("max_tenants must be at least 1"));
            }
            let shared = Shared {
                issuer: self.issuer,
                source,
                max_tenants: self.max_tenants,
                configure: self.configure,
                sources: RwLock::new(HashMap::new()),
                clock: AtomicU64::new(0),
                created: AtomicU64::new(0),
            };
            if !matches!(shared.source, Source::Fetcher(_)) {
                shared.make("tenant")?;
            }
            Ok(TenantJwks {
                shared: Arc::new(shared),
            })
        }
    }

    impl KeySource for TenantJwks {
        type Future = KeyFuture;

        fn key(&self, query: &KeyQuery<'_>) -> Self::Future {
            let Some(tenant) = self.trusted_tenant(query.issuer()) else {
                return KeyFuture::ready(Err(KeyError::UnknownIssuer));
            };
            match self.source(tenant) {
                Ok(keys) if keys.has_keys() => {
                    let issuer = self.shared.issuer.primary_issuer(tenant);
                    keys.key(&KeyQuery::new(Some(&issuer), query.kid(), query.alg()))
                }
                Ok(keys) => {
                    // A tenant seen for the first time: wait for its first fetch (single
                    // flight, bounded by the fetch timeout) instead of answering 503.
                    let issuer = self.shared.issuer.primary_issuer(tenant);
                    let kid = query.kid().map(str::to_owned);
                    let alg = query.alg();
                    KeyFuture::boxed(async move {
                        keys.wait_for_fetches(1).await;
                        keys.key(&KeyQuery::new(Some(&issuer), kid.as_deref(), alg))
                            .await
                    })
                }
                Err(error) => KeyFuture::ready(Err(error)),
            }
        }

        fn possible_algorithms(&self) -> AlgorithmSet {
            Algorithm::ALL
                .into_iter()
                .filter(|a| !a.is_hmac())
                .collect()
        }

        /// Ready at once (tenant sources are created on first use), unless HMAC algorithms
        /// are allowed: a JWKS never carries HMAC secrets.
        fn ready(&self, allowed: Option<AlgorithmSet>) -> ReadyFuture {
            let hmac = allowed.map(|a| a.intersection(AlgorithmSet::HMAC));
            let name = self.shared.issuer.name().to_owned();
            Box::pin(async move {
                match hmac {
                    Some(hmac) if !hmac.is_empty() => Err(KeyError::InvalidKey(format!(
                        "HMAC algorithms {hmac:?} are allowed but the keys of {name} come from JWKS, which never carry HMAC secrets; remove them from the allowed algorithms"
                    ))),
                    _ => Ok(()),
                }
            })
        }

        fn contains_kid(&self, issuer: Option<&str>, kid: Option<&str>) -> bool {
            let Some(tenant) = self.trusted_tenant(issuer) else {
                return false;
            };
            let primary = self.shared.issuer.primary_issuer(tenant);
            self.tenant(tenant)
                .is_some_and(|keys| keys.contains_kid(Some(&primary), kid))
        }

        fn contains_key(
            &self,
            issuer: Option<&str>,
            kid: Option<&str>,
            fingerprint: &KeyFingerprint,
        ) -> bool {
            let Some(tenant) = self.trusted_tenant(issuer) else {
                return false;
            };
            let primary = self.shared.issuer.primary_issuer(tenant);
            self.tenant(tenant)
                .is_some_and(|keys| keys.contains_key(Some(&primary), kid, fingerprint))
        }
    }

    /// A fetcher shared behind an `Arc`.
    #[derive(Debug)]
    struct SharedFetcher(Arc<dyn JwksFetcher>);

    impl JwksFetcher for SharedFetcher {
        fn fetch(&self) -> FetchFuture<'_> {
            self.0.fetch()
        }
        fn describe(&self) -> String {
            self.0.describe()
        }
    }
}
