//! Context propagation across the trust boundary: [`ContextPropagationLayer`] at the
//! gateway, [`TrustedContextLayer`] in the services behind it.
//!
//! [`ContextPropagationLayer`] strips every identity header a client could spoof, drops the
//! raw token, and forwards only the authenticated context downstream.
//!
//! On **every** request, authenticated or not, the layer first removes each inbound header
//! it owns: the names below in any case, and their spellings with `_` or `.` for `-`
//! (`x_user_id`), which many frameworks read as `X-User-Id` (CVE-2025-64484 in
//! oauth2-proxy); repeated copies go with them. It removes `Authorization` too, unless
//! configured to keep it ([`PropagationBuilder::keep_authorization`]), and takes owned names
//! out of `Connection`, so that no hop-by-hop processing behind it can drop what it
//! inserts. Then, when the request carries an [`AuthContext`](crate::AuthContext), it
//! inserts (each exactly once):
//!
//! | header (default name) | value |
//! |---|---|
//! | `x-user-id` | `sub`, verbatim |
//! | `x-user-issuer` | the issuer that vouched for the caller: the token's `iss`, or the name of the API-key or introspection authenticator ([`PropagationBuilder::issuer_header`]) |
//! | `x-user-roles` | roles, each percent-encoded, comma-separated |
//! | `x-user-scopes` | scopes, each percent-encoded, space-separated |
//! | `x-tenant-id` | tenant, percent-encoded, when present |
//! | `x-auth-claims` | base64url(JSON) of the allow-listed claims; not sent when the allow-list is empty |
//! | `x-request-id` | the client's when well-formed (one header, ≤ 128 of `A-Z a-z 0-9 - _ . : / + =`), else a new UUID; on every request, and set on the response too |
//! | `x-auth-context` | the signed context, when [`sign_context`](PropagationBuilder::sign_context) is configured |
//!
//! # Faithful values
//!
//! Every identity header carries its value exactly, or the identity is not forwarded:
//!
//! - `x-user-id` and `x-user-issuer` are sent **verbatim**: visible ASCII, spaces inside but
//!   not at either end (HTTP trims those). A `sub` with control characters, non-ASCII or
//!   surrounding spaces cannot be represented, and the authenticators of this crate refuse
//!   such a credential with 401 `invalid_token` ([`AuthContext::check_forwardable`](crate::AuthContext::check_forwardable)); so
//!   does a token without a subject, unless configured otherwise
//!   ([`Validation::require_subject`](crate::jwt::Validation::require_subject)).
//! - `x-tenant-id`, and each item of `x-user-roles` and `x-user-scopes`, are
//!   **percent-encoded** (RFC 3986 §2.1, upper-case hex of the UTF-8 bytes): every byte that
//!   is not visible ASCII, `%` itself and the list separator (`,` for roles, the space for
//!   scopes) become `%XX`; everything else is kept. A tenant `acmé` is sent as `acm%C3%A9`,
//!   roles `a,b` and `100%` as `a%2Cb,100%25`; plain values such as `clerk` or
//!   `orders:read` are unchanged. Decode each item after splitting the list (any URL
//!   percent-decoder does; [`TrustedContextLayer::plain_headers`] does it for you). Control
//!   characters are refused (401), never encoded.
//! - Empty roles and scopes are left out of the lists.
//!
//! A context built elsewhere (a custom authenticator) whose values break these rules gets
//! none of the plain identity headers, never some of them: the request is forwarded as
//! unauthenticated, with a warning. For gRPC, headers are metadata: the same names reach a
//! tonic service as `request.metadata()`.
//!
//! # Signed context
//!
//! Plain headers are only as trustworthy as the network between gateway and service. With
//! [`PropagationBuilder::sign_context`], the gateway also mints a short-lived compact JWS
//! (default 5 s, `typ` `gatekeeper-ctx+jwt`, `kid` in the header for key rotation, `aud` =
//! the target service when [`context_audience`](PropagationBuilder::context_audience) is
//! set) carrying the same context: `sub`, `roles` (array), `scope`, `tenant`, the
//! allow-listed `claims`, the original credential's issuer (`src.iss`, the value of
//! `x-user-issuer`), kind and expiry (`src`), the request id (`rid`), and the request it was
//! minted for: its method (`htm`) and path without the query (`htu`), as DPoP (RFC 9449)
//! binds a proof. Services verify it with [`TrustedContextLayer::signed`] and get the
//! caller's [`AuthContext`](crate::AuthContext) back. The context is not encrypted: it holds
//! nothing the plain headers do not.
//!
//! What it protects against: a request that reaches the service without passing the
//! gateway, a forged or altered context, a context minted for another service or for
//! another method or path, one issued in the future or living longer than the service
//! allows, and replay beyond the lifetime. Within its few seconds a captured context can be
//! replayed to the same method and path of the same service; keep the lifetime short and
//! the links encrypted.
//!
//! Signing costs far more than a request served from a token cache, so a context minted for
//! a cached identity is sent again with its later requests to the same method and path
//! during the first half of its lifetime, within bounds; see
//! [`sign_context`](PropagationBuilder::sign_context).
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

mod future;
mod headers;
mod layer;
mod service;
mod signed;
mod trusted;

pub use self::future::ResponseFuture;
pub use self::layer::{ContextPropagationLayer, PropagationBuilder};
pub use self::service::ContextPropagation;
pub use self::signed::{CONTEXT_TYP, DEFAULT_CONTEXT_ISSUER, DEFAULT_CONTEXT_LIFETIME};
pub use self::trusted::{
    DEFAULT_CONTEXT_LEEWAY, DEFAULT_MAX_CONTEXT_LIFETIME, SignedContextValidation, TrustedContext,
    TrustedContextFuture, TrustedContextLayer,
};
