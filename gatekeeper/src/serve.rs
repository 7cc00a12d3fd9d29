//! The listener: accepting client connections within `max_connections`, backing off when
//! accepting fails, and serving each connection (HTTP/1.1 and HTTP/2) under the `[server]`
//! timeouts until it ends or the gateway shuts down.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::Request;
use http::header::HeaderName;
use http_body::Body as _;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tower_gatekeeper::authorize::ClientAddr;
use tower_gatekeeper::credential::PeerCertificate;
use tracing::{debug, info, trace, warn};

use crate::Config;
use crate::body::Held;
use crate::config::server::Server;
use crate::credentials::AbortOnDrop;
use crate::reload::Live;
use crate::response::error_chain;
use crate::tls::{self, ArrivedOverTls, reload_on_hangup, take_header_certificate};

/// How long a shutdown waits for in-flight requests before giving up on them.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Pings on an idle HTTP/2 connection, and how long the peer has to answer one.
const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// An HTTP/1.1 connection idle this long between requests is parked: its hyper connection
/// and buffers are dropped until the socket is readable again. Connections busy with
/// back-to-back requests never wait this long, so they are not parked between them.
const PARK_AFTER: Duration = Duration::from_millis(100);
/// Accept errors (usually: out of file descriptors) back off from this pause, doubling up to
/// the maximum, and are logged at most once per `ACCEPT_LOG_INTERVAL`.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// The error type of the program's fallible steps (start-up, listeners).
pub type BoxError = Box<dyn StdError + Send + Sync>;
/// A response body: the upstream's, streamed, or one the gateway made.
pub(crate) type GatewayBody = BoxBody<Bytes, BoxError>;

/// Serves `config` on `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish (at most 30 s) and returns.
///
/// # Errors
///
/// Only when the listener's address cannot be read; per-connection errors are logged.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    run_live(Live::new(config), listener, shutdown).await
}

/// Serves `live` on `listener` until `shutdown` resolves, as [`run`] does; every new request
/// is served with `live`'s current configuration, which [`Live::reload`] (and, for a
/// configuration loaded from a file, SIGHUP) replaces.
///
/// # Errors
///
/// Only when the listener's address cannot be read; per-connection errors are logged.
pub async fn run_live(
    live: Live,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    let _hangup = live.reload_on_hangup();
    // Connection settings and the listener's TLS are the ones started with: changing them
    // needs a restart (the certificate itself is reloaded on SIGHUP).
    let server = live.gateway().server();
    let (tls, cert_header) = live.listener_tls();
    let _reload_tls = tls
        .as_ref()
        .map(|tls| AbortOnDrop(tokio::spawn(reload_on_hangup(Arc::clone(&tls.certificate)))));
    let builders = Arc::new(Builders::new(&server));
    // One permit per connection; shutting down takes them all back.
    let slots = Arc::new(Semaphore::new(server.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = AcceptBackoff::default();
    info!(
        address = %local,
        max_connections = server.max_connections,
        tls = tls.is_some(),
        "gateway listening (HTTP/1.1 and HTTP/2)"
    );

    loop {
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    backoff.failed(&error).await;
                    continue;
                }
            },
        };
        backoff.succeeded();
        let conn = Connection {
            live: live.clone(),
            builders: Arc::clone(&builders),
            server: Arc::clone(&server),
            cert_header: cert_header.clone(),
            stop: stop_rx.clone(),
            slot: Arc::new(slot),
        };
        match &tls {
            Some(tls) => drop(tokio::spawn(serve_tls(
                stream,
                peer,
                tls.acceptor.clone(),
                conn,
            ))),
            None => drop(tokio::spawn(serve_plain(stream, peer, conn))),
        }
    }

    drop(listener);
    info!("shutting down: no new connections, waiting for in-flight requests");
    let _ = stop_tx.send(true);
    let all = u32::try_from(server.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, slots.acquire_many(all))
        .await
        .is_err()
    {
        warn!(
            "in-flight requests did not finish within {}s; stopping anyway",
            DRAIN_TIMEOUT.as_secs()
        );
    }
    info!("gateway stopped");
    Ok(())
}

