use std::borrow::Cow;
use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Config;
use crate::Revocations;
use crate::config::file::RouteAuth;
use crate::config::ops::Ops;
use crate::config::route::RouteSpec;
use crate::config::route::method_list;
use crate::credentials::AbortOnDrop;
use crate::credentials::watch_api_keys;
use crate::proxy::Proxy;
use crate::proxy::SentBody;
use crate::proxy::normalize_path;
use crate::proxy::with_path;
use crate::response::error_chain;
use crate::response::gateway_error;
use bytes::Bytes;
use http::header::HeaderName;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_gatekeeper::authenticate::{CachedAuthenticator, TokenCache};
use tower_gatekeeper::authorize::{ClientAddr, RouteTable};
use tower_gatekeeper::reject::{DefaultRejection, Protocol};
use tower_gatekeeper::revocation::Revocable;
use tower_gatekeeper::{
    AuthMode, AuthenticateLayer, Authenticator, AuthorizeLayer, ContextPropagationLayer,
};
use tracing::{debug, info, warn};

/// How long a shutdown waits for in-flight requests before giving up on them.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The error type of the program's fallible steps (start-up, listeners).
pub type BoxError = Box<dyn StdError + Send + Sync>;
pub(crate) type GatewayBody = BoxBody<Bytes, BoxError>;
pub(crate) type RouteService =
    BoxCloneSyncService<Request<Incoming>, Response<GatewayBody>, Infallible>;
pub(crate) type HttpClient = Client<HttpConnector, SentBody>;

/// Serves `config` on `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish (at most 30 s) and returns.
///
/// # Errors
///
/// Only when the listener's address cannot be read; per-connection errors are logged.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    // Reloads the API keys file on change and on SIGHUP while serving.
    let _reload = config
        .credentials
        .api_keys
        .clone()
        .map(|source| AbortOnDrop(tokio::spawn(watch_api_keys(source))));
    let gateway = Gateway::new(config);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    info!(address = %local, "gateway listening (HTTP/1.1 and HTTP/2)");

    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ClientAddr(peer));
            let gateway = gateway.clone();
            async move { Ok::<_, Infallible>(gateway.handle_logged(req).await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%peer, error = %error_chain(&*error), "connection closed with an error");
            }
        });
    }

    drop(listener);
    info!("shutting down: no new connections, waiting for in-flight requests");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            "in-flight requests did not finish within {}s; stopping anyway",
            DRAIN_TIMEOUT.as_secs()
        );
    }
    info!("gateway stopped");
    Ok(())
}

/// The routing table with one service stack per route.
#[derive(Clone)]
pub(crate) struct Gateway {
    pub(crate) inner: Arc<Table>,
}

pub(crate) struct Table {
    /// (method, path pattern) → index into `entries`.
    pub(crate) table: RouteTable<usize>,
    pub(crate) entries: Vec<RouteEntry>,
}

pub(crate) struct RouteEntry {
    pub(crate) path: Arc<str>,
    pub(crate) service: RouteService,
}

