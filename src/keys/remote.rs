//! [`RemoteJwks`]: keys from a JWKS URL or OIDC discovery, under a cache built for untrusted
//! traffic.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::fetch::{FetchError, JwksFetcher};
use super::http::{Http, HttpJwks, check_url};
use super::jwks;
use super::oidc::{Discovery, well_known_url};
use super::{KeyError, KeyFingerprint, KeyFuture, KeyQuery, KeySet, KeySource, ReadyFuture};
use crate::algorithm::{Algorithm, AlgorithmSet};
use crate::config_error::ConfigError;

/// Default refresh interval when the response has no `Cache-Control: max-age`.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(5 * 60);
/// Default lower bound of the refresh interval (also what `no-cache` gets).
pub const DEFAULT_MIN_REFRESH: Duration = Duration::from_secs(60);
/// Default upper bound of the refresh interval.
pub const DEFAULT_MAX_REFRESH: Duration = Duration::from_secs(24 * 60 * 60);
/// Default minimum interval between two refetches caused by unknown `kid`s.
pub const DEFAULT_UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(10);
/// Default time keys keep serving past their refresh time while the IdP cannot be reached.
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(12 * 60 * 60);
/// Default timeout of one fetch (connect, answer and body together).
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Default limit of a response body.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Default first and last delay between retries after a failed fetch (doubling in between).
pub const DEFAULT_RETRY: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

/// How many unknown `kid`s are remembered per key-set generation; beyond it the refetch
/// budget alone protects the IdP.
const NEGATIVE_CACHE_CAPACITY: usize = 4096;

/// Verification keys fetched from a JWKS URL (or found through OIDC discovery), cached for
/// traffic that may be hostile. Cheap to clone; clones share one cache.
///
/// # Cache rules
///
/// - **The hot path never waits on the network.** A lookup reads an immutable snapshot
///   (lock-free, `arc-swap`) and returns a ready future. A background task refreshes the set
///   before it expires: at 90 % of the refresh interval, which is the response's
///   `Cache-Control: max-age` clamped to [`refresh_bounds`](RemoteJwksBuilder::refresh_bounds)
///   (defaults 60 s to 24 h; [`DEFAULT_REFRESH`], 5 min, without `max-age`; `no-cache` gets the
///   lower bound).
/// - **Single flight.** Only the background task fetches, so at most one fetch per source is
///   in flight, however many requests arrive.
/// - **Unknown `kid`s are throttled.** A token naming a `kid` the set does not have triggers
///   at most one refetch per [`unknown_kid_interval`](RemoteJwksBuilder::unknown_kid_interval)
///   (default 10 s); only the request that triggered it waits for it (bounded by the fetch
///   timeout). Every other unknown `kid` in that window is rejected at once (401) and
///   remembered as unknown until the next fetch. [`JwtAuthenticator`](crate::JwtAuthenticator)
///   asks for keys only for plausible tokens (trusted `iss`, allowed `alg`, right `aud`,
///   unexpired), and HMAC `alg`s never trigger a refetch. A flood cannot starve a real key
///   rotation: every fetch, whoever caused it, brings every key the IdP publishes, and the
///   scheduled refresh does not depend on the budget, so a new key is served at most one
///   interval after it appears.
/// - **Outages.** When the IdP is down, slow or answers garbage, the last good keys keep
///   serving for up to [`max_staleness`](RemoteJwksBuilder::max_staleness) (default 12 h)
///   past their refresh time, while the task retries with backoff (1 s doubling to 60 s).
///   With no good keys, lookups fail at once with [`KeyError::Unavailable`] (503 with
///   `Retry-After`), never hang.
/// - **Limits.** Fetch timeout (default 5 s), response size (default 1 MiB), JSON content
///   type, no redirects.
/// - **Tolerant parsing.** Keys of unknown `kty`, `use: enc`, symmetric (`oct`) keys, RSA keys
///   under 2048 bits, unusable parameters and keys without `kid` (when others have one) are
///   skipped with a logged report; a set without any usable key is an error (the previous
///   keys keep serving).
/// - **Rotation.** A key removed from the set stops verifying after the next successful
///   fetch; a new key verifies as soon as a fetch has seen it.
/// - **Issuer.** With an [`issuer`](RemoteJwksBuilder::issuer) (always for discovery),
///   lookups for any other issuer fail with [`KeyError::UnknownIssuer`] without any fetch.
///
/// The background task starts on first use (a lookup or [`ready`](KeySource::ready)) on the
/// current tokio runtime, and stops when the last clone is dropped.
///
/// ```no_run
/// use std::time::Duration;
/// use tower_gatekeeper::keys::{KeySource, RemoteJwks};
/// use tower_gatekeeper::{JwtAuthenticator, jwt::Validation};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let keys = RemoteJwks::discovery("https://idp.example.test", "https://idp.example.test")
///     .unknown_kid_interval(Duration::from_secs(30))
///     .build()?;
/// let validation = Validation::new("https://idp.example.test").audiences(["api://orders"]);
/// let auth = JwtAuthenticator::new(keys, validation)?;
/// // Readiness: wait until the IdP's keys are in (fails fast on a broken configuration).
/// tokio::time::timeout(Duration::from_secs(30), auth.ready()).await??;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RemoteJwks {
    shared: Arc<Shared>,
}