/// The HTTP/1.1 and HTTP/2 server settings shared by every connection.
struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Builders {
    fn new(server: &Server) -> Self {
        let mut http1 = http1::Builder::new();
        // hyper counts the wait for each request head, including the next one on a keep-alive
        // connection, as header reading: an idle HTTP/1.1 connection is closed after the
        // shorter of this and the idle timeout (as HAProxy's `timeout http-keep-alive` falls
        // back to `timeout http-request`). `Activity::expired` keeps the same deadline across
        // a park.
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(server.header_read_timeout);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(H2_KEEP_ALIVE_INTERVAL))
            .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT);
        Builders { http1, http2 }
    }
}

/// What every request of a connection carries into the gateway as extensions.
struct RequestContext {
    peer: SocketAddr,
    over_tls: bool,
    /// Whether the peer is one of `[server] trusted_proxies`.
    trusted: bool,
    /// The leaf certificate the client presented in the TLS handshake.
    session_certificate: Option<PeerCertificate>,
    /// `[tls] client_cert_header`.
    cert_header: Option<HeaderName>,
}

impl RequestContext {
    /// Inserts [`ClientAddr`], [`ArrivedOverTls`] and the client's [`PeerCertificate`]: from a
    /// trusted proxy's `client_cert_header` when it sent one, else from the TLS session. The
    /// header is removed whoever sent it; an unusable one leaves the request without a
    /// certificate.
    fn prepare<B>(&self, req: &mut Request<B>) {
        let peer = self.peer;
        req.extensions_mut().insert(ClientAddr(peer));
        if self.over_tls {
            req.extensions_mut().insert(ArrivedOverTls);
        }
        let mut certificate = self.session_certificate.clone();
        if let Some(name) = &self.cert_header {
            match take_header_certificate(req.headers_mut(), name, self.trusted) {
                Ok(None) => {}
                Ok(Some(from_proxy)) => certificate = Some(from_proxy),
                Err(error) => {
                    debug!(%peer, header = %name, ?error, "client certificate header not usable; the request has no client certificate");
                    certificate = None;
                }
            }
        }
        if let Some(certificate) = certificate {
            req.extensions_mut().insert(certificate);
        }
    }
}

/// What one connection's task holds.
struct Connection {
    live: Live,
    builders: Arc<Builders>,
    server: Arc<Server>,
    /// `[tls] client_cert_header`: removed from every request, read from trusted proxies.
    cert_header: Option<HeaderName>,
    /// Becomes `true` when the gateway shuts down.
    stop: watch::Receiver<bool>,
    /// Returned to the listener when the connection ends (a WebSocket tunnel the connection
    /// became holds it until the tunnel closes).
    slot: Arc<OwnedSemaphorePermit>,
}

/// Serves one plain-TCP connection ([`serve_http`]). Plain and TLS connections are separate
/// tasks, so that a plain connection's task is not sized for a TLS handshake. (Not an `async
/// fn`: its task is `serve_http`'s future itself, without a copy of the arguments around it.)
fn serve_plain(
    stream: TcpStream,
    peer: SocketAddr,
    conn: Connection,
) -> impl Future<Output = ()> + Send {
    let _ = stream.set_nodelay(true);
    serve_http(stream, peer, None, Instant::now(), conn)
}

/// Serves one TLS connection: its handshake first, bounded by the header-read timeout like
/// the first request head, then [`serve_http`] with the protocol ALPN chose.
async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    mut conn: Connection,
) {
    let _ = stream.set_nodelay(true);
    let started = Instant::now();
    let deadline = started + conn.server.header_read_timeout;
    let handshake = tokio::time::timeout_at(deadline, tls::accept(&acceptor, stream));
    let accepted = tokio::select! {
        accepted = handshake => accepted,
        _ = conn.stop.wait_for(|stop| *stop) => return,
    };
    match accepted {
        Ok(Ok(stream)) => {
            // The protocol ALPN chose is the one served; without ALPN, either is detected.
            let protocol = match stream.get_ref().1.alpn_protocol() {
                Some(b"h2") => Some(Protocol::Http2),
                Some(b"http/1.1") => Some(Protocol::Http1),
                _ => None,
            };
            let session = TlsSession {
                certificate: tls::session_certificate(&stream),
                protocol,
            };
            serve_http(stream, peer, Some(session), started, conn).await;
        }
        Ok(Err(error)) => debug!(%peer, %error, "TLS handshake failed"),
        Err(_) => debug!(%peer, "no TLS handshake within the header-read timeout; closing"),
    }
}

