use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::{Instant, sleep, timeout, timeout_at};
use tracing::{debug, info, warn};

use super::set::{MAX_ID_BYTES, RevocationSet, clamp, unix_now};
use super::{
    FailMode, Revocation, RevocationError, RevocationKind, RevocationStatus, RevocationStore,
    TokenFacts,
};

type BoxError = Box<dyn StdError + Send + Sync>;
/// `ZRANGE … WITHSCORES`: members and scores.
type Scored = Vec<(String, f64)>;

/// Revocations shared by every replica through Redis (feature `redis`).
///
/// Each replica keeps the whole set in memory and checks it locally: no Redis round trip
/// per request. A background task keeps the set current:
///
/// - [`revoke`](RevocationStore::revoke) adds the entry locally, then writes it to Redis
///   (sorted sets `{prefix}:tokens` and `{prefix}:subjects`, scored by expiry / cut-off) and
///   publishes it on the channel `{prefix}:events` in one `MULTI`;
/// - every replica is subscribed to that channel and adds what it receives, within
///   milliseconds (the contract is one second);
/// - on every (re)connection, and every [`resync_interval`](RedisRevocationsBuilder::resync_interval),
///   a replica subscribes first, then reads both sets in full (so nothing published in
///   between is missed), and writes back what it knows that Redis lacks (revocations made
///   while Redis was unreachable, or lost by a Redis restart without persistence). Entries
///   are never removed except by expiry, so merging is safe in any order.
///
/// While Redis is unreachable the replica keeps enforcing its last known set, logs a
/// warning once, retries with a backoff of at most one second, and then catches up. What it
/// does for the revocations it cannot see meanwhile is the [`FailMode`] (default
/// [`FailMode::Open`]). An outage that closes no connection (a stopped or partitioned
/// server) is found by a heartbeat: every
/// [`heartbeat_interval`](RedisRevocationsBuilder::heartbeat_interval) (default 1 s) the
/// replica publishes a heartbeat on the channel, and when it cannot publish within the
/// [`timeout`](RedisRevocationsBuilder::timeout), or hears nothing on its subscription (its
/// own heartbeats included) for an interval plus the timeout, it counts Redis as lost: the
/// store is unsynced (503 under [`FailMode::Closed`]) within about an interval plus the
/// timeout (3 s by default) and reconnects.
///
/// Token entries are kept until the token's `exp` plus the
/// [`token_grace`](RedisRevocationsBuilder::token_grace) (default 5 minutes), in Redis
/// (scores are expiries; `ZREMRANGEBYSCORE` removes them only after the grace) and locally.
/// What the store reads from Redis is bounded like any revocation (see the
/// [module docs](super#bounds)): members longer than the id limit are removed from Redis on
/// resync, at most `max_entries` of each set are read, and scores are clamped; refused
/// entries are logged (counted, never with the id). The [trust
/// boundary](super#trust) of the Redis is that of a revocation store.
///
/// Before its first synchronisation a store knows nothing: await
/// [`ready`](Self::ready) at startup (under [`FailMode::Closed`] requests are rejected with
/// 503 until then).
///
/// ```no_run
/// use std::time::{Duration, SystemTime};
/// use tower_gatekeeper::revocation::{FailMode, RedisRevocations, Revocation, RevocationStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisRevocations::builder("redis://127.0.0.1:6379/")
///     .prefix("orders-gateway:revocation")
///     .fail_mode(FailMode::Open)
///     .build()?;
/// tokio::time::timeout(Duration::from_secs(10), store.ready()).await?;
/// store.revoke(Revocation::subject("user-1", SystemTime::now())).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisRevocations {
    shared: Arc<Shared>,
    _task: Arc<TaskGuard>,
}

