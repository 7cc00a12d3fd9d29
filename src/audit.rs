//! Decision observability: the [`DecisionHook`] audit trait, and the tracing span each
//! decision runs in.
//!
//! [`AuthenticateLayer`](crate::AuthenticateLayer) and [`AuthorizeLayer`](crate::AuthorizeLayer)
//! each make one decision per request: allow (call the inner service) or deny (answer with a
//! rejection). For every decision they
//!
//! - run it inside a `DEBUG` span named `authenticate` or `authorize` (target
//!   `tower_gatekeeper::decision`) with the fields `outcome`, `reason`, `issuer`, `kid`, `alg`,
//!   `subject` (when authenticated), `route` (the request path, never the query) and
//!   `latency_us`, and emit one `DEBUG` event in it. At `INFO`, the usual production level,
//!   nothing per request is logged, so a flood of bad tokens cannot flood the logs; enable
//!   `tower_gatekeeper::decision=debug` to see every decision. Key sources log their own
//!   operational problems at `WARN`/`ERROR`;
//! - call the [`DecisionHook`] installed with `on_decision`, for audit trails and SIEM
//!   export ([`DecisionEvent::to_json`] gives a stable JSON record; [`JsonLines`] writes
//!   those records to a file or any writer, one per line);
//! - count the decision in the [`metrics`](crate::metrics) (feature `metrics`).
//!
//! The token is never in any of them, nor any secret. `issuer`, `kid` and `alg` of a denied
//! token are read from the token without verification (they are what the client sent), cut
//! to 128 characters with control characters replaced, and only when someone observes (the
//! span is enabled or a hook is installed).
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use http::{Request, StatusCode};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_gatekeeper::{AuthenticateLayer, JwtAuthenticator, jwt::Validation};
//! use tower_gatekeeper::audit::{DecisionEvent, Outcome};
//! use tower_gatekeeper::keys::{SigningKey, StaticKeys};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let signer = SigningKey::generate_ed25519().unwrap();
//! let keys = StaticKeys::new([signer.verifying_key().clone()]);
//! let auth = JwtAuthenticator::new(keys, Validation::new("https://idp").any_audience()).unwrap();
//!
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let log = Arc::clone(&seen);
//! let service = ServiceBuilder::new()
//!     .layer(AuthenticateLayer::new(auth).on_decision(move |event: &DecisionEvent<'_>| {
//!         log.lock().unwrap().push(event.to_json());
//!     }))
//!     .service_fn(|_req: Request<String>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
//!     });
//!
//! let request = Request::builder().uri("/orders?secret=1").body(String::new()).unwrap();
//! let response = service.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//! let record = seen.lock().unwrap().pop().unwrap();
//! assert_eq!(record["outcome"], "deny");
//! assert_eq!(record["reason"], "authentication required");
//! assert_eq!(record["path"], "/orders");
//! # }
//! ```

mod json_lines;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, Method, Request};
use serde_json::{Value, json};
use tracing::field::Empty;

pub use self::json_lines::JsonLines;
use crate::context::AuthContext;
pub use crate::outcome::{Outcome, Stage};
use crate::reject::{Protocol, Rejection};

/// Receives every allow/deny decision of the layer it is installed on, with its context.
///
/// Installed with `on_decision` on [`AuthenticateLayer`](crate::AuthenticateLayer) and
/// [`AuthorizeLayer`](crate::AuthorizeLayer). Implemented for closures
/// `Fn(&DecisionEvent<'_>)`.
///
/// The hook runs on the request's task, in the middle of the request: it must be quick and
/// must not block (hand records to a channel or a buffered writer); a panic in it fails the
/// request. See the [module docs](self) for an example.
pub trait DecisionHook: Send + Sync + 'static {
    /// Called once per decision.
    fn on_decision(&self, event: &DecisionEvent<'_>);
}

