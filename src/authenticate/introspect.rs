//! OAuth 2.0 token introspection (RFC 7662) for opaque bearer tokens (feature
//! `introspection`), with an optional cache shared by replicas
//! ([`SharedIntrospectionCache`]; in Redis with feature `redis`).

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::{Authenticator, Started};
use crate::config_error::ConfigError;
use crate::context::{AuthContext, CredentialKind, map_identity};
use crate::credential::{DEFAULT_MAX_TOKEN_BYTES, RequestHead, bearer_token};
use crate::reject::Rejection;

/// The largest introspection response read (64 KiB); also the largest shared cache entry
/// read or written.
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// No result is cached longer than this, whatever the configuration (keeps deadline
/// arithmetic in range).
const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// How the gateway authenticates itself to the introspection endpoint (RFC 7662 §2.1,
/// RFC 6749 §2.3.1).
#[derive(Clone)]
#[non_exhaustive]
pub enum ClientAuth {
    /// `client_secret_basic`: HTTP Basic with the form-encoded id and secret.
    Basic {
        /// The client id.
        client_id: String,
        /// The client secret.
        client_secret: String,
    },
    /// `client_secret_post`: `client_id` and `client_secret` in the form body.
    Post {
        /// The client id.
        client_id: String,
        /// The client secret.
        client_secret: String,
    },
    /// No client authentication (endpoints protected otherwise, e.g. by the network).
    None,
}

impl fmt::Debug for ClientAuth {
    /// The secret is never shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAuth::Basic { client_id, .. } => f
                .debug_struct("Basic")
                .field("client_id", client_id)
                .finish_non_exhaustive(),
            ClientAuth::Post { client_id, .. } => f
                .debug_struct("Post")
                .field("client_id", client_id)
                .finish_non_exhaustive(),
            ClientAuth::None => f.write_str("None"),
        }
    }
}

/// Configuration of an [`IntrospectionAuthenticator`].
#[derive(Debug, Clone)]
#[must_use]
pub struct IntrospectionConfig {
    endpoint: String,
    auth: ClientAuth,
    issuer: Option<String>,
    audiences: Vec<String>,
    any_audience: bool,
    roles_claim: String,
    tenant_claim: Option<String>,
    require_subject: bool,
    timeout: Duration,
    cache_ttl: Duration,
    negative_ttl: Duration,
    cache_capacity: usize,
    shared: Option<Arc<dyn SharedIntrospectionCache>>,
}

impl IntrospectionConfig {
    /// Introspects at `endpoint` (an `http://` or `https://` URL) with client `auth`.
    pub fn new(endpoint: impl Into<String>, auth: ClientAuth) -> Self {
        IntrospectionConfig {
            endpoint: endpoint.into(),
            auth,
            issuer: None,
            audiences: Vec::new(),
            any_audience: false,
            roles_claim: "roles".into(),
            tenant_claim: None,
            require_subject: true,
            timeout: Duration::from_secs(2),
            cache_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            cache_capacity: 10_000,
            shared: None,
        }
    }

    /// Requires the response's `iss` to be `issuer`: an active answer without `iss`, or with
    /// another one, is rejected (401). The context's issuer (forwarded as `x-user-issuer`) is
    /// this name, or the endpoint URL when none is set.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Requires the response's `aud` to contain one of `audiences` (a response without
    /// `aud` is then rejected). Required, unless [`any_audience`](Self::any_audience) is
    /// chosen: without it, a token the authorization server issued for another API would be
    /// accepted here.
    pub fn audiences<I, S>(mut self, audiences: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.audiences = audiences.into_iter().map(Into::into).collect();
        self
    }

    /// Accepts answers for any audience (or none): the explicit opt-out of
    /// [`audiences`](Self::audiences), for authorization servers that only ever issue tokens
    /// for this API. Ignored when audiences are set.
    pub fn any_audience(mut self) -> Self {
        self.any_audience = true;
        self
    }

    /// The member holding roles (default `roles`; dotted paths allowed).
    pub fn roles_claim(mut self, claim: impl Into<String>) -> Self {
        self.roles_claim = claim.into();
        self
    }

    /// The member holding the tenant (dotted paths allowed).
    pub fn tenant_claim(mut self, claim: impl Into<String>) -> Self {
        self.tenant_claim = Some(claim.into());
        self
    }