/// What a TLS connection's requests carry, and the protocol its ALPN chose.
struct TlsSession {
    /// The leaf certificate the client presented.
    certificate: Option<PeerCertificate>,
    protocol: Option<Protocol>,
}

/// The HTTP version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// The HTTP/2 connection preface (RFC 9113 §3.4): a connection starting with it is HTTP/2
/// with prior knowledge (h2c), any other is HTTP/1.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection's socket: TCP, or TLS over TCP; readiness is the TCP socket's.
trait Socket: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn tcp(&self) -> &TcpStream;
}

impl Socket for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Socket for TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// Serves one connection's HTTP until it ends, the gateway shuts down (then gracefully), it
/// stays silent past the header-read timeout counted from `started` (then at once) or idle
/// past the idle timeout (then gracefully).
///
/// Not an `async fn`, nor [`serve_http1`]: an `async fn` future keeps its arguments and the
/// local copies it moves them into side by side, and this future is what every idle
/// connection's task holds; an `async move` block holds its captures once.
#[allow(clippy::manual_async_fn)]
fn serve_http<S: Socket>(
    mut socket: S,
    peer: SocketAddr,
    session: Option<TlsSession>,
    started: Instant,
    mut conn: Connection,
) -> impl Future<Output = ()> + Send {
    async move {
        let activity = Arc::new(Activity::new());
        let live = conn.live.clone();
        let tracked = Arc::clone(&activity);
        let (over_tls, session_certificate, protocol) = match session {
            Some(session) => (true, session.certificate, session.protocol),
            None => (false, None, None),
        };
        let context = RequestContext {
            peer,
            over_tls,
            trusted: conn.server.trusts(peer.ip()),
            session_certificate,
            cert_header: conn.cert_header.clone(),
        };
        let hold = crate::websocket::ConnectionHold::new(Arc::clone(&conn.slot), conn.stop.clone());
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            // Only a request without a body and without an upgrade leaves the connection at the
            // start of the next request head once answered, where it may be parked.
            let parkable =
                req.body().is_end_stream() && !req.headers().contains_key(http::header::UPGRADE);
            let guard = tracked.begin(parkable);
            context.prepare(&mut req);
            req.extensions_mut().insert(hold.clone());
            // Each request is served with the configuration current when it arrives.
            let gateway = live.gateway();
            // Not boxed: hyper keeps the request's future in a box of its own per connection
            // (parked connections drop it); a box per request would cost an allocation each.
            async move {
                let response = gateway.handle_logged(req).await;
                Ok::<_, Infallible>(response.map(|body| Held::new(body, guard)))
            }
        });

        let (protocol, prefix) = match protocol {
            Some(protocol) => (protocol, Bytes::new()),
            None => {
                let detected = tokio::select! {
                    detected = detect_protocol(&mut socket) => detected,
                    _ = conn.stop.wait_for(|stop| *stop) => return,
                    _ = activity.expired(started, &conn.server, Timers::HTTP2) => {
                        debug!(%peer, "no request within the header-read timeout; closing");
                        return;
                    }
                };
                match detected {
                    Ok(Some(detected)) => detected,
                    Ok(None) => return,
                    Err(error) => {
                        debug!(%peer, %error, "connection failed before its first request");
                        return;
                    }
                }
            }
        };
        let io = ConnIo {
            prefix,
            inner: socket,
            activity: Arc::clone(&activity),
        };
        match protocol {
            Protocol::Http1 => {
                return serve_http1(io, service, peer, started, Arc::clone(&activity), conn).await;
            }
            Protocol::Http2 => {}
        }
        let builders = Arc::clone(&conn.builders);
        // Boxed: the connection task is sized for an idle HTTP/1.1 connection.
        let mut connection = Box::pin(builders.http2.serve_connection(TokioIo::new(io), service));
        let mut closing = *conn.stop.borrow();
        if closing {
            connection.as_mut().graceful_shutdown();
        }
        let result = loop {
            tokio::select! {
                result = connection.as_mut() => break result,
                changed = conn.stop.changed(), if !closing => {
                    if changed.is_err() || *conn.stop.borrow() {
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
                expiry = activity.expired(started, &conn.server, Timers::HTTP2), if !closing => match expiry {
                    Expiry::Silent => {
                        debug!(%peer, "no request within the header-read timeout; closing");
                        return;
                    }
                    Expiry::Idle | Expiry::Park => {
                        debug!(%peer, "idle past the idle timeout; closing");
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                },
            }
        };
        if let Err(error) = result {
            debug!(%peer, error = %error_chain(&error), "connection closed with an error");
        }
    }
}

/// Reads the start of a connection until it is known whether it is the HTTP/2 preface;
/// returns the protocol and the bytes read, or `None` when the peer closed before sending any.
async fn detect_protocol<S: AsyncRead + Unpin>(
    socket: &mut S,
) -> io::Result<Option<(Protocol, Bytes)>> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut filled = 0;
    let protocol = loop {
        let n = socket.read(&mut buf[filled..]).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(None);
            }
            break Protocol::Http1;
        }
        filled += n;
        if buf[..filled] != H2_PREFACE[..filled] {
            break Protocol::Http1;
        }
        if filled == H2_PREFACE.len() {
            break Protocol::Http2;
        }
    };
    Ok(Some((protocol, Bytes::copy_from_slice(&buf[..filled]))))
}

