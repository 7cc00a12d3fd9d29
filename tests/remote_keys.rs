//! Key lifecycle: remote JWKS, OIDC discovery and several issuers, against a JWKS/discovery
//! server started here on loopback with fault injection (slow, 500, invalid JSON, 5 MiB
//! bodies, rotation, going down). Timing rules of the cache run on tokio's paused clock
//! with a scripted fetcher; everything else asserts counts, never durations.
#![cfg(feature = "remote")]

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_gatekeeper::jwt::Validation;
use tower_gatekeeper::keys::{
    FetchError, FetchFuture, IssuerKeys, JwksDocument, JwksFetcher, KeyError, KeyQuery, KeySource,
    RemoteJwks, SigningKey, StaticKeys,
};
use tower_gatekeeper::{Algorithm, JwtAuthenticator, RejectionKind};

const ISS: &str = "https://idp.example.test";
const AUD: &str = "api://orders";
/// Generous bound for what should take milliseconds; only reached when a test fails.
const BOUND: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Keys and tokens
// ---------------------------------------------------------------------------------------------

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys")
}

/// The public JWK of a fixture key (`rsa-1`, `ec256-1`, `ec384-1`, `ed-1`).
fn jwk(kid: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join("jwks.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap()
        .clone()
}

fn jwks(kids: &[&str]) -> Value {
    json!({ "keys": kids.iter().map(|k| jwk(k)).collect::<Vec<_>>() })
}

fn signer(kid: &str) -> SigningKey {
    let (alg, file) = match kid {
        "rsa-1" => (Algorithm::RS256, "rsa-1.key.pem"),
        "ec256-1" => (Algorithm::ES256, "ec256-1.key.pem"),
        "ed-1" => (Algorithm::EdDSA, "ed-1.key.pem"),
        other => panic!("no signer {other}"),
    };
    let pem = std::fs::read(fixtures().join(file)).unwrap();
    SigningKey::from_pem(alg, &pem).unwrap().with_kid(kid)
}

fn token(signer: &SigningKey, iss: &str) -> String {
    signer
        .sign(&json!({"iss": iss, "aud": AUD, "sub": "user-1", "exp": 4102444800u64}))
        .unwrap()
}

fn query(kid: &str, alg: Algorithm) -> KeyQuery<'_> {
    KeyQuery::new(Some(ISS), Some(kid), alg)
}

/// Polls `future` once: `Some` when it is ready without waiting.
fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

// ---------------------------------------------------------------------------------------------
// A scripted fetcher for the paused clock
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
enum Answer {
    Keys(Value, Option<u64>),
    Fail,
}

#[derive(Debug, Default)]
struct Script {
    answer: Mutex<Option<(Value, Option<u64>)>>,
    delay: Mutex<Duration>,
    fetches: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

#[derive(Debug, Clone)]
struct Scripted(Arc<Script>);

impl Scripted {
    fn new(answer: Answer) -> Self {
        let s = Scripted(Arc::new(Script::default()));
        s.set(answer);
        s
    }
    fn set(&self, answer: Answer) {
        *self.0.answer.lock().unwrap() = match answer {
            Answer::Keys(doc, max_age) => Some((doc, max_age)),
            Answer::Fail => None,
        };
    }
    fn delay(&self, delay: Duration) {
        *self.0.delay.lock().unwrap() = delay;
    }
    fn fetches(&self) -> usize {
        self.0.fetches.load(Ordering::SeqCst)
    }
}

impl JwksFetcher for Scripted {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let s = &self.0;
            s.fetches.fetch_add(1, Ordering::SeqCst);
            let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            s.max_in_flight.fetch_max(now, Ordering::SeqCst);
            let delay = *s.delay.lock().unwrap();
            tokio::time::sleep(delay).await;
            s.in_flight.fetch_sub(1, Ordering::SeqCst);
            match s.answer.lock().unwrap().clone() {
                Some((doc, max_age)) => {
                    let keys = doc["keys"].as_array().cloned().unwrap_or_default();
                    Ok(JwksDocument::new(keys).max_age(max_age.map(Duration::from_secs)))
                }
                None => Err(FetchError::Other("scripted outage".into())),
            }
        })
    }
    fn describe(&self) -> String {
        "scripted".into()
    }
}

fn scripted(answer: Answer) -> (Scripted, RemoteJwks) {
    let script = Scripted::new(answer);
    let keys = RemoteJwks::with_fetcher(script.clone())
        .issuer(ISS)
        .build()
        .unwrap();
    (script, keys)
}

