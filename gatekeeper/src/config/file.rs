use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use tower_gatekeeper::authorize::{RegoConfig, RuleConfig};
use tower_gatekeeper::keys::StaticKeys;
use tower_gatekeeper::revocation::FailMode;

/// The configuration file as written (DESIGN.md §4). Unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub(crate) listen: Option<String>,
    pub(crate) realm: Option<String>,
    pub(crate) upstream_timeout_seconds: Option<f64>,
    /// Client connections: timeouts, limits, trusted proxies.
    pub(crate) server: Option<FileServer>,
    #[serde(default, rename = "issuer")]
    pub(crate) issuers: Vec<FileIssuer>,
    #[serde(default, rename = "route")]
    pub(crate) routes: Vec<FileRoute>,
    /// A Rego policy for every route that authenticates and has no `rego` of its own.
    pub(crate) rego: Option<RegoConfig>,
    /// The verified-token cache (on by default).
    pub(crate) cache: Option<FileCache>,
    /// Operations: admin listener, audit log, limits.
    pub(crate) admin_listen: Option<String>,
    pub(crate) audit_log: Option<String>,
    pub(crate) limits: Option<FileLimits>,
    /// Credentials beyond JWTs, and shared revocation.
    pub(crate) api_keys: Option<FileApiKeys>,
    pub(crate) introspection: Option<FileIntrospection>,
    pub(crate) revocation: Option<FileRevocation>,
    /// TLS termination, client certificates, and trust for `https://` upstreams.
    pub(crate) tls: Option<FileTls>,
    /// DPoP proofs (RFC 9449): algorithms, window, nonces, shared replay cache.
    pub(crate) dpop: Option<crate::config::dpop::FileDpop>,
    /// The origin clients address (`https://api.example.com`), for DPoP `htu` checks.
    pub(crate) public_origin: Option<String>,
    /// Cross-origin requests from browsers (`[cors]`).
    pub(crate) cors: Option<crate::config::edge::FileCors>,
    /// RFC 9728 protected resource metadata (`[resource_metadata]`).
    pub(crate) resource_metadata: Option<crate::config::edge::FileResourceMetadata>,
    /// `"text"` (default) or `"json"`: one JSON object per log line.
    pub(crate) log_format: Option<String>,
    /// The admin token's SHA-256 (hex), inline or in a file: admin actions need one.
    pub(crate) admin_token_sha256: Option<String>,
    pub(crate) admin_token_file: Option<PathBuf>,
    /// `[context]`: the signed context minted for upstreams.
    pub(crate) context: Option<FileContext>,
    /// `[ext_authz]`: the external authorizer.
    pub(crate) ext_authz: Option<FileExtAuthz>,
}

/// `[context]`: sign the propagated identity for the upstreams.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileContext {
    /// PKCS#8 PEM private key: Ed25519 signs EdDSA, P-256 signs ES256.
    pub(crate) sign_key_file: PathBuf,
    pub(crate) kid: String,
    pub(crate) audience: String,
    pub(crate) issuer: Option<String>,
    pub(crate) lifetime_seconds: Option<f64>,
}

/// `[ext_authz]`: an external HTTP authorizer asked for every authenticating route.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "ext-authz"), allow(dead_code))]
pub(crate) struct FileExtAuthz {
    pub(crate) url: String,
    pub(crate) timeout_seconds: Option<f64>,
    pub(crate) max_connections: Option<usize>,
}

/// `[server]`: how client connections are served (every key optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileServer {
    pub(crate) header_read_timeout_seconds: Option<f64>,
    pub(crate) idle_timeout_seconds: Option<f64>,
    pub(crate) body_timeout_seconds: Option<f64>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) trusted_proxies: Option<Vec<String>>,
}