/// Builds a [`RedisRevocations`]; see [`RedisRevocations::builder`].
#[derive(Clone)]
#[must_use]
pub struct RedisRevocationsBuilder {
    url: String,
    prefix: String,
    fail_mode: FailMode,
    retention: Duration,
    timeout: Duration,
    resync_interval: Duration,
    heartbeat_interval: Duration,
    token_grace: Duration,
    max_entries: usize,
}

impl fmt::Debug for RedisRevocationsBuilder {
    /// The URL is left out: it may carry a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRevocationsBuilder")
            .field("prefix", &self.prefix)
            .field("fail_mode", &self.fail_mode)
            .field("subject_retention", &self.retention)
            .field("timeout", &self.timeout)
            .field("resync_interval", &self.resync_interval)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("token_grace", &self.token_grace)
            .field("max_entries", &self.max_entries)
            .finish_non_exhaustive()
    }
}

impl RedisRevocationsBuilder {
    /// The prefix of the Redis key and channel names (default `gatekeeper:revocation`).
    /// Replicas that share revocations use the same prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// What to do while Redis is unreachable (default [`FailMode::Open`]).
    pub fn fail_mode(mut self, mode: FailMode) -> Self {
        self.fail_mode = mode;
        self
    }

    /// How long "tokens issued before T" entries are kept after T (default 24 hours; at
    /// least the longest token lifetime of your issuers).
    pub fn subject_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Timeout of each Redis connection attempt and command (default 2 seconds).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How often a connected replica re-reads the full set as a safety net and prunes
    /// expired entries (default 60 seconds).
    pub fn resync_interval(mut self, interval: Duration) -> Self {
        self.resync_interval = interval;
        self
    }

    /// How often a connected replica proves Redis alive by a heartbeat through its channel
    /// (default 1 second). A silent outage (a stopped server, a partition) is noticed within
    /// about this plus the [`timeout`](Self::timeout).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// How long a token entry is kept past the token's `exp` (default
    /// [`DEFAULT_TOKEN_GRACE`](super::DEFAULT_TOKEN_GRACE), 5 minutes): at least the largest
    /// `exp` leeway of any verifier in front of the store. Replicas sharing a prefix should
    /// use the same grace (the longest wins in Redis).
    pub fn token_grace(mut self, grace: Duration) -> Self {
        self.token_grace = grace;
        self
    }

    /// The most entries of each kind kept (default
    /// [`DEFAULT_MAX_REVOCATIONS`](super::DEFAULT_MAX_REVOCATIONS)), and read from Redis.
    pub fn max_entries(mut self, max: usize) -> Self {
        self.max_entries = max;
        self
    }

    /// Opens the store and starts its background task on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`RevocationError::Config`] for an invalid URL (`rediss://` without the `redis-tls`
    /// feature), a zero timeout or interval, or when called outside a tokio runtime. With a
    /// `rediss://` URL and no process-wide rustls `CryptoProvider` installed yet, it installs
    /// ring's.
    pub fn build(self) -> Result<RedisRevocations, RevocationError> {
        ensure_tls_provider(&self.url);
        let client = redis::Client::open(self.url.as_str()).map_err(|e| {
            RevocationError::Config(format!("invalid Redis URL (redis://host:port/db): {e}"))
        })?;
        if self.timeout.is_zero()
            || self.resync_interval.is_zero()
            || self.heartbeat_interval.is_zero()
            || self.max_entries == 0
        {
            return Err(RevocationError::Config(
                "timeout, resync_interval, heartbeat_interval and max_entries must be greater than zero".into(),
            ));
        }
        if self.prefix.is_empty() {
            return Err(RevocationError::Config("prefix must not be empty".into()));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            RevocationError::Config("RedisRevocations must be built inside a tokio runtime".into())
        })?;
        let (synced_tx, _) = watch::channel(false);
        let set = RevocationSet::default();
        set.set_grace(self.token_grace);
        set.set_max_entries(self.max_entries);
        let shared = Arc::new(Shared {
            set,
            client,
            conn: Mutex::new(None),
            tokens_key: format!("{}:tokens", self.prefix),
            subjects_key: format!("{}:subjects", self.prefix),
            channel: format!("{}:events", self.prefix),
            prefix: self.prefix,
            fail_mode: self.fail_mode,
            retention: self.retention,
            timeout: self.timeout,
            resync_interval: self.resync_interval,
            heartbeat_interval: self.heartbeat_interval,
            refused: AtomicU64::new(0),
            synced: AtomicBool::new(false),
            synced_tx,
        });
        let task = runtime.spawn(run(Arc::clone(&shared)));
        Ok(RedisRevocations {
            shared,
            _task: Arc::new(TaskGuard(task.abort_handle())),
        })
    }
}