    /// Whether an active answer must name a non-empty `sub` (default `true`): without one the
    /// caller would be forwarded as an authenticated request that names nobody. Turn it off
    /// only for endpoints whose tokens (e.g. client credentials) really have none.
    pub fn require_subject(mut self, require: bool) -> Self {
        self.require_subject = require;
        self
    }

    /// Timeout of one introspection request (default 2 s); past it the request gets 503.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long an active result is cached at most (default 60 s); never past the token's
    /// `exp`. Zero disables caching of active results.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// How long an inactive result is cached (default 5 s).
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// How many results are cached at most (default 10 000).
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// A second-level cache shared by the replicas of a deployment (for example
    /// `RedisIntrospectionCache`, feature `redis`), so that N replicas ask the endpoint about
    /// a token once, not N times.
    ///
    /// A token missing from the in-process cache is looked up there (once per token and
    /// replica at a time: inside the single flight) before the endpoint is asked, and what
    /// the endpoint answers is written there with the TTL of the local cache (active: the
    /// earlier of `exp` and [`cache_ttl`](Self::cache_ttl); inactive:
    /// [`negative_ttl`](Self::negative_ttl); failures are never written). Entries are the
    /// endpoint's JSON response (`{"active":false}` for inactive tokens) with the time it was
    /// fetched, re-checked by each replica with its own configuration (`active`, `exp`,
    /// `iss`, `aud`), so a replica never accepts from the shared cache what it would reject
    /// from the endpoint. An entry read there is used only while it is younger than the
    /// reader's own `cache_ttl` (`negative_ttl` for inactive ones), measured from the fetch
    /// time, and kept locally no longer than that nor than its remaining TTL: a replica
    /// configured with a longer TTL cannot stretch another's. Keys are bound to the endpoint
    /// and the client id (see [`SharedIntrospectionCache`]), so authenticators of different
    /// authorization servers sharing one store never read each other's answers. A shared
    /// cache that fails, is slow, or holds an unusable entry never fails a request: the
    /// endpoint is asked instead.
    ///
    /// Whoever can write to the shared cache can make any token authenticate as anyone:
    /// protect it as the identity provider itself (see [`SharedIntrospectionCache`]).
    pub fn shared_cache(mut self, cache: impl SharedIntrospectionCache) -> Self {
        self.shared = Some(Arc::new(cache));
        self
    }
}

/// A cache of introspection results shared by the replicas of a deployment: the second level
/// behind each [`IntrospectionAuthenticator`]'s in-process cache
/// ([`IntrospectionConfig::shared_cache`]).
///
/// `RedisIntrospectionCache` (feature `redis`) implements it; other stores (memcached, a
/// database) can plug in the same way.
///
/// - Keys are 64 lowercase hex characters: the SHA-256 of the endpoint URL, the client id
///   and the token, each but the last preceded by its length as 8 big-endian bytes
///   ([`IntrospectionAuthenticator::shared_cache_key`] computes it). The raw token is never
///   given to the store, and two authenticators asking different endpoints (or the same
///   endpoint as different clients) never share an entry. A store may add a prefix.
/// - Values are JSON objects of at most 64 KiB, written with a time to live; an entry must not
///   be returned after it expires, and [`get`](Self::get) reports the time it has left. The
///   authenticator writes the endpoint's response with one more member,
///   `"gatekeeper:fetched_at"` (seconds since the epoch), and ignores entries without it.
/// - Both operations must be bounded in time (a short timeout) and should skip the store for
///   a while after a failure rather than retry on every request: the authenticator waits for
///   [`get`](Self::get) before asking the endpoint. [`put`](Self::put) runs after the
///   request has been answered.
/// - Errors are logged by the authenticator (never with the token) and otherwise ignored.
///
/// # Trust
///
/// An entry is believed like an answer of the introspection endpoint (each replica still
/// checks `active`, `exp`, `iss` and `aud` against its own configuration). Whoever can write
/// to the store can therefore mint identities, as with a shared revocation store: use a store
/// that only the gateways reach, with authentication and, across untrusted networks,
/// encryption.
///
/// # Example
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use std::time::{Duration, Instant};
/// use tower_gatekeeper::authenticate::{
///     ClientAuth, IntrospectionAuthenticator, IntrospectionConfig, SharedCacheFuture,
///     SharedEntry, SharedIntrospectionCache,
/// };
///
/// /// A stand-in for a real shared store (memcached, a database, …).
/// #[derive(Debug, Default)]
/// struct MapStore(Mutex<HashMap<String, (Vec<u8>, Instant)>>);
///
/// impl SharedIntrospectionCache for MapStore {
///     fn get<'a>(&'a self, token_hash: &'a str) -> SharedCacheFuture<'a, Option<SharedEntry>> {
///         let now = Instant::now();
///         let map = self.0.lock().unwrap();
///         let found = map.get(token_hash).and_then(|(value, until)| {
///             (*until > now).then(|| SharedEntry::new(value.clone(), *until - now))
///         });
///         Box::pin(async move { Ok(found) })
///     }
///
///     fn put<'a>(
///         &'a self,
///         token_hash: &'a str,
///         value: Vec<u8>,
///         ttl: Duration,
///     ) -> SharedCacheFuture<'a, ()> {
///         let until = Instant::now() + ttl;
///         self.0.lock().unwrap().insert(token_hash.to_owned(), (value, until));
///         Box::pin(async { Ok(()) })
///     }
/// }
///
/// let auth = IntrospectionAuthenticator::new(
///     IntrospectionConfig::new("https://idp.example.test/oauth2/introspect", ClientAuth::None)
///         .audiences(["api://orders"])
///         .shared_cache(MapStore::default()),
/// )
/// .unwrap();
/// ```
pub trait SharedIntrospectionCache: fmt::Debug + Send + Sync + 'static {
    /// The entry stored for `token_hash`, if any, with its remaining time to live.
    ///
    /// # Errors
    ///
    /// [`SharedCacheError`] when the store cannot be asked now, fails, times out, or holds an
    /// unusable entry; the endpoint is then asked.
    fn get<'a>(&'a self, token_hash: &'a str) -> SharedCacheFuture<'a, Option<SharedEntry>>;

    /// Stores `value` (a JSON object) for `token_hash`, to expire after `ttl` (at least one
    /// millisecond), replacing any previous entry.
    ///
    /// # Errors
    ///
    /// [`SharedCacheError`] when the value could not be stored (best effort: only logged).
    fn put<'a>(
        &'a self,
        token_hash: &'a str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> SharedCacheFuture<'a, ()>;
}

