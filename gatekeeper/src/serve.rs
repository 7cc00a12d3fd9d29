//! The listener: accepting client connections within `max_connections`, backing off when
//! accepting fails, and serving each connection (HTTP/1.1 and HTTP/2) under the `[server]`
//! timeouts until it ends or the gateway shuts down.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http::header::HeaderName;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower_gatekeeper::authorize::ClientAddr;
use tower_gatekeeper::credential::PeerCertificate;
use tracing::{debug, info, warn};

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
    let builder = Arc::new(http_builder(&server));
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
        tokio::spawn(serve_connection(
            stream,
            peer,
            Connection {
                live: live.clone(),
                builder: Arc::clone(&builder),
                server: Arc::clone(&server),
                tls: tls.as_ref().map(|tls| tls.acceptor.clone()),
                cert_header: cert_header.clone(),
                stop: stop_rx.clone(),
                slot: Arc::new(slot),
            },
        ));
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

/// The HTTP/1.1 + HTTP/2 server settings shared by every connection.
fn http_builder(server: &Server) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper counts the wait for each request head, including the next one on a keep-alive
    // connection, as header reading: an idle HTTP/1.1 connection is closed after the
    // shorter of this and the idle timeout (as HAProxy's `timeout http-keep-alive` falls
    // back to `timeout http-request`).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(H2_KEEP_ALIVE_INTERVAL))
        .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT);
    builder
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
    builder: Arc<auto::Builder<TokioExecutor>>,
    server: Arc<Server>,
    /// `[tls]` with a certificate: the connection starts with a TLS handshake.
    tls: Option<TlsAcceptor>,
    /// `[tls] client_cert_header`: removed from every request, read from trusted proxies.
    cert_header: Option<HeaderName>,
    /// Becomes `true` when the gateway shuts down.
    stop: watch::Receiver<bool>,
    /// Returned to the listener when the connection ends (a WebSocket tunnel the connection
    /// became holds it until the tunnel closes).
    slot: Arc<OwnedSemaphorePermit>,
}

/// Serves one connection: its TLS handshake first when `[tls]` has a certificate, bounded by
/// the header-read timeout like the first request head, then [`serve_http`].
async fn serve_connection(stream: TcpStream, peer: SocketAddr, mut conn: Connection) {
    let _ = stream.set_nodelay(true);
    let started = Instant::now();
    let Some(acceptor) = conn.tls.clone() else {
        return serve_http(TokioIo::new(stream), peer, None, started, conn).await;
    };
    let deadline = started + conn.server.header_read_timeout;
    let handshake = tokio::time::timeout_at(deadline, tls::accept(&acceptor, stream));
    let accepted = tokio::select! {
        accepted = handshake => accepted,
        _ = conn.stop.wait_for(|stop| *stop) => return,
    };
    match accepted {
        Ok(Ok(stream)) => {
            // The protocol ALPN chose is the one served; without ALPN, either is detected.
            let alpn = stream.get_ref().1.alpn_protocol();
            if alpn == Some(b"h2") {
                conn.builder = Arc::new(conn.builder.as_ref().clone().http2_only());
            } else if alpn == Some(b"http/1.1") {
                conn.builder = Arc::new(conn.builder.as_ref().clone().http1_only());
            }
            let session = TlsSession {
                certificate: tls::session_certificate(&stream),
            };
            serve_http(TokioIo::new(stream), peer, Some(session), started, conn).await;
        }
        Ok(Err(error)) => debug!(%peer, %error, "TLS handshake failed"),
        Err(_) => debug!(%peer, "no TLS handshake within the header-read timeout; closing"),
    }
}

/// What a TLS connection's requests carry.
struct TlsSession {
    /// The leaf certificate the client presented.
    certificate: Option<PeerCertificate>,
}

/// Serves one connection's HTTP until it ends, the gateway shuts down (then gracefully), it
/// stays silent past the header-read timeout counted from `started` (then at once) or idle
/// past the idle timeout (then gracefully).
async fn serve_http<I>(
    io: TokioIo<I>,
    peer: SocketAddr,
    session: Option<TlsSession>,
    started: Instant,
    mut conn: Connection,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let live = conn.live.clone();
    let tracked = Arc::clone(&activity);
    let context = RequestContext {
        peer,
        over_tls: session.is_some(),
        trusted: conn.server.trusts(peer.ip()),
        session_certificate: session.and_then(|s| s.certificate),
        cert_header: conn.cert_header.clone(),
    };
    let hold = crate::websocket::ConnectionHold::new(Arc::clone(&conn.slot), conn.stop.clone());
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let guard = tracked.begin();
        context.prepare(&mut req);
        req.extensions_mut().insert(hold.clone());
        // Each request is served with the configuration current when it arrives.
        let gateway = live.gateway();
        async move {
            let response = gateway.handle_logged(req).await;
            Ok::<_, Infallible>(response.map(|body| Held::new(body, guard)))
        }
    });
    let connection = conn.builder.serve_connection_with_upgrades(io, service);
    let mut connection = std::pin::pin!(connection);
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
            expiry = activity.expired(started, &conn.server), if !closing => match expiry {
                Expiry::Silent => {
                    debug!(%peer, "no request within the header-read timeout; closing");
                    return;
                }
                Expiry::Idle => {
                    debug!(%peer, "idle past the idle timeout; closing");
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            },
        }
    };
    if let Err(error) = result {
        debug!(%peer, error = %error_chain(&*error), "connection closed with an error");
    }
}

/// What a connection is doing, for its timeouts: requests in flight (a request counts until
/// its response body is sent), whether any request arrived, and since when it is idle.
struct Activity {
    state: Mutex<ActivityState>,
    /// Wakes the timer when a request begins or ends, so it recomputes its deadline.
    changed: Notify,
}

struct ActivityState {
    in_flight: usize,
    seen: bool,
    idle_since: Instant,
}

/// Why a connection's timer ran out.
enum Expiry {
    /// No request head arrived within the header-read timeout.
    Silent,
    /// No request was in flight for the idle timeout.
    Idle,
}

impl Activity {
    fn new() -> Self {
        Activity {
            state: Mutex::new(ActivityState {
                in_flight: 0,
                seen: false,
                idle_since: Instant::now(),
            }),
            changed: Notify::new(),
        }
    }

    /// A request arrived; it counts as in flight until the guard is dropped.
    fn begin(self: &Arc<Self>) -> ActivityGuard {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.in_flight += 1;
        state.seen = true;
        drop(state);
        self.changed.notify_one();
        ActivityGuard(Arc::clone(self))
    }

    /// Resolves when the connection has been silent or idle for too long.
    async fn expired(&self, started: Instant, server: &Server) -> Expiry {
        loop {
            let (in_flight, seen, idle_since) = {
                let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                (state.in_flight, state.seen, state.idle_since)
            };
            let now = Instant::now();
            let deadline = if !seen {
                let deadline = started + server.header_read_timeout;
                if now >= deadline {
                    return Expiry::Silent;
                }
                deadline
            } else if in_flight > 0 {
                // Busy: nothing expires until the last request ends (and says so).
                now + server.idle_timeout.max(server.header_read_timeout)
            } else {
                let deadline = idle_since + server.idle_timeout;
                if now >= deadline {
                    return Expiry::Idle;
                }
                deadline
            };
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = self.changed.notified() => {}
            }
        }
    }
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
