//! [`ContextPropagationLayer`]: strips every identity header a client could spoof, drops the
//! raw token, and forwards only the authenticated context downstream.
//!
//! On **every** request, authenticated or not, the layer first removes each inbound header
//! it owns: the names below in any case, and their spellings with `_` for `-` (`x_user_id`),
//! which many frameworks read as `X-User-Id` (CVE-2025-64484 in oauth2-proxy). It removes
//! `Authorization` too, unless configured to keep it. Then, when the request carries an
//! [`AuthContext`](crate::AuthContext), it inserts:
//!
//! | header (default name) | value |
//! |---|---|
//! | `x-user-id` | `sub` |
//! | `x-user-roles` | roles, comma-separated |
//! | `x-user-scopes` | scopes, space-separated |
//! | `x-tenant-id` | tenant, when present |
//! | `x-auth-claims` | base64url(JSON) of the allow-listed claims; not sent when the allow-list is empty |
//! | `x-request-id` | the client's when well-formed (≤ 128 of `A-Z a-z 0-9 - _ . : / + =`), else a new UUID; on every request |
//!
//! Values that cannot be carried in a header (control characters, non-ASCII) are left out
//! rather than altered, and so is a role containing a comma. For gRPC, headers are metadata:
//! the same names reach a tonic service as `request.metadata()`.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_gatekeeper::{AuthContext, ContextPropagationLayer, CredentialKind};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let service = ServiceBuilder::new()
//!     .layer(ContextPropagationLayer::new())
//!     .service_fn(|req: Request<()>| async move {
//!         assert_eq!(req.headers()["x-user-id"], "user-1");
//!         assert_eq!(req.headers()["x-user-roles"], "clerk,admin");
//!         assert!(req.headers().get("authorization").is_none());
//!         assert!(req.headers().get("x_user_id").is_none());
//!         Ok::<_, Infallible>(Response::new(()))
//!     });
//!
//! let mut request = Request::builder()
//!     .header("authorization", "Bearer secret-token")
//!     .header("x-user-id", "spoofed")
//!     .header("x_user_id", "spoofed")
//!     .body(())
//!     .unwrap();
//! request.extensions_mut().insert(
//!     AuthContext::builder(CredentialKind::Jwt).subject("user-1").roles(["clerk", "admin"]).build(),
//! );
//! service.oneshot(request).await.unwrap();
//! # }
//! ```

mod headers;
mod layer;
mod service;

pub use self::layer::{ContextPropagationLayer, PropagationBuilder};
pub use self::service::ContextPropagation;