/// Why an HTTP/1.1 connection stopped being served by its hyper connection.
enum Step {
    /// The connection ended (closed, failed, or became a WebSocket tunnel).
    Done(hyper::Result<()>),
    /// The connection is idle between requests: take it apart and park it.
    Park,
}

/// Serves an HTTP/1.1 connection until it ends, as [`serve_http`] says, parking it while it
/// is idle between requests: once idle for `PARK_AFTER`, the hyper connection (its read and
/// write buffers, its state) is taken apart and dropped, and only the socket is kept, waiting
/// for readiness under the same deadlines; when the socket is readable a new hyper connection
/// serves it, with any bytes the old one had read replayed first.
#[allow(clippy::manual_async_fn)] // as `serve_http`
fn serve_http1<S, F>(
    mut io: ConnIo<S>,
    mut service: F,
    peer: SocketAddr,
    started: Instant,
    activity: Arc<Activity>,
    mut conn: Connection,
) -> impl Future<Output = ()> + Send
where
    S: Socket,
    F: hyper::service::HttpService<
            Incoming,
            ResBody = Held<GatewayBody, ActivityGuard>,
            Error = Infallible,
        > + Unpin
        + Send
        + 'static,
    F::Future: Send + 'static,
{
    async move {
        let mut closing = *conn.stop.borrow();
        // No park deadline while the connection has seen this many requests: set when the park
        // deadline passed (a park is then due) and when a parked connection wakes (it is not
        // parked again before its next request, so a partial head cannot make it spin).
        let mut held_off: Option<u64> = None;
        let mut park_due: Option<u64> = None;
        loop {
            let mut connection = Box::new(
                conn.builders
                    .http1
                    .serve_connection(TokioIo::new(io), service)
                    .with_upgrades(),
            );
            if closing {
                Pin::new(&mut *connection).graceful_shutdown();
            }
            let step = loop {
                let timers = Timers {
                    http1: true,
                    park: !closing,
                    held_off,
                };
                tokio::select! {
                    biased;
                    step = std::future::poll_fn(|cx| match Pin::new(&mut *connection).poll(cx) {
                        Poll::Ready(result) => Poll::Ready(Step::Done(result)),
                        Poll::Pending
                            if !closing
                                && park_due.is_some()
                                && park_due == activity.parkable() => Poll::Ready(Step::Park),
                        Poll::Pending => Poll::Pending,
                    }) => break step,
                    changed = conn.stop.changed(), if !closing => {
                        if changed.is_err() || *conn.stop.borrow() {
                            closing = true;
                            Pin::new(&mut *connection).graceful_shutdown();
                        }
                    }
                    expiry = activity.expired(started, &conn.server, timers), if !closing => match expiry {
                        Expiry::Silent => {
                            debug!(%peer, "no request within the header-read timeout; closing");
                            return;
                        }
                        Expiry::Idle => {
                            debug!(%peer, "idle past the idle timeout; closing");
                            closing = true;
                            Pin::new(&mut *connection).graceful_shutdown();
                        }
                        Expiry::Park => {
                            // Parked at the next poll of the connection that finds it idle.
                            let requests = activity.requests();
                            held_off = Some(requests);
                            park_due = Some(requests);
                        }
                    },
                }
            };
            if let Step::Done(result) = step {
                if let Err(error) = result {
                    debug!(%peer, error = %error_chain(&error), "connection closed with an error");
                }
                return;
            }
            // Idle: nothing in flight, no write pending, the last poll found nothing to read.
            let Some((taken_io, taken_service)) = take_apart(connection) else {
                return;
            };
            io = taken_io;
            service = taken_service;
            park_due = None;
            if !io.prefix.is_empty() {
                // Bytes of the next request already arrived: serve them at once.
                continue;
            }
            trace!(%peer, "idle connection parked");
            // Nothing changes the connection's activity while it is parked: one deadline.
            let timers = Timers {
                http1: true,
                park: false,
                held_off,
            };
            let deadline = match activity.due(started, &conn.server, timers) {
                Due::At(deadline) => Some(deadline),
                Due::Now(_) => None,
            };
            let woken = match deadline {
                Some(deadline) => tokio::select! {
                    ready = io.inner.tcp().readable() => Some(ready),
                    _ = conn.stop.wait_for(|stop| *stop) => return,
                    () = tokio::time::sleep_until(deadline) => None,
                },
                None => None,
            };
            match woken {
                Some(Ok(())) => {}
                Some(Err(error)) => {
                    debug!(%peer, %error, "parked connection failed");
                    return;
                }
                None => {
                    match activity.due(started, &conn.server, timers) {
                        Due::Now(Expiry::Silent) => {
                            debug!(%peer, "no request within the header-read timeout; closing");
                        }
                        _ => debug!(%peer, "idle past the idle timeout; closing"),
                    }
                    return;
                }
            }
            trace!(%peer, "parked connection readable");
        }
    }
}

