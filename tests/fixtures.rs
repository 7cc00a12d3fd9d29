//! Every token of `tests/fixtures/tokens.json` (minted by PyJWT, an independent JOSE
//! implementation) sent over real HTTP on loopback through the whole stack:
//! `AuthenticateLayer` → `AuthorizeLayer` → `ContextPropagationLayer` → an echo upstream.
//!
//! Time never matters: every verifier uses a fixed clock (2025-06-15), inside every fixture
//! token's validity window except the deliberately expired and not-yet-valid ones.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::routing::any;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::Value;
use tower::{ServiceBuilder, ServiceExt};
use tower_gatekeeper::authorize::{AllowAll, Authenticated, roles_any, scopes_all};
use tower_gatekeeper::jwt::{Clock, Validation};
use tower_gatekeeper::keys::StaticKeys;
use tower_gatekeeper::{
    Algorithm, AuthenticateLayer, AuthorizeLayer, ContextPropagationLayer, JwtAuthenticator,
    PolicyEvaluator, Rejection, RejectionKind,
};

/// 2025-06-15T14:40:00Z: after the fixtures' `iat`/`nbf` (2023), before their `exp` (2100).
const NOW: u64 = 1_750_000_000;

const KEYSETS: [&str; 6] = ["jwks", "jwks-noalg", "hmac", "typ", "es512", "two-issuers"];

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

struct Fixture {
    name: String,
    token: String,
    expect: String,
    keyset: String,
    /// Context headers the upstream must receive where they differ from the defaults.
    forwarded: Vec<(String, String)>,
}

struct Fixtures {
    asym_issuer: String,
    hmac_issuer: String,
    /// The second issuer of the `two-issuers` keyset (same audience).
    b_issuer: String,
    audience: String,
    tokens: Vec<Fixture>,
}

fn fixtures() -> Fixtures {
    let text = std::fs::read_to_string(fixtures_dir().join("tokens.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let s = |v: &Value| v.as_str().unwrap().to_owned();
    Fixtures {
        asym_issuer: s(&doc["issuers"]["asym"]),
        hmac_issuer: s(&doc["issuers"]["hmac"]),
        b_issuer: s(&doc["issuers"]["b"]),
        audience: s(&doc["audience"]),
        tokens: doc["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| Fixture {
                name: s(&t["name"]),
                token: s(&t["token"]),
                expect: s(&t["expect"]),
                keyset: s(&t["keyset"]),
                forwarded: t["forwarded"]
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), s(v))).collect())
                    .unwrap_or_default(),
            })
            .collect(),
    }
}

impl Fixtures {
    fn token(&self, name: &str) -> &str {
        &self
            .tokens
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no fixture {name}"))
            .token
    }

    /// The verifier configuration the fixtures README names for `keyset`.
    fn authenticator(&self, keyset: &str) -> JwtAuthenticator<StaticKeys> {
        let keys_dir = fixtures_dir().join("keys");
        let clock = Clock::from_fn(|| UNIX_EPOCH + Duration::from_secs(NOW));
        let asym = Validation::new(&self.asym_issuer)
            .audiences([&self.audience])
            .clock(clock.clone());
        let (keys, validation) = match keyset {
            "jwks" => (
                StaticKeys::from_jwks_file(keys_dir.join("jwks.json")).unwrap(),
                asym,
            ),
            "jwks-noalg" => (
                StaticKeys::from_jwks_file(keys_dir.join("jwks-rsa-noalg.json")).unwrap(),
                asym.algorithms([
                    Algorithm::RS256,
                    Algorithm::RS384,
                    Algorithm::RS512,
                    Algorithm::PS256,
                    Algorithm::PS384,
                    Algorithm::PS512,
                ]),
            ),
            "hmac" => (
                StaticKeys::from_hmac_secret_file(keys_dir.join("hmac.secret")).unwrap(),
                Validation::new(&self.hmac_issuer)
                    .audiences([&self.audience])
                    .algorithms([Algorithm::HS256, Algorithm::HS384, Algorithm::HS512])
                    .clock(clock),
            ),
            "typ" => (
                StaticKeys::from_jwks_file(keys_dir.join("jwks.json")).unwrap(),
                asym.required_typ("at+jwt"),
            ),
            "es512" => (
                StaticKeys::from_jwks_file(keys_dir.join("jwks-es512.json")).unwrap(),
                asym,
            ),
            "two-issuers" => {
                let a = JwtAuthenticator::new(
                    StaticKeys::from_jwks_file(keys_dir.join("jwks.json")).unwrap(),
                    asym,
                )
                .unwrap();
                return a
                    .with_issuer(
                        StaticKeys::from_jwks_file(keys_dir.join("jwks-issuer-b.json")).unwrap(),
                        Validation::new(&self.b_issuer)
                            .audiences([&self.audience])
                            .clock(clock),
                    )
                    .unwrap();
            }
            other => panic!("unknown keyset {other:?} in tokens.json"),
        };
        JwtAuthenticator::new(keys, validation).unwrap()
    }

