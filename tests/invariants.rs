//! Property tests of the stack's security invariants:
//!
//! 1. no inbound owned header (any case, underscore spellings) and no `Authorization` ever
//!    reaches the inner service;
//! 2. no rejection (status, headers, body) and no log line contains the token;
//! 3. every rejection has the status and `WWW-Authenticate` of DESIGN.md §3.
//!
//! Case counts are modest so the suite stays fast; `PROPTEST_CASES` raises them.

use std::convert::Infallible;
use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use serde_json::json;
use tower::{ServiceBuilder, ServiceExt};
use tower_gatekeeper::authorize::roles_any;
use tower_gatekeeper::jwt::Validation;
use tower_gatekeeper::keys::{SigningKey, StaticKeys};
use tower_gatekeeper::{
    AuthenticateLayer, AuthorizeLayer, ContextPropagationLayer, JwtAuthenticator, Rejection,
    RejectionKind,
};

const ISS: &str = "https://idp.example.test";
const OWNED: [&str; 5] = [
    "x-user-id",
    "x-user-roles",
    "x-user-scopes",
    "x-tenant-id",
    "x-auth-claims",
];

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

struct Keys {
    signer: SigningKey,
    auth: JwtAuthenticator<StaticKeys>,
}

fn keys() -> &'static Keys {
    static KEYS: std::sync::OnceLock<Keys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let signer = SigningKey::generate_ed25519().unwrap().with_kid("k1");
        let keys = StaticKeys::new([signer.verifying_key().clone()]);
        let auth = JwtAuthenticator::new(keys, Validation::new(ISS).audiences(["api"])).unwrap();
        Keys { signer, auth }
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// A header name spelling of `name`: random case, `-` or `_`.
fn spelling(name: &'static str) -> impl Strategy<Value = String> {
    proptest::collection::vec((any::<bool>(), any::<bool>()), name.len()).prop_map(move |flips| {
        name.chars()
            .zip(flips)
            .map(|(c, (upper, underscore))| match c {
                '-' if underscore => '_',
                c if upper => c.to_ascii_uppercase(),
                c => c,
            })
            .collect()
    })
}

/// What the client sends as credential.
#[derive(Debug, Clone)]
enum Credential {
    None,
    Valid { roles: Vec<String> },
    Expired,
    Garbage(String),
    Twice,
}

fn credential() -> impl Strategy<Value = Credential> {
    prop_oneof![
        Just(Credential::None),
        proptest::collection::vec("[a-z]{1,6}", 0..3).prop_map(|roles| Credential::Valid { roles }),
        Just(Credential::Expired),
        "[A-Za-z0-9._~+/=-]{1,40}".prop_map(Credential::Garbage),
        Just(Credential::Twice),
    ]
}

fn token(credential: &Credential) -> Option<String> {
    let k = keys();
    match credential {
        Credential::None => None,
        Credential::Valid { roles } => Some(
            k.signer
                .sign(&json!({"iss": ISS, "aud": "api", "sub": "u", "roles": roles, "exp": 4102444800u64}))
                .unwrap(),
        ),
        Credential::Expired => Some(
            k.signer
                .sign(&json!({"iss": ISS, "aud": "api", "sub": "u", "exp": 1_000_000_000u64}))
                .unwrap(),
        ),
        Credential::Garbage(text) => Some(format!("zq{text}")),
        Credential::Twice => Some("twice".to_owned()),
    }
}

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