async fn warm(keys: &RemoteJwks) {
    keys.ready(None).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Cache rules (paused clock)
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn cached_keys_answer_at_once_while_a_slow_refresh_runs_in_the_background() {
    let (script, keys) = scripted(Answer::Keys(jwks(&["rsa-1"]), Some(100)));
    warm(&keys).await;
    assert_eq!(script.fetches(), 1);
    script.delay(Duration::from_secs(4));
    // The refresh starts at 90 % of max-age, before expiry.
    tokio::time::sleep(Duration::from_secs(91)).await;
    tokio::task::yield_now().await;
    assert_eq!(script.fetches(), 2, "refresh started in the background");
    for _ in 0..100 {
        let key = poll_once(keys.key(&query("rsa-1", Algorithm::RS256)))
            .expect("a cached key never waits for the refresh");
        assert_eq!(key.unwrap().kid(), Some("rsa-1"));
    }
    keys.wait_for_fetches(2).await;
    assert_eq!(script.fetches(), 2);
}

#[tokio::test(start_paused = true)]
async fn one_fetch_in_flight_however_many_requests_arrive() {
    let (script, keys) = scripted(Answer::Keys(jwks(&["rsa-1"]), None));
    script.delay(Duration::from_secs(2));
    let mut waiting = Vec::new();
    for i in 0..200 {
        let keys = keys.clone();
        waiting.push(tokio::spawn(async move {
            let _ = keys.ready(None).await;
            let kid = format!("unknown-{i}");
            let _ = keys.key(&query(&kid, Algorithm::RS256)).await;
        }));
    }
    for task in waiting {
        task.await.unwrap();
    }
    assert_eq!(script.0.max_in_flight.load(Ordering::SeqCst), 1);
    assert!(
        script.fetches() <= 2,
        "warm-up plus one refetch, got {}",
        script.fetches()
    );
}

#[tokio::test(start_paused = true)]
async fn refresh_interval_is_max_age_clamped_to_the_bounds() {
    // (max-age, expected interval) with the default bounds 60 s .. 24 h and default 5 min.
    for (max_age, interval) in [
        (Some(200), 200),
        (Some(5), 60),
        (None, 300),
        (Some(10 * 86_400), 86_400),
    ] {
        let (script, keys) = scripted(Answer::Keys(jwks(&["rsa-1"]), max_age));
        warm(&keys).await;
        let refresh_at = Duration::from_secs(interval).mul_f64(0.9);
        tokio::time::sleep(refresh_at - Duration::from_secs(1)).await;
        assert_eq!(script.fetches(), 1, "max-age {max_age:?}: too early");
        tokio::time::sleep(Duration::from_secs(2)).await;
        keys.wait_for_fetches(2).await;
        assert_eq!(script.fetches(), 2, "max-age {max_age:?}: refreshed");
    }
    // Custom bounds.
    let script = Scripted::new(Answer::Keys(jwks(&["rsa-1"]), Some(1)));
    let keys = RemoteJwks::with_fetcher(script.clone())
        .refresh_bounds(Duration::from_secs(10), Duration::from_secs(20))
        .build()
        .unwrap();
    warm(&keys).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(script.fetches(), 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    keys.wait_for_fetches(2).await;
}

#[tokio::test(start_paused = true)]
async fn unknown_kids_refetch_at_most_once_per_interval_and_are_rejected_at_once() {
    let (script, keys) = scripted(Answer::Keys(jwks(&["rsa-1"]), Some(3600)));
    warm(&keys).await;
    // The first unknown kid triggers one refetch and waits for it.
    let err = keys
        .key(&query("nope-1", Algorithm::RS256))
        .await
        .unwrap_err();
    assert!(matches!(err, KeyError::UnknownKid));
    assert_eq!(script.fetches(), 2);
    // Within the interval: rejected at once, no fetch, never queued.
    for i in 0..1000 {
        let kid = format!("flood-{i}");
        let result = poll_once(keys.key(&query(&kid, Algorithm::RS256))).expect("rejected at once");
        assert!(matches!(result, Err(KeyError::UnknownKid)));
    }
    // The same kid again: negatively cached.
    assert!(poll_once(keys.key(&query("nope-1", Algorithm::RS256))).is_some());
    assert_eq!(script.fetches(), 2);
    // HMAC algorithms and other issuers never fetch.
    assert!(poll_once(keys.key(&query("hs", Algorithm::HS256))).is_some());
    let other = KeyQuery::new(Some("https://evil.test"), Some("x"), Algorithm::RS256);
    assert!(matches!(
        poll_once(keys.key(&other)),
        Some(Err(KeyError::UnknownIssuer))
    ));
    // A real rotation during the window is picked up by the next allowed refetch.
    script.set(Answer::Keys(jwks(&["rsa-1", "ec256-1"]), Some(3600)));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let key = keys.key(&query("ec256-1", Algorithm::ES256)).await.unwrap();
    assert_eq!(key.kid(), Some("ec256-1"));
    assert_eq!(script.fetches(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_flood_cannot_keep_a_rotated_key_out_longer_than_one_interval() {
    let (script, keys) = scripted(Answer::Keys(jwks(&["rsa-1"]), Some(3600)));
    warm(&keys).await;
    script.set(Answer::Keys(jwks(&["rsa-1", "ec256-1"]), Some(3600)));
    // The flood takes the budget first ...
    let _ = keys.key(&query("flood-0", Algorithm::RS256)).await;
    // ... and that very refetch already brought the rotated key.
    let key = poll_once(keys.key(&query("ec256-1", Algorithm::ES256)));
    assert_eq!(key.unwrap().unwrap().kid(), Some("ec256-1"));
    // A later rotation, while the flood keeps hitting every second.
    script.set(Answer::Keys(
        jwks(&["rsa-1", "ec256-1", "ed-1"]),
        Some(3600),
    ));
    let mut served_after = None;
    for second in 0..30 {
        let flood = format!("flood-{second}");
        let _ = keys.key(&query(&flood, Algorithm::RS256)).await;
        if keys.key(&query("ed-1", Algorithm::EdDSA)).await.is_ok() {
            served_after = Some(second);
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let served_after = served_after.expect("the rotated key is served");
    assert!(served_after <= 10, "served after {served_after} s");
    assert!(script.fetches() <= 4);
}

#[tokio::test(start_paused = true)]
async fn outage_serves_last_good_keys_until_max_staleness_then_503() {
    let script = Scripted::new(Answer::Keys(jwks(&["rsa-1"]), Some(60)));
    let keys = RemoteJwks::with_fetcher(script.clone())
        .max_staleness(Duration::from_secs(600))
        .build()
        .unwrap();
    warm(&keys).await;
    script.set(Answer::Fail);
    // Past the refresh time, fetches fail: the last good keys keep serving.
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert!(script.fetches() > 3, "retried with backoff");
    assert!(keys.key(&query("rsa-1", Algorithm::RS256)).await.is_ok());
    assert!(keys.last_error().is_some());
    // Past refresh time + max staleness: 503 with Retry-After, at once.
    tokio::time::sleep(Duration::from_secs(400)).await;
    match poll_once(keys.key(&query("rsa-1", Algorithm::RS256))) {
        Some(Err(KeyError::Unavailable { retry_after })) => {
            assert!(
                retry_after >= Duration::from_secs(1) && retry_after <= Duration::from_secs(60)
            );
        }
        other => panic!("expected 503, got {other:?}"),
    }
    // The IdP comes back: keys again.
    script.set(Answer::Keys(jwks(&["rsa-1"]), Some(60)));
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert!(keys.key(&query("rsa-1", Algorithm::RS256)).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn no_keys_ever_is_503_with_retry_after_never_200_nor_a_hang() {
    let (_script, keys) = scripted(Answer::Fail);
    let auth = JwtAuthenticator::new(keys.clone(), Validation::new(ISS).audiences([AUD])).unwrap();
    keys.wait_for_fetches(1).await;
    let rejection = auth
        .verify(&token(&signer("rsa-1"), ISS))
        .await
        .unwrap_err();
    assert_eq!(rejection.kind(), RejectionKind::KeysUnavailable);
    // Readiness keeps waiting on transient failures.
    assert!(
        tokio::time::timeout(Duration::from_secs(120), auth.ready())
            .await
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn rotation_removed_keys_stop_after_the_next_refresh_added_keys_verify_on_sight() {
    let (script, keys) = scripted(Answer::Keys(jwks(&["rsa-1", "ec256-1"]), Some(60)));
    let auth = JwtAuthenticator::new(keys.clone(), Validation::new(ISS).audiences([AUD])).unwrap();
    warm(&keys).await;
    let (rsa, ec, ed) = (signer("rsa-1"), signer("ec256-1"), signer("ed-1"));
    assert!(auth.verify(&token(&rsa, ISS)).await.is_ok());
    assert!(auth.verify(&token(&ec, ISS)).await.is_ok());
    script.set(Answer::Keys(jwks(&["ec256-1", "ed-1"]), Some(60)));
    // Added: verifies as soon as it is seen (unknown-kid refetch).
    assert!(auth.verify(&token(&ed, ISS)).await.is_ok());
    // Removed: after that refetch, rsa-1 no longer verifies.
    let rejection = auth.verify(&token(&rsa, ISS)).await.unwrap_err();
    assert_eq!(rejection.kind(), RejectionKind::InvalidToken);
    assert!(auth.verify(&token(&ec, ISS)).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn parsing_skips_unusable_keys_and_refuses_sets_without_any() {
    let weak_rsa = json!({"kty": "RSA", "kid": "weak", "n": "AQAB".repeat(40), "e": "AQAB"});
    let mixed = json!({"keys": [
        jwk("rsa-1"),
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC0"},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": jwk("rsa-1")["n"], "e": "AQAB"},
        {"kty": "PQC", "kid": "future"},
        {"kty": "EC", "crv": "P-256", "x": jwk("ec256-1")["x"], "y": jwk("ec256-1")["y"]},
        weak_rsa,
        {"kty": "EC", "kid": "broken", "crv": "P-256", "x": "AA", "y": "AA"},
    ]});
    let (_script, keys) = scripted(Answer::Keys(mixed, None));
    warm(&keys).await;
    let set = keys.key_set().unwrap();
    let kids: Vec<_> = set.keys().iter().map(|k| k.kid()).collect();
    assert_eq!(kids, [Some("rsa-1")]);

    let bad = json!({"keys": [
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC0"},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": jwk("rsa-1")["n"], "e": "AQAB"},
        {"kty": "RSA", "kid": "weak", "n": "AQAB".repeat(40), "e": "AQAB"},
    ]});
    let (_script, keys) = scripted(Answer::Keys(bad, None));
    let error = keys.ready(None).await.unwrap_err().to_string();
    for part in ["no usable key", "oct", "\"enc\"", "2048", "weak"] {
        assert!(error.contains(part), "{part:?} not in {error}");
    }
}

#[tokio::test(start_paused = true)]
async fn start_up_self_checks_fail_fast_with_a_clear_message() {
    // HMAC allowed for a JWKS issuer: refused when the authenticator is built.
    let (_script, keys) = scripted(Answer::Keys(jwks(&["rsa-1"]), None));
    let validation = Validation::new(ISS)
        .audiences([AUD])
        .algorithms([Algorithm::RS256, Algorithm::HS256]);
    let error = JwtAuthenticator::new(keys, validation)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("HS256") && error.contains("HMAC and JWKS"),
        "{error}"
    );
    // An allowed algorithm without a matching key: refused by readiness.
    let (_script, keys) = scripted(Answer::Keys(jwks(&["rsa-1"]), None));
    let validation = Validation::new(ISS)
        .audiences([AUD])
        .algorithms([Algorithm::RS256, Algorithm::ES256]);
    let auth = JwtAuthenticator::new(keys, validation).unwrap();
    let error = auth.ready().await.unwrap_err().to_string();
    assert!(error.contains("ES256") && error.contains(ISS), "{error}");
    // Bad settings name themselves.
    let error = RemoteJwks::builder("ftp://idp.test/jwks")
        .build()
        .unwrap_err()
        .to_string();
    assert!(error.contains("ftp"), "{error}");
    let error = RemoteJwks::builder("http://idp.test/jwks")
        .refresh_bounds(Duration::from_secs(60), Duration::from_secs(1))
        .build()
        .unwrap_err()
        .to_string();
    assert!(error.contains("refresh bounds"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// A JWKS / discovery server on loopback with fault injection
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Mode {
    Serve,
    Slow(Duration),
    Status(u16),
    InvalidJson,
    Html,
    Huge,
    Down,
}

struct IdpState {
    jwks: Value,
    max_age: Option<u64>,
    mode: Mode,
    /// Mode for fetches after the first one (e.g. slow only during refreshes).
    later: Option<Mode>,
    issuer: String,
    /// Discovery answers 503 this many times first (provider starting up).
    discovery_unavailable: usize,
}

#[derive(Clone)]
struct Idp {
    addr: SocketAddr,
    state: Arc<Mutex<IdpState>>,
    jwks_hits: Arc<watch::Sender<usize>>,
    discovery_hits: Arc<AtomicUsize>,
}

impl Idp {
    async fn start(jwks: Value) -> Idp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let idp = Idp {
            addr,
            state: Arc::new(Mutex::new(IdpState {
                jwks,
                max_age: None,
                mode: Mode::Serve,
                later: None,
                issuer: ISS.to_owned(),
                discovery_unavailable: 0,
            })),
            jwks_hits: Arc::new(watch::Sender::new(0)),
            discovery_hits: Arc::new(AtomicUsize::new(0)),
        };
        let server = idp.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                if matches!(server.state.lock().unwrap().mode, Mode::Down) {
                    drop(stream);
                    continue;
                }
                let server = server.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let server = server.clone();
                        // Going down: break connections that are already open, too.
                        async move { server.answer(req).await.ok_or("down") }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        idp
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn set(&self, f: impl FnOnce(&mut IdpState)) {
        f(&mut self.state.lock().unwrap());
    }

    fn hits(&self) -> usize {
        *self.jwks_hits.borrow()
    }

    async fn answer(&self, req: Request<Incoming>) -> Option<Response<Full<Bytes>>> {
        let json = |status: u16, body: String| {
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap()
        };
        if req.uri().path() == "/.well-known/openid-configuration" {
            self.discovery_hits.fetch_add(1, Ordering::SeqCst);
            let mut state = self.state.lock().unwrap();
            if state.discovery_unavailable > 0 {
                state.discovery_unavailable -= 1;
                return Some(json(503, "{}".into()));
            }
            let doc = json!({"issuer": state.issuer, "jwks_uri": self.url("/jwks")});
            return Some(json(200, doc.to_string()));
        }
        let hit = {
            let mut hit = 0;
            self.jwks_hits.send_modify(|n| {
                *n += 1;
                hit = *n;
            });
            hit
        };
        let (mode, doc, max_age) = {
            let state = self.state.lock().unwrap();
            let mode = match (&state.later, hit) {
                (Some(later), n) if n > 1 => later.clone(),
                _ => state.mode.clone(),
            };
            (mode, state.jwks.to_string(), state.max_age)
        };
        let mut response = match mode {
            Mode::Down => return None,
            Mode::Serve => json(200, doc),
            Mode::Slow(delay) => {
                tokio::time::sleep(delay).await;
                json(200, doc)
            }
            Mode::Status(status) => json(status, "{}".into()),
            Mode::InvalidJson => json(200, "{\"keys\": [".into()),
            Mode::Html => Response::builder()
                .header("content-type", "text/html")
                .body(Full::new(Bytes::from("<html>login</html>")))
                .unwrap(),
            Mode::Huge => json(200, format!("{{\"pad\": \"{}\"}}", "x".repeat(5 << 20))),
        };
        if let Some(age) = max_age {
            response
                .headers_mut()
                .insert("cache-control", format!("max-age={age}").parse().unwrap());
        }
        Some(response)
    }
}

// ---------------------------------------------------------------------------------------------
// Over real HTTP
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn remote_jwks_verifies_tokens_over_http() {
    let idp = Idp::start(jwks(&["rsa-1", "ec256-1"])).await;
    let keys = RemoteJwks::builder(idp.url("/jwks"))
        .issuer(ISS)
        .build()
        .unwrap();
    let auth = JwtAuthenticator::new(keys.clone(), Validation::new(ISS).audiences([AUD])).unwrap();
    tokio::time::timeout(BOUND, auth.ready())
        .await
        .unwrap()
        .unwrap();
    let ctx = auth.verify(&token(&signer("ec256-1"), ISS)).await.unwrap();
    assert_eq!(ctx.subject(), Some("user-1"));
    assert!(auth.verify(&token(&signer("rsa-1"), ISS)).await.is_ok());
    assert_eq!(idp.hits(), 1);
}

#[tokio::test]
async fn faults_give_clear_errors_and_503_never_200_nor_a_hang() {
    let cases: [(Mode, &str); 6] = [
        (Mode::Status(500), "HTTP status 500"),
        (Mode::InvalidJson, "not JSON"),
        (Mode::Html, "text/html"),
        (Mode::Huge, "larger than the limit of 1048576 bytes"),
        (Mode::Slow(Duration::from_secs(5)), "fetch timeout"),
        (Mode::Down, "cannot reach"),
    ];
    for (mode, message) in cases {
        let idp = Idp::start(jwks(&["rsa-1"])).await;
        idp.set(|s| s.mode = mode.clone());
        let keys = RemoteJwks::builder(idp.url("/jwks"))
            .fetch_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let auth =
            JwtAuthenticator::new(keys.clone(), Validation::new(ISS).audiences([AUD])).unwrap();
        tokio::time::timeout(BOUND, keys.wait_for_fetches(1))
            .await
            .unwrap();
        let error = keys.last_error().expect("the fetch failed").to_string();
        assert!(error.contains(message), "{mode:?}: {error}");
        let rejection = auth
            .verify(&token(&signer("rsa-1"), ISS))
            .await
            .unwrap_err();
        assert_eq!(rejection.kind(), RejectionKind::KeysUnavailable, "{mode:?}");
    }
}

#[tokio::test]
async fn last_good_keys_keep_serving_when_the_idp_goes_down_or_answers_garbage() {
    for later in [Mode::Down, Mode::Status(500), Mode::InvalidJson, Mode::Huge] {
        let idp = Idp::start(jwks(&["rsa-1"])).await;
        idp.set(|s| s.later = Some(later.clone()));
        let keys = RemoteJwks::builder(idp.url("/jwks"))
            .refresh_bounds(Duration::from_millis(50), Duration::from_millis(50))
            .retry_backoff(Duration::from_millis(50), Duration::from_millis(50))
            .build()
            .unwrap();
        let auth =
            JwtAuthenticator::new(keys.clone(), Validation::new(ISS).audiences([AUD])).unwrap();
        tokio::time::timeout(BOUND, auth.ready())
            .await
            .unwrap()
            .unwrap();
        idp.set(|s| s.mode = later.clone());
        tokio::time::timeout(BOUND, keys.wait_for_fetches(4))
            .await
            .unwrap();
        assert!(keys.last_error().is_some(), "{later:?}");
        assert!(
            auth.verify(&token(&signer("rsa-1"), ISS)).await.is_ok(),
            "{later:?}"
        );
    }
}

#[tokio::test]
async fn rotation_over_http_follows_max_age() {
    let idp = Idp::start(jwks(&["rsa-1"])).await;
    idp.set(|s| s.max_age = Some(0)); // no-cache → the lower bound
    let keys = RemoteJwks::builder(idp.url("/jwks"))
        .refresh_bounds(Duration::from_millis(100), Duration::from_secs(3600))
        .unknown_kid_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let auth = JwtAuthenticator::new(keys.clone(), Validation::new(ISS).audiences([AUD])).unwrap();
    tokio::time::timeout(BOUND, auth.ready())
        .await
        .unwrap()
        .unwrap();
    assert!(auth.verify(&token(&signer("rsa-1"), ISS)).await.is_ok());
    idp.set(|s| s.jwks = jwks(&["ed-1"]));
    let seen = keys.fetch_count();
    tokio::time::timeout(BOUND, keys.wait_for_fetches(seen + 1))
        .await
        .unwrap();
    assert!(auth.verify(&token(&signer("rsa-1"), ISS)).await.is_err());
    assert!(auth.verify(&token(&signer("ed-1"), ISS)).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_flood_costs_the_idp_at_most_one_fetch_and_valid_requests_succeed() {
    let idp = Idp::start(jwks(&["rsa-1", "ec256-1"])).await;
    idp.set(|s| s.later = Some(Mode::Slow(Duration::from_millis(100))));
    let keys = RemoteJwks::builder(idp.url("/jwks"))
        .issuer(ISS)
        .build()
        .unwrap();
    let auth = JwtAuthenticator::new(keys.clone(), Validation::new(ISS).audiences([AUD])).unwrap();
    tokio::time::timeout(BOUND, auth.ready())
        .await
        .unwrap()
        .unwrap();
    let before = idp.hits();

    // 1,000 tokens with random kids (validly shaped, trusted iss, allowed alg, unexpired).
    let attacker = SigningKey::generate_ed25519().unwrap();
    let flood: Vec<String> = (0..1000)
        .map(|i| {
            let kid = format!("{i}-{}", uuid_like(i));
            attacker
                .clone()
                .with_kid(kid)
                .sign(&json!({
                    "iss": ISS, "aud": AUD, "sub": "mallory", "exp": 4102444800u64,
                }))
                .unwrap()
        })
        .collect();
    let valid = token(&signer("ec256-1"), ISS);
    let mut tasks = Vec::new();
    for (i, bad) in flood.into_iter().enumerate() {
        let flood_auth = auth.clone();
        tasks.push(tokio::spawn(async move {
            let kind = flood_auth.verify(&bad).await.unwrap_err().kind();
            assert_eq!(kind, RejectionKind::InvalidToken, "flood token {i}");
            false
        }));
        if i % 5 == 0 {
            let (auth, valid) = (auth.clone(), valid.clone());
            tasks.push(tokio::spawn(async move {
                auth.verify(&valid)
                    .await
                    .expect("valid token during the flood");
                true
            }));
        }
    }
    let mut valid_ok = 0;
    for task in tasks {
        if tokio::time::timeout(BOUND, task).await.unwrap().unwrap() {
            valid_ok += 1;
        }
    }
    let fetches = idp.hits() - before;
    println!(
        "flood: 1000 unknown kids → {fetches} fetch(es) seen by the IdP; {valid_ok} valid requests succeeded"
    );
    assert_eq!(valid_ok, 200);
    assert!(
        fetches <= 1,
        "the IdP saw {fetches} fetches during the flood"
    );
}

fn uuid_like(i: usize) -> String {
    format!("{:016x}", (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_idp_during_refresh_does_not_slow_valid_requests() {
    let idp = Idp::start(jwks(&["ec256-1"])).await;
    idp.set(|s| s.later = Some(Mode::Slow(Duration::from_secs(2))));
    let keys = RemoteJwks::builder(idp.url("/jwks"))
        .refresh_bounds(Duration::from_millis(200), Duration::from_millis(200))
        .fetch_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let auth = JwtAuthenticator::new(keys.clone(), Validation::new(ISS).audiences([AUD])).unwrap();
    tokio::time::timeout(BOUND, auth.ready())
        .await
        .unwrap()
        .unwrap();
    let valid = token(&signer("ec256-1"), ISS);
    let quiet = latencies(&auth, &valid).await;

    // Wait until the refresh is at the IdP, which now takes 2 s to answer.
    let mut hits = idp.jwks_hits.subscribe();
    tokio::time::timeout(BOUND, hits.wait_for(|n| *n >= 2))
        .await
        .unwrap()
        .unwrap();
    let during = latencies(&auth, &valid).await;
    // Every lookup during the refresh was answered from the cache without waiting.
    let mut ready = 0;
    for _ in 0..1000 {
        if let Some(Ok(_)) = poll_once(keys.key(&query("ec256-1", Algorithm::ES256))) {
            ready += 1;
        }
    }
    assert_eq!(ready, 1000);
    assert_eq!(keys.fetch_count(), 2, "the refresh is still in flight");
    println!(
        "valid-request latency, quiet: p50 {:?} p99 {:?}; during a 2 s refresh: p50 {:?} p99 {:?}",
        quiet.0, quiet.1, during.0, during.1
    );
    // Generous: only a refresh that blocked requests (2 s) would come near it.
    assert!(during.1 < Duration::from_millis(500), "p99 {:?}", during.1);
}

async fn latencies(auth: &JwtAuthenticator<RemoteJwks>, token: &str) -> (Duration, Duration) {
    let mut samples: Vec<Duration> = Vec::with_capacity(500);
    for _ in 0..500 {
        let start = std::time::Instant::now();
        auth.verify(token).await.unwrap();
        samples.push(start.elapsed());
    }
    samples.sort();
    (samples[250], samples[495])
}

#[tokio::test]
async fn discovery_checks_the_issuer_and_follows_jwks_uri() {
    let idp = Idp::start(jwks(&["ed-1"])).await;
    idp.set(|s| s.discovery_unavailable = 2); // not up yet at start
    let keys = RemoteJwks::discovery(idp.url(""), ISS)
        .retry_backoff(Duration::from_millis(20), Duration::from_millis(100))
        .build()
        .unwrap();
    let auth = JwtAuthenticator::new(keys.clone(), Validation::new(ISS).audiences([AUD])).unwrap();
    tokio::time::timeout(BOUND, auth.ready())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(idp.discovery_hits.load(Ordering::SeqCst), 3);
    assert!(auth.verify(&token(&signer("ed-1"), ISS)).await.is_ok());

    // An issuer that differs in any way (here a trailing slash) is refused.
    let idp = Idp::start(jwks(&["ed-1"])).await;
    idp.set(|s| s.issuer = format!("{ISS}/"));
    let keys = RemoteJwks::discovery(idp.url("/.well-known/openid-configuration"), ISS)
        .build()
        .unwrap();
    let auth = JwtAuthenticator::new(keys, Validation::new(ISS).audiences([AUD])).unwrap();
    let error = tokio::time::timeout(BOUND, auth.ready())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        error.to_string().contains("is not the configured issuer"),
        "{error}"
    );
    assert_eq!(
        idp.hits(),
        0,
        "the JWKS of a mismatched issuer is never fetched"
    );
}

#[tokio::test]
async fn several_issuers_pick_their_keys_by_iss_and_unknown_issuers_cost_no_fetch() {
    const OTHER: &str = "https://other.example.test";
    let idp_a = Idp::start(jwks(&["rsa-1"])).await;
    let idp_b = Idp::start(jwks(&["ec256-1"])).await;
    idp_b.set(|s| s.issuer = OTHER.to_owned());
    let a: IssuerKeys = RemoteJwks::builder(idp_a.url("/jwks"))
        .issuer(ISS)
        .build()
        .unwrap()
        .into();
    let b: IssuerKeys = RemoteJwks::discovery(idp_b.url(""), OTHER)
        .build()
        .unwrap()
        .into();
    let local = SigningKey::generate_ed25519().unwrap().with_kid("local");
    let c: IssuerKeys = StaticKeys::new([local.verifying_key().clone()]).into();
    let auth = JwtAuthenticator::new(a, Validation::new(ISS).audiences([AUD]))
        .unwrap()
        .with_issuer(b, Validation::new(OTHER).audiences([AUD]))
        .unwrap()
        .with_issuer(c, Validation::new("https://local.test").audiences([AUD]))
        .unwrap();
    tokio::time::timeout(BOUND, auth.ready())
        .await
        .unwrap()
        .unwrap();
    assert!(auth.verify(&token(&signer("rsa-1"), ISS)).await.is_ok());
    assert!(auth.verify(&token(&signer("ec256-1"), OTHER)).await.is_ok());
    assert!(
        auth.verify(&token(&local, "https://local.test"))
            .await
            .is_ok()
    );
    // A token of issuer A signed with B's key: A's keys do not have it.
    assert!(auth.verify(&token(&signer("ec256-1"), ISS)).await.is_err());
    let (hits_a, hits_b) = (idp_a.hits(), idp_b.hits());
    for i in 0..100 {
        let unknown = signer("rsa-1").with_kid(format!("k{i}"));
        let rejection = auth
            .verify(&token(&unknown, "https://evil.test"))
            .await
            .unwrap_err();
        assert_eq!(rejection.kind(), RejectionKind::InvalidToken);
    }
    assert_eq!((idp_a.hits(), idp_b.hits()), (hits_a, hits_b));
}

// ---------------------------------------------------------------------------------------------
// The verified-token cache under rotation, and refresh now (paused clock)
// ---------------------------------------------------------------------------------------------

type Cached = tower_gatekeeper::authenticate::CachedAuthenticator<JwtAuthenticator<RemoteJwks>>;

fn cached(keys: &RemoteJwks) -> Cached {
    use tower_gatekeeper::authenticate::{CacheConfig, CachedAuthenticator};
    let jwt = JwtAuthenticator::new(keys.clone(), Validation::new(ISS).audiences([AUD])).unwrap();
    CachedAuthenticator::new(jwt, CacheConfig::default()).unwrap()
}

async fn through(auth: &Cached, token: &str) -> Result<(), RejectionKind> {
    use tower_gatekeeper::Authenticator;
    use tower_gatekeeper::credential::RequestHead;
    let req = Request::builder()
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap();
    let fut = auth
        .authenticate(&RequestHead::of(&req))
        .map_err(|r| r.kind())?;
    fut.await.map(drop).map_err(|r| r.kind())
}

/// The fixture key `kid`'s JWK published under the name `as_kid`.
fn renamed(kid: &str, as_kid: &str) -> Value {
    let mut key = jwk(kid);
    key["kid"] = as_kid.into();
    json!({ "keys": [key] })
}

#[tokio::test(start_paused = true)]
async fn a_cached_token_dies_with_its_key_material_even_under_the_same_kid() {
    let (script, keys) = scripted(Answer::Keys(renamed("ed-1", "k"), None));
    warm(&keys).await;
    let auth = cached(&keys);
    let token = token(&signer("ed-1").with_kid("k"), ISS);
    assert_eq!(through(&auth, &token).await, Ok(()));
    assert_eq!(
        through(&auth, &token).await,
        Ok(()),
        "served from the cache"
    );
    // The IdP publishes other material under the same kid; the scheduled refresh sees it.
    script.set(Answer::Keys(renamed("ec256-1", "k"), None));
    tokio::time::sleep(Duration::from_secs(300)).await;
    keys.wait_for_fetches(2).await;
    // The uncached verifier refuses the token: so does the cache.
    assert_eq!(
        through(&cached(&keys), &token).await,
        Err(RejectionKind::InvalidToken)
    );
    assert_eq!(
        through(&auth, &token).await,
        Err(RejectionKind::InvalidToken)
    );
}

#[tokio::test(start_paused = true)]
async fn refresh_now_stops_a_removed_key_at_once_and_purges_its_tokens() {
    // An hour of max-age: the next scheduled refresh is 54 minutes away.
    let (script, keys) = scripted(Answer::Keys(jwks(&["ed-1", "ec256-1"]), Some(3600)));
    warm(&keys).await;
    let auth = cached(&keys);
    let token = token(&signer("ed-1"), ISS);
    assert_eq!(through(&auth, &token).await, Ok(()));
    auth.cache().run_pending_tasks();
    assert_eq!(auth.cache().entry_count(), 1);
    // ed-1 is compromised and removed at the IdP: without a refresh it still verifies.
    script.set(Answer::Keys(jwks(&["ec256-1"]), Some(3600)));
    assert_eq!(through(&auth, &token).await, Ok(()));
    keys.refresh_now().await.unwrap();
    assert_eq!(script.fetches(), 2);
    auth.purge_untrusted();
    auth.cache().run_pending_tasks();
    assert_eq!(auth.cache().entry_count(), 0, "purged");
    assert_eq!(
        through(&auth, &token).await,
        Err(RejectionKind::InvalidToken)
    );
    // A failed refresh says so (and keeps the last good keys).
    script.set(Answer::Fail);
    assert!(keys.refresh_now().await.is_err());
    assert!(keys.has_keys());
}
