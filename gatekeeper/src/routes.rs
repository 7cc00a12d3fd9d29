//! Routing: the route table, one service stack per route (authenticate, authorize,
//! propagate, proxy), and the checks made before a route is chosen.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::sync::Semaphore;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_gatekeeper::authenticate::{BoxAuthenticator, CachedAuthenticator};
use tower_gatekeeper::authorize::ShadowStats;
use tower_gatekeeper::authorize::{Lookup, RouteTable};
use tower_gatekeeper::dpop::{DpopAuthenticator, DpopNonceLayer, NonceSource};
use tower_gatekeeper::keys::IssuerKeys;
use tower_gatekeeper::path::{PathError, PathPolicy};
use tower_gatekeeper::reject::{DefaultRejection, Protocol, RejectionResponse};
use tower_gatekeeper::revocation::Revocable;
use tower_gatekeeper::{
    AuthMode, AuthenticateLayer, Authenticator, AuthorizeLayer, JwtAuthenticator,
};
use tracing::{debug, info};

use crate::Config;
use crate::config::file::RouteAuth;
use crate::config::ops::Ops;
use crate::config::policy::route_policy;
use crate::config::route::{RouteSpec, method_list};
use crate::config::server::Server;
use crate::proxy::{Clients, Proxy, with_path};
use crate::response::gateway_error;
use crate::serve::{BoxError, GatewayBody};

pub(crate) type RouteService =
    BoxCloneSyncService<Request<Incoming>, Response<GatewayBody>, Infallible>;

/// The routing table with one service stack per route.
#[derive(Clone)]
pub(crate) struct Gateway {
    pub(crate) inner: Arc<Table>,
}

pub(crate) struct Table {
    /// (method, path pattern) → index into `entries`.
    pub(crate) table: RouteTable<usize>,
    pub(crate) entries: Vec<RouteEntry>,
    /// What any route allows of the refused path forms: the canonicalisation before routing.
    pub(crate) path_policy: PathPolicy,
    /// Renders the gateway's own rejections (405) like the layers' ones.
    pub(crate) realm: DefaultRejection,
    /// `[cors]`: answers preflights and decorates responses, before routing.
    pub(crate) cors: Option<tower_http::cors::CorsLayer>,
    /// `[resource_metadata]`: the RFC 9728 document, served before routing.
    pub(crate) resource_metadata: Option<Arc<crate::metadata::ResourceMetadata>>,
    /// The verified-token cache in front of JWT verification, for the admin actions.
    pub(crate) cached: Option<CachedAuthenticator<JwtAuthenticator<IssuerKeys>>>,
    /// The report-only counts of each route's `shadow` rules.
    pub(crate) shadows: Vec<Arc<ShadowStats>>,
    /// The `[server]` settings this table was built with.
    pub(crate) server: Arc<Server>,
}

pub(crate) struct RouteEntry {
    pub(crate) path: Arc<str>,
    pub(crate) service: RouteService,
    /// The path forms this route accepts.
    pub(crate) path_policy: PathPolicy,
}

