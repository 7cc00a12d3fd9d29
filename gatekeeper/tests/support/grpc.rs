//! A small gRPC service and its client, written by hand as `tonic-build` would generate them
//! (prost messages, no protoc): the upstream of the gRPC tests.
//!
//! ```proto
//! package gatekeeper.demo;
//! service Demo {
//!   rpc WhoAmI(WhoAmIRequest) returns (WhoAmIReply);
//!   rpc Count(CountRequest) returns (stream CountReply);
//! }
//! ```
//!
//! The service reads the caller from the [`AuthContext`] in the request extensions (put there
//! by a layer in front of it) and, for comparison, the `x-user-id` metadata it received.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use tonic::body::Body;
use tonic::server::{Grpc, NamedService};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;
use tower::Service;
use tower_gatekeeper::AuthContext;

/// The messages.
pub(crate) mod pb {
    /// `WhoAmI` takes no arguments.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct WhoAmIRequest {}

    /// What the service saw of the caller.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct WhoAmIReply {
        /// `AuthContext::subject`.
        #[prost(string, tag = "1")]
        pub(crate) subject: String,
        /// `AuthContext::roles`.
        #[prost(string, repeated, tag = "2")]
        pub(crate) roles: Vec<String>,
        /// The `x-user-id` metadata, every value joined with `|`.
        #[prost(string, tag = "3")]
        pub(crate) metadata_user: String,
        /// The `x-request-id` metadata.
        #[prost(string, tag = "4")]
        pub(crate) request_id: String,
        /// Whether an `authorization` metadata entry reached the service.
        #[prost(bool, tag = "5")]
        pub(crate) saw_authorization: bool,
    }

    /// Count from 1 to `upto`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct CountRequest {
        /// The last number.
        #[prost(uint32, tag = "1")]
        pub(crate) upto: u32,
    }

    /// One number of the count.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct CountReply {
        /// The number.
        #[prost(uint32, tag = "1")]
        pub(crate) n: u32,
        /// Who asked.
        #[prost(string, tag = "2")]
        pub(crate) subject: String,
    }
}

const WHO_AM_I: &str = "/gatekeeper.demo.Demo/WhoAmI";
const COUNT: &str = "/gatekeeper.demo.Demo/Count";

/// The server side: routes by path to a unary and a server-streaming handler.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DemoServer;

impl NamedService for DemoServer {
    const NAME: &'static str = "gatekeeper.demo.Demo";
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
        metadata_user: metadata_user.join("|"),
        request_id: metadata
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        saw_authorization: metadata.get("authorization").is_some(),
    }))
}

type CountStream = tokio_stream::Iter<std::vec::IntoIter<Result<pb::CountReply, Status>>>;

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

/// The client side.
#[derive(Debug, Clone)]
pub(crate) struct DemoClient {
    inner: tonic::client::Grpc<Channel>,
}

impl DemoClient {
    /// A client of the server at `addr` (plaintext HTTP/2).
    pub(crate) async fn connect(addr: SocketAddr) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        Ok(DemoClient {
            inner: tonic::client::Grpc::new(channel),
        })
    }

    /// Calls `WhoAmI`.
    pub(crate) async fn who_am_i(
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
    pub(crate) async fn count(
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
pub(crate) fn with_token<T>(mut req: Request<T>, token: &str) -> Request<T> {
    let value = format!("Bearer {token}").parse().expect("a JWS is ASCII");
    req.metadata_mut().insert("authorization", value);
    req
}