/// Takes an idle HTTP/1.1 connection apart: hyper's connection and buffers are freed, its IO
/// (with the bytes hyper read and did not use as the prefix to replay) and service returned.
/// `None` once the connection was upgraded. (A plain function: what it handles is not kept
/// in the connection task while parked.)
// Boxed: the connection lives in a box so that the task is sized for a parked connection,
// and the box is freed here.
#[allow(clippy::boxed_local)]
fn take_apart<S, F>(
    connection: Box<http1::UpgradeableConnection<TokioIo<ConnIo<S>>, F>>,
) -> Option<(ConnIo<S>, F)>
where
    S: Socket,
    F: hyper::service::HttpService<
            Incoming,
            ResBody = Held<GatewayBody, ActivityGuard>,
            Error = Infallible,
        >,
{
    let parts = connection.into_parts()?;
    let mut io = parts.io.into_inner();
    // Even empty, the read buffer holds its allocation: kept only when it has bytes.
    if !parts.read_buf.is_empty() {
        io.prefix = parts.read_buf;
    }
    Some((io, parts.service))
}

/// A connection's IO as hyper sees it: `prefix` (bytes read before, replayed first), then
/// `inner`; and whether the last write or flush to `inner` could not complete, recorded in the
/// connection's [`Activity`].
struct ConnIo<S> {
    prefix: Bytes,
    inner: S,
    activity: Arc<Activity>,
}