impl fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteJwks")
            .field("source", &self.shared.label)
            .field("issuer", &self.shared.issuer)
            .field("generation", &self.shared.snapshot.load().generation)
            .finish_non_exhaustive()
    }
}

/// What keys are fetched from.
#[derive(Debug, Clone)]
enum Spec {
    Url(String),
    Discovery(String),
    Fetcher(Arc<dyn JwksFetcher>),
}

/// Builds a [`RemoteJwks`]; see its docs for what each setting does.
#[derive(Debug, Clone)]
#[must_use]
pub struct RemoteJwksBuilder {
    spec: Spec,
    issuer: Option<String>,
    settings: Settings,
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    default_refresh: Duration,
    min_refresh: Duration,
    max_refresh: Duration,
    unknown_kid_interval: Duration,
    max_staleness: Duration,
    fetch_timeout: Duration,
    max_response_bytes: usize,
    retry_min: Duration,
    retry_max: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_refresh: DEFAULT_REFRESH,
            min_refresh: DEFAULT_MIN_REFRESH,
            max_refresh: DEFAULT_MAX_REFRESH,
            unknown_kid_interval: DEFAULT_UNKNOWN_KID_INTERVAL,
            max_staleness: DEFAULT_MAX_STALENESS,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            retry_min: DEFAULT_RETRY.0,
            retry_max: DEFAULT_RETRY.1,
        }
    }
}

impl RemoteJwks {
    /// Keys from the JWKS at `url` (`http://` or, with the `rustls` feature, `https://`).
    pub fn builder(url: impl Into<String>) -> RemoteJwksBuilder {
        RemoteJwksBuilder::new(Spec::Url(url.into()), None)
    }

    /// Keys found through OpenID Connect discovery: `discovery_url` is the provider's
    /// `/.well-known/openid-configuration` URL, or its base URL (the well-known path is then
    /// appended). The document's `issuer` must equal `issuer` exactly (OpenID Connect
    /// Discovery §4.3); its `jwks_uri` is then fetched. Lookups for other issuers fail.
    pub fn discovery(
        discovery_url: impl Into<String>,
        issuer: impl Into<String>,
    ) -> RemoteJwksBuilder {
        RemoteJwksBuilder::new(Spec::Discovery(discovery_url.into()), Some(issuer.into()))
    }

    /// Keys from a custom [`JwksFetcher`] (e.g. a jwks-client-rs source with the
    /// `jwks-client-rs` feature), under the same cache and rules. The response size limit is
    /// the fetcher's job.
    pub fn with_fetcher(fetcher: impl JwksFetcher) -> RemoteJwksBuilder {
        RemoteJwksBuilder::new(Spec::Fetcher(Arc::new(fetcher)), None)
    }

    /// Whether usable keys are cached now (for readiness probes).
    pub fn has_keys(&self) -> bool {
        self.shared.snapshot.load().keys.is_some()
    }