impl Gateway {
    pub(crate) fn new(config: Config) -> Self {
        let clients = Clients::new(config.upstream_timeout, config.tls.upstream.as_deref());
        // DPoP `htu` checks compare against the listener's scheme (without `public_origin`).
        let over_tls = config.tls.listener.is_some();
        let Config {
            realm,
            upstream_timeout,
            authenticator,
            token_cache,
            routes,
            table,
            ops,
            credentials,
            server,
            dpop,
            cors,
            resource_metadata,
            ..
        } = config;
        let dpop = dpop.request_scheme(over_tls);
        let parts = RouteParts {
            clients,
            server: Arc::new(server),
            realm,
            upstream_timeout,
            ops,
            // The API key is a secret for the gateway: never forwarded.
            strip: credentials
                .api_keys
                .as_ref()
                .map(|source| source.keys.header().clone()),
            nonces: dpop.nonce_source().cloned(),
        };
        // Revocable(Cached(jwt)), or, with [introspection] or [api_keys],
        // Revocable(chain(Cached(jwt), introspection, API keys)): the verified-token cache
        // holds JWTs only, so introspection results keep their own TTLs (`cache_ttl_seconds`,
        // `negative_ttl_seconds`) instead of living as long as `[cache] max_ttl_seconds`. Each
        // layer only when configured; revocation is checked outermost, for every request.
        let mut cached = None;
        let jwt = authenticator.map(|jwt| match token_cache {
            Some(cache) => {
                let jwt = CachedAuthenticator::with_cache(jwt, cache);
                cached = Some(jwt.clone());
                BoxAuthenticator::new(jwt)
            }
            None => BoxAuthenticator::new(jwt),
        });
        let mut authenticator = if credentials.authenticates() {
            Some(BoxAuthenticator::new(credentials.chain(jwt)))
        } else {
            jwt
        };
        if let Some(store) = credentials.revocations.clone() {
            authenticator =
                authenticator.map(|auth| BoxAuthenticator::new(Revocable::new(auth, store)));
        }
        // Outermost, outside the token cache: a cache hit spares the token's signature, never
        // the DPoP proof, and bound tokens (cnf.jkt, cnf.x5t#S256) are checked on every
        // request. A proof's jti is recorded only once the token has passed every other
        // check (revocation included).
        let authenticator =
            authenticator.map(|auth| BoxAuthenticator::new(DpopAuthenticator::new(auth, dpop)));
        let path_policy = routes.iter().fold(PathPolicy::strict(), |all, route| {
            all.union(route.path_policy)
        });
        let shadows = routes
            .iter()
            .filter_map(|route| route.shadow.as_ref().map(|shadow| shadow.stats()))
            .collect();
        let entries = route_entries(authenticator.as_ref(), routes, &parts);
        Gateway {
            inner: Arc::new(Table {
                table,
                entries,
                path_policy,
                realm: parts.realm,
                cors,
                resource_metadata,
                cached,
                shadows,
                server: Arc::clone(&parts.server),
            }),
        }
    }

    /// The `[server]` settings of this configuration.
    pub(crate) fn server(&self) -> Arc<Server> {
        Arc::clone(&self.inner.server)
    }

    pub(crate) async fn handle_logged(&self, req: Request<Incoming>) -> Response<GatewayBody> {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return self.handle(req).await;
        }
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

    /// Serves one request: CORS (when configured) in front of [`route`](Self::route).
    pub(crate) async fn handle(&self, req: Request<Incoming>) -> Response<GatewayBody> {
        match &self.inner.cors {
            Some(cors) => crate::cors::handle(cors, self.clone(), req).await,
            None => self.route(req).await,
        }
    }

    /// Whether a route serves `path` (for some method).
    fn routed(&self, path: &str) -> bool {
        self.inner
            .path_policy
            .canonicalize(path)
            .is_ok_and(|canonical| {
                !matches!(
                    self.inner
                        .table
                        .lookup(&http::Method::GET, canonical.as_str()),
                    Lookup::NotFound
                )
            })
    }

