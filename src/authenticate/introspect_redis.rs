//! The introspection cache shared by replicas through Redis (features `introspection` and
//! `redis`).

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::timeout;

use super::introspect::{
    MAX_RESPONSE_BYTES, SharedCacheError, SharedCacheFuture, SharedEntry, SharedIntrospectionCache,
};
use crate::config_error::ConfigError;
use crate::redis_conn::{ConnectError, LazyConnection};

/// Introspection results shared by the replicas of a gateway through Redis (features
/// `introspection` and `redis`): the second level behind each
/// [`IntrospectionAuthenticator`](super::IntrospectionAuthenticator)'s in-process cache,
/// installed with [`IntrospectionConfig::shared_cache`](super::IntrospectionConfig::shared_cache).
/// N replicas then ask the identity provider about a token once, not N times.
///
/// - **Keys**: the [prefix](RedisIntrospectionCacheBuilder::prefix) (default
///   `gatekeeper:introspection:`) followed by the lowercase hex SHA-256 of the endpoint, the
///   client id and the token ([`IntrospectionAuthenticator::shared_cache_key`](super::IntrospectionAuthenticator::shared_cache_key)).
///   Raw tokens are never stored, and authenticators of different authorization servers (or
///   clients) never read each other's entries, whatever prefix they share.
/// - **Values**: the endpoint's JSON response (`{"active":false}` for inactive tokens) and
///   its fetch time, written with `SET … PX` and the TTL of the local cache: active results
///   until the earlier of `exp` and `cache_ttl`, inactive ones for `negative_ttl`. Failures
///   are never written. Each replica re-checks what it reads (`active`, `exp`, `iss`, `aud`)
///   with its own configuration, uses it only while it is younger than its own `cache_ttl`
///   (or `negative_ttl`) counted from the fetch time, and keeps it locally no longer than
///   that nor than the key's remaining `PTTL`. Values over 64 KiB, keys without an expiry,
///   values without a fetch time and values that are not JSON objects are ignored (the
///   endpoint is asked, and its answer replaces them).
/// - **Failures never fail a request**: every Redis operation (connecting included) is
///   bounded by a short [timeout](RedisIntrospectionCacheBuilder::timeout) (default 250 ms);
///   on failure the request falls through to the endpoint, a warning is logged (never the
///   token), the connection is dropped, and Redis is skipped for the
///   [back-off](RedisIntrospectionCacheBuilder::backoff) (default 1 s) before one reconnection
///   is tried on the next use. Writes happen after the request has been answered.
///
/// One multiplexed connection per cache, opened lazily on first use: building needs no
/// running Redis and no tokio runtime. Clones share the connection.
///
/// # Trust
///
/// An entry is believed like an answer of the introspection endpoint: **whoever can write to
/// this Redis can make any token authenticate as anyone** (within what the replica's `iss`
/// and `aud` checks allow), exactly as whoever can write to a shared revocation store can
/// un-revoke tokens. Use a Redis (or a database number and prefix on it) that only the
/// gateways can reach, with a password (`redis://:password@host:6379/0`, or an ACL user),
/// on a private network, and TLS across untrusted ones: with the `redis-tls` feature,
/// `rediss://` URLs connect through rustls, verifying the server against the platform's root
/// certificates (`SSL_CERT_FILE` or `SSL_CERT_DIR` name another bundle); without it they are
/// refused.
///
/// ```no_run
/// use std::time::Duration;
/// use tower_gatekeeper::authenticate::{
///     ClientAuth, IntrospectionAuthenticator, IntrospectionConfig, RedisIntrospectionCache,
/// };
///
/// let shared = RedisIntrospectionCache::builder("redis://:s3cret@10.0.0.5:6379/0")
///     .prefix("orders-gateway:introspection:")
///     .timeout(Duration::from_millis(250))
///     .build()?;
/// let auth = IntrospectionAuthenticator::new(
///     IntrospectionConfig::new(
///         "https://idp.example.test/oauth2/introspect",
///         ClientAuth::Basic { client_id: "gateway".into(), client_secret: "…".into() },
///     )
///     .audiences(["api://orders"])
///     .cache_ttl(Duration::from_secs(60))
///     .shared_cache(shared),
/// )?;
/// # Ok::<(), tower_gatekeeper::jwt::ConfigError>(())
/// ```
#[cfg_attr(docsrs, doc(cfg(all(feature = "introspection", feature = "redis"))))]
#[derive(Clone)]
pub struct RedisIntrospectionCache {
    inner: Arc<Inner>,
}

/// Builds a [`RedisIntrospectionCache`]; see [`RedisIntrospectionCache::builder`].
#[cfg_attr(docsrs, doc(cfg(all(feature = "introspection", feature = "redis"))))]
#[derive(Clone)]
#[must_use]
pub struct RedisIntrospectionCacheBuilder {
    url: String,
    prefix: String,
    timeout: Duration,
    backoff: Duration,
}

