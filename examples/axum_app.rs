//! An axum application behind the gatekeeper layers, with handlers using the `AuthContext`
//! extractor.
//!
//! ```text
//! cargo run --example axum_app --features axum
//! ```
//!
//! It prints a demo token minted with an ephemeral key and curl lines to try.
//!
//! [`downstream_app`] is the same application in a service *behind* a gateway: there,
//! `TrustedContextLayer` verifies the gateway's signed context and the handlers extract the
//! very same `AuthContext`.

use std::net::SocketAddr;

use axum::{Router, routing::get};
use serde_json::json;
use tower::ServiceBuilder;
use tower_gatekeeper::authorize::scopes_all;
use tower_gatekeeper::jwt::Validation;
use tower_gatekeeper::keys::{SigningKey, StaticKeys};
use tower_gatekeeper::{
    AuthContext, AuthenticateLayer, AuthorizeLayer, JwtAuthenticator, TrustedContextLayer,
};

const ISSUER: &str = "https://idp.example.test";
const AUDIENCE: &str = "api://orders";

async fn whoami(ctx: AuthContext) -> String {
    format!(
        "hello {} (roles: {})\n",
        ctx.subject().unwrap_or("anonymous"),
        ctx.roles().join(",")
    )
}

async fn maybe(ctx: Option<AuthContext>) -> String {
    match ctx {
        Some(ctx) => format!("signed in as {}\n", ctx.subject().unwrap_or("?")),
        None => "anonymous\n".to_owned(),
    }
}

/// The application: `/whoami` requires `orders:read`; `/maybe` takes an optional caller.
pub fn app(keys: StaticKeys) -> Result<Router, tower_gatekeeper::ConfigError> {
    let validation = Validation::new(ISSUER).audiences([AUDIENCE]);
    let authenticator = JwtAuthenticator::new(keys, validation)?;
    let protected = Router::new().route("/whoami", get(whoami)).route_layer(
        ServiceBuilder::new()
            .layer(AuthenticateLayer::new(authenticator.clone()))
            .layer(AuthorizeLayer::new(scopes_all(["orders:read"]))),
    );
    let optional = Router::new()
        .route("/maybe", get(maybe))
        .route_layer(AuthenticateLayer::optional(authenticator));
    Ok(protected.merge(optional))
}

/// The same handlers behind a gateway: `/whoami` requires the gateway's context and role
/// `clerk`, `/maybe` takes it when present. `trusted` is usually
/// `TrustedContextLayer::signed(gateway_context_keys, validation)`.
pub fn downstream_app(trusted: TrustedContextLayer) -> Router {
    let protected = Router::new().route("/whoami", get(whoami)).route_layer(
        ServiceBuilder::new()
            .layer(trusted.clone())
            .layer(AuthorizeLayer::new(tower_gatekeeper::authorize::roles_any(
                ["clerk"],
            ))),
    );
    let optional = Router::new()
        .route("/maybe", get(maybe))
        .route_layer(trusted.optional());
    protected.merge(optional)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let signer = SigningKey::generate_ed25519()?.with_kid("demo");
    let keys = StaticKeys::new([signer.verifying_key().clone()]);
    let token = signer.sign(&json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "demo-user",
        "roles": ["clerk"], "scope": "orders:read",
        "exp": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() + 3600,
    }))?;
    let addr: SocketAddr = "127.0.0.1:3000".parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{addr}");
    println!("curl -H 'Authorization: Bearer {token}' http://{addr}/whoami");
    println!("curl -i http://{addr}/whoami      # 401");
    println!("curl http://{addr}/maybe          # anonymous");
    axum::serve(listener, app(keys)?).await?;
    Ok(())
}
