//! Authorization: the [`PolicyEvaluator`] trait, built-in policies and [`AuthorizeLayer`].
//!
//! The layer reads the [`AuthContext`](crate::AuthContext) that
//! [`AuthenticateLayer`](crate::AuthenticateLayer) put into the request extensions and asks
//! its policy. A denial without a caller is 401; with one, 403 (`insufficient_scope`, with
//! the missing scopes in the challenge when the policy names them).
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

mod builtin;
mod future;
mod layer;
mod policy;
mod service;

pub use self::builtin::{
    AllOf, AllowAll, Authenticated, Require, all_of, roles_all, roles_any, scopes_all, scopes_any,
};
pub use self::future::ResponseFuture;
pub use self::layer::AuthorizeLayer;
pub use self::policy::{Decision, Denial, PolicyEvaluator};
pub use self::service::Authorize;