    /// The keys cached now, if any.
    pub fn key_set(&self) -> Option<KeySet> {
        self.shared.snapshot.load().keys.clone()
    }

    /// How many fetches were started so far (for metrics and tests).
    pub fn fetch_count(&self) -> u64 {
        self.shared.fetches_started.load(Ordering::Relaxed)
    }

    /// The error of the last fetch, if it failed (for health endpoints and logs).
    pub fn last_error(&self) -> Option<FetchError> {
        self.shared.status.borrow().last_error.clone()
    }

    /// Fetches the key set now, outside the schedule and the unknown-`kid` budget, and
    /// waits until that fetch has finished (starting the background task if needed). After a
    /// key compromise: once the IdP has removed the key, this stops it verifying at once,
    /// instead of at the next scheduled refresh (up to 90 % of `max-age` away). Tokens the
    /// removed key verified earlier stop being served from a
    /// [`CachedAuthenticator`](crate::authenticate::CachedAuthenticator) too (every hit
    /// checks the key); call its
    /// [`purge_untrusted`](crate::authenticate::CachedAuthenticator::purge_untrusted) to free
    /// them at once.
    ///
    /// Apply a timeout: while the IdP cannot be reached this waits for the fetch timeout.
    ///
    /// # Errors
    ///
    /// The [`FetchError`] of the fetch when it failed: the previous keys then stay in use,
    /// including the one you meant to drop.
    ///
    /// ```no_run
    /// # use tower_gatekeeper::keys::RemoteJwks;
    /// # async fn example(keys: RemoteJwks) {
    /// if let Err(error) = keys.refresh_now().await {
    ///     eprintln!("the key set was not refreshed: {error}");
    /// }
    /// # }
    /// ```
    pub async fn refresh_now(&self) -> Result<(), FetchError> {
        self.ensure_started();
        let mut status = self.shared.status.subscribe();
        let wanted = self.shared.request_refetch();
        let done = status
            .wait_for(|s| s.completed >= wanted)
            .await
            .map(|s| s.last_error.clone());
        match done {
            Ok(None) => Ok(()),
            Ok(Some(error)) => Err(error),
            Err(_) => Err(FetchError::Other("the key source was dropped".into())),
        }
    }

    /// Waits until at least `count` fetches have finished, successfully or not (starting the
    /// background task if needed). For tests and operational tooling.
    pub async fn wait_for_fetches(&self, count: u64) {
        self.ensure_started();
        let mut status = self.shared.status.subscribe();
        let _ = status.wait_for(|s| s.completed >= count).await;
    }

    fn ensure_started(&self) {
        if !self.shared.started.load(Ordering::Acquire) {
            self.shared.start();
        }
    }
}

impl RemoteJwksBuilder {
    fn new(spec: Spec, issuer: Option<String>) -> Self {
        RemoteJwksBuilder {
            spec,
            issuer,
            settings: Settings::default(),
        }
    }