/// Sends one request through the full stack; returns the response, its body, what the inner
/// service saw (if called) and the log output.
fn send(
    credential: &Credential,
    spoofed: &[(String, String)],
    grpc: bool,
) -> (Response<()>, Bytes, Option<http::HeaderMap>, String) {
    let seen: Arc<Mutex<Option<http::HeaderMap>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let service = ServiceBuilder::new()
        .layer(AuthenticateLayer::optional(keys().auth.clone()))
        .layer(AuthorizeLayer::new(roles_any(["admin", "a", "b", "c"])))
        .layer(ContextPropagationLayer::new())
        .service_fn(move |req: Request<Full<Bytes>>| {
            *sink.lock().unwrap() = Some(req.headers().clone());
            async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok")))) }
        });
    let mut request = Request::builder().uri("/r").body(Full::default()).unwrap();
    let headers = request.headers_mut();
    for (name, value) in spoofed {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    if grpc {
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    }
    match (credential, token(credential)) {
        (Credential::Twice, _) => {
            headers.append("authorization", HeaderValue::from_static("Bearer a.b.c"));
            headers.append("authorization", HeaderValue::from_static("Bearer d.e.f"));
        }
        (_, Some(token)) => {
            headers.insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
            );
        }
        (_, None) => {}
    }
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(capture.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_ansi(false)
        .finish();
    let (response, body) = tracing::subscriber::with_default(subscriber, || {
        // Parallel tests race on tracing's global interest cache (tokio-rs/tracing#2874):
        // make every callsite see this subscriber.
        tracing::callsite::rebuild_interest_cache();
        runtime().block_on(async {
            let response = service.oneshot(request).await.unwrap();
            let (parts, body) = response.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            (Response::from_parts(parts, ()), body)
        })
    });
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let seen = seen.lock().unwrap().take();
    (response, body, seen, logs)
}

fn spoofed_headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let one = (0..OWNED.len())
        .prop_flat_map(|i| spelling(OWNED[i]))
        .prop_flat_map(|name| ("spoof-[a-z0-9]{4,8}").prop_map(move |v| (name.clone(), v)));
    proptest::collection::vec(one, 0..6)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn no_owned_inbound_header_reaches_the_inner_service(
        credential in credential(),
        spoofed in spoofed_headers(),
    ) {
        let (_, _, seen, _) = send(&credential, &spoofed, false);
        if let Some(headers) = seen {
            prop_assert!(headers.get("authorization").is_none());
            for (name, value) in headers.iter() {
                let v = value.to_str().unwrap_or("");
                prop_assert!(!v.contains("spoof-"), "{name}: {v} reached the inner service");
                let normalized = name.as_str().replace('_', "-");
                if OWNED.contains(&normalized.as_str()) {
                    prop_assert_eq!(name.as_str(), normalized.as_str(), "underscore spelling passed");
                }
            }
        }
    }

    #[test]
    fn rejections_and_logs_never_contain_the_token(
        credential in credential(),
        grpc in any::<bool>(),
    ) {
        let (response, body, _, logs) = send(&credential, &[], grpc);
        if let Some(token) = token(&credential).filter(|t| t.len() >= 8) {
            let signature = token.rsplit('.').next().unwrap_or("");
            for (name, value) in response.headers() {
                let v = String::from_utf8_lossy(value.as_bytes());
                prop_assert!(!v.contains(&token), "token in {name}");
            }
            let body = String::from_utf8_lossy(&body);
            prop_assert!(!body.contains(&token), "token in body {body}");
            prop_assert!(!logs.contains(&token), "token in logs:\n{logs}");
            if signature.len() >= 16 {
                prop_assert!(!logs.contains(signature), "signature in logs:\n{logs}");
            }
        }
    }

    #[test]
    fn every_rejection_follows_the_wire_contract(
        credential in credential(),
        grpc in any::<bool>(),
    ) {
        let (response, body, seen, _) = send(&credential, &[], grpc);
        let rejection = response.extensions().get::<Rejection>().cloned();
        prop_assert_eq!(seen.is_none(), rejection.is_some(), "called inner iff not rejected");
        let Some(rejection) = rejection else { return Ok(()); };
        let kind = rejection.kind();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        if grpc {
            prop_assert_eq!(response.status(), StatusCode::OK);
            let code = response.headers()["grpc-status"].to_str().unwrap().to_owned();
            prop_assert_eq!(code, kind.grpc_code().to_string());
            prop_assert!(body.is_empty());
            return Ok(());
        }
        prop_assert_eq!(response.status(), kind.http_status());
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        prop_assert!(json["error"].is_string() && json["error_description"].is_string());
        match kind {
            RejectionKind::MissingCredential => {
                prop_assert_eq!(response.status(), 401);
                prop_assert_eq!(challenge.as_deref(), Some("Bearer realm=\"api\""));
            }
            RejectionKind::InvalidToken => {
                prop_assert_eq!(response.status(), 401);
                let c = challenge.unwrap();
                prop_assert!(c.starts_with("Bearer realm=") && c.contains("error=\"invalid_token\""), "{}", c);
                prop_assert!(c.contains("error_description=\""), "{}", c);
            }
            RejectionKind::InvalidRequest => {
                prop_assert_eq!(response.status(), 400);
                prop_assert!(challenge.unwrap().contains("error=\"invalid_request\""));
            }
            RejectionKind::InsufficientScope | RejectionKind::Forbidden => {
                prop_assert_eq!(response.status(), 403);
                prop_assert!(challenge.unwrap().contains("error=\"insufficient_scope\""));
            }
            RejectionKind::KeysUnavailable | RejectionKind::AuthorizerUnavailable => {
                prop_assert_eq!(response.status(), 503);
                prop_assert!(challenge.is_none());
                prop_assert!(response.headers().contains_key("retry-after"));
            }
            other => prop_assert!(false, "unexpected kind {:?}", other),
        }
    }
}
