//! Decision tracing, the audit hook, limits and metrics of the authenticate and authorize
//! layers, over the real layers with real tokens.

use std::convert::Infallible;
use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use tower::{ServiceBuilder, ServiceExt};
use tower_gatekeeper::audit::{DecisionEvent, JsonLines, Outcome, Stage};
use tower_gatekeeper::authorize::roles_any;
use tower_gatekeeper::jwt::Validation;
use tower_gatekeeper::keys::{SigningKey, StaticKeys};
use tower_gatekeeper::limits::Limits;
use tower_gatekeeper::{AuthContext, AuthenticateLayer, AuthorizeLayer, JwtAuthenticator};

const ISS: &str = "https://idp.example.test";

struct Fixture {
    signer: SigningKey,
    auth: JwtAuthenticator<StaticKeys>,
}

fn fixture() -> Fixture {
    let signer = SigningKey::generate_ed25519().unwrap().with_kid("kid-1");
    let keys = StaticKeys::new([signer.verifying_key().clone()]);
    let auth = JwtAuthenticator::new(keys, Validation::new(ISS).audiences(["api"])).unwrap();
    Fixture { signer, auth }
}

fn claims(extra: Value) -> Value {
    let mut base =
        json!({"iss": ISS, "aud": "api", "sub": "alice", "exp": 4102444800u64, "roles": ["clerk"]});
    base.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    base
}

fn request(path: &str, token: Option<&str>) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().uri(path);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    builder.body(Full::default()).unwrap()
}

async fn echo(req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let roles = req
        .extensions()
        .get::<AuthContext>()
        .map(|c| c.roles().len())
        .unwrap_or(0);
    Ok(Response::new(Full::new(Bytes::from(roles.to_string()))))
}

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// Serialises the tests of this binary. Tests running in parallel race on tracing's global
/// callsite interest cache: a callsite first hit by a test without a subscriber can stay
/// cached as "not interested" for one that captures logs (tokio-rs/tracing#2874).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Installs `subscriber` for the duration of `f`, with the interest cache rebuilt so that
/// every callsite sees it.
fn with_capture<S, R>(subscriber: S, f: impl FnOnce() -> R) -> R
where
    S: tracing::Subscriber + Send + Sync + 'static,
{
    tracing::subscriber::with_default(subscriber, || {
        tracing::callsite::rebuild_interest_cache();
        f()
    })
}

/// Runs `fut` on a current-thread runtime with a TRACE subscriber writing into the capture.
fn traced<F: Future>(fut: F) -> (F::Output, String) {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(capture.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_ansi(false)
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = with_capture(subscriber, || runtime.block_on(fut));
    (out, capture.text())
}

#[test]
fn decision_spans_carry_the_fields_and_never_the_token() {
    let _serial = serial();
    let f = fixture();
    let good = f.signer.sign(&claims(json!({}))).unwrap();
    let expired = f
        .signer
        .sign(&claims(json!({"exp": 1_000_000_000u64})))
        .unwrap();
    let forbidden = f.signer.sign(&claims(json!({"roles": ["guest"]}))).unwrap();
    let (statuses, logs) = traced(async {
        let service = ServiceBuilder::new()
            .layer(AuthenticateLayer::new(f.auth.clone()))
            .layer(AuthorizeLayer::new(roles_any(["clerk"])))
            .service_fn(echo);
        let mut statuses = Vec::new();
        for (path, token) in [
            ("/orders/1?access_token=SECRET", Some(good.as_str())),
            ("/orders/2", Some(expired.as_str())),
            ("/orders/3", Some(forbidden.as_str())),
            ("/orders/4", None),
        ] {
            let response = service.clone().oneshot(request(path, token)).await.unwrap();
            statuses.push(response.status());
        }
        statuses
    });
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::UNAUTHORIZED,
            StatusCode::FORBIDDEN,
            StatusCode::UNAUTHORIZED
        ]
    );
    for token in [&good, &expired, &forbidden] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!logs.contains(token.as_str()), "token in logs:\n{logs}");
        assert!(!logs.contains(signature), "signature in logs:\n{logs}");
    }
    assert!(!logs.contains("SECRET"), "query string in logs:\n{logs}");
    let lines: Vec<&str> = logs.lines().collect();
    let find = |needles: &[&str]| {
        lines
            .iter()
            .find(|l| needles.iter().all(|n| l.contains(n)))
            .unwrap_or_else(|| panic!("no line with {needles:?} in\n{logs}"))
            .to_string()
    };
    // Allowed: subject, issuer, kid and alg on the authenticate span.
    let allowed = find(&["authenticate", "outcome=\"allow\"", "route=\"/orders/1\""]);
    for field in [
        "subject=\"alice\"",
        "issuer=\"https://idp.example.test\"",
        "kid=\"kid-1\"",
        "alg=\"EdDSA\"",
        "reason=\"authenticated\"",
        "latency_us=",
    ] {
        assert!(allowed.contains(field), "{field} missing in {allowed}");
    }
    // Denied by authentication: the reason, and the unverified header facts.
    let expired_line = find(&["authenticate", "outcome=\"deny\"", "route=\"/orders/2\""]);
    assert!(
        expired_line.contains("reason=\"token expired\""),
        "{expired_line}"
    );
    assert!(expired_line.contains("kid=\"kid-1\""), "{expired_line}");
    assert!(!expired_line.contains("subject="), "{expired_line}");
    // Denied by policy: its own span, with the subject.
    let denied = find(&["authorize", "outcome=\"deny\"", "route=\"/orders/3\""]);
    assert!(denied.contains("subject=\"alice\""), "{denied}");
    find(&[
        "authenticate",
        "outcome=\"deny\"",
        "route=\"/orders/4\"",
        "authentication required",
    ]);
    // Decision events are DEBUG, never INFO: an attack cannot flood production logs.
    assert!(
        !lines
            .iter()
            .any(|l| l.contains(" INFO ") && l.contains("decision")),
        "{logs}"
    );
}