/// Before a `rediss://` client is built: the redis crate makes its TLS configuration from
/// rustls's process-wide provider, so when none is installed yet, ring's becomes it (the one
/// reqwest's rustls uses too). Without the `redis-tls` feature `rediss://` URLs are refused
/// by the client, naming TLS.
pub(crate) fn ensure_tls_provider(url: &str) {
    #[cfg(feature = "redis-tls")]
    if url
        .get(..9)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("rediss://"))
        && rustls::crypto::CryptoProvider::get_default().is_none()
    {
        // Another thread may install one first; either way there is one afterwards.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    #[cfg(not(feature = "redis-tls"))]
    let _ = url;
}

impl RedisRevocations {
    /// A builder for a store at `url` (`redis://[:password@]host:port/db`, or `rediss://` for
    /// TLS).
    pub fn builder(url: impl Into<String>) -> RedisRevocationsBuilder {
        RedisRevocationsBuilder {
            url: url.into(),
            prefix: "gatekeeper:revocation".into(),
            fail_mode: FailMode::Open,
            retention: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(2),
            resync_interval: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(1),
            token_grace: super::DEFAULT_TOKEN_GRACE,
            max_entries: super::DEFAULT_MAX_REVOCATIONS,
        }
    }

    /// Resolves once the store has synchronised with Redis at least once. While Redis is
    /// unreachable this keeps waiting: apply a timeout.
    pub fn ready(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.shared.synced_tx.subscribe();
        async move {
            let _ = rx.wait_for(|synced| *synced).await;
        }
    }

    /// Whether the store is connected and in sync right now.
    pub fn is_synced(&self) -> bool {
        self.shared.synced.load(Ordering::Acquire)
    }

    /// Drops expired entries from the local set now (also done on every resync).
    pub fn prune(&self) {
        self.shared.set.prune(self.shared.retention);
    }
}

impl fmt::Debug for RedisRevocations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (tokens, subjects) = self.shared.set.len();
        f.debug_struct("RedisRevocations")
            .field("prefix", &self.shared.prefix)
            .field("fail_mode", &self.shared.fail_mode)
            .field("synced", &self.is_synced())
            .field("tokens", &tokens)
            .field("subjects", &subjects)
            .finish_non_exhaustive()
    }
}

impl RevocationStore for RedisRevocations {
    fn check(&self, token: &TokenFacts<'_>) -> RevocationStatus {
        let shared = &*self.shared;
        if shared.set.is_revoked(token) {
            RevocationStatus::Revoked
        } else if shared.fail_mode == FailMode::Closed && !shared.synced.load(Ordering::Acquire) {
            RevocationStatus::Unavailable
        } else {
            RevocationStatus::Active
        }
    }

    fn revoke(
        &self,
        revocation: Revocation,
    ) -> impl Future<Output = Result<(), RevocationError>> + Send {
        let shared = Arc::clone(&self.shared);
        async move {
            if let Err(refused) = shared.set.insert(&revocation) {
                warn!(revocation = ?revocation, reason = refused.reason(), "revocation refused");
                return Err(RevocationError::Refused(refused.reason()));
            }
            if !revocation.is_live(unix_now(), shared.set.grace(), shared.retention) {
                return Ok(());
            }
            shared.publish(&[revocation]).await.map_err(|e| {
                warn!(error = %e, "revocation enforced locally; Redis unreachable, it will be shared on reconnect");
                RevocationError::Unavailable(e)
            })
        }
    }
}

