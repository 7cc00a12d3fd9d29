//! Plain HTTP/1.1 upstream connections, kept alive in a pool per upstream and driven by the
//! request that uses them.
//!
//! A connection has no task of its own: while a request uses it, the request's task polls it
//! (sending the request, reading the response head), and then the response body polls it as
//! the body is sent on to the client. Once the response has been read to its end and the
//! request sent in full, the connection goes back to the pool; when the upstream answered
//! before reading the whole request body, a task finishes sending it first. Taken out again,
//! a connection is polled once before use: one the upstream closed, or wrote to unasked, in
//! the meantime is dropped there, and a request that could not be written on a pooled
//! connection is sent on the next one.
//!
//! Idle connections are looked at every [`Limits::reap_every`]: closed ones and those idle
//! longer than [`Limits::idle_timeout`] are dropped. At most [`Limits::max_idle`] are kept
//! per upstream.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::UpstreamBody;
use crate::serve::BoxError;

/// How long pooled connections live and how many are kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Resolving the upstream's name, and then connecting: shared equally by its addresses.
    pub(crate) connect_timeout: Duration,
    /// How long a connection may stay idle in the pool.
    pub(crate) idle_timeout: Duration,
    /// How often idle connections are looked at.
    pub(crate) reap_every: Duration,
    /// The most idle connections kept per upstream; more are closed as they come back.
    pub(crate) max_idle: usize,
}

impl Limits {
    pub(crate) fn new(connect_timeout: Duration) -> Self {
        Limits {
            connect_timeout,
            idle_timeout: Duration::from_secs(60),
            reap_every: Duration::from_secs(15),
            max_idle: 1024,
        }
    }
}

/// A request body hyper can send upstream.
pub(crate) trait SendBody:
    Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static
{
}
impl<B> SendBody for B where B: Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static {}

/// One upstream connection: hyper's handle to send on it and the connection itself.
struct Conn<B: SendBody> {
    sender: SendRequest<B>,
    driver: Pin<Box<Connection<TokioIo<TcpStream>, B>>>,
}

impl<B: SendBody> Conn<B> {
    /// Polls the connection; `false` once it has ended (closed, failed). Never polled again
    /// after that: a `false` connection is dropped.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        self.driver.as_mut().poll(cx).is_pending()
    }

    /// Polls an idle connection to take in what happened meanwhile (a close, an unasked
    /// answer); `true` when it can take a request. A `false` connection is dropped.
    fn usable(&mut self, cx: &mut Context<'_>) -> bool {
        self.drive(cx) && self.sender.is_ready()
    }
}

struct Idle<B: SendBody> {
    conn: Conn<B>,
    since: Instant,
}

/// The pooled HTTP/1.1 connections to every plain `http://` upstream of a configuration.
#[derive(Clone)]
pub(crate) struct Http1Pools {
    limits: Limits,
    pools: Arc<Mutex<HashMap<Authority, Http1Pool>>>,
}

impl Http1Pools {
    pub(crate) fn new(limits: Limits) -> Self {
        Http1Pools {
            limits,
            pools: Arc::default(),
        }
    }

    /// The pool of connections to `upstream`, shared by every route that proxies there.
    pub(crate) fn pool(&self, upstream: &Authority) -> Http1Pool {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        pools
            .entry(upstream.clone())
            .or_insert_with(|| Http1Pool::new(upstream, self.limits))
            .clone()
    }
}

/// The pooled HTTP/1.1 connections to one upstream.
pub(crate) struct Http1Pool<B: SendBody = UpstreamBody> {
    inner: Arc<PoolInner<B>>,
}