impl fmt::Debug for RedisIntrospectionCacheBuilder {
    /// The URL is left out: it may carry a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisIntrospectionCacheBuilder")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl RedisIntrospectionCacheBuilder {
    /// The prefix of the keys (default `gatekeeper:introspection:`); the shared cache key of the
    /// token follows it. Replicas that share results use the same prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Bound of each Redis operation, connecting included (default 250 ms). A request whose
    /// token is not cached locally waits at most this long for Redis before the endpoint is
    /// asked.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long Redis is skipped after a failure before one reconnection is tried (default
    /// 1 s), so an outage costs at most one timeout per back-off, not one per request.
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// The cache. Nothing is connected yet: the first lookup connects.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for an invalid URL (`rediss://` without the `redis-tls` feature), an
    /// empty prefix, or a zero timeout. With a `rediss://` URL and no process-wide rustls
    /// `CryptoProvider` installed yet, it installs ring's.
    pub fn build(self) -> Result<RedisIntrospectionCache, ConfigError> {
        crate::revocation::redis::ensure_tls_provider(&self.url);
        let client = redis::Client::open(self.url.as_str()).map_err(|e| {
            ConfigError::invalid(format!(
                "invalid Redis URL for the introspection cache (redis://[:password@]host:port/db): {e}"
            ))
        })?;
        if self.prefix.is_empty() {
            return Err(ConfigError::invalid(
                "the introspection cache's Redis key prefix must not be empty",
            ));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::invalid(
                "the introspection cache's Redis timeout must be greater than zero",
            ));
        }
        Ok(RedisIntrospectionCache {
            inner: Arc::new(Inner {
                conn: LazyConnection::new(
                    client,
                    self.timeout,
                    self.backoff,
                    "the introspection cache",
                ),
                prefix: self.prefix,
                timeout: self.timeout,
                backoff: self.backoff,
            }),
        })
    }
}

impl RedisIntrospectionCache {
    /// A builder for a cache at `url` (`redis://[:password@]host:port/db`, or `rediss://`
    /// for TLS with the `redis-tls` feature).
    pub fn builder(url: impl Into<String>) -> RedisIntrospectionCacheBuilder {
        RedisIntrospectionCacheBuilder {
            url: url.into(),
            prefix: "gatekeeper:introspection:".into(),
            timeout: Duration::from_millis(250),
            backoff: Duration::from_secs(1),
        }
    }

    /// The Redis key of the shared cache key `token_hash` (see
    /// [`IntrospectionAuthenticator::shared_cache_key`](super::IntrospectionAuthenticator::shared_cache_key)).
    pub fn key(&self, token_hash: &str) -> String {
        format!("{}{token_hash}", self.inner.prefix)
    }
}

impl fmt::Debug for RedisIntrospectionCache {
    /// The URL is left out: it may carry a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        let connected = inner.conn.is_connected();
        f.debug_struct("RedisIntrospectionCache")
            .field("prefix", &inner.prefix)
            .field("timeout", &inner.timeout)
            .field("backoff", &inner.backoff)
            .field("connected", &connected)
            .finish_non_exhaustive()
    }
}

impl SharedIntrospectionCache for RedisIntrospectionCache {
    fn get<'a>(&'a self, token_hash: &'a str) -> SharedCacheFuture<'a, Option<SharedEntry>> {
        Box::pin(async move {
            let key = self.key(token_hash);
            // One transaction, so the value and its TTL belong together; GETRANGE bounds what
            // is read (one byte past the limit tells "too large").
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("PTTL")
                .arg(&key)
                .cmd("GETRANGE")
                .arg(&key)
                .arg(0)
                .arg(MAX_RESPONSE_BYTES);
            let (pttl, value): (i64, Vec<u8>) = self.inner.query(&pipe).await?;
            match pttl {
                // No such key (or it expired between the two reads).
                -2 => Ok(None),
                -1 => Err(SharedCacheError::InvalidEntry(
                    "the key has no expiry (not written by a gatekeeper)".into(),
                )),
                ms if ms <= 0 => Ok(None),
                _ if value.len() > MAX_RESPONSE_BYTES => {
                    Err(SharedCacheError::InvalidEntry("larger than 64 KiB".into()))
                }
                ms => Ok(Some(SharedEntry::new(
                    value,
                    Duration::from_millis(ms.unsigned_abs()),
                ))),
            }
        })
    }

    fn put<'a>(
        &'a self,
        token_hash: &'a str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> SharedCacheFuture<'a, ()> {
        Box::pin(async move {
            let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            if ms == 0 || value.len() > MAX_RESPONSE_BYTES {
                return Ok(());
            }
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(self.key(token_hash))
                .arg(value)
                .arg("PX")
                .arg(ms)
                .ignore();
            self.inner.query::<()>(&pipe).await
        })
    }
}

struct Inner {
    conn: LazyConnection,
    prefix: String,
    timeout: Duration,
    backoff: Duration,
}

impl Inner {
    /// Runs `pipe`, connecting first if needed, all within the timeout.
    async fn query<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, SharedCacheError> {
        let attempt = async {
            let mut conn = self.conn.get().await?;
            pipe.query_async::<T>(&mut conn)
                .await
                .map_err(ConnectError::Redis)
        };
        match timeout(self.timeout, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(ConnectError::BackingOff)) => Err(SharedCacheError::BackingOff),
            Ok(Err(ConnectError::Redis(e))) => {
                self.conn.fail();
                Err(SharedCacheError::Unavailable(Box::new(e)))
            }
            Err(_) => {
                self.conn.fail();
                Err(SharedCacheError::Unavailable(Box::new(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("Redis did not answer within {:?}", self.timeout),
                ))))
            }
        }
    }
}
