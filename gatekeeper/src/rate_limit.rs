//! Per-identity rate limits (`[[route]] rate_limit`): a GCRA limiter (governor) per route,
//! keyed by subject, tenant, API key or client IP, counted after authentication, local to
//! this replica.
//!
//! Memory is bounded: the limiter tracks at most `max_keys` identities (plus a few racing
//! inserts). Identities idle long enough that their bucket is full again are forgotten every
//! [`CLEANUP_INTERVAL`]. While the table is full, a new identity is counted in one shared
//! overflow bucket (with the route's rate) until cleanup makes room: identities already
//! tracked are unaffected, new ones share one budget.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use governor::clock::Clock;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::{Quota, RateLimiter};
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Either;
use pin_project_lite::pin_project;
use serde::Deserialize;
use tower::{Layer, Service};
use tower_gatekeeper::authorize::ClientAddr;
use tower_gatekeeper::reject::Protocol;
use tower_gatekeeper::{AuthContext, CredentialKind};

use crate::config::server::Server;
use crate::response::gateway_error;
use crate::serve::GatewayBody;

/// How often idle identities are forgotten.
pub(crate) const CLEANUP_INTERVAL: Duration = Duration::from_secs(5);
/// The key of the shared bucket for new identities while the table is full.
const OVERFLOW: u64 = 0;

/// What a route's rate limit counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RateLimitKey {
    /// The caller's `sub` (per issuer); anonymous callers of optional routes by client IP.
    Subject,
    /// The caller's tenant; callers without one by subject.
    Tenant,
    /// The API key presented; callers authenticated otherwise by subject.
    ApiKey,
    /// The client's address (IPv6 by /64), from `X-Forwarded-For` only when the peer is
    /// one of `[server] trusted_proxies`.
    ClientIp,
}

impl fmt::Display for RateLimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RateLimitKey::Subject => "subject",
            RateLimitKey::Tenant => "tenant",
            RateLimitKey::ApiKey => "api_key",
            RateLimitKey::ClientIp => "client_ip",
        })
    }
}

/// A checked `rate_limit`.
#[derive(Debug, Clone)]
pub(crate) struct RateLimitSpec {
    pub(crate) key: RateLimitKey,
    /// One request is replenished per period (`1 / per_second`).
    pub(crate) period: Duration,
    pub(crate) burst: NonZeroU32,
    pub(crate) max_keys: usize,
}

/// governor's clock on tokio's time, so tests can pause it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> Self::Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// governor's DashMap state store with a cap on the number of keys.
#[derive(Debug)]
pub(crate) struct CappedStore {
    map: DashMapStateStore<u64>,
    max_keys: usize,
}

impl StateStore for CappedStore {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if self.map.contains_key(key) || self.map.len() < self.max_keys {
            self.map.measure_and_replace(key, f)
        } else {
            self.map.measure_and_replace(&OVERFLOW, f)
        }
    }
}

impl ShrinkableKeyedStateStore<u64> for CappedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(&self.map, drop_below);
    }

    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&self.map);
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// One route's limiter.
pub(crate) struct Limiter {
    limiter: RateLimiter<u64, CappedStore, TokioClock>,
    key: RateLimitKey,
    /// Keys are keyed hashes of the identity: fixed size, not predictable by callers.
    hasher: RandomState,
    /// The API key header (`[api_keys] header`).
    api_key_header: Option<HeaderName>,
    server: Arc<Server>,
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("key", &self.key)
            .field("tracked", &self.limiter.len())
            .finish_non_exhaustive()
    }
}

/// The decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Allow,
    /// Refused; the bucket has room again after this long.
    Refuse(Duration),
}