impl Gateway {
    pub(crate) fn new(config: Config) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.upstream_timeout));
        let http1: HttpClient = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector.clone());
        // h2c: one multiplexed connection per upstream, pinged while idle so a dead one is
        // noticed before a request is sent on it.
        let h2c: HttpClient = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .timer(TokioTimer::new())
            .http2_only(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_timeout(Duration::from_secs(10))
            .build(connector);
        let Config {
            realm,
            upstream_timeout,
            authenticator,
            token_cache,
            routes,
            table,
            ops,
            credentials,
            ..
        } = config;
        let parts = RouteParts {
            http1,
            h2c,
            realm,
            upstream_timeout,
            ops,
            // The API key is a secret for the gateway: never forwarded.
            strip: credentials
                .api_keys
                .as_ref()
                .map(|source| source.keys.header().clone()),
        };
        // Revocable(Cached(jwt)) as before, or, with [introspection] or [api_keys],
        // Revocable(chain(Cached(jwt), introspection, API keys)): the verified-token cache
        // holds JWTs only, so introspection results keep their own TTLs (`cache_ttl_seconds`,
        // `negative_ttl_seconds`) instead of living as long as `[cache] max_ttl_seconds`. Each
        // layer only when configured; revocation is checked outermost, for every request.
        let revocations = credentials.revocations.clone();
        let entries = if !credentials.authenticates() {
            layered(authenticator, token_cache, revocations, routes, &parts)
        } else if let Some(cache) = token_cache {
            let jwt = authenticator.map(|a| CachedAuthenticator::with_cache(a, cache));
            layered(credentials.chain(jwt), None, revocations, routes, &parts)
        } else {
            layered(
                credentials.chain(authenticator),
                None,
                revocations,
                routes,
                &parts,
            )
        };
        Gateway {
            inner: Arc::new(Table { table, entries }),
        }
    }

    pub(crate) async fn handle_logged(&self, req: Request<Incoming>) -> Response<GatewayBody> {
        let started = Instant::now();
        let method = req.method().clone();
        // The path only: query strings may carry secrets.
        let path = req.uri().path().to_owned();
        let response = self.handle(req).await;
        debug!(
            %method,
            path,
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request"
        );
        response
    }

    pub(crate) async fn handle(&self, mut req: Request<Incoming>) -> Response<GatewayBody> {
        let protocol = Protocol::of(&req);
        let (service, rewritten, params) = {
            let Some(path) = normalize_path(req.uri().path()) else {
                return gateway_error(
                    protocol,
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the request path has dot segments or malformed escapes",
                );
            };
            let Some(matched) = self.inner.table.at(req.method(), &path) else {
                return gateway_error(
                    protocol,
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "no route matches this request",
                );
            };
            let entry = &self.inner.entries[*matched.value()];
            debug!(route = %entry.path, "matched");
            // Path parameters for the route's attribute rules (`owner_param`, ...).
            let params = matched.path_params();
            let rewritten = match path {
                Cow::Owned(path) => Some(path),
                Cow::Borrowed(_) => None,
            };
            (entry.service.clone(), rewritten, params)
        };
        req.extensions_mut().insert(params);
        if let Some(path) = rewritten {
            match with_path(req.uri(), &path) {
                Some(uri) => *req.uri_mut() = uri,
                None => {
                    return gateway_error(
                        protocol,
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "the request path is malformed",
                    );
                }
            }
        }
        match service.oneshot(req).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// What every route's stack is built from, besides the authenticator.
pub(crate) struct RouteParts {
    pub(crate) http1: HttpClient,
    pub(crate) h2c: HttpClient,
    pub(crate) realm: DefaultRejection,
    pub(crate) upstream_timeout: Duration,
    pub(crate) ops: Ops,
    /// A header removed before proxying (the API key header).
    pub(crate) strip: Option<HeaderName>,
}

/// Wraps `auth` in the token cache and then in the revocation check, when given, and builds
/// the routes with the result: `Revocable(Cached(auth))`.
pub(crate) fn layered<A: Authenticator>(
    auth: Option<A>,
    cache: Option<TokenCache>,
    store: Option<Revocations>,
    routes: Vec<RouteSpec>,
    parts: &RouteParts,
) -> Vec<RouteEntry> {
    match (cache, store) {
        (Some(cache), Some(store)) => route_entries(
            auth.map(|a| Revocable::new(CachedAuthenticator::with_cache(a, cache), store)),
            routes,
            parts,
        ),
        (Some(cache), None) => route_entries(
            auth.map(|a| CachedAuthenticator::with_cache(a, cache)),
            routes,
            parts,
        ),
        (None, Some(store)) => route_entries(auth.map(|a| Revocable::new(a, store)), routes, parts),
        (None, None) => route_entries(auth, routes, parts),
    }
}

pub(crate) fn route_entries<A: Authenticator>(
    authenticator: Option<A>,
    routes: Vec<RouteSpec>,
    parts: &RouteParts,
) -> Vec<RouteEntry> {
    routes
        .into_iter()
        .map(|route| {
            info!(
                route = %route.path,
                methods = %route.methods.as_deref().map_or_else(|| "all".to_owned(), method_list),
                upstream = %route.upstream,
                upstream_protocol = %route.upstream_protocol,
                auth = %route.auth,
                "route",
            );
            let proxy = Proxy {
                http1: parts.http1.clone(),
                h2c: parts.h2c.clone(),
                protocol: route.upstream_protocol,
                upstream: route.upstream.clone(),
                timeout: parts.upstream_timeout,
                strip: parts.strip.clone(),
            };
            let service = route_service(
                &route,
                authenticator.as_ref(),
                &parts.realm,
                proxy,
                &parts.ops,
            );
            RouteEntry {
                path: Arc::from(route.path),
                service,
            }
        })
        .collect()
}

/// The service stack of one route.
pub(crate) fn route_service<A: Authenticator>(
    route: &RouteSpec,
    authenticator: Option<&A>,
    realm: &DefaultRejection,
    proxy: Proxy,
    ops: &Ops,
) -> RouteService {
    let proxy = tower::service_fn(move |req: Request<Incoming>| {
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(proxy.forward(req).await) }
    });
    let mode = match route.auth {
        RouteAuth::Public => {
            return boxed(
                ServiceBuilder::new()
                    .layer(ContextPropagationLayer::new())
                    .service(proxy),
            );
        }
        RouteAuth::Required => AuthMode::Required,
        RouteAuth::Optional => AuthMode::Optional,
    };
    let authenticator = authenticator
        .expect("routes that authenticate are only accepted with an authenticator")
        .clone();
    let mut authenticate = AuthenticateLayer::new(authenticator).mode(mode);
    if let Some(name) = &route.query_token {
        authenticate = authenticate.query_token(name.as_str());
    }
    boxed(
        ServiceBuilder::new()
            .layer(ops.authenticate_layer(authenticate.rejection_response(realm.clone())))
            .layer(ops.authorize_layer(
                AuthorizeLayer::new(route.policy.clone()).rejection_response(realm.clone()),
            ))
            .layer(ContextPropagationLayer::new())
            .service(proxy),
    )
}

pub(crate) fn boxed<S, B>(service: S) -> RouteService
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    BoxCloneSyncService::new(service.map_response(|response: Response<B>| {
        response.map(|body| body.map_err(Into::into).boxed())
    }))
}
