//! Plain hyper 1 with `tower::ServiceBuilder`: the three gatekeeper layers in front of a
//! handler that echoes the headers it received, so you can see what crosses the trust
//! boundary.
//!
//! ```text
//! cargo run --example hyper_server
//! ```
//!
//! Routes:
//!
//! - `/whoami`: a token with role `clerk` is required;
//! - `/maybe`: a token is optional;
//! - everything else: public; the propagation layer still strips spoofed identity headers.
//!
//! The program is organised so that tests can drive it in-process: [`app`] builds the
//! service and [`serve`] runs it on a listener until a shutdown future resolves.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};
use tower_gatekeeper::authorize::roles_any;
use tower_gatekeeper::jwt::Validation;
use tower_gatekeeper::keys::{SigningKey, StaticKeys};
use tower_gatekeeper::{
    AuthenticateLayer, AuthorizeLayer, ContextPropagationLayer, JwtAuthenticator,
};

/// The demo issuer.
pub const ISSUER: &str = "https://idp.example.test";
/// The demo audience.
pub const AUDIENCE: &str = "api://orders";

/// The service's body type.
pub type Body = BoxBody<Bytes, Infallible>;

/// The application as one cloneable service.
pub type App = BoxCloneSyncService<Request<Incoming>, Response<Body>, Infallible>;

/// The handler behind the layers: answers with the path and every header it received, as
/// JSON (`{"path": "...", "headers": {"name": ["value", ...]}}`).
async fn echo<B>(req: Request<B>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut headers = Map::new();
    for name in req.headers().keys() {
        let values: Vec<Value> = req
            .headers()
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned().into())
            .collect();
        headers.insert(name.as_str().to_owned(), Value::Array(values));
    }
    let body = json!({ "path": req.uri().path(), "headers": headers }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// The application: one stack per kind of route, each a `ServiceBuilder`.
pub fn app(authenticator: JwtAuthenticator<StaticKeys>) -> App {
    let required = ServiceBuilder::new()
        .layer(AuthenticateLayer::new(authenticator.clone()))
        .layer(AuthorizeLayer::new(roles_any(["clerk"])))
        .layer(ContextPropagationLayer::new())
        .service_fn(echo::<Incoming>)
        .map_response(|r| r.map(BodyExt::boxed));
    let optional = ServiceBuilder::new()
        .layer(AuthenticateLayer::optional(authenticator))
        .layer(ContextPropagationLayer::new())
        .service_fn(echo::<Incoming>)
        .map_response(|r| r.map(BodyExt::boxed));
    let public = ServiceBuilder::new()
        .layer(ContextPropagationLayer::new())
        .service_fn(echo::<Incoming>)
        .map_response(|r| r.map(BodyExt::boxed));
    let router = tower::service_fn(move |req: Request<Incoming>| {
        let route = match req.uri().path() {
            "/whoami" => required.clone().boxed_clone(),
            "/maybe" => optional.clone().boxed_clone(),
            _ => public.clone().boxed_clone(),
        };
        route.oneshot(req)
    });
    BoxCloneSyncService::new(router)
}

/// Serves `app` on `listener` (HTTP/1.1 and HTTP/2 prior knowledge) until `shutdown`
/// resolves.
pub async fn serve(listener: TcpListener, app: App, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
            () = &mut shutdown => return,
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| app.clone().oneshot(req));
            // Connection errors (a client hanging up, a malformed request) end only that
            // connection.
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let signer = SigningKey::generate_ed25519()?.with_kid("demo");
    let keys = StaticKeys::new([signer.verifying_key().clone()]);
    let authenticator = JwtAuthenticator::new(keys, Validation::new(ISSUER).audiences([AUDIENCE]))?;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3600;
    let token = signer.sign(&json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "demo-user", "roles": ["clerk"], "exp": exp,
    }))?;
    let addr: SocketAddr = "127.0.0.1:3001".parse()?;
    let listener = TcpListener::bind(addr).await?;
    println!("listening on http://{addr}");
    println!("curl -H 'Authorization: Bearer {token}' -H 'X-User-Id: admin' http://{addr}/whoami");
    println!("curl -i http://{addr}/whoami                          # 401");
    println!("curl -H 'x_user_id: admin' http://{addr}/public       # spoofed header stripped");
    serve(listener, app(authenticator), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}
