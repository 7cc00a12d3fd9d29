//! A verified-token cache: [`CachedAuthenticator`] wraps any [`Authenticator`] and remembers
//! the [`AuthContext`] of each bearer token it has verified, so a token that comes back is
//! not parsed, looked up and signature-checked again.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use serde_json::json;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_gatekeeper::authenticate::{CacheConfig, CachedAuthenticator};
//! use tower_gatekeeper::keys::{SigningKey, StaticKeys};
//! use tower_gatekeeper::{AuthenticateLayer, JwtAuthenticator, jwt::Validation};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let signer = SigningKey::generate_ed25519().unwrap().with_kid("k1");
//! let keys = StaticKeys::new([signer.verifying_key().clone()]);
//! let validation = Validation::new("https://idp.example.test").audiences(["api://orders"]);
//! let jwt = JwtAuthenticator::new(keys, validation).unwrap();
//!
//! let config = CacheConfig::default()
//!     .max_entries(10_000)
//!     .max_bytes(16 * 1024 * 1024)
//!     .max_ttl(Duration::from_secs(300));
//! let auth = CachedAuthenticator::new(jwt, config).unwrap();
//! let cache = auth.cache().clone();
//!
//! let service = ServiceBuilder::new()
//!     .layer(AuthenticateLayer::new(auth))
//!     .service_fn(|_req: Request<Full<Bytes>>| async {
//!         Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
//!     });
//!
//! let token = signer.sign(&json!({
//!     "iss": "https://idp.example.test", "aud": "api://orders",
//!     "sub": "user-1", "exp": 4102444800u64,
//! })).unwrap();
//! for _ in 0..3 {
//!     let request = Request::builder()
//!         .header("authorization", format!("Bearer {token}"))
//!         .body(Full::default())
//!         .unwrap();
//!     let response = service.clone().oneshot(request).await.unwrap();
//!     assert_eq!(response.status(), StatusCode::OK);
//! }
//! // Verified once, served from the cache twice.
//! cache.run_pending_tasks();
//! assert_eq!(cache.entry_count(), 1);
//! # }
//! ```
//!
//! # What is cached, and for how long
//!
//! Only successes: a token that fails verification is never stored, so a flood of invalid
//! tokens costs one hash and one failed lookup each and no memory. An entry is served only
//! while all of these hold, checked on every hit:
//!
//! - the token has not expired: the entry's deadline is the token's `exp` (the
//!   [`AuthContext::expires_at`]) without any leeway, so a cached token is refused no later
//!   than the verifier would refuse it;
//! - the entry is younger than [`CacheConfig::max_ttl`] (also the lifetime of credentials
//!   without an expiry);
//! - the key that verified it is still in the key set: the wrapped authenticator's
//!   [`Authenticator::still_trusted`] is asked (for [`JwtAuthenticator`](crate::JwtAuthenticator),
//!   [`KeySource::contains_key`](crate::keys::KeySource::contains_key) of the issuer's
//!   keys, which compares the `kid` *and* the [fingerprint](crate::keys::KeyFingerprint) of
//!   the key material that verified the token), so a key rotated out of a remote JWKS, or
//!   replaced by other material under the same `kid`, stops vouching for cached tokens at
//!   once;
//! - the cache has not been [invalidated](TokenCache::invalidate_all) since the
//!   verification began: a verification in flight when the cache is cleared does not put
//!   its result back afterwards.
//!
//! # Sharing one cache
//!
//! One [`TokenCache`] may back several [`CachedAuthenticator`]s (one memory bound for all),
//! but their entries are kept apart: each `CachedAuthenticator` built with
//! [`new`](CachedAuthenticator::new) or [`with_cache`](CachedAuthenticator::with_cache)
//! draws a random scope that is mixed into its keys, so a token verified by one (say, for
//! audience `api://a`) is never served by another (for audience `api://b`), whatever their
//! rules. Clones of one `CachedAuthenticator` share its scope and its entries.
//!
//! Entries are cached only for requests with an `Authorization: Bearer` credential, keyed by
//! that token alone; requests without one go straight to the wrapped authenticator. Wrap only
//! authenticators whose outcome depends on the bearer token and nothing else of the request.
//!
//! # The cache key
//!
//! The key is the 128-bit SipHash-1-3 of the whole token under a 128-bit secret drawn from
//! the operating system's random source when the cache is built. The secret never leaves
//! the process and the keys are never shown to anyone, so a client can neither compute the
//! key of a token nor aim a crafted token at an entry or a hash bucket.
//!
//! What a collision would give away decides how strong the hash must be. An entry is only
//! ever the context of a token that was verified. If a client found two tokens with one key,
//! and both are its own, it gains nothing: the second answers with the identity of the first,
//! which it holds already. To borrow *someone else's* identity it would need a token whose
//! key equals that of a token it has never seen: a second preimage of an unknown, high-entropy
//! message (the signature alone is 256 bits or more) under a key it has never seen, which a
//! keyed pseudo-random function makes a blind guess at 2^128 values per try. SipHash is the
//! keyed PRF designed for exactly this (hash-table keys chosen by adversaries; the Rust
//! standard library's `HashMap` uses SipHash-1-3 for the same reason), and it costs
//! about 0.06 µs for a 270-byte token and 0.14 µs for a 700-byte one, where a keyed SHA-256
//! costs 0.18 and 0.41 µs even with the CPU's SHA extensions (`benches/README.md`). Keying by a hash rather than the token means the
//! cache never retains raw tokens, so a memory dump of the gateway does not yield live
//! credentials. The key is already uniformly distributed and secret, so the cache's own
//! hash table uses its low 64 bits directly instead of hashing it again.
//! (Keying by a part of the token, such as its signature, would not be safe: the header and
//! claims could then be swapped under a cached signature and the swapped token would be
//! accepted, and forwarded with `keep_authorization`.)
//!
//! # Bounds and eviction
//!
//! The cache ([quick_cache](https://docs.rs/quick_cache), sharded behind read-write locks)
//! is bounded by a total weight of [`CacheConfig::max_bytes`]. Each entry weighs an
//! estimate of the memory it holds (the claims, roles, scopes and the bookkeeping around
//! them), but at least `max_bytes / max_entries`, so the number of entries never exceeds
//! [`CacheConfig::max_entries`] either. Expired entries are never served (every hit checks
//! the expiry and drops the entry) and are swept out of memory by the first insert 30 seconds
//! after the previous sweep.
//!
//! Eviction is scan-resistant (quick_cache's variant of CLOCK-PRO, close to S3-FIFO): a newly
//! verified token enters a small "cold" section; only a token requested again while there
//! (or shortly after leaving it, remembered as a "ghost" key) moves to the "hot" section,
//! which holds 97% of the capacity. A flood of unique tokens, each seen once, cycles through
//! the cold section and its ghosts: it cannot push hot entries out wholesale, and never
//! grows memory beyond the bound; the flood's tokens are verified like any uncached token.
//! The ghost keys are bounded too: at most half as many as the entries that fit, each a
//! slot of about a hundred bytes, not counted in `max_bytes`.
//! A hit costs about 30 ns and an insert about 0.1 µs (figures in `benches/README.md`).
//!
//! # Stacking with revocation
//!
//! Put revocation checks *outside* this wrapper, so they run on every request, cache hits
//! included: `Revocable::new(CachedAuthenticator::new(jwt, config)?, store)` (see
//! [`revocation`](crate::revocation)). Inside it, a revoked token would be served from the
//! cache until the entry expires.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pin_project_lite::pin_project;
use siphasher::sip128::SipHasher13;

