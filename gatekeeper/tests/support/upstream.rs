//! The upstream: echoes what it got as JSON, counts requests, and has hooks for streaming and
//! shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

#[derive(Default)]
pub(crate) struct UpstreamState {
    hits: AtomicUsize,
    /// Signalled when a request body's first data frame arrives.
    pub(crate) first_chunk: Notify,
    /// Signalled when a `/hold/` request arrives; it then waits for `release`.
    pub(crate) arrived: Notify,
    pub(crate) release: Notify,
    /// `/download/` sends one chunk, then waits for this before sending the rest.
    pub(crate) client_got_first: Notify,
}

pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    pub(crate) state: Arc<UpstreamState>,
}

impl Upstream {
    pub(crate) async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(UpstreamState::default());
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(echo(req, state).await) }
                    });
                    // HTTP/1.1 and h2c (prior knowledge), as the gateway's routes choose.
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream { addr, state }
    }

    /// The echo upstream behind TLS (`config`'s certificate and ALPN), for `https://` routes.
    pub(crate) async fn start_tls(config: Arc<rustls::ServerConfig>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(UpstreamState::default());
        let shared = Arc::clone(&state);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(echo(req, state).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream { addr, state }
    }

    pub(crate) fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
}

pub(crate) const DOWNLOAD_FIRST: &[u8] = b"first chunk;";
pub(crate) const DOWNLOAD_REST: &[u8] = b"the rest";

async fn echo(
    req: Request<Incoming>,
    state: Arc<UpstreamState>,
) -> Response<BoxBody<Bytes, Infallible>> {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let (parts, mut body) = req.into_parts();
    if parts.uri.path().starts_with("/download/") {
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            tx.send(Bytes::from_static(DOWNLOAD_FIRST)).await.unwrap();
            state.client_got_first.notified().await;
            tx.send(Bytes::from_static(DOWNLOAD_REST)).await.unwrap();
        });
        return Response::new(ChannelBody(rx).boxed());
    }
    if parts.uri.path().starts_with("/hold/") {
        state.arrived.notify_one();
        state.release.notified().await;
    }
    let mut length = 0u64;
    let mut hash = Fnv::default();
    let mut first = true;
    while let Some(frame) = body.frame().await {
        // A body the gateway cut off ends the count.
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            if first && !data.is_empty() {
                first = false;
                state.first_chunk.notify_one();
            }
            length += data.len() as u64;
            hash.write(&data);
        }
    }
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let values: Vec<&str> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        headers.insert(name.as_str().to_owned(), values.join(", ").into());
    }
    let echo = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().unwrap().as_str(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_length": length,
        "body_hash": hash.0,
    });
    Response::new(Full::new(Bytes::from(echo.to_string())).boxed())
}

/// FNV-1a, to compare bodies without keeping them.
pub(crate) struct Fnv(pub(crate) u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A body fed chunk by chunk through a channel; ends when the sender is dropped.
pub(crate) struct ChannelBody(pub(crate) mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}