/// The future of a [`SharedIntrospectionCache`] operation.
pub type SharedCacheFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, SharedCacheError>> + Send + 'a>>;

/// An entry read from a [`SharedIntrospectionCache`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedEntry {
    /// The stored value: an introspection response (a JSON object).
    pub value: Vec<u8>,
    /// How long the entry has left to live; the in-process cache keeps it no longer.
    pub ttl: Duration,
}

impl SharedEntry {
    /// An entry holding `value` with `ttl` left to live.
    pub fn new(value: Vec<u8>, ttl: Duration) -> Self {
        SharedEntry { value, ttl }
    }
}

/// Why a [`SharedIntrospectionCache`] operation did not succeed. Never shown to clients: the
/// request falls through to the introspection endpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SharedCacheError {
    /// Not tried: the store is backing off after a recent failure.
    #[error("skipped while backing off after a failure")]
    BackingOff,
    /// The store failed or did not answer in time.
    #[error("{0}")]
    Unavailable(Box<dyn StdError + Send + Sync>),
    /// The store holds an entry that cannot be used (too large, without an expiry, not a JSON
    /// object); it is ignored and replaced once the endpoint has answered.
    #[error("unusable entry: {0}")]
    InvalidEntry(String),
}

/// Authenticates opaque bearer tokens by asking the authorization server (RFC 7662).
///
/// - `active: false`, an `exp` in the past, a foreign `iss` or `aud`: 401 `invalid_token`;
/// - the endpoint unreachable, too slow ([`timeout`](IntrospectionConfig::timeout)) or
///   answering anything but 200 with JSON: 503 with `Retry-After`, unless the result is
///   cached;
/// - `sub`, `scope`, `exp`, `iss`, roles and tenant go into the [`AuthContext`]
///   ([`CredentialKind::Introspected`]); every member of the response is a claim.
///
/// Results are cached by the SHA-256 of the token (the raw token is not kept): active ones
/// until the earlier of `exp` and [`cache_ttl`](IntrospectionConfig::cache_ttl), inactive
/// ones for [`negative_ttl`](IntrospectionConfig::negative_ttl); failures are not cached.
/// Active and inactive results live in two bounded caches of
/// [`cache_capacity`](IntrospectionConfig::cache_capacity) entries each, with
/// scan-resistant eviction ([quick_cache](https://docs.rs/quick_cache)): a flood of invalid
/// tokens cycles through the inactive cache and never evicts an active result.
/// Concurrent requests with the same uncached token share one request to the endpoint
/// (single flight); if that request is abandoned (its task is cancelled), its waiters try
/// once more themselves rather than fail. This cache is per process; replicas can share a second level
/// ([`IntrospectionConfig::shared_cache`], e.g. Redis with feature `redis`) so that a token
/// introspected by one of them is not introspected again by the others.
///
/// ```no_run
/// use tower_gatekeeper::authenticate::{ClientAuth, IntrospectionAuthenticator, IntrospectionConfig};
///
/// let auth = IntrospectionAuthenticator::new(
///     IntrospectionConfig::new(
///         "https://idp.example.test/oauth2/introspect",
///         ClientAuth::Basic { client_id: "gateway".into(), client_secret: "…".into() },
///     )
///     .issuer("https://idp.example.test")
///     .audiences(["api://orders"]),
/// )
/// .unwrap();
/// ```
#[derive(Clone)]
pub struct IntrospectionAuthenticator {
    inner: Arc<Inner>,
}