impl<F> DecisionHook for F
where
    F: Fn(&DecisionEvent<'_>) + Send + Sync + 'static,
{
    fn on_decision(&self, event: &DecisionEvent<'_>) {
        self(event)
    }
}

/// One decision, as a [`DecisionHook`] sees it. Borrowed: copy out what you keep.
pub struct DecisionEvent<'a> {
    stage: Stage,
    outcome: Outcome,
    reason: &'a str,
    rejection: Option<&'a Rejection>,
    context: Option<&'a AuthContext>,
    request: &'a RequestFacts,
    token: &'a TokenFacts,
    latency: Duration,
    time: SystemTime,
}

impl fmt::Debug for DecisionEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecisionEvent")
            .field("stage", &self.stage)
            .field("outcome", &self.outcome)
            .field("reason", &self.reason)
            .field("path", &self.request.path)
            .field("subject", &self.subject())
            .finish_non_exhaustive()
    }
}

impl<'a> DecisionEvent<'a> {
    /// Which layer decided.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Allow or deny.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// Why, as a fixed text: the rejection's description for denials; `authenticated`,
    /// `anonymous` (optional authentication, no credential) or `allowed by policy` for
    /// allowed requests.
    pub fn reason(&self) -> &'a str {
        self.reason
    }

    /// The rejection sent, for denials.
    pub fn rejection(&self) -> Option<&'a Rejection> {
        self.rejection
    }

    /// The authenticated caller, when there is one.
    pub fn context(&self) -> Option<&'a AuthContext> {
        self.context
    }

    /// The request method.
    pub fn method(&self) -> &'a Method {
        &self.request.method
    }

    /// The request path (never the query, which may carry secrets), cut to 256 characters.
    pub fn path(&self) -> &'a str {
        &self.request.path
    }

    /// The client's `x-request-id`, when well-formed (at most 128 of `A-Za-z0-9-_.:`).
    pub fn request_id(&self) -> Option<&'a str> {
        self.request.request_id.as_deref()
    }

    /// HTTP or gRPC.
    pub fn protocol(&self) -> Protocol {
        self.request.protocol
    }

    /// The caller's subject, when authenticated.
    pub fn subject(&self) -> Option<&'a str> {
        self.context.and_then(AuthContext::subject)
    }

    /// The issuer: the verified one when authenticated, else the token's unverified `iss`.
    pub fn issuer(&self) -> Option<&'a str> {
        self.context
            .and_then(AuthContext::issuer)
            .or(self.token.issuer.as_deref())
    }

    /// The key id: the verifying key's when authenticated, else the token header's
    /// (unverified).
    pub fn kid(&self) -> Option<&'a str> {
        self.context
            .and_then(AuthContext::key_id)
            .or(self.token.kid.as_deref())
    }

    /// The token header's `alg`, when a JWT was presented.
    pub fn alg(&self) -> Option<&'a str> {
        self.token.alg.as_deref()
    }

    /// How long the decision took.
    pub fn latency(&self) -> Duration {
        self.latency
    }

    /// When the decision was made.
    pub fn time(&self) -> SystemTime {
        self.time
    }

    /// A JSON record for audit trails and SIEM export: `time` (Unix seconds), `stage`,
    /// `outcome`, `reason`, `status` and `error` (denials), `method`, `path`, `request_id`,
    /// `protocol`, `credential`, `subject`, `issuer`, `kid`, `alg`, `tenant`, `roles`,
    /// `scopes`, `latency_us`. Absent values are `null`. Never the token.
    pub fn to_json(&self) -> Value {
        let time = self
            .time
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let ctx = self.context;
        json!({
            "time": (time * 1000.0).round() / 1000.0,
            "stage": self.stage.as_str(),
            "outcome": self.outcome.as_str(),
            "reason": self.reason,
            "status": self.rejection.map(|r| r.kind().http_status().as_u16()),
            "error": self.rejection.map(|r| r.kind().body_code()),
            "method": self.request.method.as_str(),
            "path": &self.request.path,
            "request_id": self.request_id(),
            "protocol": match self.request.protocol { Protocol::Http => "http", Protocol::Grpc => "grpc" },
            "credential": ctx.map(|c| c.credential_kind().as_str()),
            "subject": self.subject(),
            "issuer": self.issuer(),
            "kid": self.kid(),
            "alg": self.alg(),
            "tenant": ctx.and_then(AuthContext::tenant),
            "roles": ctx.map(AuthContext::roles),
            "scopes": ctx.map(AuthContext::scopes),
            "latency_us": u64::try_from(self.latency.as_micros()).unwrap_or(u64::MAX),
        })
    }
}