/// Aborts the background task when the last handle is dropped.
struct TaskGuard(AbortHandle);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Shared {
    set: RevocationSet,
    client: redis::Client,
    conn: Mutex<Option<MultiplexedConnection>>,
    prefix: String,
    tokens_key: String,
    subjects_key: String,
    channel: String,
    fail_mode: FailMode,
    retention: Duration,
    timeout: Duration,
    resync_interval: Duration,
    heartbeat_interval: Duration,
    /// Entries read from Redis and refused since the last report.
    refused: AtomicU64,
    synced: AtomicBool,
    synced_tx: watch::Sender<bool>,
}

fn timed_out() -> BoxError {
    Box::new(io::Error::new(io::ErrorKind::TimedOut, "Redis timed out"))
}

impl Shared {
    fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::Release);
        self.synced_tx.send_replace(synced);
    }

    async fn connection(&self) -> Result<MultiplexedConnection, BoxError> {
        if let Some(conn) = self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(conn);
        }
        let conn = timeout(self.timeout, self.client.get_multiplexed_async_connection())
            .await
            .map_err(|_| timed_out())??;
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
        Ok(conn)
    }

    fn drop_connection(&self) {
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Runs `pipe` on the shared connection, dropping the connection on failure.
    async fn query<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, BoxError> {
        let mut conn = self.connection().await?;
        match timeout(self.timeout, pipe.query_async::<T>(&mut conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                self.drop_connection();
                Err(e.into())
            }
            Err(_) => {
                self.drop_connection();
                Err(timed_out())
            }
        }
    }

    /// Writes `entries` to the sets and announces them, atomically.
    async fn publish(&self, entries: &[Revocation]) -> Result<(), BoxError> {
        let now = unix_now();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for entry in entries {
            let (key, member, score, tag) = match &entry.kind {
                RevocationKind::Token { jti, expires_at } => {
                    (&self.tokens_key, jti, *expires_at, 't')
                }
                RevocationKind::Subject {
                    subject,
                    issued_through,
                } => (&self.subjects_key, subject, *issued_through, 's'),
            };
            let score = clamp(&entry.kind, score, now);
            pipe.cmd("ZADD")
                .arg(key)
                .arg("GT")
                .arg(score)
                .arg(member)
                .ignore()
                .cmd("PUBLISH")
                .arg(&self.channel)
                .arg(format!("{tag} {score} {member}"))
                .ignore();
        }
        self.query::<()>(&pipe).await
    }

    /// Applies one pub/sub message (heartbeats only prove the subscription alive).
    fn apply_message(&self, payload: &[u8]) {
        if payload == HEARTBEAT {
            return;
        }
        let Some(revocation) = parse_message(payload) else {
            debug!("ignoring a malformed revocation message");
            return;
        };
        self.take(&revocation);
    }

    /// Inserts an entry read from Redis, counting what is refused.
    fn take(&self, revocation: &Revocation) {
        if let Err(refused) = self.set.insert(revocation) {
            debug!(reason = refused.reason(), "revocation from Redis refused");
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Logs (once) what was refused since the last report.
    fn report_refused(&self) {
        let refused = self.refused.swap(0, Ordering::Relaxed);
        if refused > 0 {
            warn!(
                refused,
                max_entries = self.set.max_entries(),
                max_id_bytes = MAX_ID_BYTES,
                "revocations read from Redis were refused (over a bound); check who writes to it"
            );
        }
    }

    /// Publishes a heartbeat on the channel.
    async fn heartbeat(&self) -> Result<(), BoxError> {
        let mut pipe = redis::pipe();
        pipe.cmd("PUBLISH")
            .arg(&self.channel)
            .arg(HEARTBEAT)
            .ignore();
        self.query::<()>(&pipe).await
    }

    /// Reads both sets (bounded: see [`RESYNC_SCRIPT`]), merges them into the local set,
    /// and writes back what Redis lacks.
    async fn resync(&self) -> Result<(), BoxError> {
        let now = unix_now();
        let grace = self.set.grace();
        let oldest_token = now.saturating_sub(grace.as_secs());
        let oldest = now.saturating_sub(self.retention.as_secs());
        let max = self.set.max_entries();
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(RESYNC_SCRIPT)
            .arg(2)
            .arg(&self.tokens_key)
            .arg(&self.subjects_key)
            .arg(oldest_token)
            .arg(oldest)
            .arg(MAX_ID_BYTES)
            .arg(max);
        let ((tokens, subjects, total_tokens, total_subjects, removed),): ((
            Scored,
            Scored,
            u64,
            u64,
            u64,
        ),) = self.query(&pipe).await?;
        if removed > 0 {
            warn!(
                removed,
                max_id_bytes = MAX_ID_BYTES,
                "revocations with over-long ids were removed from Redis; check who writes to it"
            );
        }
        let unread = total_tokens.saturating_sub(tokens.len() as u64)
            + total_subjects.saturating_sub(subjects.len() as u64);
        if unread > 0 {
            warn!(
                unread,
                max_entries = max,
                "Redis holds more revocations than max_entries; the latest were not read"
            );
        }
        let score = |s: f64| {
            if s.is_finite() && s > 0.0 {
                s as u64
            } else {
                0
            }
        };
        let tokens: HashMap<String, u64> = tokens.into_iter().map(|(m, s)| (m, score(s))).collect();
        let subjects: HashMap<String, u64> =
            subjects.into_iter().map(|(m, s)| (m, score(s))).collect();
        for (jti, exp) in &tokens {
            self.take(&Revocation::token_at(jti.as_str(), *exp));
        }
        for (sub, through) in &subjects {
            self.take(&Revocation::subject_at(sub.as_str(), *through));
        }
        self.report_refused();
        self.set.prune(self.retention);
        let missing: Vec<Revocation> = self
            .set
            .snapshot()
            .into_iter()
            .filter(|r| r.is_live(now, grace, self.retention))
            .filter(|r| match &r.kind {
                RevocationKind::Token { jti, expires_at } => {
                    tokens.get(jti).is_none_or(|s| s < expires_at)
                }
                RevocationKind::Subject {
                    subject,
                    issued_through,
                } => subjects.get(subject).is_none_or(|s| s < issued_through),
            })
            .collect();
        if !missing.is_empty() {
            self.publish(&missing).await?;
            info!(
                count = missing.len(),
                "revocations known here but missing in Redis were written back"
            );
        }
        Ok(())
    }

    /// Subscribes, then resynchronises (in that order, so nothing published in between is
    /// missed).
    async fn connect(&self) -> Result<redis::aio::PubSubStream, BoxError> {
        self.drop_connection();
        let mut pubsub = timeout(self.timeout, self.client.get_async_pubsub())
            .await
            .map_err(|_| timed_out())??;
        timeout(self.timeout, pubsub.subscribe(&self.channel))
            .await
            .map_err(|_| timed_out())??;
        self.resync().await?;
        Ok(pubsub.into_on_message())
    }
}

/// The heartbeat published on the channel.
const HEARTBEAT: &[u8] = b"h";

/// Resynchronisation, in one script (atomic, bounded): drops token entries past their
/// expiry plus the grace (`ARGV[1]`) and subject entries past the retention (`ARGV[2]`),
/// removes members longer than `ARGV[3]` bytes, and returns at most `ARGV[4]` entries of each
/// set (lowest scores first), the sets' sizes, and how many members were removed.
const RESYNC_SCRIPT: &str = r"
local maxlen = tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[2])
local removed = 0
local out = {}
for i, key in ipairs(KEYS) do
  local items = redis.call('ZRANGE', key, 0, cap - 1, 'WITHSCORES')
  local kept = {}
  for j = 1, #items, 2 do
    if #items[j] > 0 and #items[j] <= maxlen then
      kept[#kept + 1] = items[j]
      kept[#kept + 1] = items[j + 1]
    else
      redis.call('ZREM', key, items[j])
      removed = removed + 1
    end
  end
  out[i] = kept
end
return {out[1], out[2], redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]), removed}
";

fn parse_message(payload: &[u8]) -> Option<Revocation> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(3, ' ');
    let tag = parts.next()?;
    let at: u64 = parts.next()?.parse().ok()?;
    let id = parts.next()?;
    match tag {
        "t" => Some(Revocation::token_at(id, at)),
        "s" => Some(Revocation::subject_at(id, at)),
        _ => None,
    }
}

