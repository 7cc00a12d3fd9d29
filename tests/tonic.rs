//! gRPC end to end over loopback, against `examples/tonic_service.rs`: a real tonic client,
//! real tonic servers, and a gateway that signs the context for the service behind it.

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/tonic_service.rs"]
mod tonic_service;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::{Code, Request};
use tonic_service::{DemoClient, pb, with_token};
use tower_gatekeeper::JwtAuthenticator;
use tower_gatekeeper::jwt::{Clock, Validation};
use tower_gatekeeper::keys::{SigningKey, StaticKeys};

struct Idp {
    key: SigningKey,
}

impl Idp {
    fn new() -> Self {
        Idp {
            key: SigningKey::generate_ed25519().unwrap().with_kid("idp-1"),
        }
    }

    fn authenticator(&self) -> JwtAuthenticator<StaticKeys> {
        JwtAuthenticator::new(
            StaticKeys::new([self.key.verifying_key().clone()]),
            Validation::new(tonic_service::ISSUER).audiences([tonic_service::AUDIENCE]),
        )
        .unwrap()
    }

    fn token(&self, roles: Value) -> String {
        self.key
            .sign(&json!({
                "iss": tonic_service::ISSUER, "aud": tonic_service::AUDIENCE,
                "sub": "user-1", "roles": roles, "exp": 4102444800u64,
            }))
            .unwrap()
    }
}

/// Binds a loopback listener; the returned sender stops the server when dropped.
async fn listener() -> (
    TcpListener,
    SocketAddr,
    oneshot::Sender<()>,
    oneshot::Receiver<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel();
    (listener, addr, stop, stopped)
}

fn who() -> Request<pb::WhoAmIRequest> {
    Request::new(pb::WhoAmIRequest {})
}

fn spoofed<T>(mut req: Request<T>) -> Request<T> {
    for name in ["x-user-id", "x_user_id", "x-user-roles", "x-auth-context"] {
        req.metadata_mut().append(name, "spoof".parse().unwrap());
        req.metadata_mut().append(name, "admin".parse().unwrap());
    }
    req
}

