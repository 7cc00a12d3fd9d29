//! [`JsonLines`]: a [`DecisionHook`] that writes one JSON object per decision and line.

use std::fmt;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use super::{DecisionEvent, DecisionHook, Outcome, Stage};

/// Writes every decision to an audit trail as JSON lines: one object per line, the record of
/// [`DecisionEvent::to_json`] (never a token or a secret).
///
/// The request path only formats the record and hands it to a writer thread without
/// blocking. That thread writes through a buffer and flushes it whenever it has caught up, so
/// a burst costs one flush and a quiet trail is on disk (or stdout) within moments. When the
/// writer falls [`capacity`](Self::with_capacity) records behind (8192 by default), records
/// are dropped and counted ([`dropped`](Self::dropped)) rather than slowing requests down.
/// Drops and write errors are logged at `WARN` at a bounded rate (drops at 1, 2, 4, 8, …;
/// write errors at most once a minute, with the count), to the `tracing` subscriber that was
/// current when the writer was created. Nothing here panics; a writer that fails keeps being
/// tried for the next records.
///
/// Clones share the writer thread, which ends (after a last flush) when every clone is
/// dropped. Install the same `JsonLines` on both layers with
/// [`once_per_request`](Self::once_per_request) to get one record per request.
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response, StatusCode};
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_gatekeeper::audit::JsonLines;
/// use tower_gatekeeper::authorize::Authenticated;
/// use tower_gatekeeper::keys::{SigningKey, StaticKeys};
/// use tower_gatekeeper::{AuthenticateLayer, AuthorizeLayer, JwtAuthenticator, jwt::Validation};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
/// # let dir = std::env::temp_dir().join(format!("gatekeeper-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// # let path = dir.join("audit.jsonl");
/// let signer = SigningKey::generate_ed25519().unwrap();
/// let keys = StaticKeys::new([signer.verifying_key().clone()]);
/// let auth = JwtAuthenticator::new(keys, Validation::new("https://idp").any_audience()).unwrap();
///
/// let audit = JsonLines::append_to(&path)?.once_per_request();
/// let service = ServiceBuilder::new()
///     .layer(AuthenticateLayer::new(auth).on_decision(audit.clone()))
///     .layer(AuthorizeLayer::new(Authenticated).on_decision(audit.clone()))
///     .service_fn(|_req: Request<String>| async {
///         Ok::<_, Infallible>(Response::new(String::new()))
///     });
///
/// let request = Request::builder().uri("/orders").body(String::new()).unwrap();
/// assert_eq!(service.oneshot(request).await.unwrap().status(), StatusCode::UNAUTHORIZED);
/// audit.flush();
/// let trail = std::fs::read_to_string(&path)?;
/// let record: serde_json::Value = serde_json::from_str(trail.lines().last().unwrap()).unwrap();
/// assert_eq!(record["outcome"], "deny");
/// assert_eq!(record["path"], "/orders");
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct JsonLines {
    tx: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
    once_per_request: bool,
}

enum Message {
    Line(String),
    /// Answered once everything sent before is written and flushed.
    Flush(mpsc::Sender<()>),
}

/// How often write errors are logged at most.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);

impl JsonLines {
    /// How many records may wait for the writer before new ones are dropped.
    pub const DEFAULT_CAPACITY: usize = 8192;

    /// Writes the records to `writer` (a file, `std::io::stdout()`, a socket, …), buffered.
    ///
    /// # Errors
    ///
    /// When the writer thread cannot be started.
    pub fn new(writer: impl Write + Send + 'static) -> io::Result<Self> {
        Self::with_capacity(writer, Self::DEFAULT_CAPACITY)
    }

    /// [`new`](Self::new) with room for `capacity` waiting records (at least one).
    ///
    /// # Errors
    ///
    /// When the writer thread cannot be started.
    pub fn with_capacity(writer: impl Write + Send + 'static, capacity: usize) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        std::thread::Builder::new()
            .name("gatekeeper-audit".to_owned())
            .spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || write_loop(&rx, writer));
            })?;
        Ok(JsonLines {
            tx,
            dropped: Arc::default(),
            once_per_request: false,
        })
    }

    /// Appends the records to the file at `path`, created if missing.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened for appending, or the writer thread cannot be started.
    pub fn append_to(path: impl AsRef<Path>) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Self::new(file)
    }

    /// Records a request once when this writer is installed on both layers: the
    /// [`AuthenticateLayer`](crate::AuthenticateLayer)'s allows are left out, since the
    /// [`AuthorizeLayer`](crate::AuthorizeLayer) records the same request with its verdict;
    /// denials are recorded by the layer that denied. Without an authorize layer behind it,
    /// allowed requests are then not recorded at all.
    #[must_use]
    pub fn once_per_request(mut self) -> Self {
        self.once_per_request = true;
        self
    }

    /// How many records were dropped so far because the writer was behind (or had stopped).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Blocks until every record handed over before this call is written and flushed (for
    /// shutdown and tests; never call it on a request path). Returns at once when the
    /// writer thread has stopped.
    pub fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if self.tx.send(Message::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

impl DecisionHook for JsonLines {
    fn on_decision(&self, event: &DecisionEvent<'_>) {
        if self.once_per_request
            && event.stage() == Stage::Authenticate
            && event.outcome() == Outcome::Allow
        {
            return;
        }
        match self.tx.try_send(Message::Line(event.to_json().to_string())) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    tracing::warn!(dropped, "audit log behind; records dropped");
                }
            }
        }
    }
}