/// The background task: keep a subscription, resync on (re)connect and periodically.
async fn run(shared: Arc<Shared>) {
    const MAX_BACKOFF: Duration = Duration::from_secs(1);
    let mut backoff = Duration::from_millis(50);
    let mut warned = false;
    loop {
        match shared.connect().await {
            Ok(mut messages) => {
                shared.set_synced(true);
                backoff = Duration::from_millis(50);
                let (tokens, subjects) = shared.set.len();
                if warned {
                    info!(
                        tokens,
                        subjects, "revocation store reconnected to Redis and caught up"
                    );
                } else {
                    debug!(tokens, subjects, "revocation store in sync with Redis");
                }
                let mut next_resync = Instant::now() + shared.resync_interval;
                let mut next_heartbeat = Instant::now() + shared.heartbeat_interval;
                let mut last_heard = Instant::now();
                let silence = shared.heartbeat_interval + shared.timeout;
                loop {
                    match timeout_at(next_resync.min(next_heartbeat), messages.next()).await {
                        Ok(Some(msg)) => {
                            last_heard = Instant::now();
                            shared.apply_message(msg.get_payload_bytes());
                        }
                        Ok(None) => break,
                        Err(_) if Instant::now() >= next_resync => {
                            if let Err(e) = shared.resync().await {
                                debug!(error = %e, "periodic revocation resync failed");
                                break;
                            }
                            next_resync = Instant::now() + shared.resync_interval;
                        }
                        Err(_) => {
                            if last_heard.elapsed() > silence {
                                debug!("no heartbeat heard from Redis");
                                break;
                            }
                            if let Err(e) = shared.heartbeat().await {
                                debug!(error = %e, "revocation heartbeat failed");
                                break;
                            }
                            next_heartbeat = Instant::now() + shared.heartbeat_interval;
                        }
                    }
                }
                shared.set_synced(false);
                shared.drop_connection();
                let (tokens, subjects) = shared.set.len();
                warn!(
                    tokens,
                    subjects,
                    fail_mode = ?shared.fail_mode,
                    "revocation store lost Redis; enforcing the last known set until it reconnects"
                );
                warned = true;
            }
            Err(e) => {
                if warned {
                    debug!(error = %e, "Redis still unreachable for revocations");
                } else {
                    warn!(
                        error = %e,
                        fail_mode = ?shared.fail_mode,
                        "revocation store cannot reach Redis; enforcing the last known set, retrying"
                    );
                    warned = true;
                }
            }
        }
        sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let r = parse_message(b"t 42 a b c").unwrap();
        assert_eq!(r, Revocation::token_at("a b c", 42));
        assert_eq!(
            parse_message(b"s 7 user-1").unwrap(),
            Revocation::subject_at("user-1", 7)
        );
        assert!(parse_message(b"x 7 a").is_none());
        assert!(parse_message(b"t nope a").is_none());
        assert!(parse_message(b"t 7").is_none());
    }
}
