//! The `jti` replay cache of DPoP proofs (RFC 9449 §11.1): bounded in memory, and shared by
//! replicas through Redis with one `SET NX PX` per proof (feature `redis`).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// The default number of proofs remembered in memory.
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

/// Where the `jti`s of accepted proofs are remembered during the acceptance window.
///
/// Entries are keyed by SHA-256 of the proof key's thumbprint and the `jti`, so one client's
/// `jti`s never collide with another's. An entry lives as long as a proof with that `jti`
/// could still be accepted (`max_age` plus the future skew).
///
/// In memory the cache holds at most `capacity` entries (quick_cache, scan-resistant
/// eviction). A flood of fresh proofs can evict an entry before its window ends; a proof
/// replayed after that is still bound to its method, URI, access token and a 60 s window.
/// With Redis ([`ReplayCache::redis`]) every replica sees every `jti` at once: the local
/// cache answers known replays without a round trip, and each new `jti` costs one
/// `SET key 1 NX PX window` that only one replica can win.
#[derive(Clone)]
pub struct ReplayCache {
    local: Arc<quick_cache::sync::Cache<[u8; 32], u64>>,
    #[cfg(feature = "redis")]
    redis: Option<redis_store::RedisReplay>,
}

impl fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ReplayCache");
        d.field("entries", &self.local.len());
        #[cfg(feature = "redis")]
        d.field("redis", &self.redis.is_some());
        d.finish()
    }
}

impl Default for ReplayCache {
    fn default() -> Self {
        ReplayCache::memory(DEFAULT_REPLAY_CAPACITY)
    }
}

/// What the cache says of a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// First time: remembered now.
    New,
    /// Seen before in its window.
    Replayed,
}

pub(crate) fn replay_key(jkt: &str, jti: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(jkt.as_bytes());
    h.update([0u8]);
    h.update(jti.as_bytes());
    h.finalize().into()
}

