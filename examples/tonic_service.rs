//! A gRPC service (tonic 0.14, hand-written prost messages: no protoc, no build script)
//! behind the gatekeeper, in the two places it runs in production:
//!
//! 1. **direct**: the three layers (authenticate, authorize, propagate) in front of the
//!    service, in one `tonic::transport::Server`;
//! 2. **behind a gateway**: a gateway (hyper, the three layers with a *signed context*, and a
//!    tonic `Channel` as reverse proxy) in front of a service that only runs
//!    [`TrustedContextLayer`] and trusts nothing but the gateway's signature.
//!
//! ```text
//! cargo run --example tonic_service
//! ```
//!
//! It starts both set-ups on loopback, calls them with a demo token (and without), prints what
//! the service saw, and keeps serving until Ctrl-C.
//!
//! The service reads the caller from the [`AuthContext`] in the request extensions (the same
//! type an axum handler extracts) and, for comparison, from the `x-user-id` metadata: HTTP/2
//! headers are gRPC metadata. Tests drive [`serve_direct`], [`serve_downstream`] and
//! [`serve_gateway`] with the hand-written [`DemoClient`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::uri::PathAndQuery;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::server::{Grpc, NamedService};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_gatekeeper::authorize::roles_any;
use tower_gatekeeper::jwt::Validation;
use tower_gatekeeper::keys::{SigningKey, StaticKeys};
use tower_gatekeeper::propagate::SignedContextValidation;
use tower_gatekeeper::{
    AuthContext, AuthenticateLayer, AuthorizeLayer, ContextPropagationLayer, JwtAuthenticator,
    TrustedContextLayer,
};

/// The demo issuer.
pub const ISSUER: &str = "https://idp.example.test";
/// The demo audience (of access tokens).
pub const AUDIENCE: &str = "api://orders";
/// The name of the service behind the gateway: the `aud` of its signed contexts.
pub const SERVICE_AUDIENCE: &str = "orders-svc";

/// The messages, as `tonic-build` would generate them from
///
/// ```proto
/// package gatekeeper.demo;
/// service Demo {
///   rpc WhoAmI(WhoAmIRequest) returns (WhoAmIReply);
///   rpc Count(CountRequest) returns (stream CountReply);
/// }
/// ```
pub mod pb {
    /// `WhoAmI` takes no arguments.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WhoAmIRequest {}

    /// What the service saw of the caller.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WhoAmIReply {
        /// `AuthContext::subject`.
        #[prost(string, tag = "1")]
        pub subject: String,
        /// `AuthContext::roles`.
        #[prost(string, repeated, tag = "2")]
        pub roles: Vec<String>,
        /// `AuthContext::credential_kind`.
        #[prost(string, tag = "3")]
        pub credential_kind: String,
        /// The `x-user-id` metadata, every value joined with `|`.
        #[prost(string, tag = "4")]
        pub metadata_user: String,
        /// The `x-request-id` metadata.
        #[prost(string, tag = "5")]
        pub request_id: String,
        /// Whether an `authorization` metadata entry reached the service.
        #[prost(bool, tag = "6")]
        pub saw_authorization: bool,
        /// Whether an `x-auth-context` metadata entry reached the service.
        #[prost(bool, tag = "7")]
        pub saw_signed_context: bool,
    }

    /// Count from 1 to `upto`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CountRequest {
        /// The last number.
        #[prost(uint32, tag = "1")]
        pub upto: u32,
    }

    /// One number of the count.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CountReply {
        /// The number.
        #[prost(uint32, tag = "1")]
        pub n: u32,
        /// Who asked.
        #[prost(string, tag = "2")]
        pub subject: String,
    }
}

/// The gRPC service name.
pub const SERVICE_NAME: &str = "gatekeeper.demo.Demo";
const WHO_AM_I: &str = "/gatekeeper.demo.Demo/WhoAmI";
const COUNT: &str = "/gatekeeper.demo.Demo/Count";

/// The server side, as `tonic-build` would generate it: routes by path to a unary and a
/// server-streaming handler.
#[derive(Debug, Clone, Copy, Default)]
pub struct DemoServer;