#[test]
fn nothing_is_recorded_above_debug() {
    let _serial = serial();
    let f = fixture();
    let expired = f
        .signer
        .sign(&claims(json!({"exp": 1_000_000_000u64})))
        .unwrap();
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(capture.clone())
        .with_max_level(tracing::Level::INFO)
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    with_capture(subscriber, || {
        runtime.block_on(async {
            let service = ServiceBuilder::new()
                .layer(AuthenticateLayer::new(f.auth.clone()))
                .service_fn(echo);
            for _ in 0..20 {
                let response = service
                    .clone()
                    .oneshot(request("/x", Some(&expired)))
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            }
        })
    });
    assert_eq!(capture.text(), "", "rejections must not log at INFO");
}

type Records = Arc<Mutex<Vec<(Stage, Outcome, Value)>>>;

fn recorder() -> (
    Records,
    impl Fn(&DecisionEvent<'_>) + Clone + Send + Sync + 'static,
) {
    let records: Records = Arc::default();
    let sink = Arc::clone(&records);
    let hook = move |event: &DecisionEvent<'_>| {
        sink.lock()
            .unwrap()
            .push((event.stage(), event.outcome(), event.to_json()));
    };
    (records, hook)
}

#[tokio::test]
#[allow(clippy::await_holding_lock)] // held on purpose: see `SERIAL`
async fn audit_hook_sees_every_decision_of_both_layers() {
    let _serial = serial();
    let f = fixture();
    let (records, hook) = recorder();
    let service = ServiceBuilder::new()
        .layer(AuthenticateLayer::optional(f.auth.clone()).on_decision(hook.clone()))
        .layer(AuthorizeLayer::new(roles_any(["clerk"])).on_decision(hook))
        .service_fn(echo);
    let good = f
        .signer
        .sign(&claims(json!({"tenant_id": "acme"})))
        .unwrap();
    let bad_sig = {
        let other = SigningKey::generate_ed25519().unwrap().with_kid("kid-1");
        other.sign(&claims(json!({}))).unwrap()
    };
    let mut ok = request("/a", Some(&good));
    ok.headers_mut()
        .insert("x-request-id", "req-42".parse().unwrap());
    assert_eq!(service.clone().oneshot(ok).await.unwrap().status(), 200);
    assert_eq!(
        service
            .clone()
            .oneshot(request("/b", Some(&bad_sig)))
            .await
            .unwrap()
            .status(),
        401
    );
    // Optional authentication without a credential: allowed anonymously, then the policy
    // denies (401: no caller).
    assert_eq!(
        service
            .clone()
            .oneshot(request("/c", None))
            .await
            .unwrap()
            .status(),
        401
    );

    let records = records.lock().unwrap().clone();
    let summary: Vec<(Stage, Outcome, String)> = records
        .iter()
        .map(|(s, o, j)| (*s, *o, j["reason"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                Stage::Authenticate,
                Outcome::Allow,
                "authenticated".to_owned()
            ),
            (
                Stage::Authorize,
                Outcome::Allow,
                "allowed by policy".to_owned()
            ),
            (
                Stage::Authenticate,
                Outcome::Deny,
                "invalid signature".to_owned()
            ),
            (Stage::Authenticate, Outcome::Allow, "anonymous".to_owned()),
            (
                Stage::Authorize,
                Outcome::Deny,
                "authentication required".to_owned()
            ),
        ]
    );
    let allowed = &records[1].2;
    assert_eq!(allowed["subject"], "alice");
    assert_eq!(allowed["issuer"], ISS);
    assert_eq!(allowed["kid"], "kid-1");
    assert_eq!(allowed["tenant"], "acme");
    assert_eq!(allowed["roles"], json!(["clerk"]));
    assert_eq!(allowed["request_id"], "req-42");
    assert_eq!(allowed["path"], "/a");
    assert_eq!(allowed["status"], Value::Null);
    let denied = &records[2].2;
    assert_eq!(denied["status"], 401);
    assert_eq!(denied["error"], "invalid_token");
    assert_eq!(denied["alg"], "EdDSA");
    assert_eq!(denied["subject"], Value::Null);
    let all = serde_json::to_string(&records.iter().map(|r| &r.2).collect::<Vec<_>>()).unwrap();
    for token in [&good, &bad_sig] {
        assert!(!all.contains(token.as_str()));
        assert!(!all.contains(token.rsplit('.').next().unwrap()));
    }
}

