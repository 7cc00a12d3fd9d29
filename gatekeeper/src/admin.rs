use std::convert::Infallible;
use std::fmt;
use std::future::{self, Future};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::BoxError;
use crate::Config;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower_gatekeeper::audit::{DecisionEvent, Outcome, Stage};
use tracing::{info, warn};

/// Audit records as JSON lines (`audit_log = "stdout"` or a file path, appended to).
///
/// Records are written by a dedicated thread: the request path only formats the record and
/// hands it over without blocking. When the writer falls 8192 records behind, records are
/// dropped (and counted) rather than slowing requests down.
#[derive(Clone)]
pub(crate) struct AuditLog {
    pub(crate) tx: std::sync::mpsc::SyncSender<String>,
    pub(crate) dropped: Arc<std::sync::atomic::AtomicU64>,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

impl AuditLog {
    pub(crate) fn open(target: &str, base: &Path) -> Result<AuditLog, String> {
        let mut out: Box<dyn io::Write + Send> = if target == "stdout" {
            Box::new(io::stdout())
        } else if target.is_empty() {
            return Err(
                "`audit_log` is empty; use \"stdout\" or a file path (appended to)".to_owned(),
            );
        } else {
            let path = base.join(target);
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| format!("`audit_log` {:?}: cannot open: {e}", path.display()))?;
            Box::new(io::BufWriter::new(file))
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<String>(8192);
        std::thread::Builder::new()
            .name("audit-log".to_owned())
            .spawn(move || {
                while let Ok(line) = rx.recv() {
                    let mut write = |line: String| {
                        out.write_all(line.as_bytes())
                            .and_then(|()| out.write_all(b"\n"))
                    };
                    let mut result = write(line);
                    while let Ok(more) = rx.try_recv() {
                        result = result.and_then(|()| write(more));
                    }
                    if let Err(error) = result.and_then(|()| out.flush()) {
                        warn!(%error, "cannot write the audit log");
                    }
                }
            })
            .map_err(|e| format!("`audit_log`: cannot start the writer thread: {e}"))?;
        Ok(AuditLog {
            tx,
            dropped: Arc::default(),
        })
    }

    /// The hook for both layers. A request that authenticates is recorded once, by the
    /// authorize layer (which sees the caller); denials are recorded by the layer that denied.
    pub(crate) fn hook(&self) -> impl Fn(&DecisionEvent<'_>) + Send + Sync + 'static {
        let audit = self.clone();
        move |event: &DecisionEvent<'_>| {
            if event.stage() == Stage::Authenticate && event.outcome() == Outcome::Allow {
                return;
            }
            if audit.tx.try_send(event.to_json().to_string()).is_err() {
                let dropped = audit
                    .dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if dropped.is_power_of_two() {
                    warn!(dropped = dropped + 1, "audit log behind; records dropped");
                }
            }
        }
    }
}

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
    info!(address = %local, "admin listening (/healthz, /readyz, /metrics)");
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
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let ready = is_ready.load(Ordering::Acquire);
                async move { Ok::<_, Infallible>(admin_response(req.method(), req.uri().path(), ready)) }
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
            "admin endpoints: /healthz /readyz /metrics\n",
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

/// Starts the admin listener when `admin_listen` is configured; it lives as long as the process.
pub async fn start_admin(config: &Config) -> Result<(), BoxError> {
    if let Some(addr) = config.admin_listen() {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} (`admin_listen`): {e}"))?;
        tokio::spawn(run_admin(listener, config.keys_ready(), future::pending()));
    }
    Ok(())
}