impl NamedService for DemoServer {
    const NAME: &'static str = SERVICE_NAME;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl Service<http::Request<Body>> for DemoServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        match req.uri().path() {
            WHO_AM_I => Box::pin(async move {
                let handler = tower::service_fn(who_am_i);
                Ok(Grpc::new(ProstCodec::default()).unary(handler, req).await)
            }),
            COUNT => Box::pin(async move {
                let handler = tower::service_fn(count);
                Ok(Grpc::new(ProstCodec::default())
                    .server_streaming(handler, req)
                    .await)
            }),
            _ => Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

/// The unary handler: the caller comes from the `AuthContext` the layers put in the request
/// extensions (tonic keeps them); the metadata is read only to show what arrived.
async fn who_am_i(req: Request<pb::WhoAmIRequest>) -> Result<Response<pb::WhoAmIReply>, Status> {
    let ctx = req
        .extensions()
        .get::<AuthContext>()
        .ok_or_else(|| Status::unauthenticated("no caller"))?;
    let metadata = req.metadata();
    let metadata_user: Vec<&str> = metadata
        .get_all("x-user-id")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    Ok(Response::new(pb::WhoAmIReply {
        subject: ctx.subject().unwrap_or_default().to_owned(),
        roles: ctx.roles().to_vec(),
        credential_kind: ctx.credential_kind().as_str().to_owned(),
        metadata_user: metadata_user.join("|"),
        request_id: metadata
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        saw_authorization: metadata.get("authorization").is_some(),
        saw_signed_context: metadata.get("x-auth-context").is_some(),
    }))
}

type CountStream = tokio_stream::Iter<std::vec::IntoIter<Result<pb::CountReply, Status>>>;

/// The server-streaming handler: `upto` messages.
async fn count(req: Request<pb::CountRequest>) -> Result<Response<CountStream>, Status> {
    let subject = req
        .extensions()
        .get::<AuthContext>()
        .and_then(AuthContext::subject)
        .unwrap_or_default()
        .to_owned();
    let replies: Vec<_> = (1..=req.get_ref().upto)
        .map(|n| {
            Ok(pb::CountReply {
                n,
                subject: subject.clone(),
            })
        })
        .collect();
    Ok(Response::new(tokio_stream::iter(replies)))
}

/// The client side, as `tonic-build` would generate it.
#[derive(Debug, Clone)]
pub struct DemoClient {
    inner: tonic::client::Grpc<Channel>,
}

impl DemoClient {
    /// A client of the server at `addr` (plaintext HTTP/2).
    ///
    /// # Errors
    ///
    /// When the connection cannot be made.
    pub async fn connect(addr: SocketAddr) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        Ok(DemoClient {
            inner: tonic::client::Grpc::new(channel),
        })
    }

    /// Calls `WhoAmI`.
    ///
    /// # Errors
    ///
    /// The call's status.
    pub async fn who_am_i(
        &mut self,
        req: Request<pb::WhoAmIRequest>,
    ) -> Result<pb::WhoAmIReply, Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let path = PathAndQuery::from_static(WHO_AM_I);
        let response = self.inner.unary(req, path, ProstCodec::default()).await?;
        Ok(response.into_inner())
    }

    /// Calls `Count` and collects the stream.
    ///
    /// # Errors
    ///
    /// The call's status, or the status that ended the stream.
    pub async fn count(
        &mut self,
        req: Request<pb::CountRequest>,
    ) -> Result<Vec<pb::CountReply>, Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let path = PathAndQuery::from_static(COUNT);
        let mut stream = self
            .inner
            .server_streaming(req, path, ProstCodec::default())
            .await?
            .into_inner();
        let mut replies = Vec::new();
        while let Some(reply) = stream.message().await? {
            replies.push(reply);
        }
        Ok(replies)
    }
}

/// `req` with `authorization: Bearer <token>` metadata.
pub fn with_token<T>(mut req: Request<T>, token: &str) -> Request<T> {
    let value = format!("Bearer {token}").parse().expect("a JWS is ASCII");
    req.metadata_mut().insert("authorization", value);
    req
}

/// Set-up 1: the service with the three layers in front, in one tonic server. Callers need
/// role `clerk`.
///
/// # Errors
///
/// When the server fails.
pub async fn serve_direct(
    listener: TcpListener,
    authenticator: JwtAuthenticator<StaticKeys>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let layers = ServiceBuilder::new()
        .layer(AuthenticateLayer::new(authenticator))
        .layer(AuthorizeLayer::new(roles_any(["clerk"])))
        .layer(ContextPropagationLayer::new())
        .into_inner();
    Server::builder()
        .layer(layers)
        .add_service(DemoServer)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await
}

/// Set-up 2, the service: only [`TrustedContextLayer`], verifying the gateway's signed
/// context with `context_keys` (the public halves of the gateway's context keys).
///
/// # Errors
///
/// When the server fails.
pub async fn serve_downstream(
    listener: TcpListener,
    trusted: TrustedContextLayer,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    Server::builder()
        .layer(trusted)
        .add_service(DemoServer)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await
}