/// What is kept of the request for the span and the hook. Owned, built only when observed.
#[derive(Debug)]
pub(crate) struct RequestFacts {
    method: Method,
    path: String,
    request_id: Option<String>,
    protocol: Protocol,
}

/// Unverified `iss`, `kid`, `alg` of the presented JWT, sanitized.
#[derive(Debug, Default)]
pub(crate) struct TokenFacts {
    issuer: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
}

impl TokenFacts {
    /// Reads the facts from the request's bearer JWT, if any. Never fails.
    fn of(headers: &HeaderMap) -> Self {
        let mut facts = TokenFacts::default();
        let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return facts;
        };
        let bytes = value.as_bytes();
        if bytes.len() < 7 || !bytes[..7].eq_ignore_ascii_case(b"bearer ") {
            return facts;
        }
        let token = bytes[7..].trim_ascii();
        let mut parts = token.split(|b| *b == b'.');
        let (Some(header), Some(payload), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return facts;
        };
        #[derive(serde::Deserialize)]
        struct Header {
            alg: Option<Value>,
            kid: Option<Value>,
        }
        #[derive(serde::Deserialize)]
        struct Payload {
            iss: Option<Value>,
        }
        if let Some(h) = decode::<Header>(header) {
            facts.alg = h.alg.as_ref().and_then(Value::as_str).map(sanitize);
            facts.kid = h.kid.as_ref().and_then(Value::as_str).map(sanitize);
        }
        if let Some(p) = decode::<Payload>(payload) {
            facts.issuer = p.iss.as_ref().and_then(Value::as_str).map(sanitize);
        }
        facts
    }
}

fn decode<T: serde::de::DeserializeOwned>(segment: &[u8]) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// At most 128 characters, control characters replaced: safe in any log line.
fn sanitize(s: &str) -> String {
    const MAX: usize = 128;
    s.chars()
        .take(MAX)
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

fn well_formed_request_id(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("x-request-id")?.to_str().ok()?;
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then(|| value.to_owned())
}

/// A layer's optional hook, with a `Debug` that names only its presence.
#[derive(Clone, Default)]
pub(crate) struct HookSlot(pub(crate) Option<Arc<dyn DecisionHook>>);

impl fmt::Debug for HookSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Some(DecisionHook)"
        } else {
            "None"
        })
    }
}

/// One decision being observed: its span, its start, and what the hook will see.
#[derive(Debug)]
pub(crate) struct Observation {
    stage: Stage,
    span: tracing::Span,
    /// When the decision started; only read when someone observes it (the span, a hook or
    /// the metrics), so the clock is not read otherwise.
    started: Option<Instant>,
    /// `Some` when someone observes (span enabled or hook installed).
    detail: Option<Box<Detail>>,
}

#[derive(Debug)]
struct Detail {
    hook: HookSlot,
    request: RequestFacts,
    token: TokenFacts,
}