impl<S> ConnIo<S> {
    fn track<T>(&self, poll: Poll<T>) -> Poll<T> {
        self.activity
            .write_blocked
            .store(poll.is_pending(), Ordering::Relaxed);
        poll
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ConnIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        if n == self.prefix.len() {
            // Not `advance`: an emptied `Bytes` would still hold the buffer it was cut from.
            self.prefix = Bytes::new();
        } else {
            self.prefix.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ConnIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.track(poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.track(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.track(poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a connection is doing, for its timeouts and parking: requests in flight (a request
/// counts until its response body is dropped), how many arrived, whether the last one leaves
/// the connection parkable, since when it is idle, and whether a write is blocked.
///
/// A request beginning only moves deadlines later, so the timer is not told. A request ending
/// can bring one closer: the timer recomputes when it next looks. An HTTP/1.1 request ends
/// inside the connection's own poll, after which the timer is always polled, so nothing wakes
/// the task for it; HTTP/2 requests end in tasks of their own and wake the timer.
struct Activity {
    state: Mutex<ActivityState>,
    /// Requests ended so far.
    ended: AtomicU64,
    /// Wakes an HTTP/2 connection's timer when a request ends.
    changed: Notify,
    /// The last write or flush to the socket returned `Pending`.
    write_blocked: AtomicBool,
}

struct ActivityState {
    in_flight: usize,
    requests: u64,
    /// The last request had no body and asked for no upgrade.
    parkable: bool,
    idle_since: Instant,
}

/// Why a connection's timer ran out.
enum Expiry {
    /// No request head arrived within the header-read timeout.
    Silent,
    /// No request was in flight for the idle timeout.
    Idle,
    /// An HTTP/1.1 connection was idle for `PARK_AFTER`.
    Park,
}

/// Which deadlines a connection's timer keeps.
#[derive(Clone, Copy)]
struct Timers {
    /// HTTP/1: between requests the next head is due within the header-read timeout.
    http1: bool,
    /// An idle HTTP/1.1 connection is parked after `PARK_AFTER`...
    park: bool,
    /// ...unless it has seen this many requests.
    held_off: Option<u64>,
}

impl Timers {
    /// HTTP/2, and any connection before its protocol is known: the header-read timeout until
    /// the first request, then the idle timeout.
    const HTTP2: Timers = Timers {
        http1: false,
        park: false,
        held_off: None,
    };
}

impl Activity {
    fn new() -> Self {
        Activity {
            state: Mutex::new(ActivityState {
                in_flight: 0,
                requests: 0,
                parkable: false,
                idle_since: Instant::now(),
            }),
            ended: AtomicU64::new(0),
            changed: Notify::new(),
            write_blocked: AtomicBool::new(false),
        }
    }

    /// A request arrived; it counts as in flight until the guard is dropped.
    fn begin(self: &Arc<Self>, parkable: bool) -> ActivityGuard {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.in_flight += 1;
        state.requests += 1;
        state.parkable = parkable;
        drop(state);
        ActivityGuard(Arc::clone(self))
    }

    /// How many requests arrived.
    fn requests(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .requests
    }

    /// The number of requests seen, when the connection can be parked now: nothing in flight,
    /// the last request without a body or upgrade, no write blocked.
    fn parkable(&self) -> Option<u64> {
        if self.write_blocked.load(Ordering::Relaxed) {
            return None;
        }
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        (state.in_flight == 0 && state.requests > 0 && state.parkable).then_some(state.requests)
    }

    /// Resolves when the connection has been silent or idle for too long, or (with
    /// `timers.park`) idle long enough to be parked.
    ///
    /// HTTP/1.1 (`timers.http1`): polled after the connection on every wake of its task.
    async fn expired(&self, started: Instant, server: &Server, timers: Timers) -> Expiry {
        let mut sleep = std::pin::pin!(tokio::time::sleep_until(started));
        loop {
            let ended = self.ended.load(Ordering::Acquire);
            let deadline = match self.due(started, server, timers) {
                Due::At(deadline) => deadline,
                Due::Now(expiry) => return expiry,
            };
            sleep.as_mut().reset(deadline);
            let mut changed = std::pin::pin!(self.changed.notified());
            std::future::poll_fn(|cx| {
                if self.ended.load(Ordering::Acquire) != ended
                    || (!timers.http1 && changed.as_mut().poll(cx).is_ready())
                {
                    return Poll::Ready(());
                }
                sleep.as_mut().poll(cx)
            })
            .await;
        }
    }

    /// The connection's next deadline under `timers`, as it stands now.
    fn due(&self, started: Instant, server: &Server, timers: Timers) -> Due {
        let (in_flight, requests, parkable, idle_since) = {
            let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            (
                state.in_flight,
                state.requests,
                state.parkable,
                state.idle_since,
            )
        };
        let now = Instant::now();
        if requests == 0 {
            let deadline = started + server.header_read_timeout;
            if now >= deadline {
                return Due::Now(Expiry::Silent);
            }
            return Due::At(deadline);
        }
        if in_flight > 0 {
            // Busy: nothing expires until the last request ends (and says so).
            return Due::At(now + server.idle_timeout.max(server.header_read_timeout));
        }
        let mut deadline = idle_since + server.idle_timeout;
        if now >= deadline {
            return Due::Now(Expiry::Idle);
        }
        // After a request without a body, the next head is due as hyper counts it (from when
        // the last response was sent), also across a park. After one with a body hyper's own
        // timer starts when the body is read.
        if timers.http1 && parkable {
            let head = idle_since + server.header_read_timeout;
            if now >= head {
                return Due::Now(Expiry::Silent);
            }
            deadline = deadline.min(head);
            if timers.park && timers.held_off != Some(requests) {
                let park = idle_since + PARK_AFTER;
                if now >= park {
                    return Due::Now(Expiry::Park);
                }
                deadline = deadline.min(park);
            }
        }
        Due::At(deadline)
    }
}

/// A connection's next deadline, or what has already expired.
enum Due {
    At(Instant),
    Now(Expiry),
}

/// Marks the end of a request (its response sent or abandoned).
struct ActivityGuard(Arc<Activity>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.in_flight -= 1;
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
        }
        drop(state);
        self.0.ended.fetch_add(1, Ordering::Release);
        // No waiter (HTTP/1.1): this only leaves a permit, which costs no wake-up.
        self.0.changed.notify_one();
    }
}

/// Backs off after accept errors and keeps their logging to one line per interval, however
/// fast they come.
#[derive(Default)]
struct AcceptBackoff {
    pause: Option<Duration>,
    last_log: Option<Instant>,
    suppressed: u64,
}

impl AcceptBackoff {
    async fn failed(&mut self, error: &io::Error) {
        let now = Instant::now();
        if self
            .last_log
            .is_none_or(|at| now.duration_since(at) >= ACCEPT_LOG_INTERVAL)
        {
            warn!(
                %error,
                suppressed = self.suppressed,
                "cannot accept connections (out of file descriptors?); backing off"
            );
            self.last_log = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        let pause = self
            .pause
            .map_or(ACCEPT_BACKOFF_MIN, |p| (p * 2).min(ACCEPT_BACKOFF_MAX));
        self.pause = Some(pause);
        tokio::time::sleep(pause).await;
    }

    fn succeeded(&mut self) {
        if self.pause.take().is_some() && self.suppressed > 0 {
            info!(suppressed = self.suppressed, "accepting connections again");
            self.suppressed = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: HeaderName = HeaderName::from_static("x-client-cert");
    const SESSION_DER: &[u8] = b"\x30\x03\x02\x01\x01";
    // URL-encoded PEM of the DER 30 03 02 01 02, as nginx's `$ssl_client_escaped_cert`.
    const ESCAPED: &str =
        "-----BEGIN%20CERTIFICATE-----%0AMAMCAQI%3D%0A-----END%20CERTIFICATE-----%0A";
    const HEADER_DER: &[u8] = b"\x30\x03\x02\x01\x02";

    fn context(trusted: bool, session: bool) -> RequestContext {
        RequestContext {
            peer: "127.0.0.1:4000".parse().unwrap(),
            over_tls: session,
            trusted,
            session_certificate: session.then(|| PeerCertificate::from_der(SESSION_DER)),
            cert_header: Some(HEADER),
        }
    }

    fn prepared(context: &RequestContext, header: Option<&str>) -> Request<()> {
        let mut builder = Request::builder();
        if let Some(value) = header {
            builder = builder.header(HEADER, value);
        }
        let mut req = builder.body(()).unwrap();
        context.prepare(&mut req);
        assert!(
            req.headers().get(HEADER).is_none(),
            "the header is never forwarded"
        );
        req
    }

    fn der(req: &Request<()>) -> Option<&[u8]> {
        req.extensions()
            .get::<PeerCertificate>()
            .map(PeerCertificate::der)
    }

    #[test]
    fn the_session_certificate_reaches_every_request() {
        let context = context(false, true);
        for _ in 0..2 {
            let req = prepared(&context, None);
            assert_eq!(der(&req), Some(SESSION_DER));
            assert!(req.extensions().get::<ArrivedOverTls>().is_some());
        }
    }

    #[test]
    fn the_header_certificate_counts_only_from_trusted_proxies() {
        let trusted = prepared(&context(true, false), Some(ESCAPED));
        assert_eq!(der(&trusted), Some(HEADER_DER));
        assert!(trusted.extensions().get::<ArrivedOverTls>().is_none());

        let untrusted = prepared(&context(false, false), Some(ESCAPED));
        assert_eq!(der(&untrusted), None);
        let untrusted_tls = prepared(&context(false, true), Some(ESCAPED));
        assert_eq!(
            der(&untrusted_tls),
            Some(SESSION_DER),
            "the header changes nothing"
        );
    }

    #[test]
    fn a_trusted_header_replaces_the_session_certificate_and_a_bad_one_leaves_none() {
        let context = context(true, true);
        assert_eq!(der(&prepared(&context, Some(ESCAPED))), Some(HEADER_DER));
        assert_eq!(der(&prepared(&context, None)), Some(SESSION_DER));
        assert_eq!(der(&prepared(&context, Some("garbage"))), None);
    }
}