impl Limiter {
    /// A limiter for `spec`; inside a tokio runtime, also starts its cleanup task (which
    /// ends when the limiter is dropped).
    pub(crate) fn new(
        spec: &RateLimitSpec,
        api_key_header: Option<HeaderName>,
        server: Arc<Server>,
    ) -> Arc<Self> {
        let quota = Quota::with_period(spec.period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(spec.burst);
        let store = CappedStore {
            map: DashMapStateStore::default(),
            max_keys: spec.max_keys,
        };
        let limiter = Arc::new(Limiter {
            limiter: RateLimiter::new(quota, store, TokioClock),
            key: spec.key,
            hasher: RandomState::new(),
            api_key_header,
            server,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(cleanup(Arc::downgrade(&limiter)));
        }
        limiter
    }

    /// Counts one request of identity `key`.
    pub(crate) fn check_key(&self, key: u64) -> Decision {
        match self.limiter.check_key(&key) {
            Ok(()) => Decision::Allow,
            Err(not_until) => Decision::Refuse(not_until.wait_time_from(TokioClock.now())),
        }
    }

    /// Counts one request.
    pub(crate) fn check<B>(&self, req: &Request<B>) -> Decision {
        self.check_key(self.key_of(req))
    }

    /// Forgets identities whose bucket is full again.
    pub(crate) fn cleanup(&self) {
        self.limiter.retain_recent();
    }

    /// How many identities are tracked now.
    pub(crate) fn tracked(&self) -> usize {
        self.limiter.len()
    }

    /// The identity `req` is counted as (a keyed hash).
    pub(crate) fn key_of<B>(&self, req: &Request<B>) -> u64 {
        let ctx = req.extensions().get::<AuthContext>();
        let hash = match (self.key, ctx) {
            (RateLimitKey::ClientIp, _) | (_, None) => self.ip_key(req),
            (RateLimitKey::Tenant, Some(ctx)) if ctx.tenant().is_some() => {
                self.hash(("tenant", ctx.tenant()))
            }
            (RateLimitKey::ApiKey, Some(ctx))
                if ctx.credential_kind() == CredentialKind::ApiKey =>
            {
                match self
                    .api_key_header
                    .as_ref()
                    .and_then(|name| req.headers().get(name))
                {
                    Some(value) => self.hash(("api_key", value.as_bytes())),
                    None => self.subject_key(ctx, req),
                }
            }
            (_, Some(ctx)) => self.subject_key(ctx, req),
        };
        // 0 is the overflow bucket.
        hash.max(1)
    }

    fn subject_key<B>(&self, ctx: &AuthContext, req: &Request<B>) -> u64 {
        match ctx.subject() {
            Some(subject) => self.hash(("subject", subject, ctx.issuer().unwrap_or(""))),
            None => self.ip_key(req),
        }
    }

    fn ip_key<B>(&self, req: &Request<B>) -> u64 {
        match client_ip(req, &self.server) {
            Some(IpAddr::V6(ip)) => {
                // One /64 is what a single host is usually given.
                let prefix = (u128::from(ip) >> 64) as u64;
                self.hash(("ipv6", prefix))
            }
            Some(IpAddr::V4(ip)) => self.hash(("ipv4", u32::from(ip))),
            None => self.hash("ip"),
        }
    }

    fn hash(&self, identity: impl Hash) -> u64 {
        self.hasher.hash_one(identity)
    }
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the last address
/// of `X-Forwarded-For` that is not one of `trusted_proxies`.
fn client_ip<B>(req: &Request<B>, server: &Server) -> Option<IpAddr> {
    let peer = req.extensions().get::<ClientAddr>()?.0.ip();
    let peer = canonical(peer);
    if !server.trusts(peer) {
        return Some(peer);
    }
    let mut client = peer;
    let forwarded: Vec<IpAddr> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|entry| entry.trim().parse::<IpAddr>().ok())
        .map(canonical)
        .collect();
    for ip in forwarded.into_iter().rev() {
        client = ip;
        if !server.trusts(ip) {
            break;
        }
    }
    Some(client)
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

async fn cleanup(limiter: Weak<Limiter>) {
    let mut tick = tokio::time::interval(CLEANUP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(limiter) = limiter.upgrade() else {
            return;
        };
        limiter.cleanup();
        tracing::trace!(key = %limiter.key, tracked = limiter.tracked(), "rate limit table cleaned");
    }
}

/// 429 with `Retry-After` (gRPC: 8 RESOURCE_EXHAUSTED).
pub(crate) fn too_many_requests(protocol: Protocol, wait: Duration) -> Response<GatewayBody> {
    let mut response = gateway_error(
        protocol,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "too many requests; retry later",
    );
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    response
}

/// The route's limiter in its stack, after authentication; without a limit it only passes
/// requests on.
#[derive(Clone, Default)]
pub(crate) struct RateLimitLayer {
    limiter: Option<Arc<Limiter>>,
}

impl RateLimitLayer {
    pub(crate) fn new(limiter: Option<Arc<Limiter>>) -> Self {
        RateLimitLayer { limiter }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

/// See [`RateLimitLayer`].
#[derive(Clone)]
pub(crate) struct RateLimit<S> {
    inner: S,
    limiter: Option<Arc<Limiter>>,
}

impl<S, ReqB, B> Service<Request<ReqB>> for RateLimit<S>
where
    S: Service<Request<ReqB>, Response = Response<B>>,
{
    type Response = Response<Either<B, GatewayBody>>;
    type Error = S::Error;
    type Future = Limited<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        if let Some(limiter) = &self.limiter
            && let Decision::Refuse(wait) = limiter.check(&req)
        {
            return Limited::Refused {
                response: Some(too_many_requests(Protocol::of(&req), wait)),
            };
        }
        Limited::Inner {
            future: self.inner.call(req),
        }
    }
}

pin_project! {
    /// The future of [`RateLimit`].
    #[project = LimitedProj]
    pub(crate) enum Limited<F> {
        Inner { #[pin] future: F },
        Refused { response: Option<Response<GatewayBody>> },
    }
}

impl<F, B, E> Future for Limited<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<Either<B, GatewayBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            LimitedProj::Inner { future } => future
                .poll(cx)
                .map(|result| result.map(|response| response.map(Either::Left))),
            LimitedProj::Refused { response } => Poll::Ready(Ok(response
                .take()
                .expect("polled after completion")
                .map(Either::Right))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(per_second: f64, burst: u32, max_keys: usize) -> RateLimitSpec {
        RateLimitSpec {
            key: RateLimitKey::Subject,
            period: Duration::from_secs_f64(1.0 / per_second),
            burst: NonZeroU32::new(burst).unwrap(),
            max_keys,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_refill_on_paused_time() {
        let limiter = Limiter::new(&spec(2.0, 3, 10), None, Arc::new(Server::default()));
        for _ in 0..3 {
            assert_eq!(limiter.check_key(7), Decision::Allow);
        }
        let Decision::Refuse(wait) = limiter.check_key(7) else {
            panic!("the fourth request within the burst must be refused");
        };
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        // Another identity has its own bucket.
        assert_eq!(limiter.check_key(8), Decision::Allow);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(limiter.check_key(7), Decision::Allow);
        assert!(matches!(limiter.check_key(7), Decision::Refuse(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_capped_and_idle_keys_are_forgotten() {
        let limiter = Limiter::new(&spec(10.0, 1, 100), None, Arc::new(Server::default()));
        for key in 1..=1_000u64 {
            limiter.check_key(key);
        }
        // 100 identities and the overflow bucket.
        assert!(limiter.tracked() <= 101, "{}", limiter.tracked());
        // Tracked identities keep their own bucket; new ones share the overflow bucket.
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(limiter.check_key(1), Decision::Allow);
        assert_eq!(limiter.check_key(5_000), Decision::Allow);
        assert!(matches!(limiter.check_key(5_001), Decision::Refuse(_)));
        // Once their buckets are full again, the cleanup task forgets them.
        tokio::time::sleep(CLEANUP_INTERVAL * 2 + Duration::from_millis(10)).await;
        assert_eq!(limiter.tracked(), 0);
        assert_eq!(limiter.check_key(5_001), Decision::Allow);
    }

    /// Resident memory of the process, in bytes (Linux).
    fn rss() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    /// A flood of 1,000,000 distinct subjects: the table stays at `max_keys`, and the
    /// memory it takes is printed (run with `--nocapture` to see the figures).
    #[tokio::test(start_paused = true)]
    async fn a_million_subjects_stay_within_max_keys() {
        let server = Arc::new(Server::default());
        for max_keys in [100_000usize, 1_000_000] {
            let before = rss();
            let limiter = Limiter::new(&spec(10.0, 20, max_keys), None, Arc::clone(&server));
            for n in 0..1_000_000u64 {
                let subject = format!("user-{n}");
                let key = limiter.hash(("subject", subject.as_str(), "https://issuer"));
                limiter.check_key(key.max(1));
            }
            let tracked = limiter.tracked();
            assert!(tracked <= max_keys + 1, "{tracked} > {max_keys}");
            if let (Some(before), Some(after)) = (before, rss()) {
                let grown = after.saturating_sub(before);
                println!(
                    "max_keys = {max_keys}: 1,000,000 distinct subjects -> {tracked} tracked, resident memory +{:.1} MiB ({} bytes per tracked identity)",
                    grown as f64 / (1024.0 * 1024.0),
                    grown / tracked.max(1) as u64,
                );
                // Generous: a tracked identity costs tens of bytes, not kilobytes.
                assert!(grown / (tracked.max(1) as u64) < 512, "{grown} bytes");
            }
            drop(limiter);
        }
    }
}