#[tokio::test]
#[allow(clippy::await_holding_lock)] // held on purpose: see `SERIAL`
async fn limits_apply_with_documented_answers() {
    let _serial = serial();
    let f = fixture();
    let layer = AuthenticateLayer::new(f.auth.clone()).limits(
        Limits::builder()
            .max_credential_header_bytes(2048)
            .max_claims_bytes(1024)
            .max_roles(3)
            .max_scopes(2)
            .build()
            .unwrap(),
    );
    let service = ServiceBuilder::new().layer(layer).service_fn(echo);

    // Too many roles: the first three are kept.
    let many = f
        .signer
        .sign(&claims(
            json!({"roles": ["a", "b", "c", "d", "e"], "scope": "s1 s2 s3"}),
        ))
        .unwrap();
    let response = service
        .clone()
        .oneshot(request("/", Some(&many)))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], b"3");

    // Claims over 1 KiB: 401 before any decoding.
    let fat = f
        .signer
        .sign(&claims(json!({"pad": "x".repeat(1100)})))
        .unwrap();
    let response = service
        .clone()
        .oneshot(request("/", Some(&fat)))
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("claims too large"), "{challenge}");

    // Header over 2 KiB: 400 invalid_request.
    let huge = format!(
        "{}.{}.{}",
        "a".repeat(1000),
        "b".repeat(100),
        "c".repeat(1000)
    );
    let response = service
        .clone()
        .oneshot(request("/", Some(&huge)))
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_request")
    );

    // Mistakes are build-time errors naming the limit.
    let error = Limits::builder().max_scopes(0).build().unwrap_err();
    assert!(error.to_string().contains("max_scopes"), "{error}");
}

#[cfg(feature = "metrics")]
#[test]
fn metrics_count_decisions_by_outcome_and_reason() {
    let _serial = serial();
    let f = fixture();
    let good = f.signer.sign(&claims(json!({}))).unwrap();
    let expired = f
        .signer
        .sign(&claims(json!({"exp": 1_000_000_000u64})))
        .unwrap();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let service = ServiceBuilder::new()
                .layer(AuthenticateLayer::new(f.auth.clone()))
                .service_fn(echo);
            for token in [&good, &good, &expired] {
                service
                    .clone()
                    .oneshot(request("/", Some(token)))
                    .await
                    .unwrap();
            }
        })
    });
    let text = handle.render();
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.starts_with("gatekeeper_decisions_total") && l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle} in\n{text}"))
            .to_owned()
    };
    assert!(line("reason=\"authenticated\"").ends_with(" 2"), "{text}");
    let expired_line = line("reason=\"token expired\"");
    assert!(expired_line.contains("outcome=\"deny\""), "{expired_line}");
    assert!(expired_line.ends_with(" 1"), "{expired_line}");
    assert!(
        text.contains("gatekeeper_decision_duration_seconds"),
        "{text}"
    );
}

#[tokio::test]
async fn json_lines_trail_records_each_request_once_without_tokens() {
    let dir = std::env::temp_dir().join(format!(
        "tower-gatekeeper-audit-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("audit.jsonl");
    let f = fixture();
    let audit = JsonLines::append_to(&path).unwrap().once_per_request();
    let service = ServiceBuilder::new()
        .layer(AuthenticateLayer::new(f.auth.clone()).on_decision(audit.clone()))
        .layer(AuthorizeLayer::new(roles_any(["clerk"])).on_decision(audit.clone()))
        .service_fn(echo);
    let clerk = f.signer.sign(&claims(json!({}))).unwrap();
    let guest = f.signer.sign(&claims(json!({"roles": ["guest"]}))).unwrap();
    let forged = SigningKey::generate_ed25519()
        .unwrap()
        .with_kid("kid-1")
        .sign(&claims(json!({})))
        .unwrap();
    for (path, token, status) in [
        ("/allowed", &clerk, 200),
        ("/forbidden", &guest, 403),
        ("/forged", &forged, 401),
    ] {
        let response = service
            .clone()
            .oneshot(request(path, Some(token)))
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
    }
    audit.flush();

    let text = std::fs::read_to_string(&path).unwrap();
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<_> = records
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap(),
                r["stage"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
                r["subject"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("/allowed", "authorize", "allow", Some("alice")),
            ("/forbidden", "authorize", "deny", Some("alice")),
            ("/forged", "authenticate", "deny", None),
        ]
    );
    for token in [&clerk, &guest, &forged] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!text.contains(signature), "a token is in the trail");
    }
    assert_eq!(audit.dropped(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}