struct Inner {
    config: IntrospectionConfig,
    client: reqwest::Client,
    /// Active results.
    positive: quick_cache::sync::Cache<[u8; 32], Cached>,
    /// Inactive results, apart, so that junk tokens never evict active results.
    negative: quick_cache::sync::Cache<[u8; 32], Cached>,
    inflight: Mutex<HashMap<[u8; 32], watch::Receiver<Option<Outcome>>>>,
}

type Outcome = Result<AuthContext, Rejection>;

#[derive(Clone)]
struct Cached {
    outcome: Outcome,
    until: Instant,
}

impl fmt::Debug for IntrospectionAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntrospectionAuthenticator")
            .field("endpoint", &self.inner.config.endpoint)
            .field("auth", &self.inner.config.auth)
            .field("shared_cache", &self.inner.config.shared)
            .finish_non_exhaustive()
    }
}

impl IntrospectionAuthenticator {
    /// An authenticator for `config`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when the endpoint is not an `http(s)://` URL, a timeout is zero, the
    /// capacity is zero, a client id is empty, or no audience is configured (and
    /// [`any_audience`](IntrospectionConfig::any_audience) was not chosen).
    pub fn new(config: IntrospectionConfig) -> Result<Self, ConfigError> {
        let url = reqwest::Url::parse(&config.endpoint).map_err(|e| {
            ConfigError::invalid(format!(
                "introspection endpoint {:?} is not a URL: {e}",
                config.endpoint
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ConfigError::invalid(
                "the introspection endpoint must be an http:// or https:// URL",
            ));
        }
        if let Some(issuer) = &config.issuer
            && !crate::context::is_exact_header_text(issuer)
        {
            return Err(ConfigError::invalid(format!(
                "introspection issuer {issuer:?}: an issuer is forwarded in a header and must be visible ASCII"
            )));
        }
        if config.timeout.is_zero() {
            return Err(ConfigError::invalid(
                "the introspection timeout must be greater than zero",
            ));
        }
        if config.cache_capacity == 0 {
            return Err(ConfigError::invalid(
                "the introspection cache capacity must be greater than zero",
            ));
        }
        if let ClientAuth::Basic { client_id, .. } | ClientAuth::Post { client_id, .. } =
            &config.auth
            && client_id.is_empty()
        {
            return Err(ConfigError::invalid(
                "the introspection client_id must not be empty",
            ));
        }
        if config.audiences.is_empty() && !config.any_audience {
            return Err(ConfigError::invalid(
                "introspection: no audience configured; set audiences to this API's identifiers (the `aud` the authorization server puts in its answers), or choose any_audience explicitly",
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tower-gatekeeper/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::invalid(format!("cannot build the HTTP client: {e}")))?;
        Ok(IntrospectionAuthenticator {
            inner: Arc::new(Inner {
                positive: quick_cache::sync::Cache::new(config.cache_capacity),
                negative: quick_cache::sync::Cache::new(config.cache_capacity),
                config,
                client,
                inflight: Mutex::default(),
            }),
        })
    }

    /// Introspects a bare token (no request around it).
    ///
    /// # Errors
    ///
    /// The [`Rejection`] a request carrying this token would get.
    pub async fn verify(&self, token: &str) -> Result<AuthContext, Rejection> {
        self.begin(token).await
    }

    /// The key under which the shared cache holds `token`'s answer (before any prefix the
    /// store adds): see [`SharedIntrospectionCache`]. For operational tooling (removing an
    /// entry) and tests.
    pub fn shared_cache_key(&self, token: &str) -> String {
        self.inner.shared_key(token)
    }

    fn begin(&self, token: &str) -> IntrospectionFuture {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(outcome) = self.inner.cached(&key) {
            return IntrospectionFuture {
                state: FutState::Ready(Some(outcome)),
            };
        }
        let inner = Arc::clone(&self.inner);
        let token = token.to_owned();
        IntrospectionFuture {
            state: FutState::Waiting(Box::pin(
                async move { inner.single_flight(key, token).await },
            )),
        }
    }
}

/// The member of a shared cache entry that holds when the endpoint answered (seconds since
/// the epoch).
const FETCHED_AT: &str = "gatekeeper:fetched_at";

/// A shared entry's fetch time may lie this far in the future (clock skew between
/// replicas); beyond it the entry is not used.
const MAX_FETCH_SKEW: f64 = 5.0;

/// What the shared cache holds for an endpoint's `response`, fetched at `fetched_at`
/// (seconds since the epoch): the response itself when active (each replica re-checks it),
/// `{"active":false}` otherwise (whatever else an inactive response says is not kept), and
/// the fetch time; `None` when it would exceed the size bound.
fn shared_value(response: &Map<String, Value>, fetched_at: u64) -> Option<Vec<u8>> {
    let mut stored = if response.get("active") == Some(&Value::Bool(true)) {
        response.clone()
    } else {
        let mut inactive = Map::new();
        inactive.insert("active".into(), Value::Bool(false));
        inactive
    };
    stored.insert(FETCHED_AT.into(), fetched_at.into());
    let value = serde_json::to_vec(&stored).ok()?;
    (value.len() <= MAX_RESPONSE_BYTES).then_some(value)
}

/// Seconds since the epoch, now.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// `secs` as a duration, clamped to `[0, MAX_TTL]` (never panics, whatever the number).
fn clamped_secs(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(secs).map_or(MAX_TTL, |d| d.min(MAX_TTL))
    }
}

/// Removes a token's in-flight entry when the request for it ends, however it ends (an
/// answer, a panic, the task cancelled with its runtime), so that the next request for the
/// token starts a new one.
struct InflightGuard {
    inner: Arc<Inner>,
    key: [u8; 32],
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.inner
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

/// Logs a shared cache failure (`doing` is "reading" or "writing"); the request goes on
/// without it. Neither the token nor its hash is logged.
fn shared_error(error: &SharedCacheError, doing: &str) {
    match error {
        SharedCacheError::BackingOff => {
            debug!(%error, "shared introspection cache skipped while {doing}");
        }
        _ => warn!(
            %error,
            "shared introspection cache failed while {doing}; going on without it"
        ),
    }
}

/// Lowercase hex of a SHA-256.
fn hex(key: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for byte in key {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

fn unavailable() -> Rejection {
    Rejection::keys_unavailable(Duration::from_secs(5))
        .with_description("the token introspection service is temporarily unavailable")
}

impl Inner {
    fn cached(&self, key: &[u8; 32]) -> Option<Outcome> {
        let now = Instant::now();
        for cache in [&self.positive, &self.negative] {
            if let Some(entry) = cache.get(key) {
                if entry.until > now {
                    return Some(entry.outcome);
                }
                cache.remove(key);
            }
        }
        None
    }

    fn store(&self, key: [u8; 32], outcome: &Outcome, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let cache = if outcome.is_ok() {
            &self.positive
        } else {
            &self.negative
        };
        cache.insert(
            key,
            Cached {
                outcome: outcome.clone(),
                until: Instant::now() + ttl.min(MAX_TTL),
            },
        );
    }

    /// The shared cache key of `token`: see [`SharedIntrospectionCache`].
    fn shared_key(&self, token: &str) -> String {
        let client_id = match &self.config.auth {
            ClientAuth::Basic { client_id, .. } | ClientAuth::Post { client_id, .. } => {
                client_id.as_str()
            }
            ClientAuth::None => "",
        };
        let mut hash = Sha256::new();
        for part in [self.config.endpoint.as_str(), client_id] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        hash.update(token.as_bytes());
        hex(&hash.finalize().into())
    }

    async fn single_flight(self: Arc<Self>, key: [u8; 32], token: String) -> Outcome {
        // A second round only when the first leader vanished without an answer.
        for _ in 0..2 {
            let mut rx = {
                let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(rx) = inflight.get(&key) {
                    rx.clone()
                } else {
                    // Another request may have finished while this one waited for the lock.
                    if let Some(outcome) = self.cached(&key) {
                        return outcome;
                    }
                    let (tx, rx) = watch::channel(None);
                    inflight.insert(key, rx.clone());
                    let guard = InflightGuard {
                        inner: Arc::clone(&self),
                        key,
                    };
                    let token = token.clone();
                    // The request runs in its own task, so a client that goes away does not
                    // cancel it for the others waiting on it.
                    tokio::spawn(async move {
                        let leader = Arc::clone(&guard.inner);
                        let (outcome, ttl, share) = leader.resolve(&token).await;
                        let ttl = ttl.min(MAX_TTL);
                        let until = Instant::now() + ttl;
                        drop(token);
                        leader.store(key, &outcome, ttl);
                        drop(guard);
                        tx.send_replace(Some(outcome));
                        // Best effort, after the waiters have their answer.
                        if let Some((shared_key, value)) = share {
                            leader.write_shared(&shared_key, value, until).await;
                        }
                    });
                    rx
                }
            };
            if let Ok(outcome) = rx.wait_for(Option::is_some).await {
                return outcome.clone().unwrap_or_else(|| Err(unavailable()));
            }
        }
        Err(unavailable())
    }

    /// The shared cache, else one request to the endpoint: the outcome, how long to cache
    /// it, and the key and value to write to the shared cache (an endpoint's answer, when one
    /// is configured).
    async fn resolve(&self, token: &str) -> (Outcome, Duration, Option<(String, Vec<u8>)>) {
        let shared_key = self.config.shared.as_ref().map(|_| self.shared_key(token));
        if let Some(shared_key) = &shared_key
            && let Some(found) = self.read_shared(shared_key).await
        {
            return (found.0, found.1, None);
        }
        match self.request(token).await {
            Ok(response) => {
                let share = shared_key.and_then(|k| {
                    let fetched_at = unix_now() as u64;
                    shared_value(&response, fetched_at).map(|v| (k, v))
                });
                let (outcome, ttl) = self.evaluate(response);
                (outcome, ttl, share)
            }
            Err(reason) => {
                warn!(endpoint = %self.config.endpoint, %reason, "token introspection failed");
                (Err(unavailable()), Duration::ZERO, None)
            }
        }
    }

    /// The shared cache's entry under `shared_key`, evaluated as an endpoint's answer, and
    /// how long to keep it locally: never past the entry's own expiry, nor past this
    /// authenticator's own TTL counted from the entry's fetch time. `None` (logged) when
    /// there is no shared cache, no entry, an entry too old for this authenticator, or one
    /// that cannot be used.
    async fn read_shared(&self, shared_key: &str) -> Option<(Outcome, Duration)> {
        let shared = self.config.shared.as_ref()?;
        let entry = match shared.get(shared_key).await {
            Ok(Some(entry)) => entry,
            Ok(None) => return None,
            Err(error) => {
                shared_error(&error, "reading");
                return None;
            }
        };
        if entry.ttl.is_zero() {
            return None;
        }
        let invalid = |why: &str| {
            shared_error(&SharedCacheError::InvalidEntry(why.into()), "reading");
            None
        };
        if entry.value.len() > MAX_RESPONSE_BYTES {
            return invalid("larger than 64 KiB");
        }
        let Ok(Value::Object(mut response)) = serde_json::from_slice(&entry.value) else {
            return invalid("not a JSON object");
        };
        let Some(fetched_at) = response.remove(FETCHED_AT).as_ref().and_then(Value::as_f64) else {
            return invalid("no fetch time");
        };
        let age = unix_now() - fetched_at;
        if age < -MAX_FETCH_SKEW {
            return invalid("fetched in the future");
        }
        let (outcome, ttl) = self.evaluate(response);
        let own = if outcome.is_ok() {
            self.config.cache_ttl
        } else {
            self.config.negative_ttl
        };
        let left = clamped_secs(own.as_secs_f64() - age.max(0.0));
        if left.is_zero() {
            // Older than this authenticator would keep it: ask the endpoint.
            return None;
        }
        Some((outcome, ttl.min(entry.ttl).min(left)))
    }

    /// Writes an endpoint's answer to the shared cache, to expire at `until` like the local
    /// entry (the time since the answer was evaluated is deducted), best effort.
    async fn write_shared(&self, shared_key: &str, value: Vec<u8>, until: Instant) {
        let Some(shared) = &self.config.shared else {
            return;
        };
        let ttl = until.saturating_duration_since(Instant::now());
        if ttl < Duration::from_millis(1) {
            return;
        }
        if let Err(error) = shared.put(shared_key, value, ttl).await {
            shared_error(&error, "writing");
        }
    }

    async fn request(&self, token: &str) -> Result<Map<String, Value>, String> {
        let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        let mut body = format!("token={}&token_type_hint=access_token", enc(token));
        let mut request = self
            .client
            .post(&self.config.endpoint)
            .header(reqwest::header::ACCEPT, "application/json")
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
        match &self.config.auth {
            ClientAuth::Basic {
                client_id,
                client_secret,
            } => {
                let credentials =
                    STANDARD.encode(format!("{}:{}", enc(client_id), enc(client_secret)));
                request = request.header(
                    reqwest::header::AUTHORIZATION,
                    format!("Basic {credentials}"),
                );
            }
            ClientAuth::Post {
                client_id,
                client_secret,
            } => {
                body.push_str(&format!(
                    "&client_id={}&client_secret={}",
                    enc(client_id),
                    enc(client_secret)
                ));
            }
            ClientAuth::None => {}
        }
        let describe = |e: reqwest::Error| {
            if e.is_timeout() {
                "timed out".to_owned()
            } else {
                // reqwest errors name the URL, never the body (which holds the token).
                e.without_url().to_string()
            }
        };
        let mut response = request.body(body).send().await.map_err(describe)?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(format!("status {}", response.status().as_u16()));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_RESPONSE_BYTES as u64)
        {
            return Err("response too large".into());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(describe)? {
            if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err("response too large".into());
            }
            bytes.extend_from_slice(&chunk);
        }
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err("response is not a JSON object".into()),
        }
    }

    fn evaluate(&self, response: Map<String, Value>) -> (Outcome, Duration) {
        let negative = |description| {
            (
                Err(Rejection::invalid_token(description)),
                self.config.negative_ttl,
            )
        };
        if response.get("active") != Some(&Value::Bool(true)) {
            return negative("the access token is not active");
        }
        let now = unix_now();
        let exp = match response.get("exp") {
            None => None,
            Some(exp) => match exp.as_f64() {
                Some(exp) => Some(exp),
                None => return negative("the access token has an invalid expiry"),
            },
        };
        if exp.is_some_and(|exp| exp <= now) {
            return negative("the access token has expired");
        }
        let issuer = response.get("iss").and_then(Value::as_str);
        if let Some(expected) = &self.config.issuer
            && issuer != Some(expected.as_str())
        {
            return negative("the access token has an untrusted issuer");
        }
        if !self.config.audiences.is_empty() {
            let fits = match response.get("aud") {
                Some(Value::String(aud)) => self.config.audiences.contains(aud),
                Some(Value::Array(auds)) => auds
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|a| self.config.audiences.iter().any(|c| c == a)),
                _ => false,
            };
            if !fits {
                return negative("the access token is not meant for this audience");
            }
        }
        let mut builder = map_identity(
            AuthContext::builder(CredentialKind::Introspected),
            &response,
            &self.config.roles_claim,
            self.config.tenant_claim.as_deref(),
        );
        // The authenticator's name: an answer's `iss` other than the configured one is
        // refused above, and without a configured issuer the endpoint vouches for the caller.
        let name = self.config.issuer.as_ref().unwrap_or(&self.config.endpoint);
        builder = builder.issuer(name.clone());
        if let Some(exp) = exp {
            builder = builder.expires_at_unix(exp);
        }
        let has_subject = matches!(response.get("sub"), Some(Value::String(s)) if !s.is_empty());
        if self.config.require_subject && !has_subject {
            return negative("the access token has no subject");
        }
        let ttl = match exp {
            Some(exp) => self.config.cache_ttl.min(clamped_secs(exp - now)),
            None => self.config.cache_ttl,
        };
        let ctx = builder.claims(response).build();
        if ctx.check_forwardable().is_err() {
            return negative("identity cannot be forwarded exactly");
        }
        (Ok(ctx), ttl)
    }
}

impl Authenticator for IntrospectionAuthenticator {
    type Future = IntrospectionFuture;

    fn authenticate(&self, head: &RequestHead<'_>) -> Result<Self::Future, Rejection> {
        let token = bearer_token(head, DEFAULT_MAX_TOKEN_BYTES)?
            .ok_or_else(Rejection::missing_credential)?;
        Ok(self.begin(token))
    }

    /// A result in the in-process cache is [`Started::Ready`] (or its rejection).
    fn start(&self, head: &RequestHead<'_>) -> Result<Started<Self::Future>, Rejection> {
        let fut = self.authenticate(head)?;
        match fut.state {
            FutState::Ready(Some(outcome)) => outcome.map(Started::Ready),
            state => Ok(Started::Pending(IntrospectionFuture { state })),
        }
    }
}

/// The future of [`IntrospectionAuthenticator`]: ready at once on a cache hit, else waits
/// for the (shared) request to the endpoint.
pub struct IntrospectionFuture {
    state: FutState,
}

enum FutState {
    Ready(Option<Outcome>),
    Waiting(Pin<Box<dyn Future<Output = Outcome> + Send>>),
}

impl fmt::Debug for IntrospectionFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntrospectionFuture")
            .finish_non_exhaustive()
    }
}

impl Future for IntrospectionFuture {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            FutState::Ready(outcome) => {
                Poll::Ready(outcome.take().expect("polled after completion"))
            }
            FutState::Waiting(fut) => fut.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(endpoint: &str, client: ClientAuth) -> IntrospectionAuthenticator {
        IntrospectionAuthenticator::new(IntrospectionConfig::new(endpoint, client).any_audience())
            .unwrap()
    }

