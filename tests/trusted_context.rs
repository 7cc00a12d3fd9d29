//! The downstream side over loopback HTTP: `examples/axum_app.rs`'s `downstream_app` behind
//! `TrustedContextLayer`, fed by a gateway-side `ContextPropagationLayer` that signs.
#![cfg(feature = "axum")]

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/axum_app.rs"]
mod axum_app;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::StatusCode;
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};
use tower_gatekeeper::jwt::Clock;
use tower_gatekeeper::keys::{SigningKey, StaticKeys};
use tower_gatekeeper::propagate::SignedContextValidation;
use tower_gatekeeper::{AuthContext, ContextPropagationLayer, CredentialKind, TrustedContextLayer};

const SERVICE: &str = "orders-svc";

async fn serve(trusted: TrustedContextLayer) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, axum_app::downstream_app(trusted))
            .await
            .unwrap();
    });
    addr
}

fn signed(keys: &[&SigningKey]) -> TrustedContextLayer {
    TrustedContextLayer::signed(
        StaticKeys::new(keys.iter().map(|k| k.verifying_key().clone())),
        SignedContextValidation::new().audience(SERVICE),
    )
    .unwrap()
}

fn caller() -> AuthContext {
    AuthContext::builder(CredentialKind::Jwt)
        .subject("user-1")
        .issuer("https://idp.example.test")
        .roles(["clerk"])
        .claim("email", "u@example.test")
        .claim("secret", "not forwarded")
        .build()
}

/// The headers `layer` sends downstream for [`caller`].
async fn propagate(layer: ContextPropagationLayer) -> http::HeaderMap {
    propagate_to(layer, http::Method::GET, "/").await
}

/// The headers `layer` sends downstream for [`caller`]'s request `method` `path`.
async fn propagate_to(
    layer: ContextPropagationLayer,
    method: http::Method,
    path: &str,
) -> http::HeaderMap {
    let (tx, rx) = std::sync::mpsc::channel();
    let service = ServiceBuilder::new()
        .layer(layer)
        .service_fn(move |req: http::Request<()>| {
            tx.send(req.headers().clone()).unwrap();
            async { Ok::<_, Infallible>(http::Response::new(())) }
        });
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .body(())
        .unwrap();
    request.extensions_mut().insert(caller());
    service.oneshot(request).await.unwrap();
    rx.recv().unwrap()
}

/// A context for `GET /whoami`.
async fn mint(key: &SigningKey, audience: &str, clock: Clock) -> String {
    mint_for(key, audience, clock, http::Method::GET, "/whoami").await
}

async fn mint_for(
    key: &SigningKey,
    audience: &str,
    clock: Clock,
    method: http::Method,
    path: &str,
) -> String {
    let layer = ContextPropagationLayer::builder()
        .sign_context(key.clone())
        .context_audience(audience)
        .context_clock(clock)
        .forward_claims(["email"])
        .build()
        .unwrap();
    let headers = propagate_to(layer, method, path).await;
    headers["x-auth-context"].to_str().unwrap().to_owned()
}

/// A context signed by `key` with `claims` over the usual ones, as a gateway would never
/// mint it.
fn forge_with(key: &SigningKey, claims: serde_json::Value) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut payload = serde_json::json!({
        "iss": "tower-gatekeeper", "aud": SERVICE, "sub": "user-1", "roles": ["clerk"],
        "iat": now, "exp": now + 5, "htm": "GET", "htu": "/whoami",
    });
    for (name, value) in claims.as_object().unwrap() {
        payload[name] = value.clone();
    }
    let mut header = serde_json::Map::new();
    header.insert("typ".into(), "gatekeeper-ctx+jwt".into());
    key.sign_with_header(header, &payload).unwrap()
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let mut request = reqwest::Client::new().get(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn signed_context_accepted_and_everything_else_refused() {
    let key = SigningKey::generate_ed25519().unwrap().with_kid("ctx-1");
    let addr = serve(signed(&[&key])).await;

    let genuine = mint(&key, SERVICE, Clock::system()).await;
    let (status, body) = get(addr, "/whoami", &[("x-auth-context", &genuine)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "hello user-1 (roles: clerk)\n");

    // Missing, spoofed plain headers, another key with the same kid, another audience,
    // expired, tampered.
    let forger = SigningKey::generate_ed25519().unwrap().with_kid("ctx-1");
    let forged = mint(&forger, SERVICE, Clock::system()).await;
    let elsewhere = mint(&key, "billing-svc", Clock::system()).await;
    let past = SystemTime::now() - Duration::from_secs(60);
    let expired = mint(&key, SERVICE, Clock::from_fn(move || past)).await;
    let tampered = {
        let mut parts: Vec<String> = genuine.split('.').map(str::to_owned).collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        claims["roles"] = serde_json::json!(["clerk", "admin"]);
        parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
        parts.join(".")
    };
    for (case, headers) in [
        ("missing", vec![]),
        (
            "plain headers",
            vec![("x-user-id", "admin"), ("x-user-roles", "clerk")],
        ),
        ("forged", vec![("x-auth-context", forged.as_str())]),
        (
            "other audience",
            vec![("x-auth-context", elsewhere.as_str())],
        ),
        ("expired", vec![("x-auth-context", expired.as_str())]),
        ("tampered", vec![("x-auth-context", tampered.as_str())]),
        ("garbage", vec![("x-auth-context", "not.a.jws")]),
    ] {
        let (status, body) = get(addr, "/whoami", &headers).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}: {body}");
        // Optional routes let "missing" through, but never a bad context.
        let (status, body) = get(addr, "/maybe", &headers).await;
        if case == "missing" || case == "plain headers" {
            assert_eq!(
                (status, body.as_str()),
                (StatusCode::OK, "anonymous\n"),
                "{case}"
            );
        } else {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}: {body}");
        }
    }
    let (status, _) = get(
        addr,
        "/whoami",
        &[("x-auth-context", &genuine), ("x-auth-context", &genuine)],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a repeated context is never guessed at"
    );
}