fn unix_ms(at: SystemTime) -> u64 {
    u64::try_from(
        at.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

impl ReplayCache {
    /// A cache of at most `capacity` proofs, in this process only.
    pub fn memory(capacity: usize) -> Self {
        ReplayCache {
            local: Arc::new(quick_cache::sync::Cache::new(capacity.max(16))),
            #[cfg(feature = "redis")]
            redis: None,
        }
    }

    /// A cache shared through Redis at `url` (`redis://[:password@]host:port/db`), in front
    /// of a local one of `capacity` entries. Nothing is connected yet: the first proof
    /// connects. Each Redis operation is bounded by `timeout` (connecting included); after a
    /// failure Redis is skipped for a second, then one reconnection is tried.
    ///
    /// When Redis cannot answer, the proof is refused with 503 and `Retry-After: 1`
    /// (fail closed): a replica that checked only its own cache would accept a proof that
    /// another replica already accepted, which is the replay this cache exists to stop, and
    /// clients recover by sending a fresh proof. Bearer traffic is not affected.
    ///
    /// # Errors
    ///
    /// [`ConfigError`](crate::ConfigError) for an invalid URL or a zero timeout.
    #[cfg(feature = "redis")]
    pub fn redis(
        url: &str,
        capacity: usize,
        timeout: Duration,
    ) -> Result<Self, crate::ConfigError> {
        let mut cache = ReplayCache::memory(capacity);
        cache.redis = Some(redis_store::RedisReplay::new(url, timeout)?);
        Ok(cache)
    }

    /// The key prefix in Redis.
    pub const REDIS_PREFIX: &'static str = "gatekeeper:dpop:jti:";

    /// Checks the local cache and remembers `key` there until `until`.
    pub(crate) fn check_local(&self, key: [u8; 32], now: SystemTime, window: Duration) -> Seen {
        let now_ms = unix_ms(now);
        let until = now_ms.saturating_add(u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
        match self.local.get_value_or_guard(&key, Some(Duration::ZERO)) {
            quick_cache::sync::GuardResult::Value(expires) if expires > now_ms => Seen::Replayed,
            quick_cache::sync::GuardResult::Value(_) => {
                self.local.insert(key, until);
                Seen::New
            }
            quick_cache::sync::GuardResult::Guard(guard) => {
                let _ = guard.insert(until);
                Seen::New
            }
            // Another request is inserting the same key right now: the same proof twice.
            quick_cache::sync::GuardResult::Timeout => Seen::Replayed,
        }
    }

    /// Whether the shared store is configured.
    pub(crate) fn is_shared(&self) -> bool {
        #[cfg(feature = "redis")]
        {
            self.redis.is_some()
        }
        #[cfg(not(feature = "redis"))]
        {
            false
        }
    }

    /// Claims `key` in the shared store for `window`. `Ok(Seen::New)` without a shared
    /// store.
    #[cfg_attr(not(feature = "redis"), allow(clippy::unused_async, unused_variables))]
    pub(crate) async fn check_shared(
        &self,
        key: [u8; 32],
        window: Duration,
    ) -> Result<Seen, ReplayUnavailable> {
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            return redis.claim(key, window).await;
        }
        Ok(Seen::New)
    }
}

/// The shared replay store could not answer.
#[derive(Debug, thiserror::Error)]
#[error("the DPoP replay store is unavailable: {0}")]
pub(crate) struct ReplayUnavailable(pub(crate) String, pub(crate) bool);

#[cfg(feature = "redis")]
mod redis_store {
    use std::sync::Arc;
    use std::time::Duration;

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use tokio::time::timeout;
    use tracing::warn;

    use super::{ReplayCache, ReplayUnavailable, Seen};
    use crate::ConfigError;
    use crate::redis_conn::{ConnectError, LazyConnection};

    #[derive(Clone)]
    pub(super) struct RedisReplay(Arc<Inner>);

    struct Inner {
        conn: LazyConnection,
        timeout: Duration,
    }

    impl RedisReplay {
        pub(super) fn new(url: &str, timeout: Duration) -> Result<Self, ConfigError> {
            let client = redis::Client::open(url).map_err(|e| {
                ConfigError::invalid(format!(
                    "invalid Redis URL for the DPoP replay cache (redis://[:password@]host:port/db): {e}"
                ))
            })?;
            if timeout.is_zero() {
                return Err(ConfigError::invalid(
                    "the DPoP replay cache's Redis timeout must be greater than zero",
                ));
            }
            Ok(RedisReplay(Arc::new(Inner {
                conn: LazyConnection::new(
                    client,
                    timeout,
                    Duration::from_secs(1),
                    "the DPoP replay cache",
                ),
                timeout,
            })))
        }

        pub(super) async fn claim(
            &self,
            key: [u8; 32],
            window: Duration,
        ) -> Result<Seen, ReplayUnavailable> {
            let inner = &*self.0;
            let name = format!(
                "{}{}",
                ReplayCache::REDIS_PREFIX,
                URL_SAFE_NO_PAD.encode(key)
            );
            let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
            let attempt = async {
                let mut conn = inner.conn.get().await.map_err(|e| match e {
                    ConnectError::BackingOff => {
                        ReplayUnavailable("backing off after a failure".into(), true)
                    }
                    ConnectError::Redis(e) => ReplayUnavailable(e.to_string(), false),
                })?;
                let set: Option<String> = redis::cmd("SET")
                    .arg(&name)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| ReplayUnavailable(e.to_string(), false))?;
                Ok::<_, ReplayUnavailable>(if set.is_some() {
                    Seen::New
                } else {
                    Seen::Replayed
                })
            };
            match timeout(inner.timeout, attempt).await {
                Ok(Ok(seen)) => Ok(seen),
                // Skipped while backing off: the failure that started it is already counted.
                Ok(Err(e)) if e.1 => Err(e),
                Ok(Err(e)) => {
                    inner.fail(&e.0);
                    Err(e)
                }
                Err(_) => {
                    let e = ReplayUnavailable(
                        format!("Redis did not answer within {:?}", inner.timeout),
                        false,
                    );
                    inner.fail(&e.0);
                    Err(e)
                }
            }
        }
    }

    impl Inner {
        fn fail(&self, why: &str) {
            if self.conn.fail() {
                warn!(
                    error = why,
                    "the DPoP replay cache cannot reach Redis: DPoP proofs are refused (503) until it is back"
                );
            }
        }
    }
}