impl Observation {
    /// Starts observing a decision of `stage` about `req`. `peek_token`: read the bearer
    /// JWT's unverified `iss`/`kid`/`alg` (the authenticate stage). The request's details
    /// (path, request id, protocol, token facts) are read only when someone observes them (an
    /// enabled span or a hook).
    pub(crate) fn start<B>(
        stage: Stage,
        hook: &HookSlot,
        req: &Request<B>,
        peek_token: bool,
    ) -> Self {
        let span = match stage {
            Stage::Authenticate => tracing::debug_span!(
                target: "tower_gatekeeper::decision",
                "authenticate",
                outcome = Empty, reason = Empty, issuer = Empty, kid = Empty, alg = Empty,
                subject = Empty, route = Empty, latency_us = Empty,
            ),
            Stage::Authorize => tracing::debug_span!(
                target: "tower_gatekeeper::decision",
                "authorize",
                outcome = Empty, reason = Empty, issuer = Empty, kid = Empty, alg = Empty,
                subject = Empty, route = Empty, latency_us = Empty,
            ),
        };
        let detail = (!span.is_disabled() || hook.0.is_some()).then(|| {
            let mut path: String = req.uri().path().chars().take(256).collect();
            path = sanitize_path(path);
            let token = if peek_token {
                TokenFacts::of(req.headers())
            } else {
                TokenFacts::default()
            };
            span.record("route", path.as_str());
            Box::new(Detail {
                hook: hook.clone(),
                request: RequestFacts {
                    method: req.method().clone(),
                    path,
                    request_id: well_formed_request_id(req.headers()),
                    protocol: Protocol::of(req),
                },
                token,
            })
        });
        let started = (detail.is_some() || cfg!(feature = "metrics")).then(Instant::now);
        Observation {
            stage,
            span,
            started,
            detail,
        }
    }

    /// The decision's span, to enter while deciding.
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Records the decision: span fields, one event, the hook, the metrics.
    pub(crate) fn finish(
        self,
        outcome: Outcome,
        reason: &str,
        context: Option<&AuthContext>,
        rejection: Option<&Rejection>,
    ) {
        let latency = self.started.map_or(Duration::ZERO, |t| t.elapsed());
        crate::metrics::decision(self.stage, outcome, reason, latency);
        let Some(detail) = self.detail else {
            return;
        };
        let event = DecisionEvent {
            stage: self.stage,
            outcome,
            reason,
            rejection,
            context,
            request: &detail.request,
            token: &detail.token,
            latency,
            time: SystemTime::now(),
        };
        if !self.span.is_disabled() {
            let span = &self.span;
            span.record("outcome", outcome.as_str());
            span.record("reason", reason);
            if let Some(v) = event.issuer() {
                span.record("issuer", v);
            }
            if let Some(v) = event.kid() {
                span.record("kid", v);
            }
            if let Some(v) = event.alg() {
                span.record("alg", v);
            }
            if let Some(v) = event.subject() {
                span.record("subject", v);
            }
            span.record(
                "latency_us",
                u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            );
            span.in_scope(|| {
                tracing::debug!(
                    target: "tower_gatekeeper::decision",
                    outcome = outcome.as_str(),
                    reason,
                    "decision"
                );
            });
        }
        if let Some(hook) = &detail.hook.0 {
            hook.on_decision(&event);
        }
    }
}

/// Paths are client input: keep them printable.
fn sanitize_path(path: String) -> String {
    if path.chars().any(char::is_control) {
        path.chars()
            .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
            .collect()
    } else {
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn token_facts_are_sanitized_and_never_fail() {
        let token = format!(
            "{}.{}.sig",
            b64(&json!({"alg": "RS256", "kid": "k\n1"})),
            b64(&json!({"iss": "x".repeat(500)}))
        );
        let mut headers = HeaderMap::new();
        headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
        let facts = TokenFacts::of(&headers);
        assert_eq!(facts.alg.as_deref(), Some("RS256"));
        assert_eq!(facts.kid.as_deref(), Some("k\u{FFFD}1"));
        assert_eq!(facts.issuer.unwrap().len(), 128);

        for garbage in [
            "Bearer",
            "Bearer a.b",
            "Bearer !!.??.x",
            "Basic abc",
            "Bearer a.b.c.d",
        ] {
            headers.insert("authorization", garbage.parse().unwrap());
            let facts = TokenFacts::of(&headers);
            assert!(facts.alg.is_none() && facts.kid.is_none() && facts.issuer.is_none());
        }
    }

    #[test]
    fn request_ids_must_be_well_formed() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", "abc-123".parse().unwrap());
        assert_eq!(well_formed_request_id(&headers).as_deref(), Some("abc-123"));
        headers.insert("x-request-id", "a b".parse().unwrap());
        assert_eq!(well_formed_request_id(&headers), None);
    }
}