/// One `[[issuer]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileIssuer {
    /// Empty when `issuer_template` names a multi-tenant issuer instead.
    #[serde(default)]
    pub(crate) issuer: String,
    pub(crate) audiences: Vec<String>,
    pub(crate) algorithms: Option<Vec<String>>,
    pub(crate) jwks_file: Option<PathBuf>,
    pub(crate) hmac_secret_file: Option<PathBuf>,
    pub(crate) jwks_url: Option<String>,
    pub(crate) discovery_url: Option<String>,
    pub(crate) roles_claim: Option<String>,
    pub(crate) tenant_claim: Option<String>,
    pub(crate) leeway_seconds: Option<u64>,
    pub(crate) typ: Option<String>,
    /// `false`: tokens without a `sub` are accepted (default: a subject is required).
    pub(crate) require_subject: Option<bool>,
    /// `"off"`, `"allowed"` (default) or `"required"`: DPoP for this issuer's tokens.
    pub(crate) dpop: Option<String>,
    /// Keys given in code (the embedded demo); never read from a file.
    #[serde(skip)]
    pub(crate) keys: Option<StaticKeys>,
    /// Multi-tenant issuer: `iss` template(s) with `{tenant}` (a string or a list).
    pub(crate) issuer_template: Option<crate::config::issuer::Templates>,
    /// Multi-tenant issuer: the discovery URL with `{tenant}`.
    pub(crate) discovery_url_template: Option<String>,
    /// Multi-tenant issuer: the JWKS URL with `{tenant}`.
    pub(crate) jwks_url_template: Option<String>,
    /// Multi-tenant issuer: the tenants trusted.
    pub(crate) tenants: Option<Vec<String>>,
    /// Multi-tenant issuer: `true` trusts any tenant (instead of `tenants`).
    pub(crate) any_tenant: Option<bool>,
    /// Multi-tenant issuer: the most per-tenant key sources kept at once.
    pub(crate) max_tenants: Option<usize>,
}

/// One `[[route]]`: where requests go and how callers authenticate. Its rule keys
/// (`roles_any`, `scopes_all`, `claims`, `owner_param`, ...) are the library's
/// [`RuleConfig`], read by the library's own schema.
#[derive(Debug, Default, Deserialize)]
#[serde(try_from = "RawRoute")]
pub(crate) struct FileRoute {
    pub(crate) path: String,
    pub(crate) methods: Option<Vec<String>>,
    pub(crate) upstream: String,
    pub(crate) upstream_protocol: UpstreamProtocol,
    pub(crate) auth: RouteAuth,
    pub(crate) query_token: Option<String>,
    pub(crate) max_concurrency: Option<usize>,
    pub(crate) allow_path_forms: Option<Vec<String>>,
    pub(crate) rules: RuleConfig,
    pub(crate) rate_limit: Option<crate::config::edge::FileRateLimit>,
    /// Rule keys evaluated report-only (`shadow = { roles_any = [...] }`).
    pub(crate) shadow: Option<RuleConfig>,
    /// `false`: this route does not ask `[ext_authz]`.
    pub(crate) ext_authz: Option<bool>,
    /// `true`: HTTP/1.1 WebSocket upgrades are forwarded and relayed.
    pub(crate) websocket: bool,
    /// `false`: a WebSocket tunnel outlives the credential it was opened with.
    pub(crate) websocket_close_on_expiry: Option<bool>,
}

/// A `[[route]]` as written: the route's own keys, and the rest for [`RuleConfig`], which
/// refuses keys it does not know.
#[derive(Deserialize)]
struct RawRoute {
    path: String,
    methods: Option<Vec<String>>,
    upstream: String,
    #[serde(default)]
    upstream_protocol: UpstreamProtocol,
    #[serde(default)]
    auth: RouteAuth,
    query_token: Option<String>,
    max_concurrency: Option<usize>,
    allow_path_forms: Option<Vec<String>>,
    rate_limit: Option<crate::config::edge::FileRateLimit>,
    shadow: Option<toml::Table>,
    ext_authz: Option<bool>,
    #[serde(default)]
    websocket: bool,
    websocket_close_on_expiry: Option<bool>,
    #[serde(flatten)]
    rules: toml::Table,
}