impl<B: SendBody> Clone for Http1Pool<B> {
    fn clone(&self) -> Self {
        Http1Pool {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct PoolInner<B: SendBody> {
    /// Host and port to connect to (an IPv6 literal without its brackets).
    host: String,
    port: u16,
    limits: Limits,
    /// Most recently used last.
    idle: Mutex<VecDeque<Idle<B>>>,
    reaping: AtomicBool,
}

/// A connection lent to one exchange, given back when the response has been read.
pub(crate) struct Lease<B: SendBody = UpstreamBody> {
    conn: Conn<B>,
    pool: Http1Pool<B>,
}

impl<B: SendBody> Http1Pool<B> {
    fn new(upstream: &Authority, limits: Limits) -> Self {
        let host = upstream.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        Http1Pool {
            inner: Arc::new(PoolInner {
                host: host.to_owned(),
                port: upstream.port_u16().unwrap_or(80),
                limits,
                idle: Mutex::new(VecDeque::new()),
                reaping: AtomicBool::new(false),
            }),
        }
    }

    /// Sends `req` (target in origin form, `Host` set) on a pooled connection or a new one
    /// and waits for the response head. The lease goes with the response body, which gives
    /// the connection back once read to its end.
    pub(crate) async fn send(
        &self,
        mut req: Request<B>,
    ) -> Result<(Response<Incoming>, Option<Lease<B>>), BoxError> {
        loop {
            let (mut conn, fresh) = match self.checkout().await {
                Some(conn) => (conn, false),
                None => (self.connect().await?, true),
            };
            let mut sent = std::pin::pin!(conn.sender.try_send_request(req));
            let mut alive = true;
            let result = std::future::poll_fn(|cx| {
                if alive {
                    alive = conn.drive(cx);
                }
                sent.as_mut().poll(cx)
            })
            .await;
            match result {
                Ok(response) => {
                    let mut lease = alive.then(|| Lease {
                        conn,
                        pool: self.clone(),
                    });
                    if response.body().is_end_stream() {
                        let mut done = lease.take();
                        std::future::poll_fn(|cx| {
                            if let Some(lease) = done.take() {
                                lease.give_back(cx);
                            }
                            Poll::Ready(())
                        })
                        .await;
                    }
                    return Ok((response, lease));
                }
                // Not written: the pooled connection closed just then; the next one, or a
                // new one, takes the request.
                Err(mut error) => match error.take_message() {
                    Some(unsent) if !fresh => req = unsent,
                    _ => return Err(error.into_error().into()),
                },
            }
        }
    }

    /// The most recently used idle connection still open and ready for a request.
    async fn checkout(&self) -> Option<Conn<B>> {
        loop {
            let Idle { mut conn, since } = self.idle().pop_back()?;
            if since.elapsed() > self.inner.limits.idle_timeout {
                // The rest are older still.
                self.idle().clear();
                return None;
            }
            if std::future::poll_fn(|cx| Poll::Ready(conn.usable(cx))).await {
                return Some(conn);
            }
        }
    }

    /// A new connection: the upstream's addresses tried in turn, each with an equal share of
    /// the connect timeout (an address that does not answer leaves time for the next).
    async fn connect(&self) -> Result<Conn<B>, BoxError> {
        let inner = &*self.inner;
        let timeout = inner.limits.connect_timeout;
        let addrs: Vec<_> = tokio::time::timeout(
            timeout,
            tokio::net::lookup_host((inner.host.as_str(), inner.port)),
        )
        .await
        .map_err(|_| "resolving the upstream's name timed out")??
        .collect();
        let share = timeout / u32::try_from(addrs.len().max(1)).unwrap_or(u32::MAX);
        let mut last: BoxError = "the upstream's name has no address".into();
        let mut connected = None;
        for addr in addrs {
            match tokio::time::timeout(share, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    connected = Some(stream);
                    break;
                }
                Ok(Err(error)) => last = error.into(),
                Err(_) => last = format!("connecting to {addr} timed out").into(),
            }
        }
        let Some(stream) = connected else {
            return Err(last);
        };
        stream.set_nodelay(true)?;
        let (sender, driver) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await?;
        Ok(Conn {
            sender,
            driver: Box::pin(driver),
        })
    }

    fn idle(&self) -> MutexGuard<'_, VecDeque<Idle<B>>> {
        self.inner
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn put(&self, conn: Conn<B>) {
        let now = Instant::now();
        let limits = self.inner.limits;
        {
            let mut idle = self.idle();
            while idle.front().is_some_and(|oldest| {
                idle.len() >= limits.max_idle || now - oldest.since > limits.idle_timeout
            }) {
                idle.pop_front();
            }
            if limits.max_idle > 0 {
                idle.push_back(Idle { conn, since: now });
            }
        }
        if !self.inner.reaping.swap(true, Ordering::Relaxed) {
            tokio::spawn(reap(Arc::downgrade(&self.inner)));
        }
    }

    /// Idle connections in the pool.
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle().len()
    }
}

/// Every `reap_every`, drops the idle connections that closed or stayed idle too long, until
/// the pool is gone.
async fn reap<B: SendBody>(pool: Weak<PoolInner<B>>) {
    let Some(every) = pool.upgrade().map(|pool| pool.limits.reap_every) else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let now = Instant::now();
        // Polled without a task to wake: only to take in a close that already happened.
        let mut cx = Context::from_waker(Waker::noop());
        let mut idle = pool.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain_mut(|idle| {
            now - idle.since <= pool.limits.idle_timeout && idle.conn.usable(&mut cx)
        });
    }
}

impl<B: SendBody> Lease<B> {
    /// Back to the pool once the exchange is over on both sides; when the request body is
    /// still being sent, a task finishes sending it first.
    fn give_back(self, cx: &mut Context<'_>) {
        let Lease { mut conn, pool } = self;
        if !conn.drive(cx) {
            return;
        }
        if conn.sender.is_ready() {
            pool.put(conn);
            return;
        }
        tokio::spawn(async move {
            let ready = std::future::poll_fn(|cx| {
                if !conn.drive(cx) {
                    return Poll::Ready(false);
                }
                conn.sender.poll_ready(cx).map(|ready| ready.is_ok())
            })
            .await;
            if ready {
                pool.put(conn);
            }
        });
    }
}

/// An upstream response body. With a lease it drives the connection it arrives on, and gives
/// the connection back once read to its end; dropped before that, the connection is closed.
pub(crate) struct UpstreamResponse<B: SendBody = UpstreamBody> {
    body: Incoming,
    lease: Option<Lease<B>>,
}