impl fmt::Debug for JsonLines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLines")
            .field("dropped", &self.dropped())
            .field("once_per_request", &self.once_per_request)
            .finish_non_exhaustive()
    }
}

/// The writer thread: writes what arrives, flushes whenever the queue is empty, answers
/// flush requests after flushing, and flushes a last time when every sender is gone.
fn write_loop(rx: &Receiver<Message>, writer: impl Write) {
    let mut out = BufWriter::with_capacity(64 * 1024, writer);
    let mut errors = ErrorLog::default();
    let mut waiting: Vec<mpsc::Sender<()>> = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Line(line) => {
                    let written = out
                        .write_all(line.as_bytes())
                        .and_then(|()| out.write_all(b"\n"));
                    errors.record(written);
                }
                Message::Flush(done) => waiting.push(done),
            }
            next = rx.try_recv().ok();
        }
        errors.record(out.flush());
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
    errors.record(out.flush());
}

/// Write errors, logged at most once per [`ERROR_LOG_INTERVAL`].
#[derive(Default)]
struct ErrorLog {
    unlogged: u64,
    last_logged: Option<Instant>,
}

impl ErrorLog {
    fn record(&mut self, result: io::Result<()>) {
        let Err(error) = result else { return };
        self.unlogged += 1;
        let now = Instant::now();
        if self
            .last_logged
            .is_none_or(|at| now.duration_since(at) >= ERROR_LOG_INTERVAL)
        {
            tracing::warn!(%error, errors = self.unlogged, "cannot write the audit log");
            self.unlogged = 0;
            self.last_logged = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Condvar, Mutex};

    use http::Request;
    use serde_json::Value;

    use super::*;
    use crate::audit::{HookSlot, Observation};
    use crate::context::{AuthContext, CredentialKind};
    use crate::reject::Rejection;

    /// An in-memory writer whose contents the test reads.
    #[derive(Clone, Default)]
    struct Memory(Arc<Mutex<Vec<u8>>>);

    impl Write for Memory {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Memory {
        fn records(&self) -> Vec<Value> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        }
    }

    const TOKEN: &str =
        "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0.eyJpc3MiOiJodHRwczovL2lkcCJ9.c2VjcmV0LXNpZw";

    /// One decision of `stage` about a request carrying [`TOKEN`], observed by `audit`.
    fn decide(audit: &JsonLines, stage: Stage, outcome: Outcome) {
        let req = Request::builder()
            .uri("/orders/7?access_token=query-secret")
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("x-request-id", "req-1")
            .body(())
            .unwrap();
        let hook = HookSlot(Some(Arc::new(audit.clone())));
        let observation = Observation::start(stage, &hook, &req, true);
        match outcome {
            Outcome::Allow => {
                let ctx = AuthContext::builder(CredentialKind::Jwt)
                    .subject("alice")
                    .build();
                observation.finish(Outcome::Allow, "authenticated", Some(&ctx), None);
            }
            Outcome::Deny => {
                let rejection = Rejection::invalid_token("signature invalid");
                observation.finish(
                    Outcome::Deny,
                    rejection.description(),
                    None,
                    Some(&rejection),
                );
            }
        }
    }

    #[test]
    fn one_json_record_per_line_without_token_or_query() {
        let memory = Memory::default();
        let audit = JsonLines::new(memory.clone()).unwrap();
        decide(&audit, Stage::Authenticate, Outcome::Deny);
        decide(&audit, Stage::Authenticate, Outcome::Allow);
        decide(&audit, Stage::Authorize, Outcome::Allow);
        audit.flush();
        let records = memory.records();
        assert_eq!(records.len(), 3);
        let deny = &records[0];
        assert_eq!(deny["stage"], "authenticate");
        assert_eq!(deny["outcome"], "deny");
        assert_eq!(deny["reason"], "signature invalid");
        assert_eq!(deny["status"], 401);
        assert_eq!(deny["error"], "invalid_token");
        assert_eq!(deny["path"], "/orders/7");
        assert_eq!(deny["request_id"], "req-1");
        assert_eq!(deny["kid"], "k1");
        assert_eq!(deny["alg"], "ES256");
        assert_eq!(records[1]["subject"], "alice");
        assert_eq!(records[2]["stage"], "authorize");
        let mut keys: Vec<_> = deny.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "alg",
                "credential",
                "error",
                "issuer",
                "kid",
                "latency_us",
                "method",
                "outcome",
                "path",
                "protocol",
                "reason",
                "request_id",
                "roles",
                "scopes",
                "stage",
                "status",
                "subject",
                "tenant",
                "time"
            ]
        );
        let text = String::from_utf8(memory.0.lock().unwrap().clone()).unwrap();
        for secret in [TOKEN, "c2VjcmV0LXNpZw", "query-secret"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(audit.dropped(), 0);
    }

