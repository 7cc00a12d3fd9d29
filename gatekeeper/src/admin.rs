use std::convert::Infallible;
use std::future::{self, Future};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::BoxError;
use crate::admin_actions::{ACTIONS, action, shadow_counts};
use crate::reload::Live;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tracing::{info, warn};

/// Serves the admin endpoints on `listener` until `shutdown` resolves: `/healthz` (200 while
/// the process serves), `/readyz` (200 once `ready` resolved `Ok`: every issuer has keys;
/// 503 before) and `/metrics` (Prometheus text; needs the `metrics` feature).
///
/// # Errors
///
/// Only when the listener's address cannot be read.
pub async fn run_admin(
    listener: TcpListener,
    ready: impl Future<Output = Result<(), String>> + Send + 'static,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_admin(listener, None, ready, shutdown).await
}

/// Serves the admin endpoints of [`run_admin`] for `live`, plus its actions: `POST
/// /revoke/token`, `/revoke/subject`, `/keys/refresh` and `/reload` (behind the admin token;
/// 404 saying so without one) and `GET /shadow` (the shadow rules' counts).
///
/// # Errors
///
/// Only when the listener's address cannot be read.
pub async fn run_admin_live(
    listener: TcpListener,
    live: Live,
    ready: impl Future<Output = Result<(), String>> + Send + 'static,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_admin(listener, Some(live), ready, shutdown).await
}

async fn serve_admin(
    listener: TcpListener,
    live: Option<Live>,
    ready: impl Future<Output = Result<(), String>> + Send + 'static,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let local = listener.local_addr()?;
    let is_ready = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&is_ready);
    tokio::spawn(async move {
        if ready.await.is_ok() {
            flag.store(true, Ordering::Release);
        }
    });
    #[cfg(feature = "metrics")]
    let _ = prometheus();
    info!(address = %local, "admin listening (/healthz, /readyz, /metrics, /shadow, admin actions)");
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "admin: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let is_ready = Arc::clone(&is_ready);
        let live = live.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let ready = is_ready.load(Ordering::Acquire);
                let live = live.clone();
                async move {
                    let path = req.uri().path();
                    let response = if ACTIONS.contains(&path) {
                        action(live.as_ref(), req).await
                    } else if path == "/shadow"
                        && matches!(*req.method(), Method::GET | Method::HEAD)
                    {
                        shadow_counts(live.as_ref())
                    } else {
                        admin_response(req.method(), path, ready)
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

pub(crate) fn admin_response(method: &Method, path: &str, ready: bool) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: &'static str| {
        let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    };
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if ready => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: verification keys are not loaded yet\n",
        ),
        "/metrics" => metrics_response(),
        _ => text(
            StatusCode::NOT_FOUND,
            "admin endpoints: /healthz /readyz /metrics /shadow; POST /revoke/token /revoke/subject /keys/refresh /reload\n",
        ),
    }
}

#[cfg(feature = "metrics")]
pub(crate) fn metrics_response() -> Response<Full<Bytes>> {
    let handle = prometheus();
    handle.run_upkeep();
    let mut response = Response::new(Full::new(Bytes::from(handle.render())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn metrics_response() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(
        b"metrics need the `metrics` feature: build gatekeeper with its default features (cargo install --path gatekeeper)\n",
    )));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

/// The process-wide Prometheus recorder, installed on first use.
#[cfg(feature = "metrics")]
pub(crate) fn prometheus() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            warn!("another metrics recorder is installed; /metrics will be empty");
        }
        handle
    })
}

/// Starts the admin listener when `admin_listen` is configured, serving `live`'s actions
/// ([`run_admin_live`]); `/readyz` answers 200 once `ready` resolved `Ok`
/// ([`Config::keys_ready`](crate::Config::keys_ready)). It lives as long as the process.
pub async fn start_admin(
    live: &Live,
    ready: impl Future<Output = Result<(), String>> + Send + 'static,
) -> Result<(), BoxError> {
    if let Some(addr) = live.admin_listen() {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} (`admin_listen`): {e}"))?;
        tokio::spawn(run_admin_live(
            listener,
            live.clone(),
            ready,
            future::pending(),
        ));
    }
    Ok(())
}