impl<B: SendBody> UpstreamResponse<B> {
    pub(crate) fn new(body: Incoming, lease: Option<Lease<B>>) -> Self {
        UpstreamResponse { body, lease }
    }
}

impl<B: SendBody> Body for UpstreamResponse<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let mut frame = Pin::new(&mut this.body).poll_frame(cx);
        if frame.is_pending()
            && let Some(lease) = &mut this.lease
        {
            if !lease.conn.drive(cx) {
                this.lease = None;
            }
            frame = Pin::new(&mut this.body).poll_frame(cx);
        }
        let ended = match &frame {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.body.is_end_stream(),
            Poll::Ready(Some(Err(_))) => {
                this.lease = None;
                false
            }
            Poll::Pending => false,
        };
        if ended && let Some(lease) = this.lease.take() {
            lease.give_back(cx);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use http_body_util::{BodyExt, Empty};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    const BOUND: Duration = Duration::from_secs(20);

    fn limits(idle_timeout: Duration, max_idle: usize) -> Limits {
        Limits {
            connect_timeout: Duration::from_secs(5),
            idle_timeout,
            reap_every: Duration::from_millis(50),
            max_idle,
        }
    }

    /// An upstream answering `200 ok` to every request on a connection until `close_after`
    /// requests, then closing it without a word; counts the connections it accepted.
    async fn upstream(close_after: usize) -> (Authority, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for _ in 0..close_after {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            let mut chunk = [0u8; 1024];
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.clear();
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (authority, accepted)
    }

    async fn get(pool: &Http1Pool<Empty<Bytes>>) -> Bytes {
        let request = Request::get("/x")
            .header(http::header::HOST, "upstream.test")
            .body(Empty::new())
            .unwrap();
        let (response, lease) = pool.send(request).await.unwrap();
        assert_eq!(response.status(), http::StatusCode::OK);
        let body = UpstreamResponse::new(response.into_body(), lease);
        body.collect().await.unwrap().to_bytes()
    }

    async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        tokio::time::timeout(BOUND, async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what}"));
    }

    #[tokio::test]
    async fn one_connection_serves_requests_in_turn_until_idle_too_long() {
        let (authority, accepted) = upstream(usize::MAX).await;
        let pool = Http1Pool::new(&authority, limits(Duration::from_millis(300), 8));
        for _ in 0..5 {
            assert_eq!(get(&pool).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
        eventually("the idle connection is dropped", || pool.idle_count() == 0).await;
        assert_eq!(get(&pool).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn connections_the_upstream_closes_while_idle_are_dropped() {
        let (authority, accepted) = upstream(1).await;
        let pool = Http1Pool::new(&authority, limits(Duration::from_secs(3600), 8));
        assert_eq!(get(&pool).await, "ok");
        eventually("the closed connection is dropped", || {
            pool.idle_count() == 0
        })
        .await;
        assert_eq!(get(&pool).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn at_most_max_idle_connections_are_kept() {
        let (authority, accepted) = upstream(usize::MAX).await;
        let pool = Http1Pool::new(&authority, limits(Duration::from_secs(3600), 2));
        let requests = (0..4).map(|_| {
            let pool = pool.clone();
            async move {
                let request = Request::get("/x")
                    .header(http::header::HOST, "upstream.test")
                    .body(Empty::new())
                    .unwrap();
                pool.send(request).await.unwrap()
            }
        });
        // Four responses held at once: four connections.
        let responses = futures_util::future::join_all(requests).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
        for (response, lease) in responses {
            let body = UpstreamResponse::new(response.into_body(), lease);
            assert_eq!(body.collect().await.unwrap().to_bytes(), "ok");
        }
        assert_eq!(pool.idle_count(), 2);
    }

    #[test]
    fn hosts_and_ports_are_taken_from_the_authority() {
        let limits = limits(Duration::from_secs(1), 1);
        for (authority, host, port) in [
            ("[::1]:8080", "::1", 8080),
            ("127.0.0.1:9001", "127.0.0.1", 9001),
            ("orders.internal", "orders.internal", 80),
        ] {
            let pool = Http1Pool::<Empty<Bytes>>::new(&authority.parse().unwrap(), limits);
            assert_eq!((pool.inner.host.as_str(), pool.inner.port), (host, port));
        }
    }

    #[tokio::test]
    async fn upstreams_named_by_host_name_are_resolved() {
        let (authority, accepted) = upstream(usize::MAX).await;
        let named: Authority = format!("localhost:{}", authority.port_u16().unwrap())
            .parse()
            .unwrap();
        let pool = Http1Pool::new(&named, limits(Duration::from_secs(60), 8));
        assert_eq!(get(&pool).await, "ok");
        assert_eq!(get(&pool).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        drop(listener);
        let pool = Http1Pool::<Empty<Bytes>>::new(&authority, limits(Duration::from_secs(1), 2));
        let request = Request::get("/x")
            .header(http::header::HOST, "upstream.test")
            .body(Empty::new())
            .unwrap();
        assert!(pool.send(request).await.is_err());
        assert_eq!(pool.idle_count(), 0);
    }
}
