//! A minimal authenticating reverse proxy: the three layers in front of one upstream, for
//! teams who build their own gateway. (The complete program, with routes, timeouts, gRPC and
//! configuration files, is the `gatekeeper` package.)
//!
//! ```text
//! cargo run --example reverse_proxy -- JWKS_FILE ISSUER AUDIENCE UPSTREAM [LISTEN]
//! cargo run --example reverse_proxy -- jwks.json https://idp.example.test api://orders 127.0.0.1:9000
//! ```
//!
//! Every request needs a valid bearer token from ISSUER for AUDIENCE, verified with the keys
//! of JWKS_FILE. The upstream at UPSTREAM (plain HTTP/1.1) receives the request without the
//! token and with `x-user-id`, `x-user-roles`, `x-user-scopes`, `x-tenant-id` and
//! `x-request-id` set by the gateway (spoofed copies from the client are removed).

use std::convert::Infallible;
use std::net::SocketAddr;

use http::header::{self, HeaderName};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_gatekeeper::jwt::Validation;
use tower_gatekeeper::keys::StaticKeys;
use tower_gatekeeper::{
    AuthenticateLayer, AuthorizeLayer, ContextPropagationLayer, JwtAuthenticator, authorize,
};

type Body = BoxBody<Bytes, hyper::Error>;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [jwks, issuer, audience, upstream, rest @ ..] = args.as_slice() else {
        eprintln!("usage: reverse_proxy JWKS_FILE ISSUER AUDIENCE UPSTREAM_ADDR [LISTEN_ADDR]");
        std::process::exit(2);
    };
    let upstream: SocketAddr = upstream.parse()?;
    let listen: SocketAddr = rest.first().map_or("127.0.0.1:8080", |s| s).parse()?;

    let keys = StaticKeys::from_jwks_file(jwks)?;
    let validation = Validation::new(issuer.as_str()).audiences([audience.as_str()]);
    let authenticator = JwtAuthenticator::new(keys, validation)?;
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());

    // Authenticate, then authorize (any authenticated caller), then propagate the context:
    // what reaches `forward` has been verified and carries only trusted identity headers.
    let service = ServiceBuilder::new()
        .layer(AuthenticateLayer::new(authenticator))
        .layer(AuthorizeLayer::new(authorize::Authenticated))
        .layer(ContextPropagationLayer::new())
        .service_fn(move |req| forward(client.clone(), upstream, req));

    let listener = TcpListener::bind(listen).await?;
    println!("proxying http://{listen} -> http://{upstream}");
    loop {
        let (stream, _) = listener.accept().await?;
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Sends the request to the upstream and streams its answer back; 502 when it is down.
async fn forward(
    client: Client<HttpConnector, Incoming>,
    upstream: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let Ok(uri) = format!("http://{upstream}{path}").parse::<Uri>() else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_11;
    for name in &HOP_BY_HOP {
        req.headers_mut().remove(name);
    }
    req.headers_mut().remove(header::HOST);
    match client.request(req).await {
        Ok(mut response) => {
            for name in &HOP_BY_HOP {
                response.headers_mut().remove(name);
            }
            Ok(response.map(BodyExt::boxed))
        }
        Err(_) => Ok(status(StatusCode::BAD_GATEWAY)),
    }
}

fn status(code: StatusCode) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()).map_err(|e| match e {}).boxed());
    *response.status_mut() = code;
    response
}