    /// Serves one request: the metadata document, or the route's stack.
    pub(crate) async fn route(&self, mut req: Request<Incoming>) -> Response<GatewayBody> {
        let protocol = Protocol::of(&req);
        if let Some(problem) = host_problem(&req) {
            return gateway_error(
                protocol,
                StatusCode::BAD_REQUEST,
                "invalid_request",
                problem,
            );
        }
        if let Some(metadata) = &self.inner.resource_metadata
            && let Some(response) = metadata.answer(&req, |path| self.routed(path))
        {
            return response;
        }
        let canonical = match self.inner.path_policy.canonicalize(req.uri().path()) {
            Ok(canonical) => canonical,
            Err(refused) => return bad_path(protocol, refused),
        };
        let (service, params) = match self.inner.table.lookup(req.method(), canonical.as_str()) {
            Lookup::Found(matched) => {
                let entry = &self.inner.entries[*matched.value()];
                debug!(route = %entry.path, "matched");
                // A form another route allows, but not this one.
                if let Err(refused) = entry.path_policy.check(canonical.forms()) {
                    return bad_path(protocol, refused);
                }
                // Path parameters for the route's attribute rules (`owner_param`, ...).
                (entry.service.clone(), matched.path_params())
            }
            Lookup::MethodNotAllowed(not_allowed) => {
                let response = self
                    .inner
                    .realm
                    .response(&not_allowed.rejection(), protocol);
                return response.map(|body| Full::new(body).map_err(|e| match e {}).boxed());
            }
            Lookup::NotFound => {
                return gateway_error(
                    protocol,
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "no route matches this request",
                );
            }
        };
        // The upstream gets the path the route was chosen for.
        if !canonical.is_unchanged() {
            let Some(uri) = with_path(req.uri(), canonical.as_str()) else {
                return gateway_error(
                    protocol,
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the request path is malformed",
                );
            };
            *req.uri_mut() = uri;
        }
        req.extensions_mut().insert(params);
        match service.oneshot(req).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// What every route's stack is built from, besides the authenticator.
pub(crate) struct RouteParts {
    pub(crate) clients: Clients,
    pub(crate) server: Arc<Server>,
    pub(crate) realm: DefaultRejection,
    pub(crate) upstream_timeout: Duration,
    pub(crate) ops: Ops,
    /// A header removed before proxying (the API key header).
    pub(crate) strip: Option<HeaderName>,
    /// With `[dpop] nonce`: a fresh `DPoP-Nonce` on answers to DPoP requests.
    pub(crate) nonces: Option<NonceSource>,
}

pub(crate) fn route_entries<A: Authenticator>(
    authenticator: Option<&A>,
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
                clients: parts.clients.clone(),
                pool: parts.clients.pools.pool(&route.upstream),
                strip: parts.strip.clone(),
                protocol: route.upstream_protocol,
                upstream_host: HeaderValue::from_str(route.upstream.as_str()).ok(),
                upstream: route.upstream.clone(),
                tls: route.upstream_tls,
                timeout: parts.upstream_timeout,
                body_timeout: parts.server.body_timeout,
                slots: route.max_concurrency.map(|n| Arc::new(Semaphore::new(n))),
                server: Arc::clone(&parts.server),
                websocket: route.websocket,
                websocket_close_on_expiry: route.websocket_close_on_expiry,
            };
            let path_policy = route.path_policy;
            let service = route_service(&route, authenticator, parts, proxy);
            RouteEntry {
                path: Arc::from(route.path),
                service,
                path_policy,
            }
        })
        .collect()
}

/// The service stack of one route.
pub(crate) fn route_service<A: Authenticator>(
    route: &RouteSpec,
    authenticator: Option<&A>,
    parts: &RouteParts,
    proxy: Proxy,
) -> RouteService {
    let (realm, ops) = (&parts.realm, &parts.ops);
    let limiter = route.rate_limit.as_ref().map(|spec| {
        crate::rate_limit::Limiter::new(spec, proxy.strip.clone(), Arc::clone(&proxy.server))
    });
    let rate_limit = crate::rate_limit::RateLimitLayer::new(limiter);
    // Shared: the route's stack is cloned for every request.
    let proxy = Arc::new(proxy);
    let proxy = tower::service_fn(move |req: Request<Incoming>| {
        let proxy = Arc::clone(&proxy);
        async move { Ok::<_, Infallible>(proxy.forward(req).await) }
    });
    let mode = match route.auth {
        RouteAuth::Public => {
            return boxed(
                ServiceBuilder::new()
                    .layer(rate_limit)
                    .layer(ops.propagation.clone())
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
            .option_layer(parts.nonces.clone().map(DpopNonceLayer::new))
            .layer(ops.authenticate_layer(authenticate.rejection_response(realm.clone())))
            // Counted per identity, after authentication and before the policy.
            .layer(rate_limit)
            .layer(
                ops.authorize_layer(
                    AuthorizeLayer::new(route_policy(route, ops.ext_authz.as_ref()))
                        .rejection_response(realm.clone()),
                ),
            )
            .layer(ops.propagation.clone())
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

/// What is wrong with the request's `Host`: HTTP/1.1 needs exactly one (RFC 9112 §3.2),
/// HTTP/1.0 at most one; two could route differently in the gateway and the upstream.
fn host_problem<B>(req: &Request<B>) -> Option<&'static str> {
    let hosts = req.headers().get_all(header::HOST).iter().count();
    match req.version() {
        Version::HTTP_11 if hosts == 0 => Some("the request has no Host header"),
        Version::HTTP_10 | Version::HTTP_11 if hosts > 1 => {
            Some("the request has more than one Host header")
        }
        Version::HTTP_2 | Version::HTTP_3 if hosts > 1 => {
            Some("the request has more than one Host header")
        }
        _ => None,
    }
}

/// 400 for a path that cannot be forwarded unambiguously.
fn bad_path(protocol: Protocol, refused: PathError) -> Response<GatewayBody> {
    gateway_error(
        protocol,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        refused.description(),
    )
}