    /// Only serve lookups for tokens of `issuer` (exact match); others fail with
    /// [`KeyError::UnknownIssuer`] without a fetch. Discovery sets it already.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Bounds for the refresh interval taken from `Cache-Control: max-age` (defaults 60 s and
    /// 24 h).
    pub fn refresh_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.settings.min_refresh = min;
        self.settings.max_refresh = max;
        self
    }

    /// The refresh interval when the response has no `max-age` (default 5 min), clamped to
    /// the bounds.
    pub fn default_refresh(mut self, interval: Duration) -> Self {
        self.settings.default_refresh = interval;
        self
    }

    /// The minimum interval between two refetches caused by unknown `kid`s (default 10 s).
    pub fn unknown_kid_interval(mut self, interval: Duration) -> Self {
        self.settings.unknown_kid_interval = interval;
        self
    }

    /// How long past their refresh time the last good keys keep serving while fetches fail
    /// (default 12 h). After that, lookups get 503 until a fetch succeeds.
    pub fn max_staleness(mut self, staleness: Duration) -> Self {
        self.settings.max_staleness = staleness;
        self
    }

    /// The timeout of one fetch: connect, answer and body together (default 5 s).
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.settings.fetch_timeout = timeout;
        self
    }

    /// The largest accepted response body (default 1 MiB).
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.settings.max_response_bytes = limit;
        self
    }

    /// The first and the last delay between retries after a failed fetch (defaults 1 s and
    /// 60 s, doubling in between).
    pub fn retry_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.settings.retry_min = first;
        self.settings.retry_max = max;
        self
    }

    /// Checks the settings and builds the source. Nothing is fetched yet: the background task
    /// starts on first use.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the setting to fix: a URL that is not `http(s)://`, `https://`
    /// without the `rustls` feature, zero durations or limits, bounds in the wrong order.
    pub fn build(self) -> Result<RemoteJwks, ConfigError> {
        let s = self.settings;
        let positive = [
            ("fetch timeout", s.fetch_timeout),
            ("lower refresh bound", s.min_refresh),
            ("unknown-kid interval", s.unknown_kid_interval),
            ("first retry delay", s.retry_min),
        ];
        for (name, value) in positive {
            if value.is_zero() {
                return Err(ConfigError::invalid(format!(
                    "remote JWKS: the {name} must not be zero"
                )));
            }
        }
        if s.min_refresh > s.max_refresh {
            return Err(ConfigError::invalid(format!(
                "remote JWKS: the refresh bounds are reversed ({:?} > {:?})",
                s.min_refresh, s.max_refresh
            )));
        }
        if s.retry_min > s.retry_max {
            return Err(ConfigError::invalid(format!(
                "remote JWKS: the retry delays are reversed ({:?} > {:?})",
                s.retry_min, s.retry_max
            )));
        }
        if s.max_response_bytes == 0 {
            return Err(ConfigError::invalid(
                "remote JWKS: the response size limit must not be zero",
            ));
        }
        if self.issuer.as_deref() == Some("") {
            return Err(ConfigError::invalid(
                "remote JWKS: the issuer must not be empty",
            ));
        }
        let http = || {
            Http::new(s.fetch_timeout, s.max_response_bytes)
                .map_err(|e| ConfigError::invalid(format!("remote JWKS: {e}")))
        };
        let fetcher: Arc<dyn JwksFetcher> = match self.spec {
            Spec::Url(url) => {
                check_url("JWKS URL", &url)?;
                Arc::new(HttpJwks { http: http()?, url })
            }
            Spec::Discovery(url) => {
                let url = well_known_url(&url);
                check_url("discovery URL", &url)?;
                let issuer = self.issuer.clone().unwrap_or_default();
                Arc::new(Discovery::new(http()?, url, issuer))
            }
            Spec::Fetcher(fetcher) => fetcher,
        };
        Ok(RemoteJwks {
            shared: Arc::new(Shared::new(fetcher, self.issuer, s)),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------------------------

struct Shared {
    settings: Settings,
    fetcher: Arc<dyn JwksFetcher>,
    label: String,
    issuer: Option<String>,
    /// What lookups read: swapped whole, never locked.
    snapshot: ArcSwap<Snapshot>,
    /// The unknown-`kid` budget and negative cache: slow path only.
    slow: Mutex<SlowPath>,
    /// Wakes the background task (refetch wanted, or the source was dropped).
    wake: Arc<Notify>,
    fetches_started: AtomicU64,
    /// A refetch is wanted once `fetches_started` is below this.
    refetch_wanted: AtomicU64,
    status: watch::Sender<Status>,
    started: AtomicBool,
}

#[derive(Debug, Default)]
struct Snapshot {
    keys: Option<KeySet>,
    /// Successful fetches so far.
    generation: u64,
}

#[derive(Debug, Default)]
struct SlowPath {
    last_unknown_refetch: Option<Instant>,
    negative: HashSet<Box<str>>,
    negative_generation: u64,
    next_attempt: Option<Instant>,
    /// When the current keys stop serving if no fetch succeeds.
    drop_at: Option<Instant>,
    last_report: String,
}

#[derive(Debug, Clone, Default)]
struct Status {
    /// Fetches finished (successfully or not).
    completed: u64,
    last_error: Option<FetchError>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Let the background task notice and exit.
        self.wake.notify_one();
    }
}

impl Shared {
    fn new(fetcher: Arc<dyn JwksFetcher>, issuer: Option<String>, settings: Settings) -> Self {
        Shared {
            label: fetcher.describe(),
            settings,
            fetcher,
            issuer,
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            slow: Mutex::new(SlowPath::default()),
            wake: Arc::new(Notify::new()),
            fetches_started: AtomicU64::new(0),
            refetch_wanted: AtomicU64::new(0),
            status: watch::Sender::new(Status::default()),
            started: AtomicBool::new(false),
        }
    }

    fn slow(&self) -> MutexGuard<'_, SlowPath> {
        self.slow.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn start(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Not on a runtime (yet): lookups answer 503 until a call from a runtime starts
            // the task.
            return;
        };
        if self
            .started
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            runtime.spawn(run(Arc::downgrade(self), Arc::clone(&self.wake)));
        }
    }

    /// Asks the task for a fetch that starts after now; returns the number of finished
    /// fetches to wait for.
    fn request_refetch(&self) -> u64 {
        let started = self.fetches_started.load(Ordering::Acquire);
        self.refetch_wanted.fetch_max(started + 1, Ordering::AcqRel);
        self.wake.notify_one();
        started + 1
    }

    fn refetch_wanted(&self) -> bool {
        self.refetch_wanted.load(Ordering::Acquire) > self.fetches_started.load(Ordering::Acquire)
    }

    fn unavailable(&self) -> KeyError {
        let now = Instant::now();
        let retry_after = self
            .slow()
            .next_attempt
            .map_or(Duration::ZERO, |at| at.saturating_duration_since(now));
        KeyError::Unavailable {
            retry_after: retry_after.max(Duration::from_secs(1)),
        }
    }

    /// One fetch; on success the new snapshot is installed. Returns the refresh interval.
    async fn fetch_once(&self) -> Result<Duration, FetchError> {
        self.fetches_started.fetch_add(1, Ordering::AcqRel);
        let fetched =
            match tokio::time::timeout(self.settings.fetch_timeout, self.fetcher.fetch()).await {
                Ok(result) => result,
                Err(_) => Err(FetchError::Timeout {
                    url: self.label.clone(),
                }),
            };
        let outcome = fetched.and_then(|doc| {
            let parsed = doc.parse(&self.label)?;
            Ok((parsed, doc.max_age))
        });
        let now = Instant::now();
        let result = match outcome {
            Ok((jwks::Parsed { keys: set, skipped }, max_age)) => {
                let s = &self.settings;
                let interval = max_age
                    .unwrap_or(s.default_refresh)
                    .clamp(s.min_refresh, s.max_refresh);
                let previous = self.snapshot.load();
                log_changes(&self.label, previous.keys.as_ref(), &set);
                {
                    let mut slow = self.slow();
                    // Every refresh parses the set again: warn when what is skipped changes.
                    let report = jwks::report(&skipped);
                    if report != slow.last_report {
                        jwks::warn_skipped(&self.label, &skipped);
                    }
                    slow.last_report = report;
                    slow.drop_at = Some(now + interval + s.max_staleness);
                }
                self.snapshot.store(Arc::new(Snapshot {
                    keys: Some(set),
                    generation: previous.generation + 1,
                }));
                crate::metrics::key_fetch(&self.label, true);
                Ok(interval)
            }
            Err(e) => {
                warn!(source = %self.label, error = %e, "fetching keys failed; keeping the last good keys");
                crate::metrics::key_fetch(&self.label, false);
                Err(e)
            }
        };
        self.status.send_modify(|status| {
            status.completed += 1;
            status.last_error = result.as_ref().err().cloned();
        });
        result
    }

    /// Drops keys that are past their staleness limit.
    fn expire(&self, now: Instant) -> Option<Instant> {
        let mut slow = self.slow();
        match slow.drop_at {
            Some(at) if now >= at => {
                slow.drop_at = None;
                drop(slow);
                let generation = self.snapshot.load().generation;
                self.snapshot.store(Arc::new(Snapshot {
                    keys: None,
                    generation,
                }));
                error!(source = %self.label, "keys are past their maximum staleness and no fetch succeeded: answering 503 until one does");
                crate::metrics::keys_stale(&self.label, true);
                None
            }
            other => other,
        }
    }

    fn lookup(self: &Arc<Self>, query: &KeyQuery<'_>) -> KeyFuture {
        let snapshot = self.snapshot.load();
        let Some(set) = &snapshot.keys else {
            return KeyFuture::ready(Err(self.unavailable()));
        };
        match set.select(query) {
            Ok(key) => KeyFuture::ready(Ok(key.clone())),
            Err(KeyError::UnknownKid) => match query.kid() {
                Some(kid) if !query.alg().is_hmac() => {
                    self.unknown_kid(kid, query.alg(), snapshot.generation)
                }
                _ => KeyFuture::ready(Err(KeyError::UnknownKid)),
            },
            Err(e) => KeyFuture::ready(Err(e)),
        }
    }

    /// The slow path: a `kid` the set does not have.
    fn unknown_kid(self: &Arc<Self>, kid: &str, alg: Algorithm, generation: u64) -> KeyFuture {
        let now = Instant::now();
        {
            let mut slow = self.slow();
            if slow.negative_generation != generation {
                slow.negative.clear();
                slow.negative_generation = generation;
            }
            if slow.negative.contains(kid) {
                return KeyFuture::ready(Err(KeyError::UnknownKid));
            }
            let budget = slow
                .last_unknown_refetch
                .is_none_or(|last| now >= last + self.settings.unknown_kid_interval);
            if !budget {
                if slow.negative.len() < NEGATIVE_CACHE_CAPACITY {
                    slow.negative.insert(kid.into());
                }
                return KeyFuture::ready(Err(KeyError::UnknownKid));
            }
            slow.last_unknown_refetch = Some(now);
        }
        debug!(source = %self.label, "unknown kid: refetching the key set");
        let wanted = self.request_refetch();
        let shared = Arc::clone(self);
        let kid = kid.to_owned();
        KeyFuture::boxed(async move {
            let mut status = shared.status.subscribe();
            let wait = shared.settings.fetch_timeout + Duration::from_secs(1);
            let _ = tokio::time::timeout(wait, status.wait_for(|s| s.completed >= wanted)).await;
            let snapshot = shared.snapshot.load();
            let Some(set) = &snapshot.keys else {
                return Err(shared.unavailable());
            };
            match set.select(&KeyQuery::new(None, Some(&kid), alg)) {
                Ok(key) => Ok(key.clone()),
                Err(KeyError::UnknownKid) => {
                    let mut slow = shared.slow();
                    if slow.negative_generation == snapshot.generation
                        && slow.negative.len() < NEGATIVE_CACHE_CAPACITY
                    {
                        slow.negative.insert(kid.into());
                    }
                    Err(KeyError::UnknownKid)
                }
                Err(e) => Err(e),
            }
        })
    }
}

