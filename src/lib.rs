//! Authenticate once, at the edge.
//!
//! `tower-gatekeeper` turns a tower stack (axum routers, hyper servers, tonic gRPC services)
//! into an authenticating API gateway. Three layers, stacked in this order:
//!
//! 1. [`AuthenticateLayer`] extracts the credential (`Authorization: Bearer`, RFC 6750),
//!    verifies it once ([`JwtAuthenticator`]: signature with keys bound to their algorithms,
//!    `exp`/`nbf` with leeway, `iss`, `aud`, `crit`, `typ`) and puts the caller's
//!    [`AuthContext`] into the request extensions.
//! 2. [`AuthorizeLayer`] asks a [`PolicyEvaluator`] (roles, scopes, …): allow, 401 or 403.
//! 3. [`ContextPropagationLayer`] strips client-supplied identity headers, drops the raw
//!    token and forwards only the context (`x-user-id`, `x-user-roles`, …) downstream.
//!
//! The layers and route tables match the request path as they are given it. A server that
//! forwards or serves requests canonicalises the path first with [`path::canonicalize`]
//! (refusing `..`, `%2F`, `//`, `;` and the other spellings that upstreams read differently),
//! routes on the canonical path and forwards that same path; see [`path`].
//!
//! Rejections are responses, rendered per the wire contract (see [`reject`]): 401/403 with
//! RFC 6750 `WWW-Authenticate` and a JSON body for HTTP, Trailers-Only `grpc-status` for gRPC,
//! 503 with `Retry-After` when keys cannot be had.
//!
//! # Quick start
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use serde_json::json;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_gatekeeper::{
//!     AuthenticateLayer, AuthorizeLayer, ContextPropagationLayer, JwtAuthenticator,
//!     authorize::roles_any, jwt::Validation, keys::{SigningKey, StaticKeys},
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // In production the keys come from your identity provider (PEM, JWKS file, ...).
//! let signer = SigningKey::generate_ed25519().unwrap().with_kid("k1");
//! let keys = StaticKeys::new([signer.verifying_key().clone()]);
//! let validation = Validation::new("https://idp.example.test").audiences(["api://orders"]);
//!
//! let gateway = ServiceBuilder::new()
//!     .layer(AuthenticateLayer::new(JwtAuthenticator::new(keys, validation).unwrap()))
//!     .layer(AuthorizeLayer::new(roles_any(["clerk"])))
//!     .layer(ContextPropagationLayer::new())
//!     .service_fn(|req: Request<Full<Bytes>>| async move {
//!         // Downstream sees the caller, never the token.
//!         assert!(req.headers().get("authorization").is_none());
//!         let user = req.headers()["x-user-id"].to_str().unwrap().to_owned();
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(user))))
//!     });
//!
//! let token = signer.sign(&json!({
//!     "iss": "https://idp.example.test", "aud": "api://orders",
//!     "sub": "user-1", "roles": ["clerk"], "exp": 4102444800u64,
//! })).unwrap();
//! let request = Request::builder()
//!     .header("authorization", format!("Bearer {token}"))
//!     .body(Full::default())
//!     .unwrap();
//! let response = gateway.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! # }
//! ```
//!
//! With axum, add the same layers to a `Router` with `route_layer`; with tonic, to
//! `Server::builder().layer(...)`; with hyper, wrap the service with `ServiceBuilder`. The
//! `examples/` directory has one runnable program per host, and `examples/gateway.rs` is a
//! complete configurable gateway.
//!
//! # Feature flags
//!
//! | Name | Description | Default |
//! |---|---|---|
//! | `aws-lc-rs` | signature verification with aws-lc-rs (fastest; see the README's figures) | yes |
//! | `rust-crypto` | signature verification with the pure-Rust RustCrypto crates | no |
//! | `axum` | [`AuthContext`] as an axum extractor, [`Rejection`] as an axum response | no |
//! | `remote` | remote JWKS and OIDC discovery key sources ([`keys::RemoteJwks`]), plain HTTP | yes |
//! | `rustls` | HTTPS for `remote`, with rustls and the platform's root certificates | yes |
//! | `jwks-client-rs` | a jwks-client-rs `JwksSource` as the fetcher under our cache | no |
//! | `rego` | OPA/Rego policies evaluated in-process (`authorize::rego`, regorus) | no |
//! | `metrics` | decision, key-fetch, staleness and cache counters through the `metrics` facade ([`metrics`]) | no |
//! | `ext-authz` | an external HTTP authorizer with timeout, bounded pool, fail closed (`authorize::ext_authz`) | no |
//! | `redis` | revocations shared by gateway replicas through Redis ([`revocation`]) | no |
//! | `introspection` | OAuth2 token introspection, RFC 7662 (implies `remote`) | no |
//!
//! With both crypto features enabled, aws-lc-rs is used. At least one is required.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod macros;

mod algorithm;
pub mod audit;
pub mod authenticate;
pub mod authorize;
pub mod body;
mod clock;
mod config_error;
mod context;
pub mod credential;
mod crypto;
pub mod dpop;
pub mod explain;
pub mod jwt;
pub mod keys;
pub mod limits;
pub mod metrics;
mod outcome;
pub mod path;
pub mod propagate;
#[cfg(feature = "redis")]
mod redis_conn;
pub mod reject;
pub mod revocation;

#[cfg(feature = "axum")]
pub mod axum;

pub use crate::algorithm::{Algorithm, AlgorithmSet, UnknownAlgorithm};
pub use crate::authenticate::{AuthMode, AuthenticateLayer, Authenticator, JwtAuthenticator};
pub use crate::authorize::{AuthorizeLayer, Decision, PolicyEvaluator};
pub use crate::config_error::ConfigError;
pub use crate::context::{
    AuthContext, AuthContextBuilder, ClaimsError, CredentialKind, IdentityError,
};
pub use crate::crypto::BACKEND as CRYPTO_BACKEND;
pub use crate::propagate::{ContextPropagationLayer, TrustedContextLayer};
pub use crate::reject::{Rejection, RejectionKind};

/// The README's code blocks, compiled as doc tests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