use super::{Authenticator, Started};
use crate::clock::Clock;
use crate::config_error::ConfigError;
use crate::context::AuthContext;
use crate::credential::{DEFAULT_MAX_TOKEN_BYTES, RequestHead, bearer_token};
use crate::reject::Rejection;

/// The default [`CacheConfig::max_entries`].
pub const DEFAULT_MAX_ENTRIES: u64 = 10_000;
/// The default [`CacheConfig::max_bytes`] (32 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 32 * 1024 * 1024;
/// The default [`CacheConfig::max_ttl`] (5 minutes).
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(300);

/// Bookkeeping per entry beyond its contents: the hash key, the entry, the context's
/// allocation and the cache's slot and indexes (measured order of magnitude, rounded up).
const ENTRY_OVERHEAD: usize = 384;

/// The smallest weight capacity of one shard of the cache (see [`TokenCache::new`]).
const MIN_SHARD_BYTES: u64 = 64 * 1024;

/// How often expired entries are swept out (on an insert, at most this often).
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Sizes and lifetimes of a [`TokenCache`].
///
/// See the [module docs](crate::authenticate::cache) for an example.
#[derive(Clone)]
pub struct CacheConfig {
    max_entries: u64,
    max_bytes: u64,
    max_ttl: Duration,
    max_token_bytes: usize,
    clock: Clock,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_entries: DEFAULT_MAX_ENTRIES,
            max_bytes: DEFAULT_MAX_BYTES,
            max_ttl: DEFAULT_MAX_TTL,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            clock: Clock::system(),
        }
    }
}

