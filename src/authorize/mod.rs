//! Authorization: the [`PolicyEvaluator`] trait, built-in policies and [`AuthorizeLayer`].
//!
//! The layer reads the [`AuthContext`](crate::AuthContext) that
//! [`AuthenticateLayer`](crate::AuthenticateLayer) put into the request extensions and asks
//! its policy. A denial without a caller is 401; with one, 403 (`insufficient_scope`, with
//! the missing scopes in the challenge when the policy names them). A policy that cannot
//! decide (an external authorizer is down) answers 503 with `Retry-After`: fail closed.
//!
//! The policies, from simple to external:
//!
//! | kind | built by |
//! |---|---|
//! | roles and scopes | [`roles_any`], [`roles_all`], [`scopes_any`], [`scopes_all`] |
//! | issuers | [`issuers_any`] (rule key `issuers`) |
//! | claim predicates (dotted paths) | [`claim_equals`], [`claim_contains`], [`claim_one_of`], [`claim`]`(..).exists()` |
//! | attribute rules (ABAC) | [`Attribute`] comparisons: [`path_param`], [`subject`], [`tenant`], [`header`], [`method`], [`path`], [`client_ip`] (`equals`, `one_of`, `contains`, `in_networks`); [`time_window`] |
//! | closures | any `Fn(Option<&AuthContext>, &RequestHead<'_>) -> Decision` |
//! | combinators | [`all_of`], [`any_of`], [`not`]; [`BoxPolicy`] for mixed lists |
//! | route tables | [`RouteTable`]: (methods, matchit pattern) → policy, default deny, 405 for a known path with another method; from code or [`RouteConfig`] |
//! | report-only | [`shadow`] logs and counts, never enforces |
//! | OPA/Rego | `rego::RegoPolicy` (feature `rego`) |
//! | external authorizer | `ext_authz::ExtAuthz` (feature `ext-authz`) |
//!
//! Every policy but the external authorizer decides synchronously
//! ([`PolicyEvaluator::decide_now`]): combinators, boxed policies and route tables over them
//! decide without allocating. Attribute rules read path parameters captured by a
//! [`RouteTable`] (or a [`PathParams`] extension the host inserted) and the client address
//! from a [`ClientAddr`] extension; external engines see the [`policy_input`] document.
//!
//! A [`RouteTable`] never lets a request fall through to a broader route: `/p/{*rest}` also
//! covers `/p` and `/p/`, a path whose route does not take the method is denied with 405 and
//! `Allow` (gRPC 12 UNIMPLEMENTED, [`RejectionKind::MethodNotAllowed`](crate::RejectionKind::MethodNotAllowed)) rather than handed
//! to a catch-all, `HEAD` goes where `GET` goes, and [`RouteTable::shadowed`] reports the
//! routes that a less protected, more specific route takes requests from.
//!
//! # The path the layers see
//!
//! [`RouteTable`] and the attribute rules on [`path`] and [`path_param`] match the request path
//! as they are given it, byte for byte: `/admin`, `/%61dmin`, `//admin`, `/admin;x` and
//! `/x/../admin` are five different paths to them. Many upstreams make them one (they decode,
//! merge slashes, strip `;` parameters, resolve `..`, read `\` as `/`), so a server that routes
//! with these layers and then serves or forwards the path as received can authorize one path
//! and serve another. Canonicalise first with [`crate::path::canonicalize`] (answer 400 when
//! it refuses the path), route on the canonical path, and forward that same path:
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Method, Request, Response, StatusCode};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_gatekeeper::{AuthContext, AuthorizeLayer, CredentialKind, PolicyEvaluator};
//! use tower_gatekeeper::authorize::{AllowAll, RouteTable, roles_any};
//! use tower_gatekeeper::path::{PathPolicy, canonicalize};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let table: RouteTable = RouteTable::builder()
//!     .any_method("/{*rest}", AllowAll.boxed())
//!     .route([Method::GET], "/admin/{*rest}", roles_any(["admin"]).boxed())
//!     .build()
//!     .unwrap();
//! let routed = ServiceBuilder::new()
//!     .layer(AuthorizeLayer::new(table))
//!     .service_fn(|req: Request<String>| async move {
//!         // The upstream gets the path the table matched.
//!         Ok::<_, Infallible>(Response::new(req.uri().path().to_owned()))
//!     });
//! let serve = |mut req: Request<String>| {
//!     let routed = routed.clone();
//!     async move {
//!         let path = match canonicalize(req.uri().path(), PathPolicy::strict()) {
//!             Ok(path) => path.into_cow().into_owned(),
//!             Err(refused) => {
//!                 let mut response = Response::new(refused.description().to_owned());
//!                 *response.status_mut() = StatusCode::BAD_REQUEST;
//!                 return response;
//!             }
//!         };
//!         // Keep the query, replace the path.
//!         let target = match req.uri().query() {
//!             Some(query) => format!("{path}?{query}"),
//!             None => path,
//!         };
//!         *req.uri_mut() = target.parse().unwrap();
//!         let response = routed.oneshot(req).await.unwrap();
//!         let status = response.status();
//!         let mut plain = Response::new(String::new());
//!         *plain.status_mut() = status;
//!         plain
//!     }
//! };
//!
//! let clerk = AuthContext::builder(CredentialKind::Jwt).roles(["clerk"]).build();
//! let call = |path: &str| {
//!     let mut request = Request::builder().uri(path).body(String::new()).unwrap();
//!     request.extensions_mut().insert(clerk.clone());
//!     serve(request)
//! };
//! assert_eq!(call("/%61dmin/users").await.status(), StatusCode::FORBIDDEN); // decoded: `/admin/users`
//! assert_eq!(call("/public/..%2Fadmin/users").await.status(), StatusCode::BAD_REQUEST);
//! assert_eq!(call("//admin/users").await.status(), StatusCode::BAD_REQUEST);
//! assert_eq!(call("/admin;x/users").await.status(), StatusCode::BAD_REQUEST);
//! assert_eq!(call("/public/page").await.status(), StatusCode::OK);
//! # }
//! ```
//!
//! "Owner or admin" and "same tenant" on a route table:
//!
//! ```
//! use http::{Method, Request, StatusCode};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_gatekeeper::{AuthContext, AuthorizeLayer, CredentialKind, PolicyEvaluator};
//! use tower_gatekeeper::authorize::{RouteTable, any_of, path_param, roles_any, subject, tenant};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let table: RouteTable = RouteTable::builder()
//!     .any_method("/users/{user_id}", any_of([
//!         path_param("user_id").equals(subject()).boxed(),
//!         roles_any(["admin"]).boxed(),
//!     ]).boxed())
//!     .route([Method::GET], "/tenants/{tenant}/{*rest}", path_param("tenant").equals(tenant()).boxed())
//!     .build()
//!     .unwrap();
//! let service = ServiceBuilder::new()
//!     .layer(AuthorizeLayer::new(table))
//!     .service_fn(|_req: Request<String>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
//!     });
//!
//! let alice = AuthContext::builder(CredentialKind::Jwt).subject("alice").tenant("acme").build();
//! let call = |path: &str| {
//!     let mut request = Request::builder().uri(path).body(String::new()).unwrap();
//!     request.extensions_mut().insert(alice.clone());
//!     service.clone().oneshot(request)
//! };
//! assert_eq!(call("/users/alice").await.unwrap().status(), StatusCode::OK);
//! assert_eq!(call("/users/bob").await.unwrap().status(), StatusCode::FORBIDDEN);
//! assert_eq!(call("/tenants/acme/orders").await.unwrap().status(), StatusCode::OK);
//! assert_eq!(call("/tenants/globex/orders").await.unwrap().status(), StatusCode::FORBIDDEN);
//! assert_eq!(call("/unrouted").await.unwrap().status(), StatusCode::FORBIDDEN);
//! # }
//! ```
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_gatekeeper::{AuthContext, AuthorizeLayer, CredentialKind};
//! use tower_gatekeeper::authorize::scopes_all;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let service = ServiceBuilder::new()
//!     .layer(AuthorizeLayer::new(scopes_all(["orders:write"])))
//!     .service_fn(|_req: Request<String>| async { Ok::<_, Infallible>(Response::new(String::new())) });
//!
//! let caller = AuthContext::builder(CredentialKind::Jwt).scopes(["orders:read"]).build();
//! let mut request = Request::new(String::new());
//! request.extensions_mut().insert(caller);
//! let response = service.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::FORBIDDEN);
//! assert!(response.headers()["www-authenticate"].to_str().unwrap().ends_with(r#"scope="orders:write""#));
//! # }
//! ```

