//! WebSocket tunnels (`[[route]] websocket = true`): the HTTP/1.1 upgrade handshake goes
//! through the route's stack like any request (authenticated, authorized, identity
//! propagated), is forwarded upstream over HTTP/1.1 with its `Upgrade` and `Connection`
//! headers, and when the upstream answers `101 Switching Protocols` the gateway answers 101
//! too and relays bytes both ways between the two upgraded connections until either side
//! closes or the caller's credential expires.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Method, Request, Response, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tower_gatekeeper::AuthContext;
use tracing::debug;

use crate::serve::GatewayBody;

/// How long each side gets to take the closing of its connection when the credential expires.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Whether `req` is a WebSocket opening handshake (RFC 6455 §4.1): an HTTP/1.1 `GET` with
/// `Connection: upgrade` and `Upgrade: websocket`.
pub(crate) fn is_handshake<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.method() == Method::GET
        && has_token(req.headers(), &header::CONNECTION, "upgrade")
        && has_token(req.headers(), &header::UPGRADE, "websocket")
}

/// Whether the comma-separated header `name` lists `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Puts back the two hop-by-hop headers an upgrade travels on, once the others are removed.
pub(crate) fn keep_upgrade(headers: &mut HeaderMap) {
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

/// What a client connection holds, carried by its requests: its place among `[server]
/// max_connections`, which a tunnel keeps until it closes, and the gateway's shutdown signal,
/// which closes tunnels.
#[derive(Clone)]
pub(crate) struct ConnectionHold {
    _slot: Arc<OwnedSemaphorePermit>,
    stop: watch::Receiver<bool>,
}

impl ConnectionHold {
    pub(crate) fn new(slot: Arc<OwnedSemaphorePermit>, stop: watch::Receiver<bool>) -> Self {
        ConnectionHold { _slot: slot, stop }
    }
}

/// The client's side of a handshake: its connection once upgraded, and when the credential
/// it authenticated with expires.
pub(crate) struct ClientSide {
    upgrade: OnUpgrade,
    expires_at: Option<SystemTime>,
    hold: Option<ConnectionHold>,
}

impl ClientSide {
    /// Takes the client connection's upgrade out of `req`, and with `close_on_expiry` the
    /// expiry of the [`AuthContext`] the route's authentication put in it (none on public
    /// routes or for anonymous callers of optional ones).
    pub(crate) fn take(req: &mut Request<Incoming>, close_on_expiry: bool) -> Self {
        ClientSide {
            upgrade: hyper::upgrade::on(&mut *req),
            expires_at: req
                .extensions()
                .get::<AuthContext>()
                .and_then(AuthContext::expires_at)
                .filter(|_| close_on_expiry),
            hold: req.extensions_mut().remove::<ConnectionHold>(),
        }
    }

    /// The gateway's 101 for the upstream's `response`, and the relay between the two
    /// connections started in the background. `slot` (`max_concurrency`) is held as long
    /// as the tunnel is open.
    pub(crate) fn relay(
        self,
        mut response: Response<Incoming>,
        slot: Option<OwnedSemaphorePermit>,
        upstream: Authority,
    ) -> Response<GatewayBody> {
        let upstream_side = hyper::upgrade::on(&mut response);
        let (mut parts, _) = response.into_parts();
        crate::proxy::remove_hop_by_hop(&mut parts.headers);
        keep_upgrade(&mut parts.headers);
        tokio::spawn(tunnel(
            self.upgrade,
            upstream_side,
            self.expires_at,
            (slot, self.hold),
            upstream,
        ));
        Response::from_parts(parts, Empty::new().map_err(|e| match e {}).boxed())
    }
}

/// Relays bytes both ways until a side closes, or until `expires_at` or the gateway's
/// shutdown: then both connections are shut down and dropped. The route's
/// `max_concurrency` slot and the connection's hold are kept until then.
async fn tunnel(
    client: OnUpgrade,
    upstream_side: OnUpgrade,
    expires_at: Option<SystemTime>,
    held: (Option<OwnedSemaphorePermit>, Option<ConnectionHold>),
    upstream: Authority,
) {
    let (_slot, hold) = held;
    let mut stop = hold.as_ref().map(|hold| hold.stop.clone());
    let (client, upstream_io) = match tokio::try_join!(client, upstream_side) {
        Ok(both) => both,
        Err(error) => {
            debug!(%upstream, %error, "WebSocket upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream_io = TokioIo::new(upstream_io);
    let relay = tokio::io::copy_bidirectional(&mut client, &mut upstream_io);
    let expiry = async {
        match expires_at {
            Some(at) => {
                let left = at
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO);
                tokio::time::sleep(left).await;
            }
            None => std::future::pending().await,
        }
    };
    let shutdown = async {
        match &mut stop {
            Some(stop) => {
                let _ = stop.wait_for(|stop| *stop).await;
            }
            None => std::future::pending().await,
        }
    };
    let why = tokio::select! {
        outcome = relay => {
            match outcome {
                Ok((up, down)) => {
                    debug!(%upstream, bytes_up = up, bytes_down = down, "WebSocket tunnel closed");
                }
                Err(error) => debug!(%upstream, %error, "WebSocket tunnel ended with an error"),
            }
            return;
        }
        () = expiry => "credential expired",
        () = shutdown => "gateway shutting down",
    };
    debug!(%upstream, why, "closing the WebSocket tunnel");
    let _ = tokio::time::timeout(CLOSE_GRACE, client.shutdown()).await;
    let _ = tokio::time::timeout(CLOSE_GRACE, upstream_io.shutdown()).await;
}