    #[test]
    fn once_per_request_leaves_out_only_authenticate_allows() {
        let memory = Memory::default();
        let audit = JsonLines::new(memory.clone()).unwrap().once_per_request();
        decide(&audit, Stage::Authenticate, Outcome::Allow);
        decide(&audit, Stage::Authorize, Outcome::Allow);
        decide(&audit, Stage::Authenticate, Outcome::Deny);
        decide(&audit, Stage::Authorize, Outcome::Deny);
        audit.flush();
        let seen: Vec<_> = memory
            .records()
            .iter()
            .map(|r| format!("{}/{}", r["stage"], r["outcome"]))
            .collect();
        assert_eq!(
            seen,
            [
                "\"authorize\"/\"allow\"",
                "\"authenticate\"/\"deny\"",
                "\"authorize\"/\"deny\""
            ]
        );
    }

    /// A writer that blocks until the test opens its gate.
    #[derive(Clone, Default)]
    struct Gated {
        memory: Memory,
        gate: Arc<(Mutex<bool>, Condvar)>,
    }

    impl Write for Gated {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (open, changed) = &*self.gate;
            let mut open = open.lock().unwrap();
            while !*open {
                open = changed.wait(open).unwrap();
            }
            self.memory.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_writer_that_is_behind_costs_records_not_requests() {
        const SENT: u64 = 1000;
        let gated = Gated::default();
        let audit = JsonLines::with_capacity(gated.clone(), 4).unwrap();
        for _ in 0..SENT {
            decide(&audit, Stage::Authorize, Outcome::Deny);
        }
        // Before the writer blocks at the gate it holds at most its 64 KiB buffer (records
        // are over 300 bytes) and one record in hand; the queue holds 4 more.
        let dropped = audit.dropped();
        assert!(dropped >= SENT - (64 * 1024 / 300 + 1) - 4, "{dropped}");
        {
            let (open, changed) = &*gated.gate;
            *open.lock().unwrap() = true;
            changed.notify_all();
        }
        audit.flush();
        let written = gated.memory.records().len() as u64;
        assert_eq!(written + dropped, SENT);
        let bytes = gated.memory.0.lock().unwrap().len() as u64;
        assert!(
            bytes >= written * 300,
            "records of {} bytes",
            bytes / written
        );
        decide(&audit, Stage::Authorize, Outcome::Deny);
        audit.flush();
        assert_eq!(gated.memory.records().len() as u64, written + 1);
        assert_eq!(audit.dropped(), dropped);
    }

    /// A writer that always fails, counting how often it was asked.
    #[derive(Clone, Default)]
    struct Broken(Arc<AtomicU64>);

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::other("disk full"))
        }
    }

    /// A `MakeWriter` into a shared buffer, to read what was logged.
    #[derive(Clone, Default)]
    struct Logs(Memory);

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
        type Writer = Memory;
        fn make_writer(&'a self) -> Memory {
            self.0.clone()
        }
    }

    #[test]
    fn write_errors_are_logged_at_a_bounded_rate_and_never_panic() {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .finish();
        let broken = Broken::default();
        let audit = tracing::subscriber::with_default(subscriber, || {
            JsonLines::with_capacity(broken.clone(), 1024).unwrap()
        });
        for _ in 0..50 {
            decide(&audit, Stage::Authorize, Outcome::Deny);
            audit.flush();
        }
        assert!(broken.0.load(Ordering::Relaxed) >= 50);
        let text = String::from_utf8(logs.0.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text.matches("cannot write the audit log").count(),
            1,
            "{text}"
        );
        assert!(text.contains("disk full"), "{text}");
    }

    /// A writer that panics.
    struct Panicking;

    impl Write for Panicking {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            panic!("writer panicked on purpose");
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_writer_thread_that_died_drops_records_and_flush_returns() {
        let audit = JsonLines::with_capacity(Panicking, 1).unwrap();
        decide(&audit, Stage::Authorize, Outcome::Deny);
        // The thread panics on its first write (with a 64 KiB buffer: on the flush).
        audit.flush();
        for _ in 0..10 {
            decide(&audit, Stage::Authorize, Outcome::Deny);
        }
        audit.flush();
        assert!(audit.dropped() >= 9, "{}", audit.dropped());
    }

    #[test]
    fn append_to_appends_to_the_file() {
        let dir = std::env::temp_dir().join(format!(
            "gatekeeper-json-lines-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        std::fs::write(&path, "{\"earlier\":true}\n").unwrap();
        let audit = JsonLines::append_to(&path).unwrap();
        decide(&audit, Stage::Authorize, Outcome::Deny);
        audit.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], "{\"earlier\":true}");
        assert!(lines[1].contains("\"outcome\":\"deny\""));
        assert!(JsonLines::append_to(dir.join("missing/audit.jsonl")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