#[tokio::test]
async fn key_rotation_by_kid() {
    let old = SigningKey::generate_ed25519().unwrap().with_kid("ctx-1");
    let new = SigningKey::generate_ed25519().unwrap().with_kid("ctx-2");
    // During the rotation the service trusts both keys ...
    let both = serve(signed(&[&old, &new])).await;
    for key in [&old, &new] {
        let context = mint(key, SERVICE, Clock::system()).await;
        let (status, _) = get(both, "/whoami", &[("x-auth-context", &context)]).await;
        assert_eq!(status, StatusCode::OK);
    }
    // ... afterwards only the new one.
    let after = serve(signed(&[&new])).await;
    let context = mint(&old, SERVICE, Clock::system()).await;
    let (status, _) = get(after, "/whoami", &[("x-auth-context", &context)]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_rebuilt_context_is_the_gateway_context() {
    let key = SigningKey::generate_ed25519().unwrap().with_kid("ctx-1");
    let headers = propagate(
        ContextPropagationLayer::builder()
            .sign_context(key.clone())
            .context_audience(SERVICE)
            .forward_claims(["email"])
            .build()
            .unwrap(),
    )
    .await;
    let (tx, rx) = std::sync::mpsc::channel();
    let service =
        ServiceBuilder::new()
            .layer(signed(&[&key]))
            .service_fn(move |req: http::Request<()>| {
                tx.send(req.extensions().get::<AuthContext>().cloned())
                    .unwrap();
                async { Ok::<_, Infallible>(http::Response::new(())) }
            });
    let mut request = http::Request::new(());
    *request.headers_mut() = headers;
    service.oneshot(request).await.unwrap();
    let ctx = rx.recv().unwrap().expect("context rebuilt");
    assert_eq!(ctx.subject(), Some("user-1"));
    assert_eq!(ctx.issuer(), Some("https://idp.example.test"));
    assert_eq!(ctx.credential_kind(), CredentialKind::Jwt);
    assert_eq!(ctx.roles(), ["clerk"]);
    assert_eq!(ctx.claim("email").unwrap(), "u@example.test");
    assert!(
        ctx.claim("secret").is_none(),
        "only allow-listed claims travel"
    );
}

#[tokio::test]
async fn plain_headers_mode_trusts_the_network() {
    let addr = serve(TrustedContextLayer::plain_headers()).await;
    let headers = propagate(
        ContextPropagationLayer::builder()
            .forward_claims(["email"])
            .build()
            .unwrap(),
    )
    .await;
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
        .collect();
    let (status, body) = get(addr, "/whoami", &pairs).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "hello user-1 (roles: clerk)\n")
    );
    // Which is exactly the risk: anyone who reaches the service is believed.
    let (status, _) = get(
        addr,
        "/whoami",
        &[("x-user-id", "anyone"), ("x-user-roles", "clerk")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = get(addr, "/whoami", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = get(addr, "/whoami", &[("x-user-id", "a"), ("x-user-id", "b")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// Plain headers carry the tenant, roles and scopes percent-encoded and the issuer in
/// `x-user-issuer`; the downstream side decodes them back to the gateway's values, and
/// refuses a malformed encoding.
#[tokio::test]
async fn plain_headers_round_trip_exactly() {
    let gateway_ctx = AuthContext::builder(CredentialKind::Jwt)
        .subject("user-1")
        .issuer("https://idp-b.example.test")
        .roles(["a,b", "clerk", "100%"])
        .scopes(["orders:read", "wr\u{ee}te"])
        .tenant("acmé, inc")
        .build();
    let (tx, rx) = std::sync::mpsc::channel();
    let gateway = ServiceBuilder::new()
        .layer(ContextPropagationLayer::new())
        .service_fn(move |req: http::Request<()>| {
            tx.send(req.headers().clone()).unwrap();
            async { Ok::<_, Infallible>(http::Response::new(())) }
        });
    let mut request = http::Request::new(());
    request.extensions_mut().insert(gateway_ctx.clone());
    gateway.oneshot(request).await.unwrap();
    let headers = rx.recv().unwrap();
    assert_eq!(headers["x-tenant-id"], "acm%C3%A9,%20inc");
    assert_eq!(headers["x-user-roles"], "a%2Cb,clerk,100%25");
    assert_eq!(headers["x-user-issuer"], "https://idp-b.example.test");

    let rebuild = |headers: http::HeaderMap| async move {
        let (tx, rx) = std::sync::mpsc::channel();
        let service = ServiceBuilder::new()
            .layer(TrustedContextLayer::plain_headers())
            .service_fn(move |req: http::Request<()>| {
                tx.send(req.extensions().get::<AuthContext>().cloned())
                    .unwrap();
                async { Ok::<_, Infallible>(http::Response::new(())) }
            });
        let mut request = http::Request::new(());
        *request.headers_mut() = headers;
        let status = service.oneshot(request).await.unwrap().status();
        (status, rx.try_recv().ok().flatten())
    };
    let (status, ctx) = rebuild(headers).await;
    assert_eq!(status, StatusCode::OK);
    let ctx = ctx.expect("context rebuilt");
    assert_eq!(ctx.subject(), gateway_ctx.subject());
    assert_eq!(ctx.issuer(), gateway_ctx.issuer());
    assert_eq!(ctx.roles(), gateway_ctx.roles());
    assert_eq!(ctx.scopes(), gateway_ctx.scopes());
    assert_eq!(ctx.tenant(), gateway_ctx.tenant());

    for (name, value) in [
        ("x-tenant-id", "100%"),
        ("x-user-roles", "a,%zz"),
        ("x-user-scopes", "%C3"),
    ] {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-user-id", "user-1".parse().unwrap());
        headers.insert(name, value.parse().unwrap());
        let (status, ctx) = rebuild(headers).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}: {value}");
        assert!(ctx.is_none());
    }
}

#[tokio::test]
async fn a_context_is_bound_to_its_request_and_to_a_short_lifetime() {
    let key = SigningKey::generate_ed25519().unwrap().with_kid("ctx-1");
    let addr = serve(signed(&[&key])).await;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // The forging helper itself makes an acceptable context.
    let fine = forge_with(&key, serde_json::json!({}));
    let (status, body) = get(addr, "/whoami", &[("x-auth-context", &fine)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Minted for another path or method: not replayable here.
    let other_path = mint_for(
        &key,
        SERVICE,
        Clock::system(),
        http::Method::GET,
        "/orders/1",
    )
    .await;
    let other_method = mint_for(
        &key,
        SERVICE,
        Clock::system(),
        http::Method::DELETE,
        "/whoami",
    )
    .await;
    // A gateway whose clock runs an hour fast.
    let ahead = SystemTime::now() + Duration::from_secs(3600);
    let from_the_future = mint(&key, SERVICE, Clock::from_fn(move || ahead)).await;
    for (case, context) in [
        ("another path", other_path),
        ("another method", other_method),
        ("iat in the future", from_the_future),
        (
            "a day-long lifetime",
            forge_with(&key, serde_json::json!({"exp": now + 86_400})),
        ),
        (
            "no binding",
            forge_with(&key, serde_json::json!({"htm": null, "htu": null})),
        ),
        ("no iat", forge_with(&key, serde_json::json!({"iat": null}))),
    ] {
        let (status, body) = get(addr, "/whoami", &[("x-auth-context", &context)]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}: {body}");
    }
    // The query is not part of the binding; the path is.
    let (status, body) = get(addr, "/whoami?x=1", &[("x-auth-context", &fine)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A tighter bound, for a gateway minting 5-second contexts.
    let tight = TrustedContextLayer::signed(
        StaticKeys::new([key.verifying_key().clone()]),
        SignedContextValidation::new()
            .audience(SERVICE)
            .max_lifetime(Duration::from_secs(5)),
    )
    .unwrap();
    let addr = serve(tight).await;
    let (status, _) = get(addr, "/whoami", &[("x-auth-context", &fine)]).await;
    assert_eq!(status, StatusCode::OK);
    let minute = forge_with(&key, serde_json::json!({"exp": now + 60}));
    let (status, _) = get(addr, "/whoami", &[("x-auth-context", &minute)]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