fn log_changes(label: &str, previous: Option<&KeySet>, next: &KeySet) {
    let kids = |set: &KeySet| -> Vec<String> {
        set.keys()
            .iter()
            .map(|k| k.kid().unwrap_or("<no kid>").to_owned())
            .collect()
    };
    let next_kids = kids(next);
    match previous {
        None => info!(source = %label, kids = ?next_kids, "keys loaded"),
        Some(prev) => {
            let prev_kids = kids(prev);
            if prev_kids != next_kids {
                info!(source = %label, before = ?prev_kids, after = ?next_kids, "keys rotated");
            }
        }
    }
}

/// The background task: fetch, sleep until the refresh time, a wanted refetch or the
/// staleness limit, repeat; exits when the source is dropped.
async fn run(weak: Weak<Shared>, wake: Arc<Notify>) {
    let mut failures: u32 = 0;
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let result = shared.fetch_once().await;
        let now = Instant::now();
        let s = shared.settings;
        let next = match result {
            Ok(interval) => {
                failures = 0;
                now + interval.mul_f64(0.9)
            }
            Err(_) => {
                failures = failures.saturating_add(1);
                let delay = s
                    .retry_min
                    .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(20)))
                    .min(s.retry_max);
                now + delay
            }
        };
        shared.slow().next_attempt = Some(next);
        let mut drop_at = shared.expire(now);
        drop(shared);
        loop {
            let deadline = drop_at.map_or(next, |d| d.min(next));
            let _ = tokio::time::timeout_at(deadline, wake.notified()).await;
            let Some(shared) = weak.upgrade() else { return };
            let now = Instant::now();
            drop_at = shared.expire(now);
            if now >= next || shared.refetch_wanted() {
                break;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// KeySource
// ---------------------------------------------------------------------------------------------

impl KeySource for RemoteJwks {
    type Future = KeyFuture;

    fn key(&self, query: &KeyQuery<'_>) -> Self::Future {
        if let Some(expected) = &self.shared.issuer
            && query.issuer() != Some(expected.as_str())
        {
            return KeyFuture::ready(Err(KeyError::UnknownIssuer));
        }
        self.ensure_started();
        self.shared.lookup(query)
    }

    fn contains_kid(&self, issuer: Option<&str>, kid: Option<&str>) -> bool {
        if let Some(expected) = &self.shared.issuer
            && issuer != Some(expected.as_str())
        {
            return false;
        }
        // A key without a kid cannot be told from its replacement: answer "not sure".
        let Some(kid) = kid else { return false };
        match &self.shared.snapshot.load().keys {
            Some(set) => set.keys().iter().any(|k| k.kid() == Some(kid)),
            None => false,
        }
    }

    fn contains_key(
        &self,
        issuer: Option<&str>,
        kid: Option<&str>,
        fingerprint: &KeyFingerprint,
    ) -> bool {
        if let Some(expected) = &self.shared.issuer
            && issuer != Some(expected.as_str())
        {
            return false;
        }
        let Some(kid) = kid else { return false };
        match &self.shared.snapshot.load().keys {
            Some(set) => set
                .keys()
                .iter()
                .any(|k| k.kid() == Some(kid) && k.fingerprint() == *fingerprint),
            None => false,
        }
    }

    fn possible_algorithms(&self) -> AlgorithmSet {
        // A public JWKS never serves HMAC secrets (they are skipped).
        Algorithm::ALL
            .into_iter()
            .filter(|a| !a.is_hmac())
            .collect()
    }

    fn ready(&self, allowed: Option<AlgorithmSet>) -> ReadyFuture {
        self.ensure_started();
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            if let Some(allowed) = allowed {
                let hmac = allowed.intersection(AlgorithmSet::HMAC);
                if !hmac.is_empty() {
                    return Err(KeyError::InvalidKey(format!(
                        "HMAC algorithms {hmac:?} are allowed but the keys come from a JWKS ({}), which never carries HMAC secrets; remove them from the allowed algorithms",
                        shared.label
                    )));
                }
            }
            let mut status = shared.status.subscribe();
            loop {
                if let Some(set) = &shared.snapshot.load().keys {
                    if let Some(allowed) = allowed {
                        let missing: Vec<&str> = allowed
                            .iter()
                            .filter(|a| !set.algorithms().contains(*a))
                            .map(|a| a.as_str())
                            .collect();
                        if !missing.is_empty() {
                            return Err(KeyError::InvalidKey(format!(
                                "algorithm(s) {} are allowed but no key of {} can verify them (its keys can verify {:?}); fix the allowed algorithms",
                                missing.join(", "),
                                shared.label,
                                set.algorithms()
                            )));
                        }
                    }
                    return Ok(());
                }
                let last_error = status.borrow_and_update().last_error.clone();
                if let Some(error) = last_error
                    && !error.is_transient()
                {
                    return Err(KeyError::Fetch(error));
                }
                if status.changed().await.is_err() {
                    return Err(shared.unavailable());
                }
            }
        })
    }
}