impl TryFrom<RawRoute> for FileRoute {
    type Error = String;

    fn try_from(raw: RawRoute) -> Result<Self, String> {
        let rules = toml::Value::Table(raw.rules)
            .try_into::<RuleConfig>()
            .map_err(|e| {
                format!(
                    "{} (a [[route]] also takes path, methods, upstream, upstream_protocol, auth, query_token, max_concurrency, allow_path_forms, rate_limit, shadow, ext_authz, websocket and websocket_close_on_expiry)",
                    e.message().trim_end()
                )
            })?;
        let shadow = raw
            .shadow
            .map(|table| {
                toml::Value::Table(table)
                    .try_into::<RuleConfig>()
                    .map_err(|e| format!("`shadow`: {}", e.message().trim_end()))
            })
            .transpose()?;
        Ok(FileRoute {
            path: raw.path,
            methods: raw.methods,
            upstream: raw.upstream,
            upstream_protocol: raw.upstream_protocol,
            auth: raw.auth,
            query_token: raw.query_token,
            max_concurrency: raw.max_concurrency,
            allow_path_forms: raw.allow_path_forms,
            rules,
            rate_limit: raw.rate_limit,
            shadow,
            ext_authz: raw.ext_authz,
            websocket: raw.websocket,
            websocket_close_on_expiry: raw.websocket_close_on_expiry,
        })
    }
}

/// A route's `upstream_protocol`: how the gateway talks to the upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum UpstreamProtocol {
    /// gRPC requests (`content-type: application/grpc*`) over h2c, since gRPC needs HTTP/2
    /// (trailers); everything else over HTTP/1.1. The default.
    #[default]
    Auto,
    /// Every request over HTTP/1.1.
    Http1,
    /// Every request over HTTP/2 with prior knowledge, without TLS (h2c).
    H2c,
}

impl fmt::Display for UpstreamProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UpstreamProtocol::Auto => "auto",
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2c => "h2c",
        })
    }
}

/// A route's `auth`: whether callers must, may or need not present a token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RouteAuth {
    /// A valid token is required (the default: fail closed).
    #[default]
    Required,
    /// No token passes without identity; a bad token is still rejected.
    Optional,
    /// No authentication; identity headers are still stripped.
    Public,
}

impl fmt::Display for RouteAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RouteAuth::Required => "required",
            RouteAuth::Optional => "optional",
            RouteAuth::Public => "public",
        })
    }
}

/// `[cache]`: the verified-token cache in front of JWT verification, on by default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileCache {
    /// `false` verifies every request's token again.
    pub(crate) enabled: Option<bool>,
    pub(crate) max_entries: Option<u64>,
    pub(crate) max_bytes: Option<u64>,
    pub(crate) max_ttl_seconds: Option<u64>,
}

/// `[limits]`: abuse limits (see `tower_gatekeeper::limits`; every key is optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileLimits {
    pub(crate) max_credential_header_bytes: Option<usize>,
    pub(crate) max_claims_bytes: Option<usize>,
    pub(crate) max_roles: Option<usize>,
    pub(crate) max_scopes: Option<usize>,
}

/// A secret read from the file: never shown by `Debug`.
#[derive(Default, Deserialize)]
#[serde(transparent)]
#[cfg_attr(
    not(any(feature = "introspection", feature = "redis")),
    allow(dead_code)
)]
pub(crate) struct Secret(pub(crate) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `[api_keys]`: API keys from a keys file, reloaded when it changes and on SIGHUP.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileApiKeys {
    /// The keys file (TOML, `[[key]]` entries), relative to the config file's directory.
    pub(crate) file: PathBuf,
    /// The header carrying the key (default `x-api-key`).
    pub(crate) header: Option<String>,
    /// How often the file is checked for changes, in seconds (default 5).
    pub(crate) reload_interval_seconds: Option<f64>,
    /// The name these keys' callers carry as issuer (`x-user-issuer`; default `api-key`).
    pub(crate) issuer: Option<String>,
}

/// The keys file: `[[key]]` entries.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileKeys {
    #[serde(default, rename = "key")]
    pub(crate) keys: Vec<FileKey>,
}

