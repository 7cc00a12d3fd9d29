//! Gateway configurations the tests share, and the check that an error names what it must.

use std::net::SocketAddr;

/// The two-issuer configuration most tests use; routes under `/down/` go to `down`.
pub(crate) fn config_toml(upstream: SocketAddr, down: SocketAddr) -> String {
    format!(
        r#"
listen = "127.0.0.1:0"
realm = "gatekeeper-test"

[[issuer]]
issuer = "https://idp.example.test"
audiences = ["api://orders"]
algorithms = ["RS256", "ES256", "EdDSA"]
jwks_file = "keys/jwks.json"
roles_claim = "roles"
tenant_claim = "tenant_id"
leeway_seconds = 30

[[issuer]]
issuer = "https://hmac.example.test"
audiences = ["api://orders"]
algorithms = ["HS256"]
hmac_secret_file = "keys/hmac.secret"

[[route]]
path = "/orders/{{*rest}}"
methods = ["GET", "POST"]
upstream = "http://{upstream}"
auth = "required"
roles_any = ["clerk", "admin"]
scopes_all = ["orders:read"]

[[route]]
path = "/admin/{{*rest}}"
upstream = "http://{upstream}"
roles_any = ["admin"]

[[route]]
path = "/reports/{{*rest}}"
upstream = "http://{upstream}"
scopes_all = ["orders:admin"]

[[route]]
path = "/public/{{*rest}}"
upstream = "http://{upstream}"
auth = "public"

[[route]]
path = "/maybe/{{*rest}}"
upstream = "http://{upstream}"
auth = "optional"

[[route]]
path = "/items/{{id}}"
methods = ["GET"]
upstream = "http://{upstream}"
auth = "public"

[[route]]
path = "/items/{{id}}"
methods = ["DELETE"]
upstream = "http://{upstream}"
roles_any = ["admin"]

[[route]]
path = "/hold/{{*rest}}"
upstream = "http://{upstream}"
auth = "public"

[[route]]
path = "/download/{{*rest}}"
upstream = "http://{upstream}"
auth = "public"

[[route]]
path = "/down/{{*rest}}"
upstream = "http://{down}"
auth = "public"
"#
    )
}

/// The head of configurations that need one RS256 issuer (the fixture JWKS).
pub(crate) const ONE_ISSUER: &str = r#"
listen = "127.0.0.1:0"

[[issuer]]
issuer = "https://idp.example.test"
audiences = ["api://orders"]
algorithms = ["RS256"]
jwks_file = "keys/jwks.json"
"#;

/// One issuer with the fixture JWKS and default algorithms.
pub(crate) const ISSUER: &str = r#"
[[issuer]]
issuer = "https://idp.example.test"
audiences = ["api://orders"]
jwks_file = "keys/jwks.json"
"#;

/// One route to an upstream nobody contacts.
pub(crate) const ROUTE: &str = r#"
[[route]]
path = "/orders/{*rest}"
upstream = "http://127.0.0.1:9001"
"#;

/// [`ISSUER`] and one `/orders/` route for clerks and deployers, then `extra` sections.
pub(crate) fn credentials_toml(upstream: SocketAddr, extra: &str) -> String {
    format!(
        r#"{ISSUER}
[[route]]
path = "/orders/{{*rest}}"
upstream = "http://{upstream}"
roles_any = ["clerk", "deployer"]
{extra}"#
    )
}

pub(crate) const CI_KEY: &str = "ci-key-0123456789abcdef0123456789abcdef";
pub(crate) const NEXT_KEY: &str = "next-key-fedcba9876543210fedcba9876543210";

/// A keys file entry for `key` (only its SHA-256 is written).
pub(crate) fn key_entry(key: &str, subject: &str, roles: &str) -> String {
    let hash = tower_gatekeeper::authenticate::ApiKeyHash::of(key).to_hex();
    format!(
        "[[key]]\nsha256 = \"{hash}\"\nsubject = \"{subject}\"\nroles = [{roles}]\nscopes = [\"orders:read\"]\ntenant = \"acme\"\n"
    )
}

/// Fails unless `error` contains every one of `parts`.
pub(crate) fn assert_mentions(error: &str, parts: &[&str]) {
    for part in parts {
        assert!(error.contains(part), "{part:?} not in: {error}");
    }
}