    #[test]
    fn shared_keys_bind_the_endpoint_the_client_and_the_token() {
        let hex_digest = |parts: &[&[u8]]| {
            let mut h = Sha256::new();
            for p in parts {
                h.update(p);
            }
            hex(&h.finalize().into())
        };
        let a = auth("http://idp-a.test/i", ClientAuth::None);
        let endpoint = b"http://idp-a.test/i";
        assert_eq!(
            a.shared_cache_key("abc"),
            hex_digest(&[&19u64.to_be_bytes(), endpoint, &0u64.to_be_bytes(), b"abc"])
        );
        let post = |id: &str| ClientAuth::Post {
            client_id: id.into(),
            client_secret: "s".into(),
        };
        let keys = [
            a.shared_cache_key("abc"),
            a.shared_cache_key("abd"),
            auth("http://idp-b.test/i", ClientAuth::None).shared_cache_key("abc"),
            auth("http://idp-a.test/i", post("gw")).shared_cache_key("abc"),
            auth("http://idp-a.test/i", post("gw2")).shared_cache_key("abc"),
        ];
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(k.len(), 64);
            assert!(!keys[i + 1..].contains(k), "{i}: {k}");
        }
    }

    #[test]
    fn shared_values_keep_active_answers_and_only_the_verdict_of_inactive_ones() {
        let active: Map<String, Value> =
            serde_json::from_str(r#"{"active":true,"sub":"u","exp":4102444800}"#).unwrap();
        let stored: Value = serde_json::from_slice(&shared_value(&active, 7).unwrap()).unwrap();
        let mut expected = active.clone();
        expected.insert(FETCHED_AT.into(), 7.into());
        assert_eq!(stored, Value::Object(expected));
        let inactive: Map<String, Value> =
            serde_json::from_str(r#"{"active":false,"sub":"u","why":"revoked"}"#).unwrap();
        assert_eq!(
            shared_value(&inactive, 7).unwrap(),
            br#"{"active":false,"gatekeeper:fetched_at":7}"#
        );
        let mut huge = Map::new();
        huge.insert("active".into(), Value::Bool(true));
        huge.insert("pad".into(), Value::String("x".repeat(MAX_RESPONSE_BYTES)));
        assert_eq!(shared_value(&huge, 7), None);
    }

    #[test]
    fn times_are_clamped_never_panic() {
        assert_eq!(clamped_secs(1e20), MAX_TTL);
        assert_eq!(clamped_secs(f64::INFINITY), MAX_TTL);
        assert_eq!(clamped_secs(f64::NAN), Duration::ZERO);
        assert_eq!(clamped_secs(-5.0), Duration::ZERO);
        assert_eq!(clamped_secs(1.5), Duration::from_millis(1500));
    }
}