/// The trust configuration of set-up 2's service.
///
/// # Errors
///
/// A [`ConfigError`](tower_gatekeeper::ConfigError) from the layer.
pub fn trusted_layer(
    context_keys: StaticKeys,
) -> Result<TrustedContextLayer, tower_gatekeeper::ConfigError> {
    TrustedContextLayer::signed(
        context_keys,
        SignedContextValidation::new().audience(SERVICE_AUDIENCE),
    )
}

/// Set-up 2, the gateway: hyper serving HTTP/2, the three layers with a signed context for
/// [`SERVICE_AUDIENCE`], and a tonic `Channel` to `upstream` as the reverse proxy. gRPC
/// needs nothing else: requests and responses stream through untouched.
pub async fn serve_gateway(
    listener: TcpListener,
    authenticator: JwtAuthenticator<StaticKeys>,
    propagation: ContextPropagationLayer,
    upstream: SocketAddr,
    shutdown: impl Future<Output = ()>,
) {
    let channel = Endpoint::from_shared(format!("http://{upstream}"))
        .expect("a socket address is a valid URI")
        .connect_lazy();
    let gateway = ServiceBuilder::new()
        .layer(AuthenticateLayer::new(authenticator))
        .layer(AuthorizeLayer::new(roles_any(["clerk"])))
        .layer(propagation)
        .map_request(|req: http::Request<hyper::body::Incoming>| req.map(Body::new))
        .service(channel);
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
            () = &mut shutdown => return,
        };
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| gateway.clone().oneshot(req));
            let _ = auto::Builder::new(TokioExecutor::new())
                .http2_only()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The gateway's propagation layer: signs the context for [`SERVICE_AUDIENCE`].
///
/// # Errors
///
/// A [`ConfigError`](tower_gatekeeper::ConfigError) from the builder.
pub fn signing_propagation(
    context_key: SigningKey,
) -> Result<ContextPropagationLayer, tower_gatekeeper::ConfigError> {
    ContextPropagationLayer::builder()
        .sign_context(context_key)
        .context_audience(SERVICE_AUDIENCE)
        .build()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The identity provider's key (tokens) and the gateway's own key (signed contexts).
    let idp = SigningKey::generate_ed25519()?.with_kid("idp-1");
    let context_key = SigningKey::generate_ed25519()?.with_kid("ctx-1");
    let authenticator = JwtAuthenticator::new(
        StaticKeys::new([idp.verifying_key().clone()]),
        Validation::new(ISSUER).audiences([AUDIENCE]),
    )?;
    let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 3600;
    let token = idp.sign(&json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "demo-user", "roles": ["clerk"], "exp": exp,
    }))?;

    let direct = TcpListener::bind("127.0.0.1:50051").await?;
    let direct_addr = direct.local_addr()?;
    let downstream = TcpListener::bind("127.0.0.1:0").await?;
    let downstream_addr = downstream.local_addr()?;
    let gateway = TcpListener::bind("127.0.0.1:50052").await?;
    let gateway_addr = gateway.local_addr()?;
    let trusted = trusted_layer(StaticKeys::new([context_key.verifying_key().clone()]))?;
    let forever = std::future::pending::<()>;
    tokio::spawn(serve_direct(direct, authenticator.clone(), forever()));
    tokio::spawn(serve_downstream(downstream, trusted, forever()));
    tokio::spawn(serve_gateway(
        gateway,
        authenticator,
        signing_propagation(context_key)?,
        downstream_addr,
        forever(),
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;

    for (name, addr) in [("direct", direct_addr), ("gateway", gateway_addr)] {
        let mut client = DemoClient::connect(addr).await?;
        let anonymous = client.who_am_i(Request::new(pb::WhoAmIRequest {})).await;
        println!(
            "{name}: without a token -> {:?}",
            anonymous.map_err(|s| s.code())
        );
        let reply = client
            .who_am_i(with_token(Request::new(pb::WhoAmIRequest {}), &token))
            .await?;
        println!("{name}: with a token    -> {reply:?}");
    }
    let mut downstream = DemoClient::connect(downstream_addr).await?;
    let mut spoofed = Request::new(pb::WhoAmIRequest {});
    spoofed.metadata_mut().insert("x-user-id", "admin".parse()?);
    let bypass = downstream.who_am_i(spoofed).await;
    println!(
        "service, bypassing the gateway with x-user-id: admin -> {:?}",
        bypass.map_err(|s| s.code())
    );
    println!("\nserving: direct on {direct_addr}, gateway on {gateway_addr} (Ctrl-C to stop)");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
