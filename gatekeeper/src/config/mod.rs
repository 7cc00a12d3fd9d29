pub(crate) mod admin;
pub(crate) mod credentials;
pub(crate) mod dpop;
pub(crate) mod edge;
pub(crate) mod file;
pub(crate) mod issuer;
pub(crate) mod ops;
pub(crate) mod policy;
pub(crate) mod route;
pub(crate) mod server;
pub(crate) mod tls;

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Revocations;
use crate::config::credentials::compile_credentials;
use crate::config::file::FileConfig;
use crate::config::issuer::compile_issuer;
use crate::config::ops::Ops;
use crate::config::ops::compile_cache;
use crate::config::ops::compile_ops;
use crate::config::route::RouteSpec;
use crate::config::route::compile_table;
use crate::config::route::{RouteContext, compile_route};
use crate::config::server::Server;
use crate::credentials::Credentials;
use tower_gatekeeper::JwtAuthenticator;
use tower_gatekeeper::authenticate::TokenCache;
use tower_gatekeeper::authorize::RouteTable;
use tower_gatekeeper::keys::IssuerKeys;
use tower_gatekeeper::reject::DefaultRejection;

/// The address the gateway listens on when neither the file nor `--listen` says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// How long the gateway waits for an upstream's response head by default.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// The key sources an `[[issuer]]` may name; exactly one must be set.
pub(crate) const KEY_SOURCES: &str = "jwks_file, hmac_secret_file, jwks_url, discovery_url";

/// A configuration that failed to load; the message names the file and the key, route or
/// issuer at fault.
#[derive(Debug)]
pub struct ConfigFileError {
    pub(crate) file: PathBuf,
    pub(crate) message: String,
}