    /// The issuer a keyset's tokens name by default.
    fn default_issuer(&self, keyset: &str) -> &str {
        if keyset == "hmac" {
            &self.hmac_issuer
        } else {
            &self.asym_issuer
        }
    }
}

/// Request headers to send, as (name, value) pairs.
type Headers<'a> = Vec<(&'a str, &'a str)>;

/// The headers the echo upstream saw, as it reported them.
struct Seen(Vec<(String, String)>);

impl Seen {
    fn parse(body: &str) -> Self {
        Seen(serde_json::from_str(body).unwrap())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }
}

struct Gateway {
    base: String,
    client: reqwest::Client,
    /// How many requests reached the upstream.
    upstream_calls: Arc<AtomicUsize>,
    fixtures: Fixtures,
}

/// Answers with the request's headers as a JSON list of `[name, value]` pairs.
fn echo_headers(headers: &HeaderMap) -> String {
    let pairs: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    serde_json::to_string(&pairs).unwrap()
}

fn protected<P>(
    path: &str,
    auth: AuthenticateLayer<JwtAuthenticator<StaticKeys>>,
    policy: P,
    calls: &Arc<AtomicUsize>,
) -> Router
where
    P: PolicyEvaluator,
{
    let calls = Arc::clone(calls);
    let echo = any(move |headers: HeaderMap| {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(echo_headers(&headers))
    });
    Router::new().route(path, echo).route_layer(
        ServiceBuilder::new()
            .layer(auth)
            .layer(AuthorizeLayer::new(policy))
            .layer(ContextPropagationLayer::new()),
    )
}