impl fmt::Debug for CacheConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheConfig")
            .field("max_entries", &self.max_entries)
            .field("max_bytes", &self.max_bytes)
            .field("max_ttl", &self.max_ttl)
            .field("max_token_bytes", &self.max_token_bytes)
            .finish_non_exhaustive()
    }
}

impl CacheConfig {
    /// The most entries the cache holds (default [`DEFAULT_MAX_ENTRIES`]).
    #[must_use]
    pub fn max_entries(mut self, max_entries: u64) -> Self {
        self.max_entries = max_entries;
        self
    }

    /// The most memory the entries hold, as estimated per entry (default
    /// [`DEFAULT_MAX_BYTES`]).
    #[must_use]
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The longest an entry is served, whatever the token's `exp` (default
    /// [`DEFAULT_MAX_TTL`]). It bounds how long a cached result outlives a change the
    /// cache cannot see.
    #[must_use]
    pub fn max_ttl(mut self, max_ttl: Duration) -> Self {
        self.max_ttl = max_ttl;
        self
    }

    /// Tokens longer than this are not cached (default
    /// [`DEFAULT_MAX_TOKEN_BYTES`]); the wrapped
    /// authenticator still sees them and applies its own limit.
    #[must_use]
    pub fn max_token_bytes(mut self, max_token_bytes: usize) -> Self {
        self.max_token_bytes = max_token_bytes;
        self
    }

    /// The clock that decides expiry (tests).
    #[must_use]
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.max_entries == 0 {
            return Err(ConfigError::invalid(
                "token cache: max_entries must be at least 1 (to turn the cache off, do not wrap the authenticator)",
            ));
        }
        if self.max_bytes < self.max_entries {
            return Err(ConfigError::invalid(format!(
                "token cache: max_bytes ({}) must be at least max_entries ({}); an entry takes hundreds of bytes",
                self.max_bytes, self.max_entries
            )));
        }
        if self.max_ttl.is_zero() {
            return Err(ConfigError::invalid(
                "token cache: max_ttl must be longer than zero",
            ));
        }
        Ok(())
    }
}

/// SipHash-1-3 (128 bits) of the token under the cache's secret key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key(u128);

impl Key {
    /// The key of the same token for the authenticator of `scope`: still uniform and
    /// secret (a keyed PRF output masked by a random value), with no extra hashing.
    fn scoped(self, scope: u128) -> Key {
        Key(self.0 ^ scope)
    }
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Uniform and secret already (see the module docs): its low half is the bucket hash.
        state.write_u64(self.0 as u64);
    }
}

#[derive(Clone)]
struct Entry {
    ctx: AuthContext,
    /// When the entry stops being served: `exp` or insertion + `max_ttl`, the earlier.
    valid_until: SystemTime,
    weight: u64,
}

/// An entry's weight: its estimated bytes, at least `max_bytes / max_entries`.
#[derive(Clone, Copy, Debug)]
struct EntryWeight;

impl quick_cache::Weighter<Key, Entry> for EntryWeight {
    fn weight(&self, _key: &Key, entry: &Entry) -> u64 {
        entry.weight
    }
}

/// The hash table's hasher: keys are already secret-keyed SipHash outputs, uniformly
/// distributed and unknown to clients, so their low 64 bits are the table's hash (no second
/// keyed hash per lookup).
#[derive(Clone, Copy, Debug, Default)]
struct KeyHasher;