impl ConfigFileError {
    pub(crate) fn new(file: &Path, message: impl Into<String>) -> Self {
        ConfigFileError {
            file: file.to_owned(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

impl StdError for ConfigFileError {}

/// A checked configuration: keys loaded, authenticator built, routes compiled. Serve it with
/// [`run`](crate::run).
#[derive(Debug)]
pub struct Config {
    pub(crate) listen: SocketAddr,
    pub(crate) realm: DefaultRejection,
    pub(crate) upstream_timeout: Duration,
    pub(crate) authenticator: Option<JwtAuthenticator<IssuerKeys>>,
    pub(crate) token_cache: Option<TokenCache>,
    pub(crate) routes: Vec<RouteSpec>,
    /// (method, path pattern) → index into `routes`.
    pub(crate) table: RouteTable<usize>,
    pub(crate) ops: Ops,
    pub(crate) server: Server,
    /// Routes that take requests from a broader, more protected route (logged when serving).
    pub(crate) shadowed: Vec<String>,
    pub(crate) credentials: Credentials,
    pub(crate) tls: tls::Tls,
    /// DPoP and certificate-binding checks (always on: bound tokens are never accepted as
    /// Bearer tokens).
    pub(crate) dpop: tower_gatekeeper::dpop::DpopConfig,
    /// `[cors]`: tower-http's CORS layer, answering preflights before routing.
    pub(crate) cors: Option<tower_http::cors::CorsLayer>,
    /// `[resource_metadata]`: the RFC 9728 document.
    pub(crate) resource_metadata: Option<std::sync::Arc<crate::metadata::ResourceMetadata>>,
    /// The admin token and the log format.
    pub(crate) admin: admin::AdminSettings,
    /// Each `[[issuer]]`'s keys, for "refresh keys now".
    pub(crate) issuer_keys: Vec<(String, IssuerKeys)>,
    /// The file this configuration was loaded from (reloaded on SIGHUP).
    pub(crate) path: Option<PathBuf>,
}

impl Config {
    /// Where a route takes requests from a broader, more protected one, one sentence each
    /// (e.g. a public `/api/health` inside an admin-only `/api/{*rest}`); [`run`](crate::run)
    /// logs them as warnings.
    pub fn shadowed_routes(&self) -> &[String] {
        &self.shadowed
    }

    /// The address from the file's `listen` (default [`DEFAULT_LISTEN`]).
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// Readiness: resolves once every issuer has usable keys (at once for key files; after
    /// the first successful fetch for `jwks_url` and `discovery_url`, which keep retrying
    /// with backoff while the provider is down). Fails fast, naming the issuer, when a
    /// configuration cannot work: an allowed algorithm no key can verify, a JWKS without
    /// usable keys, a discovery document naming another issuer.
    ///
    /// # Errors
    ///
    /// The message of the failed check.
    pub fn keys_ready(&self) -> impl Future<Output = Result<(), String>> + Send + 'static {
        let authenticator = self.authenticator.clone();
        let revocations = self.credentials.revocations.clone();
        async move {
            if let Some(auth) = authenticator {
                auth.ready().await.map_err(|e| e.to_string())?;
            }
            if let Some(store) = revocations {
                store.ready().await;
            }
            Ok(())
        }
    }
}

/// Reads and checks the gateway configuration at `path`. Relative paths inside it (key files)
/// are resolved against the file's directory.
///
/// # Errors
///
/// [`ConfigFileError`] naming the file and what is wrong: unreadable file, TOML syntax,
/// unknown or missing keys, unusable keys or values, conflicting routes.
pub fn load_config(path: impl AsRef<Path>) -> Result<Config, ConfigFileError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigFileError::new(path, format!("cannot read the config file: {e}")))?;
    let file: FileConfig =
        toml::from_str(&text).map_err(|e| ConfigFileError::new(path, e.to_string()))?;
    let base = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut config = compile(file, base).map_err(|message| ConfigFileError::new(path, message))?;
    config.path = Some(path.to_owned());
    Ok(config)
}

/// Checks a parsed file and builds the [`Config`]; errors are messages without the file name.
pub(crate) fn compile(file: FileConfig, base: &Path) -> Result<Config, String> {
    let listen_text = file.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = listen_text.parse().map_err(|_| {
        format!("`listen` {listen_text:?} is not an IP address and port, e.g. \"127.0.0.1:8080\"")
    })?;
    let realm = match file.realm {
        Some(realm) if realm.trim().is_empty() => {
            return Err("`realm` must not be empty".to_owned());
        }
        Some(realm) => DefaultRejection::new(&realm),
        None => DefaultRejection::default(),
    };
    let upstream_timeout = seconds(
        "`upstream_timeout_seconds`",
        file.upstream_timeout_seconds,
        DEFAULT_UPSTREAM_TIMEOUT,
    )?;
    let server = server::compile(file.server.unwrap_or_default())?;
    let mut tls = tls::compile(file.tls, base, &server)?;

    let mut authenticator: Option<JwtAuthenticator<IssuerKeys>> = None;
    // Every name a caller's issuer can have: each `[[issuer]]`, then the API keys' and the
    // introspection endpoint's names.
    let mut issuers: Vec<String> = file.issuers.iter().map(|i| i.name()).collect();
    let dpop_modes: Vec<(String, Option<String>)> = file
        .issuers
        .iter()
        .map(|i| (i.name(), i.dpop.clone()))
        .collect();
    let dpop = dpop::compile_dpop(file.dpop, file.public_origin.as_deref(), &dpop_modes, base)?;
    let mut issuer_keys = Vec::new();
    for (i, issuer) in file.issuers.into_iter().enumerate() {
        let n = i + 1;
        let (keys, validation) = compile_issuer(n, issuer, base)?;
        issuer_keys.push((validation.issuer().to_owned(), keys.clone()));
        let built = match authenticator {
            None => JwtAuthenticator::new(keys, validation),
            Some(auth) => auth.with_issuer(keys, validation),
        };
        authenticator = Some(built.map_err(|e| format!("[[issuer]] #{n}: {e}"))?);
    }
    let credentials =
        compile_credentials(file.api_keys, file.introspection, file.revocation, base)?;
    let can_authenticate = authenticator.is_some() || credentials.authenticates();
    issuers.extend(credentials.names.iter().cloned());

    if file.routes.is_empty() {
        return Err(
            "no [[route]] is configured: every request would get 404; add at least one".to_owned(),
        );
    }
    let routes = file
        .routes
        .into_iter()
        .enumerate()
        .map(|(i, route)| {
            let context = RouteContext {
                can_authenticate,
                issuers: &issuers,
                global_rego: file.rego.as_ref(),
                base,
                api_keys: credentials.api_keys.is_some(),
            };
            compile_route(i + 1, route, &context)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (table, shadowed) = compile_table(&routes)?;
    let cors = file.cors.map(edge::compile_cors).transpose()?;
    let resource_metadata = file
        .resource_metadata
        .map(|raw| edge::compile_resource_metadata(raw, &issuers))
        .transpose()?;
    // Every challenge points to the metadata document.
    let realm = match &resource_metadata {
        Some(metadata) => realm.resource_metadata(metadata.url()),
        None => realm,
    };
    tls.prepare_upstream(routes.iter().any(|route| route.upstream_tls))?;
    let token_cache = compile_cache(file.cache)?;
    let mut ops = compile_ops(file.admin_listen, file.audit_log, file.limits, base)?;
    ops.propagation = policy::compile_context(file.context, base)?;
    ops.ext_authz = policy::compile_ext_authz(file.ext_authz)?;
    policy::check_ext_authz_keys(&routes, ops.ext_authz.is_some())?;
    let admin = admin::compile_admin(
        file.admin_token_sha256,
        file.admin_token_file,
        file.log_format,
        base,
    )?;

    Ok(Config {
        listen,
        realm,
        upstream_timeout,
        authenticator,
        token_cache,
        routes,
        table,
        ops,
        server,
        credentials,
        shadowed,
        tls,
        dpop,
        cors,
        resource_metadata: resource_metadata.map(std::sync::Arc::new),
        admin,
        issuer_keys,
        path: None,
    })
}

impl Config {
    /// Reloads the TLS listener's certificate and key (what SIGHUP does while
    /// [`run`](crate::run) serves this configuration); `None` without `[tls] cert_file`.
    pub fn tls_reloader(&self) -> Option<crate::tls::TlsReloader> {
        self.tls
            .listener
            .as_ref()
            .map(|listener| crate::tls::TlsReloader(std::sync::Arc::clone(&listener.certificate)))
    }
}

impl Config {
    /// The admin listener's address (`admin_listen`), when configured.
    pub fn admin_listen(&self) -> Option<SocketAddr> {
        self.ops.admin_listen
    }
}

impl Config {
    /// The revocation store (`[revocation]`), when configured.
    pub fn revocations(&self) -> Option<Revocations> {
        self.credentials.revocations.clone()
    }
}

/// A duration key in seconds (`default` when absent); zero, negative, NaN or out-of-range
/// values are refused with a message naming `key` (e.g. "[server]: `idle_timeout_seconds`").
pub(crate) fn seconds(
    key: &str,
    value: Option<f64>,
    default: Duration,
) -> Result<Duration, String> {
    match value {
        None => Ok(default),
        Some(secs) => Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("{key} = {secs} must be a positive number of seconds")),
    }
}