async fn start() -> Gateway {
    let fixtures = fixtures();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut app = Router::new();
    for keyset in KEYSETS {
        let auth = AuthenticateLayer::new(fixtures.authenticator(keyset));
        app = app.merge(protected(
            &format!("/{keyset}/echo"),
            auth,
            Authenticated,
            &calls,
        ));
    }
    let jwks = || fixtures.authenticator("jwks");
    app = app
        .merge(protected(
            "/optional/echo",
            AuthenticateLayer::optional(jwks()),
            AllowAll,
            &calls,
        ))
        .merge(protected(
            "/admin/echo",
            AuthenticateLayer::new(jwks()),
            roles_any(["admin"]),
            &calls,
        ))
        .merge(protected(
            "/scoped/echo",
            AuthenticateLayer::new(jwks()),
            scopes_all(["orders:admin"]),
            &calls,
        ));

    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Gateway {
        base: format!("http://{addr}"),
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        upstream_calls: calls,
        fixtures,
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn challenge(&self) -> &str {
        let mut all = self.headers.get_all("www-authenticate").iter();
        let first = all.next().expect("a WWW-Authenticate challenge");
        assert!(all.next().is_none(), "one challenge");
        first.to_str().unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    fn seen(&self) -> Seen {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        Seen::parse(&self.body)
    }
}

impl Gateway {
    async fn send(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut request = self.client.get(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        Reply {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    fn calls(&self) -> usize {
        self.upstream_calls.load(Ordering::SeqCst)
    }
}

/// A 401 `invalid_token` whose challenge and body never contain the token or its parts.
fn assert_invalid_token(reply: &Reply, token: &str, name: &str) {
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "{name}: {}",
        reply.body
    );
    let challenge = reply.challenge();
    assert!(
        challenge.starts_with(r#"Bearer realm="api", error="invalid_token""#),
        "{name}: {challenge}"
    );
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{name}"
    );
    let body = reply.json();
    assert_eq!(body["error"], "invalid_token", "{name}");
    assert!(body["error_description"].is_string(), "{name}");
    for text in [reply.body.as_str(), challenge] {
        assert!(!text.contains(token), "{name}: {text}");
        for segment in token.split('.').filter(|s| s.len() >= 8) {
            assert!(
                !text.contains(segment),
                "{name} echoes a token segment: {text}"
            );
        }
    }
}

#[tokio::test]
async fn every_fixture_token_gets_its_expected_outcome() {
    let gw = start().await;
    let (mut valid, mut invalid) = (0, 0);
    for fixture in &gw.fixtures.tokens {
        let name = fixture.name.as_str();
        assert!(KEYSETS.contains(&fixture.keyset.as_str()), "{name}");
        let path = format!("/{}/echo", fixture.keyset);
        let authorization = format!("Bearer {}", fixture.token);
        let before = gw.calls();
        let reply = gw
            .send(
                &path,
                &[
                    ("authorization", &authorization),
                    ("x-user-id", "attacker"),
                    ("X-User-Id", "attacker-2"),
                    ("x_user_id", "attacker-3"),
                    ("x-user-roles", "admin"),
                    ("x-tenant-id", "evil"),
                ],
            )
            .await;
        match fixture.expect.as_str() {
            "valid" => {
                valid += 1;
                let seen = reply.seen();
                let expected = |header: &str, default: &'static str| -> String {
                    fixture
                        .forwarded
                        .iter()
                        .find(|(h, _)| h == header)
                        .map_or(default.to_owned(), |(_, v)| v.clone())
                };
                // Every identity header the upstream gets is whole: never one left out.
                assert_eq!(
                    seen.all("x-user-id"),
                    [expected("x-user-id", "user-123")],
                    "{name}"
                );
                let issuer = fixture
                    .forwarded
                    .iter()
                    .find(|(h, _)| h == "x-user-issuer")
                    .map_or(gw.fixtures.default_issuer(&fixture.keyset), |(_, v)| v);
                assert_eq!(seen.all("x-user-issuer"), [issuer], "{name}");
                for (header, value) in &fixture.forwarded {
                    assert_eq!(seen.all(header), [value.as_str()], "{name}: {header}");
                }
                assert!(!seen.has("authorization"), "{name}");
                assert!(!seen.has("x_user_id"), "{name}");
                assert_eq!(
                    seen.all("x-tenant-id"),
                    [expected("x-tenant-id", "acme")],
                    "{name}"
                );
                // The client's spoofed roles never arrive; the token's own roles do.
                let roles = seen.all("x-user-roles");
                assert!(roles.len() <= 1, "{name}: {roles:?}");
                if !fixture.forwarded.iter().any(|(h, _)| h == "x-user-roles") {
                    assert!(!roles.contains(&"admin"), "{name}");
                }
                assert_eq!(seen.all("x-request-id").len(), 1, "{name}");
                assert_eq!(gw.calls(), before + 1, "{name}");
            }
            "invalid_token" => {
                invalid += 1;
                assert_invalid_token(&reply, &fixture.token, name);
                assert_eq!(gw.calls(), before, "{name} reached the upstream");
            }
            other => panic!("{name}: unknown expectation {other:?}"),
        }
    }
    // The README's count: a fixture file that silently lost cases must not pass.
    assert_eq!((valid, invalid), (28, 83));
}

#[tokio::test]
async fn valid_fixtures_propagate_their_roles_and_scopes() {
    let gw = start().await;
    let bearer = |name: &str| format!("Bearer {}", gw.fixtures.token(name));
    let seen = gw
        .send("/jwks/echo", &[("authorization", &bearer("rs256_valid"))])
        .await
        .seen();
    assert_eq!(seen.all("x-user-roles"), ["clerk"]);
    assert_eq!(seen.all("x-user-scopes"), ["orders:read orders:write"]);
    let seen = gw
        .send(
            "/jwks/echo",
            &[("authorization", &bearer("scp_array_valid"))],
        )
        .await
        .seen();
    assert_eq!(seen.all("x-user-scopes"), ["orders:read orders:write"]);
    // The default roles claim is "roles"; this token keeps them under realm_access.
    let seen = gw
        .send(
            "/jwks/echo",
            &[("authorization", &bearer("realm_roles_valid"))],
        )
        .await
        .seen();
    assert!(seen.all("x-user-roles").is_empty());
}

#[tokio::test]
async fn realm_roles_with_a_dotted_roles_claim() {
    let fixtures = fixtures();
    let keys = StaticKeys::from_jwks_file(fixtures_dir().join("keys/jwks.json")).unwrap();
    let validation = Validation::new(&fixtures.asym_issuer)
        .audiences([&fixtures.audience])
        .roles_claim("realm_access.roles")
        .clock(Clock::from_fn(|| UNIX_EPOCH + Duration::from_secs(NOW)));
    let auth = JwtAuthenticator::new(keys, validation).unwrap();
    let ctx = auth
        .verify(fixtures.token("realm_roles_valid"))
        .await
        .unwrap();
    assert_eq!(ctx.roles(), ["admin", "clerk"]);
}

/// The claims of every valid fixture, as the context gives them (kept as text and parsed on
/// first use), equal the whole claims object parsed from the token: as a map, by name and
/// dotted path, and deserialized.
#[tokio::test]
async fn valid_fixtures_keep_all_their_claims() {
    use base64::Engine as _;
    use serde_json::Map;
    let fixtures = fixtures();
    let mut checked = 0;
    for fixture in fixtures.tokens.iter().filter(|t| t.expect == "valid") {
        let name = fixture.name.as_str();
        let payload = fixture.token.split('.').nth(1).unwrap();
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        let whole: Map<String, Value> = serde_json::from_slice(&json).unwrap();
        let ctx = fixtures
            .authenticator(&fixture.keyset)
            .verify(&fixture.token)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        // Deserialized straight from the text, before any map is built.
        assert_eq!(ctx.claims::<Map<String, Value>>().unwrap(), whole, "{name}");
        assert_eq!(
            ctx.claims::<Value>().unwrap(),
            Value::Object(whole.clone()),
            "{name}"
        );
        assert_eq!(ctx.claims_map(), &whole, "{name}");
        // Parsed once: the same map on every call and from every clone.
        assert!(
            std::ptr::eq(ctx.claims_map(), ctx.clone().claims_map()),
            "{name}"
        );
        for (key, value) in &whole {
            assert_eq!(ctx.claim(key), Some(value), "{name}: {key}");
            if let Value::Object(members) = value {
                for (inner, v) in members {
                    assert_eq!(ctx.claim(&format!("{key}.{inner}")), Some(v), "{name}");
                }
            }
        }
        assert_eq!(ctx.claim("no-such-claim"), None, "{name}");
        checked += 1;
    }
    assert_eq!(checked, 28);
}

#[tokio::test]
async fn no_credential_is_a_bare_challenge() {
    let gw = start().await;
    for headers in [&[][..], &[("authorization", "Basic dXNlcjpwYXNz")]] {
        let reply = gw.send("/jwks/echo", headers).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.challenge(), r#"Bearer realm="api""#);
        assert!(reply.json()["error"].is_string());
    }
    assert_eq!(gw.calls(), 0);
}

#[tokio::test]
async fn malformed_authorization_is_invalid_request() {
    let gw = start().await;
    let bearer = format!("Bearer {}", gw.fixtures.token("rs256_valid"));
    let cases: [&[(&str, &str)]; 4] = [
        &[("authorization", &bearer), ("authorization", &bearer)],
        &[
            ("authorization", &bearer),
            ("authorization", "Basic dXNlcjpwYXNz"),
        ],
        &[("authorization", "Bearer")],
        &[("authorization", "Bearer a b")],
    ];
    for headers in cases {
        let reply = gw.send("/jwks/echo", headers).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{headers:?}");
        assert!(
            reply
                .challenge()
                .starts_with(r#"Bearer realm="api", error="invalid_request""#),
            "{}",
            reply.challenge()
        );
        assert_eq!(reply.json()["error"], "invalid_request");
        assert!(!reply.body.contains(gw.fixtures.token("rs256_valid")));
    }
    assert_eq!(gw.calls(), 0);
}

#[tokio::test]
async fn the_scheme_is_case_insensitive() {
    let gw = start().await;
    let token = gw.fixtures.token("es256_valid");
    for scheme in ["bearer", "BEARER", "bEaReR"] {
        let reply = gw
            .send(
                "/jwks/echo",
                &[("authorization", &format!("{scheme} {token}"))],
            )
            .await;
        assert_eq!(reply.seen().all("x-user-id"), ["user-123"], "{scheme}");
    }
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let gw = start().await;
    let spoofed = [
        ("x-user-id", "attacker"),
        ("X-User-Id", "attacker"),
        ("x_user_id", "attacker"),
        ("X_User_Id", "attacker"),
        ("x-user_id", "attacker"),
        ("x-user-roles", "admin"),
        ("x_user_roles", "admin"),
        ("x-user-scopes", "orders:admin"),
        ("x-tenant-id", "evil"),
        ("x_tenant_id", "evil"),
        ("x-auth-claims", "e30"),
        ("x_auth_claims", "e30"),
    ];
    // Optional route without a token: the request passes, anonymous and clean.
    let seen = gw.send("/optional/echo", &spoofed).await.seen();
    for (name, _) in spoofed {
        let lower = name.to_ascii_lowercase();
        assert!(!seen.has(&lower), "{name} reached the upstream");
    }
    for (_, value) in seen.0.iter() {
        assert!(!["attacker", "admin", "evil", "e30"].contains(&value.as_str()));
    }
    assert_eq!(seen.all("x-request-id").len(), 1);

    // Optional route with a valid token: only the verified identity.
    let bearer = format!("Bearer {}", gw.fixtures.token("eddsa_valid"));
    let mut headers = spoofed.to_vec();
    headers.push(("authorization", &bearer));
    let seen = gw.send("/optional/echo", &headers).await.seen();
    assert_eq!(seen.all("x-user-id"), ["user-123"]);
    assert_eq!(seen.all("x-user-roles"), ["clerk"]);
    assert_eq!(seen.all("x-tenant-id"), ["acme"]);
    assert!(!seen.has("authorization"));
    assert!(!seen.has("x_user_id") && !seen.has("x-user_id") && !seen.has("x-auth-claims"));

    // Optional route with a bad token: rejected, never downgraded to anonymous.
    let expired = gw.fixtures.token("expired").to_owned();
    let before = gw.calls();
    let reply = gw
        .send(
            "/optional/echo",
            &[
                ("authorization", &format!("Bearer {expired}")),
                ("x-user-id", "attacker"),
            ],
        )
        .await;
    assert_invalid_token(&reply, &expired, "expired on optional route");
    assert_eq!(gw.calls(), before);
}

#[tokio::test]
async fn grpc_requests_get_trailers_only_statuses() {
    let gw = start().await;
    let grpc = ("content-type", "application/grpc");
    let clerk = format!("Bearer {}", gw.fixtures.token("rs256_valid"));
    let expired = format!("Bearer {}", gw.fixtures.token("expired"));
    let cases: [(&str, &str, Headers<'_>, &str); 5] = [
        ("no token", "/jwks/echo", vec![grpc], "16"),
        (
            "expired token",
            "/jwks/echo",
            vec![grpc, ("authorization", &expired)],
            "16",
        ),
        (
            "two Authorization headers",
            "/jwks/echo",
            vec![grpc, ("authorization", &clerk), ("authorization", &clerk)],
            "3",
        ),
        (
            "denied",
            "/admin/echo",
            vec![grpc, ("authorization", &clerk)],
            "7",
        ),
        (
            "grpc+proto, no token",
            "/jwks/echo",
            vec![("content-type", "application/grpc+proto")],
            "16",
        ),
    ];
    for (name, path, headers, code) in cases {
        let reply = gw.send(path, &headers).await;
        assert_eq!(reply.status, StatusCode::OK, "{name}");
        assert_eq!(reply.header("grpc-status"), Some(code), "{name}");
        assert!(reply.header("grpc-message").is_some(), "{name}");
        assert_eq!(
            reply.header("content-type"),
            Some("application/grpc"),
            "{name}"
        );
        assert!(reply.headers.get("www-authenticate").is_none(), "{name}");
        assert!(reply.body.is_empty(), "{name}: {}", reply.body);
    }
    assert_eq!(gw.calls(), 0);
}

#[tokio::test]
async fn denied_policies_are_403() {
    let gw = start().await;
    let clerk = format!("Bearer {}", gw.fixtures.token("rs256_valid"));

    let reply = gw.send("/admin/echo", &[("authorization", &clerk)]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let challenge = reply.challenge();
    assert!(
        challenge.starts_with(r#"Bearer realm="api", error="insufficient_scope""#),
        "{challenge}"
    );
    assert!(!challenge.contains("scope=\"admin"), "{challenge}");
    // Both 403 kinds name the RFC 6750 code of the challenge.
    assert_eq!(reply.json()["error"], "insufficient_scope");

    let reply = gw.send("/scoped/echo", &[("authorization", &clerk)]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let challenge = reply.challenge();
    assert!(
        challenge.starts_with(r#"Bearer realm="api", error="insufficient_scope""#),
        "{challenge}"
    );
    assert!(
        challenge.ends_with(r#", scope="orders:admin""#),
        "{challenge}"
    );
    assert_eq!(reply.json()["error"], "insufficient_scope");

    // Without a caller, the same policies answer 401.
    let reply = gw.send("/admin/echo", &[]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(gw.calls(), 0);
}

#[tokio::test]
async fn http2_prior_knowledge_gets_the_same_answers() {
    let mut gw = start().await;
    gw.client = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let bearer = format!("Bearer {}", gw.fixtures.token("es384_valid"));
    let reply = gw
        .send(
            "/jwks/echo",
            &[("authorization", &bearer), ("x_user_id", "attacker")],
        )
        .await;
    let seen = reply.seen();
    assert_eq!(seen.all("x-user-id"), ["user-123"]);
    assert!(!seen.has("x_user_id") && !seen.has("authorization"));

    let forged = gw.fixtures.token("alg_none_lower").to_owned();
    let reply = gw
        .send(
            "/jwks/echo",
            &[("authorization", &format!("Bearer {forged}"))],
        )
        .await;
    assert_invalid_token(&reply, &forged, "alg none over HTTP/2");

    let reply = gw
        .send("/jwks/echo", &[("content-type", "application/grpc")])
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("grpc-status"), Some("16"));
    assert!(reply.body.is_empty());
    assert_eq!(gw.calls(), 1);
}

#[tokio::test]
async fn unknown_routes_are_404_before_authentication() {
    let gw = start().await;
    let reply = gw.send("/nowhere", &[]).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(reply.headers.get("www-authenticate").is_none());
    assert_eq!(gw.calls(), 0);
}

/// The same stack at the tower level, to read the response extensions.
#[tokio::test]
async fn the_rejection_is_in_the_response_extensions() {
    let fixtures = fixtures();
    let calls = Arc::new(AtomicUsize::new(0));
    let stack = |policy| {
        let calls = Arc::clone(&calls);
        ServiceBuilder::new()
            .layer(AuthenticateLayer::new(fixtures.authenticator("jwks")))
            .layer(AuthorizeLayer::new(policy))
            .layer(ContextPropagationLayer::new())
            .service_fn(move |req: Request<Full<Bytes>>| {
                calls.fetch_add(1, Ordering::SeqCst);
                let user = req.headers().get("x-user-id").cloned();
                async move {
                    let mut response = Response::new(Full::new(Bytes::new()));
                    if let Some(user) = user {
                        response.headers_mut().insert("x-seen-user", user);
                    }
                    Ok::<_, Infallible>(response)
                }
            })
    };
    let request = |authorization: &[&str]| {
        let mut builder = Request::builder().uri("/orders");
        for value in authorization {
            builder = builder.header("authorization", *value);
        }
        builder.body(Full::new(Bytes::new())).unwrap()
    };
    let clerk = format!("Bearer {}", fixtures.token("rs256_valid"));
    let expired = format!("Bearer {}", fixtures.token("expired"));
    let forged = format!("Bearer {}", fixtures.token("hs256_with_rsa_pubkey"));

    let allowed = stack(roles_any(["clerk"]))
        .oneshot(request(&[&clerk]))
        .await
        .unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(allowed.headers()["x-seen-user"], "user-123");
    assert!(allowed.extensions().get::<Rejection>().is_none());
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let cases: Vec<(&str, _, Request<Full<Bytes>>, StatusCode, RejectionKind)> = vec![
        (
            "no credential",
            roles_any(["clerk"]),
            request(&[]),
            StatusCode::UNAUTHORIZED,
            RejectionKind::MissingCredential,
        ),
        (
            "expired",
            roles_any(["clerk"]),
            request(&[&expired]),
            StatusCode::UNAUTHORIZED,
            RejectionKind::InvalidToken,
        ),
        (
            "RS/HS confusion",
            roles_any(["clerk"]),
            request(&[&forged]),
            StatusCode::UNAUTHORIZED,
            RejectionKind::InvalidToken,
        ),
        (
            "two headers",
            roles_any(["clerk"]),
            request(&[&clerk, &clerk]),
            StatusCode::BAD_REQUEST,
            RejectionKind::InvalidRequest,
        ),
        (
            "role missing",
            roles_any(["admin"]),
            request(&[&clerk]),
            StatusCode::FORBIDDEN,
            RejectionKind::Forbidden,
        ),
    ];
    for (name, policy, req, status, kind) in cases {
        let response = stack(policy).oneshot(req).await.unwrap();
        assert_eq!(response.status(), status, "{name}");
        let rejection = response
            .extensions()
            .get::<Rejection>()
            .unwrap_or_else(|| panic!("{name}: no Rejection in the extensions"));
        assert_eq!(rejection.kind(), kind, "{name}");
    }
    let expired_rejection = stack(roles_any(["clerk"]))
        .oneshot(request(&[&expired]))
        .await
        .unwrap();
    let rejection = expired_rejection.extensions().get::<Rejection>().unwrap();
    assert_eq!(rejection.description(), "token expired");
    assert!(std::error::Error::source(rejection).is_some());

    let scoped = ServiceBuilder::new()
        .layer(AuthenticateLayer::new(fixtures.authenticator("jwks")))
        .layer(AuthorizeLayer::new(scopes_all([
            "orders:read",
            "orders:admin",
        ])))
        .service_fn(|_req: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        });
    let response = scoped.oneshot(request(&[&clerk])).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let rejection = response.extensions().get::<Rejection>().unwrap();
    assert_eq!(rejection.kind(), RejectionKind::InsufficientScope);
    assert_eq!(rejection.scope(), Some("orders:admin"));

    // Nothing rejected ever reached the inner service.
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// Two issuers, one audience: issuer B's `alice` (role admin) is another person than issuer
/// A's `alice`. The upstream tells them apart by `x-user-issuer`, and routes meant for issuer
/// A's users (`issuers = [A]`, owner rule included) refuse issuer B's `alice`.
#[tokio::test]
async fn two_issuers_are_kept_apart() {
    use tower_gatekeeper::authorize::{RouteConfig, RouteTable};
    let fixtures = fixtures();
    let (a, b) = (fixtures.asym_issuer.clone(), fixtures.b_issuer.clone());

    // A table serving two issuers refuses an owner rule that does not name its one issuer.
    for rule in [
        serde_json::json!({ "path": "/users/{user_id}", "owner_param": "user_id" }),
        serde_json::json!({ "path": "/t/{tenant}", "tenant_param": "tenant", "issuers": [a, b] }),
    ] {
        let routes: Vec<RouteConfig> = serde_json::from_value(serde_json::json!([rule])).unwrap();
        let err = RouteTable::from_config_for_issuers(&routes, [&a, &b]).unwrap_err();
        assert!(err.to_string().contains("issuers"), "{err}");
    }
    let typo: Vec<RouteConfig> = serde_json::from_value(
        serde_json::json!([{ "path": "/x", "issuers": ["https://idp.example.test/"] }]),
    )
    .unwrap();
    let err = RouteTable::from_config_for_issuers(&typo, [&a, &b]).unwrap_err();
    assert!(err.to_string().contains("not a configured issuer"), "{err}");

    let routes: Vec<RouteConfig> = serde_json::from_value(serde_json::json!([
        { "path": "/users/{user_id}", "owner_param": "user_id", "bypass_roles": ["admin"],
          "issuers": [a] },
        { "path": "/admin/{*rest}", "roles_any": ["admin"], "issuers": [a] },
        { "path": "/any/{*rest}" },
    ]))
    .unwrap();
    let table = RouteTable::from_config_for_issuers(&routes, [&a, &b]).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let app = protected(
        "/{*path}",
        AuthenticateLayer::new(fixtures.authenticator("two-issuers")),
        table,
        &calls,
    );
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let send = |token: &str, path: &str| {
        client
            .get(format!("http://{addr}{path}"))
            .header("authorization", format!("Bearer {token}"))
            .header("x-user-issuer", "spoofed")
            .header("x_user_issuer", "spoofed")
            .send()
    };
    let alice_a = fixtures.token("issuer_a_alice_valid");
    let alice_b = fixtures.token("issuer_b_alice_admin_valid");

    let reply = send(alice_a, "/users/alice").await.unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    let seen = Seen::parse(&reply.text().await.unwrap());
    assert_eq!(seen.all("x-user-id"), ["alice"]);
    assert_eq!(seen.all("x-user-issuer"), [a.as_str()]);
    assert!(!seen.has("x_user_issuer"));

    let reply = send(alice_b, "/any/thing").await.unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    let seen = Seen::parse(&reply.text().await.unwrap());
    assert_eq!(seen.all("x-user-id"), ["alice"]);
    assert_eq!(seen.all("x-user-issuer"), [b.as_str()]);
    assert_eq!(seen.all("x-user-roles"), ["admin"]);
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    for (who, token, path) in [
        ("B's alice on A's alice", alice_b, "/users/alice"),
        ("B's admin on A's admin route", alice_b, "/admin/users"),
        ("A's clerk on the admin route", alice_a, "/admin/users"),
        ("A's alice on bob", alice_a, "/users/bob"),
    ] {
        let reply = send(token, path).await.unwrap();
        assert_eq!(reply.status(), StatusCode::FORBIDDEN, "{who}");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "a denied request reached the upstream"
    );
}