mod attribute;
mod builtin;
mod combinator;
mod config;
#[cfg(feature = "ext-authz")]
#[cfg_attr(docsrs, doc(cfg(feature = "ext-authz")))]
pub mod ext_authz;
mod future;
mod input;
mod layer;
mod policy;
#[cfg(feature = "rego")]
#[cfg_attr(docsrs, doc(cfg(feature = "rego")))]
pub mod rego;
mod route_table;
mod service;
mod shadow;

pub use self::attribute::{
    Attribute, AttributeRule, ClientAddr, InvalidNetwork, Operand, TimeWindow, claim,
    claim_contains, claim_equals, claim_one_of, client_ip, header, issuer, method, path,
    path_param, subject, tenant, time_window,
};
pub use self::builtin::{
    AllowAll, Authenticated, Require, RequireIssuer, issuers_any, roles_all, roles_any, scopes_all,
    scopes_any,
};
pub use self::combinator::{AllOf, AnyOf, CombineFuture, Not, NotFuture, all_of, any_of, not};
pub use self::config::{ClaimConfig, PolicyConfigError, RegoConfig, RouteConfig, RuleConfig};
pub use self::future::ResponseFuture;
pub use self::input::policy_input;
pub use self::layer::AuthorizeLayer;
pub use self::policy::{
    BoxPolicy, BoxPolicyFuture, Decision, Denial, PolicyEvaluator, Unavailable,
};
pub use self::route_table::{
    Lookup, MethodNotAllowed, RouteMatch, RouteTable, RouteTableBuilder, RouteTableError,
    RouteTableFuture, Shadowed,
};
pub use self::service::Authorize;
pub use self::shadow::{Shadow, ShadowFuture, ShadowStats, shadow};
pub use crate::credential::PathParams;