/// One `[[key]]` of the keys file: the key's SHA-256 and the identity it stands for.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileKey {
    /// Hex SHA-256 of the key (`printf %s "$KEY" | sha256sum`); the key itself is never stored.
    pub(crate) sha256: String,
    pub(crate) subject: String,
    #[serde(default)]
    pub(crate) roles: Vec<String>,
    #[serde(default)]
    pub(crate) scopes: Vec<String>,
    pub(crate) tenant: Option<String>,
}

/// How the gateway authenticates to the introspection endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum IntrospectionAuthMethod {
    /// `client_secret_basic`.
    #[default]
    Basic,
    /// `client_secret_post`.
    Post,
    /// No client authentication.
    None,
}

/// `[introspection]`: opaque bearer tokens checked at an RFC 7662 endpoint.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "introspection"), allow(dead_code))]
pub(crate) struct FileIntrospection {
    pub(crate) endpoint: String,
    pub(crate) client_id: Option<String>,
    pub(crate) client_secret: Option<Secret>,
    pub(crate) client_secret_file: Option<PathBuf>,
    pub(crate) auth_method: Option<IntrospectionAuthMethod>,
    pub(crate) issuer: Option<String>,
    pub(crate) audiences: Option<Vec<String>>,
    /// `true`: accept answers for any audience (instead of listing `audiences`).
    pub(crate) any_audience: Option<bool>,
    pub(crate) require_subject: Option<bool>,
    pub(crate) roles_claim: Option<String>,
    pub(crate) tenant_claim: Option<String>,
    pub(crate) timeout_seconds: Option<f64>,
    pub(crate) cache_ttl_seconds: Option<u64>,
    pub(crate) negative_ttl_seconds: Option<u64>,
    pub(crate) cache_capacity: Option<usize>,
    /// Results shared by replicas through Redis (feature `redis`).
    pub(crate) redis_url: Option<Secret>,
    pub(crate) redis_prefix: Option<String>,
}

/// `[revocation]`: revoked tokens, in memory or shared by replicas through Redis.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct FileRevocation {
    pub(crate) redis_url: Option<Secret>,
    pub(crate) prefix: Option<String>,
    pub(crate) fail_mode: Option<FileFailMode>,
    pub(crate) subject_retention_seconds: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FileFailMode {
    Open,
    Closed,
}

impl From<FileFailMode> for FailMode {
    fn from(mode: FileFailMode) -> Self {
        match mode {
            FileFailMode::Open => FailMode::Open,
            FileFailMode::Closed => FailMode::Closed,
        }
    }
}

/// `[tls]`: TLS termination on `listen`, client certificates (from the handshake or a trusted
/// proxy's header), and the CAs trusted for `https://` upstreams.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileTls {
    /// The certificate chain (PEM, leaf first); with `key_file`, `listen` speaks TLS.
    pub(crate) cert_file: Option<PathBuf>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub(crate) key_file: Option<PathBuf>,
    /// The CAs client certificates must chain to (PEM).
    pub(crate) client_ca_file: Option<PathBuf>,
    pub(crate) client_auth: Option<crate::tls::ClientAuth>,
    /// A header carrying the client certificate from a trusted TLS-terminating proxy.
    pub(crate) client_cert_header: Option<String>,
    /// The CAs trusted for `https://` upstreams (PEM), instead of the platform's.
    pub(crate) upstream_ca_file: Option<PathBuf>,
}
