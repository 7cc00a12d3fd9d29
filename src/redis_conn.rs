//! One lazily opened Redis connection shared by every request of a store, with a back-off
//! after a failure: what the shared introspection cache and the DPoP replay cache both need.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tracing::info;

/// A multiplexed connection opened on first use, dropped on failure, and not retried for
/// `backoff` after one (callers answer at once meanwhile instead of waiting on Redis).
pub(crate) struct LazyConnection {
    client: redis::Client,
    config: AsyncConnectionConfig,
    backoff: Duration,
    /// Names the store in log lines ("the introspection cache").
    name: &'static str,
    /// The shared connection; `None` before the first use and after a failure.
    conn: Mutex<Option<MultiplexedConnection>>,
    /// Held while connecting: one connection attempt at a time.
    connecting: tokio::sync::Mutex<()>,
    /// Redis is skipped until then (set on failure).
    retry_at: Mutex<Option<Instant>>,
    /// Whether the last attempt failed (for the "reconnected" log line).
    failed: AtomicBool,
}

/// Why no connection was handed out.
pub(crate) enum ConnectError {
    /// Within the back-off after a failure: Redis was not asked.
    BackingOff,
    /// Connecting failed.
    Redis(redis::RedisError),
}

impl LazyConnection {
    /// A connection to `client`, every operation bounded by `timeout`.
    pub(crate) fn new(
        client: redis::Client,
        timeout: Duration,
        backoff: Duration,
        name: &'static str,
    ) -> Self {
        LazyConnection {
            client,
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout)),
            backoff,
            name,
            conn: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            retry_at: Mutex::new(None),
            failed: AtomicBool::new(false),
        }
    }

    /// Whether a connection is open.
    pub(crate) fn is_connected(&self) -> bool {
        self.current().is_some()
    }

    /// The shared connection, opened when there is none (one attempt at a time; none while
    /// backing off).
    pub(crate) async fn get(&self) -> Result<MultiplexedConnection, ConnectError> {
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        if self.backing_off() {
            return Err(ConnectError::BackingOff);
        }
        let _connecting = self.connecting.lock().await;
        // Another attempt may have finished (or failed) while this one waited.
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        if self.backing_off() {
            return Err(ConnectError::BackingOff);
        }
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
            .map_err(ConnectError::Redis)?;
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
        if self.failed.swap(false, Ordering::Relaxed) {
            info!("{} reconnected to Redis", self.name);
        }
        Ok(conn)
    }

    /// After a failure: drops the connection and skips Redis for the back-off. Returns
    /// whether this is the first failure since Redis last answered (to log it once).
    pub(crate) fn fail(&self) -> bool {
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *self.retry_at.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + self.backoff);
        !self.failed.swap(true, Ordering::Relaxed)
    }

    fn current(&self) -> Option<MultiplexedConnection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn backing_off(&self) -> bool {
        self.retry_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|at| Instant::now() < at)
    }
}