impl std::hash::BuildHasher for KeyHasher {
    type Hasher = KeyHash;

    fn build_hasher(&self) -> KeyHash {
        KeyHash(0)
    }
}

struct KeyHash(u64);

impl std::hash::Hasher for KeyHash {
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `Key`; anything else is still mixed in, never dropped.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The bounded store behind [`CachedAuthenticator`]: verified [`AuthContext`]s by keyed
/// token hash. Cloning shares the store.
///
/// See the [module docs](crate::authenticate::cache) for the bounds, the eviction policy
/// and the choice of key.
#[derive(Clone)]
pub struct TokenCache {
    shared: Arc<Shared>,
}

struct Shared {
    entries: quick_cache::sync::Cache<Key, Entry, EntryWeight, KeyHasher>,
    /// SipHash-1-3 under the cache's random 128-bit key.
    keyed: SipHasher13,
    min_weight: u64,
    /// When expired entries were last swept out, in seconds since the epoch (config clock).
    last_sweep: AtomicU64,
    /// Bumped by every [`TokenCache::invalidate_all`]: a verification that began under an
    /// older epoch does not insert its result.
    epoch: AtomicU64,
    /// The scopes of the authenticators using this cache (see the module docs).
    scopes: Mutex<Vec<u128>>,
    config: CacheConfig,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.entry_count())
            .field("weighted_size", &self.weighted_size())
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// An empty cache sized by `config`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when a bound is zero, or `max_bytes` is below `max_entries`.
    ///
    /// # Panics
    ///
    /// When the operating system's random source fails.
    pub fn new(config: CacheConfig) -> Result<Self, ConfigError> {
        config.check()?;
        let mut secret = [0u8; 16];
        getrandom::fill(&mut secret).expect("the OS random source failed");
        let keyed = SipHasher13::new_with_key(&secret);
        secret.fill(0);
        // Rounded up, so that `max_entries` entries of the minimum weight never fit in less
        // than `max_bytes`: the entry count stays within `max_entries`.
        let min_weight = config.max_bytes.div_ceil(config.max_entries).max(1);
        // The cache splits its weight capacity evenly between shards (locks), each bounded
        // on its own. Four per core for concurrency, but each shard large enough for the
        // largest entry (claims are at most 8 KiB by default, so 64 KiB) and for 32 entries.
        // A power of two (the cache would round up), and a capacity that is a multiple of it,
        // so that rounding never lets either bound be exceeded.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let shards = (cores * 4)
            .min(config.max_entries / 32)
            .min(config.max_bytes / MIN_SHARD_BYTES)
            .max(1);
        let shards = 1u64 << shards.ilog2();
        let weight_capacity = config.max_bytes / shards * shards;
        // How many entries can be resident: also sizes the ghost keys the cache remembers
        // (half as many), so it must not exceed what `max_bytes` can hold (every entry weighs
        // at least `ENTRY_OVERHEAD`), or a huge `max_entries` would let ghosts outgrow it.
        let resident = config
            .max_entries
            .min(config.max_bytes / ENTRY_OVERHEAD as u64)
            .max(1);
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(usize::try_from(resident).unwrap_or(usize::MAX))
            .weight_capacity(weight_capacity)
            .shards(shards as usize)
            .build()
            .map_err(|e| ConfigError::invalid(format!("token cache: {e}")))?;
        let entries = quick_cache::sync::Cache::with_options(
            options,
            EntryWeight,
            KeyHasher,
            Default::default(),
        );
        Ok(TokenCache {
            shared: Arc::new(Shared {
                entries,
                keyed,
                min_weight,
                last_sweep: AtomicU64::new(0),
                epoch: AtomicU64::new(0),
                scopes: Mutex::default(),
                config,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &CacheConfig {
        &self.shared.config
    }

    /// How many entries are cached (expired ones included until they are swept out: see
    /// [`run_pending_tasks`](Self::run_pending_tasks)).
    pub fn entry_count(&self) -> u64 {
        self.shared.entries.len() as u64
    }

    /// The total weight of the entries: their estimated memory in bytes, each counted as at
    /// least `max_bytes / max_entries`. Never above `max_bytes`.
    pub fn weighted_size(&self) -> u64 {
        self.shared.entries.weight()
    }

    /// Sweeps out expired entries now. Inserts do it at most every 30 seconds, and an
    /// expired entry is never served in between (every hit checks the expiry); this is for
    /// tests and metrics.
    pub fn run_pending_tasks(&self) {
        self.sweep(self.shared.config.clock.now());
    }

    /// Drops every entry, e.g. after a key compromise. Verifications already in flight do
    /// not put their results back afterwards.
    pub fn invalidate_all(&self) {
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        self.shared.entries.clear();
    }

    /// Drops the entry of one token (the token itself, without the `Bearer` scheme), if
    /// cached, for every authenticator using this cache: its next request is verified again.
    pub fn invalidate(&self, token: &str) {
        let key = self.key_of(token);
        let scopes = self.shared.scopes.lock().unwrap_or_else(|e| e.into_inner());
        for scope in scopes.iter() {
            self.shared.entries.remove(&key.scoped(*scope));
        }
    }

    /// Drops every entry `trusted` refuses.
    fn retain(&self, trusted: impl Fn(&AuthContext) -> bool) {
        self.shared.entries.retain(|_, entry| trusted(&entry.ctx));
    }

    /// A new scope for an authenticator using this cache.
    fn new_scope(&self) -> u128 {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the OS random source failed");
        let scope = u128::from_le_bytes(bytes);
        self.shared
            .scopes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(scope);
        scope
    }

    fn epoch(&self) -> u64 {
        self.shared.epoch.load(Ordering::SeqCst)
    }

    fn sweep(&self, now: SystemTime) {
        self.shared
            .entries
            .retain(|_, entry| now < entry.valid_until);
    }

    /// Sweeps when the last sweep is [`SWEEP_INTERVAL`] old; one caller does it.
    fn maybe_sweep(&self, now: SystemTime) {
        let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let last = self.shared.last_sweep.load(Ordering::Relaxed);
        if secs >= last.saturating_add(SWEEP_INTERVAL.as_secs())
            && self
                .shared
                .last_sweep
                .compare_exchange(last, secs, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.sweep(now);
        }
    }

    fn key_of(&self, token: impl AsRef<[u8]>) -> Key {
        Key(self.shared.keyed.hash(token.as_ref()).as_u128())
    }

    /// The cached context for `key`, if it is still to be served.
    fn lookup(&self, key: &Key, trusted: impl FnOnce(&AuthContext) -> bool) -> Option<AuthContext> {
        let entry = self.shared.entries.get(key)?;
        if self.shared.config.clock.now() < entry.valid_until && trusted(&entry.ctx) {
            Some(entry.ctx)
        } else {
            self.shared.entries.remove(key);
            None
        }
    }

    /// Caches `ctx` under `key`, unless the cache was invalidated since `epoch` (before the
    /// insert, or while it happened: then the entry is taken out again).
    fn insert(&self, key: Key, ctx: &AuthContext, epoch: u64) {
        if self.epoch() != epoch {
            return;
        }
        let config = &self.shared.config;
        let now = config.clock.now();
        let mut valid_until = now + config.max_ttl;
        if let Some(exp) = ctx.expires_at() {
            valid_until = valid_until.min(exp);
        }
        if valid_until <= now {
            return;
        }
        self.maybe_sweep(now);
        let weight = (context_bytes(ctx) as u64).max(self.shared.min_weight);
        self.shared.entries.insert(
            key,
            Entry {
                ctx: ctx.clone(),
                valid_until,
                weight,
            },
        );
        if self.epoch() != epoch {
            self.shared.entries.remove(&key);
        }
    }
}

/// An estimate of the memory an entry holds.
fn context_bytes(ctx: &AuthContext) -> usize {
    let strings = [ctx.subject(), ctx.issuer(), ctx.tenant(), ctx.key_id()]
        .into_iter()
        .map(|s| s.map_or(0, str::len))
        .sum::<usize>();
    let lists = ctx
        .roles()
        .iter()
        .chain(ctx.scopes())
        .map(|s| s.len() + size_of::<String>())
        .sum::<usize>();
    let claims = ctx.claims_heap_bytes();
    // The propagation header values a cached context keeps once it has been forwarded:
    // subject, tenant, the joined roles and scopes, each in shared bytes.
    let header_values = 4 * HEADER_VALUE_OVERHEAD
        + [ctx.subject(), ctx.tenant()]
            .into_iter()
            .map(|s| s.map_or(0, str::len))
            .sum::<usize>()
        + ctx
            .roles()
            .iter()
            .chain(ctx.scopes())
            .map(|s| s.len() + 1)
            .sum::<usize>();
    ENTRY_OVERHEAD + strings + lists + claims + header_values
}

/// One propagated header value kept in a context: the `HeaderValue` and its shared-bytes
/// header (rounded up).
const HEADER_VALUE_OVERHEAD: usize = 96;

/// Wraps an [`Authenticator`] with a [`TokenCache`]: a bearer token verified once is served
/// from memory until its `exp`, the cache's `max_ttl`, or its key leaving the key set,
/// whichever comes first.
///
/// See the [module docs](crate::authenticate::cache) for an example, the eviction policy
/// and how to stack revocation checks.
#[derive(Clone)]
pub struct CachedAuthenticator<A> {
    inner: A,
    cache: TokenCache,
    /// Mixed into every key: entries of other authenticators sharing the cache are never
    /// served (see the module docs).
    scope: u128,
}

impl<A> fmt::Debug for CachedAuthenticator<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedAuthenticator")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl<A: Authenticator> CachedAuthenticator<A> {
    /// Wraps `inner` with a new cache sized by `config`.
    ///
    /// # Errors
    ///
    /// As [`TokenCache::new`].
    pub fn new(inner: A, config: CacheConfig) -> Result<Self, ConfigError> {
        Ok(Self::with_cache(inner, TokenCache::new(config)?))
    }

    /// Wraps `inner` with an existing cache (shared, e.g. with a metrics reporter, or with
    /// other authenticators: their entries are kept apart, see the
    /// [module docs](crate::authenticate::cache#sharing-one-cache)).
    ///
    /// # Panics
    ///
    /// When the operating system's random source fails.
    pub fn with_cache(inner: A, cache: TokenCache) -> Self {
        let scope = cache.new_scope();
        CachedAuthenticator {
            inner,
            cache,
            scope,
        }
    }

    /// Drops every cached entry the wrapped authenticator no longer trusts
    /// ([`Authenticator::still_trusted`]: for JWTs, whose key has left the key set or was
    /// replaced), e.g. right after a key set refresh
    /// ([`RemoteJwks::refresh_now`](crate::keys::RemoteJwks::refresh_now)). Such entries are
    /// never served anyway (every hit asks); this frees them at once. Entries of other
    /// authenticators sharing the cache are judged by this one too: call it on an
    /// authenticator that trusts at least what the others do, or on each.
    pub fn purge_untrusted(&self) {
        self.cache.retain(|ctx| self.inner.still_trusted(ctx));
    }

    /// The cache.
    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    /// The wrapped authenticator.
    pub fn get_ref(&self) -> &A {
        &self.inner
    }
}

impl<A: Authenticator> Authenticator for CachedAuthenticator<A> {
    type Future = CachedFuture<A>;

    fn authenticate(&self, head: &RequestHead<'_>) -> Result<Self::Future, Rejection> {
        Ok(match self.start(head)? {
            Started::Ready(ctx) => CachedFuture::hit(ctx),
            Started::Pending(fut) => fut,
        })
    }

    /// A hit is [`Started::Ready`]; a miss starts the wrapped authenticator and caches what
    /// it accepts.
    fn start(&self, head: &RequestHead<'_>) -> Result<Started<Self::Future>, Rejection> {
        let max_len = self.cache.shared.config.max_token_bytes;
        // The hit path skips the token's character check: every cached key was computed from
        // a token `bearer_token` accepted, so a token whose key is cached is byte for byte
        // one that passed it (up to a key collision, which the cache relies on anyway: see
        // the module docs). A miss runs the full check before anything is cached.
        let Some(candidate) = bearer_candidate(head, max_len) else {
            return self
                .inner
                .start(head)
                .map(|started| started.map(CachedFuture::uncached));
        };
        let key = self.cache.key_of(candidate).scoped(self.scope);
        if let Some(ctx) = self.cache.lookup(&key, |ctx| self.inner.still_trusted(ctx)) {
            crate::metrics::cache_lookup(true);
            return Ok(Started::Ready(ctx));
        }
        if !matches!(bearer_token(head, max_len), Ok(Some(_))) {
            // A malformed token: not ours to cache (nor counted as a lookup).
            return self
                .inner
                .start(head)
                .map(|started| started.map(CachedFuture::uncached));
        }
        crate::metrics::cache_lookup(false);
        let epoch = self.cache.epoch();
        Ok(match self.inner.start(head)? {
            Started::Ready(ctx) => {
                if self.inner.still_trusted(&ctx) {
                    self.cache.insert(key, &ctx, epoch);
                }
                Started::Ready(ctx)
            }
            Started::Pending(fut) => Started::Pending(CachedFuture::miss(
                fut,
                Insert {
                    cache: self.cache.clone(),
                    key,
                    inner: self.inner.clone(),
                    epoch,
                },
            )),
        })
    }

    fn still_trusted(&self, ctx: &AuthContext) -> bool {
        self.inner.still_trusted(ctx)
    }
}

/// The token [`bearer_token`] would check: the bytes after `Bearer` and its spaces when there
/// is exactly one `Authorization` header with that scheme, followed by SP, and a non-empty
/// token of at most `max_len` bytes; `None` in every case where `bearer_token` returns
/// `Ok(None)` or an error before looking at the token's characters. The characters are not
/// checked here (see [`CachedAuthenticator::authenticate`]).
fn bearer_candidate<'a>(head: &RequestHead<'a>, max_len: usize) -> Option<&'a [u8]> {
    if let Some(token) = head.access_token() {
        return (!token.is_empty() && token.len() <= max_len).then_some(token.as_bytes());
    }
    let mut values = head.headers().get_all(http::header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let bytes = value.as_bytes();
    const SCHEME: &[u8] = b"bearer";
    if bytes.len() <= SCHEME.len()
        || !bytes[..SCHEME.len()].eq_ignore_ascii_case(SCHEME)
        || bytes[SCHEME.len()] != b' '
    {
        return None;
    }
    let rest = &bytes[SCHEME.len()..];
    let start = rest.iter().position(|b| *b != b' ')?;
    let token = &rest[start..];
    (token.len() <= max_len).then_some(token)
}

struct Insert<A> {
    cache: TokenCache,
    key: Key,
    inner: A,
    /// The cache's epoch when the verification began.
    epoch: u64,
}

pin_project! {
    /// The future of [`CachedAuthenticator`]: a cached context, or the wrapped
    /// authenticator's future whose success is then cached.
    pub struct CachedFuture<A>
    where
        A: Authenticator,
    {
        #[pin]
        state: State<A::Future>,
        insert: Option<Insert<A>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Hit { ctx: Option<AuthContext> },
        Verifying { #[pin] fut: F },
    }
}

impl<A: Authenticator> CachedFuture<A> {
    fn hit(ctx: AuthContext) -> Self {
        CachedFuture {
            state: State::Hit { ctx: Some(ctx) },
            insert: None,
        }
    }

    fn uncached(fut: A::Future) -> Self {
        CachedFuture {
            state: State::Verifying { fut },
            insert: None,
        }
    }

    fn miss(fut: A::Future, insert: Insert<A>) -> Self {
        CachedFuture {
            state: State::Verifying { fut },
            insert: Some(insert),
        }
    }
}

impl<A: Authenticator> fmt::Debug for CachedFuture<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedFuture").finish_non_exhaustive()
    }
}

impl<A: Authenticator> Future for CachedFuture<A> {
    type Output = Result<AuthContext, Rejection>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.state.project() {
            StateProj::Hit { ctx } => Poll::Ready(Ok(ctx.take().expect("polled after completion"))),
            StateProj::Verifying { fut } => {
                let outcome = ready!(fut.poll(cx));
                if let (Ok(ctx), Some(insert)) = (&outcome, this.insert.take())
                    && insert.inner.still_trusted(ctx)
                {
                    insert.cache.insert(insert.key, ctx, insert.epoch);
                }
                Poll::Ready(outcome)
            }
        }
    }
}

#[cfg(test)]
mod tests;