#[tokio::test]
async fn direct_three_layers_in_front_of_a_tonic_service() {
    let idp = Idp::new();
    let (listener, addr, _stop, stopped) = listener().await;
    tokio::spawn(tonic_service::serve_direct(
        listener,
        idp.authenticator(),
        async {
            let _ = stopped.await;
        },
    ));
    let mut client = DemoClient::connect(addr).await.unwrap();

    let status = client.who_am_i(spoofed(who())).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    let guest = idp.token(json!(["guest"]));
    let status = client
        .who_am_i(spoofed(with_token(who(), &guest)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    let token = idp.token(json!(["clerk"]));
    let reply = client
        .who_am_i(spoofed(with_token(who(), &token)))
        .await
        .unwrap();
    assert_eq!(reply.subject, "user-1");
    assert_eq!(reply.roles, ["clerk"]);
    assert_eq!(reply.credential_kind, "jwt");
    assert_eq!(
        reply.metadata_user, "user-1",
        "spoofed metadata must not survive"
    );
    assert!(
        !reply.saw_authorization,
        "the raw token stops at the gateway"
    );
    assert!(
        !reply.saw_signed_context,
        "a client's x-auth-context is stripped"
    );
    assert_eq!(reply.request_id.len(), 36);

    let replies = client
        .count(with_token(
            Request::new(pb::CountRequest { upto: 50 }),
            &token,
        ))
        .await
        .unwrap();
    assert_eq!(replies.len(), 50);
    assert!(
        replies
            .iter()
            .enumerate()
            .all(|(i, r)| r.n as usize == i + 1)
    );
    assert!(replies.iter().all(|r| r.subject == "user-1"));
}

struct Chain {
    gateway: SocketAddr,
    service: SocketAddr,
    context_key: SigningKey,
    _stops: Vec<oneshot::Sender<()>>,
}

async fn chain(idp: &Idp) -> Chain {
    let context_key = SigningKey::generate_ed25519().unwrap().with_kid("ctx-1");
    let (svc_listener, service, stop1, stopped1) = listener().await;
    let trusted =
        tonic_service::trusted_layer(StaticKeys::new([context_key.verifying_key().clone()]))
            .unwrap();
    tokio::spawn(tonic_service::serve_downstream(
        svc_listener,
        trusted,
        async {
            let _ = stopped1.await;
        },
    ));
    let (gw_listener, gateway, stop2, stopped2) = listener().await;
    tokio::spawn(tonic_service::serve_gateway(
        gw_listener,
        idp.authenticator(),
        tonic_service::signing_propagation(context_key.clone()).unwrap(),
        service,
        async {
            let _ = stopped2.await;
        },
    ));
    Chain {
        gateway,
        service,
        context_key,
        _stops: vec![stop1, stop2],
    }
}

#[tokio::test]
async fn gateway_signed_context_reaches_the_service_behind_it() {
    let idp = Idp::new();
    let chain = chain(&idp).await;
    let mut client = DemoClient::connect(chain.gateway).await.unwrap();

    let status = client.who_am_i(spoofed(who())).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = client
        .who_am_i(with_token(who(), &idp.token(json!(["guest"]))))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    let token = idp.token(json!(["clerk"]));
    let reply = client
        .who_am_i(spoofed(with_token(who(), &token)))
        .await
        .unwrap();
    assert_eq!(reply.subject, "user-1");
    assert_eq!(reply.roles, ["clerk"]);
    assert_eq!(
        reply.credential_kind, "jwt",
        "rebuilt from the signed context"
    );
    assert_eq!(reply.metadata_user, "user-1");
    assert!(reply.saw_signed_context);
    assert!(!reply.saw_authorization);

    // Streaming passes through both sets of layers and the proxy intact.
    let replies = client
        .count(with_token(
            Request::new(pb::CountRequest { upto: 200 }),
            &token,
        ))
        .await
        .unwrap();
    assert_eq!(replies.len(), 200);
    assert!(
        replies
            .iter()
            .enumerate()
            .all(|(i, r)| r.n as usize == i + 1)
    );
    assert!(replies.iter().all(|r| r.subject == "user-1"));
}

#[tokio::test]
async fn the_service_refuses_whatever_did_not_come_from_the_gateway() {
    let idp = Idp::new();
    let chain = chain(&idp).await;
    let mut service = DemoClient::connect(chain.service).await.unwrap();

    // Plain identity metadata, no signature: unauthenticated.
    let mut plain = who();
    for name in ["x-user-id", "x_user_id", "x-user-roles"] {
        plain.metadata_mut().insert(name, "admin".parse().unwrap());
    }
    let status = service.who_am_i(plain).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    // Two context headers are never guessed at: invalid argument.
    let status = service.who_am_i(spoofed(who())).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // A user's own access token is not a context (and is not even looked at).
    let token = idp.token(json!(["clerk"]));
    let status = service
        .who_am_i(with_token(who(), &token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    let mint = |key: &SigningKey, audience: &str, clock: Clock| {
        let layer = tower_gatekeeper::ContextPropagationLayer::builder()
            .sign_context(key.clone())
            .context_audience(audience)
            .context_clock(clock)
            .build()
            .unwrap();
        mint_context(layer)
    };
    let with_context = |context: String| {
        let mut req = who();
        req.metadata_mut()
            .insert("x-auth-context", context.parse().unwrap());
        req
    };

    // The genuine article is accepted ...
    let genuine = mint(&chain.context_key, "orders-svc", Clock::system()).await;
    let reply = service.who_am_i(with_context(genuine)).await.unwrap();
    assert_eq!(reply.subject, "user-1");

    // ... a forged one (another key claiming the same kid) is not,
    let forger = SigningKey::generate_ed25519().unwrap().with_kid("ctx-1");
    let forged = mint(&forger, "orders-svc", Clock::system()).await;
    let status = service.who_am_i(with_context(forged)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // ... nor one minted for another service,
    let elsewhere = mint(&chain.context_key, "billing-svc", Clock::system()).await;
    let status = service.who_am_i(with_context(elsewhere)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // ... nor a replay after expiry (minted a minute ago: 5 s lifetime + 5 s leeway).
    let past = SystemTime::now() - Duration::from_secs(60);
    let expired = mint(
        &chain.context_key,
        "orders-svc",
        Clock::from_fn(move || past),
    )
    .await;
    let status = service.who_am_i(with_context(expired)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("expired"), "{}", status.message());
}

/// Runs a context through `layer` and returns the signed context it minted.
async fn mint_context(layer: tower_gatekeeper::ContextPropagationLayer) -> String {
    use tower::{ServiceBuilder, ServiceExt};
    let (tx, rx) = std::sync::mpsc::channel();
    let service = ServiceBuilder::new()
        .layer(layer)
        .service_fn(move |req: http::Request<()>| {
            let value = req.headers()["x-auth-context"].to_str().unwrap().to_owned();
            tx.send(value).unwrap();
            async { Ok::<_, std::convert::Infallible>(http::Response::new(())) }
        });
    // The context is bound to the request it is minted for: the `WhoAmI` call.
    let mut request = http::Request::builder()
        .method(http::Method::POST)
        .uri("/gatekeeper.demo.Demo/WhoAmI")
        .body(())
        .unwrap();
    request.extensions_mut().insert(
        tower_gatekeeper::AuthContext::builder(tower_gatekeeper::CredentialKind::Jwt)
            .subject("user-1")
            .roles(["clerk"])
            .build(),
    );
    service.oneshot(request).await.unwrap();
    rx.recv().unwrap()
}
