//! A complete authenticating API gateway: the crate's runnable program (DESIGN.md §4).
//!
//! ```text
//! cargo run --example gateway                                          # embedded demo
//! cargo run --example gateway -- --listen 127.0.0.1:9090               # demo on another port
//! cargo run --release --example gateway -- --config gateway.toml      # real use
//! ```
//!
//! Without arguments it runs a self-contained demo: an in-process upstream that echoes what it
//! received, an ephemeral Ed25519 key, and a ready token with `curl` lines to try. With
//! `--config` it reads a TOML file (see `gateway.example.toml` for every key) and
//! reverse-proxies each `[[route]]` to its upstream through the stack
//!
//! ```text
//! AuthenticateLayer → AuthorizeLayer → ContextPropagationLayer → reverse proxy
//! ```
//!
//! (public routes keep only `ContextPropagationLayer`, so spoofed identity headers are
//! stripped there too). Requests matching no route get 404 before any upstream is touched.
//! Besides JWTs, `[api_keys]` (a hashed keys file, reloaded on change and SIGHUP) and
//! `[introspection]` (opaque tokens, feature `introspection`; results optionally shared by
//! replicas through Redis with feature `redis`) join a `CredentialChain`, and
//! `[revocation]` (in memory, or shared by replicas through Redis with feature `redis`)
//! wraps it all: `Revocable(chain(Cached(jwt), introspection, API keys))`.
//! It serves HTTP/1.1 and HTTP/2 (prior knowledge), speaks HTTP/1.1 or h2c to each upstream
//! (per route `upstream_protocol`; by default gRPC goes over h2c, so gRPC services sit behind
//! it as they are, and the gateway's own errors reach gRPC clients as `grpc-status`), streams
//! bodies both ways, and shuts down gracefully on SIGINT and SIGTERM. Logs go to stderr (`RUST_LOG`, default `info`; one line
//! per request at `debug`); tokens and `Authorization` values are never logged.
//!
//! The program is organised so that tests can drive it in-process: [`load_config`] reads and
//! checks a file, [`start_demo`] sets up the demo, and [`run`] serves a [`Config`] on a
//! listener until a shutdown future resolves. `main` only parses arguments and wires these.

use std::borrow::Cow;
use std::convert::Infallible;
use std::error::Error as StdError;
use std::ffi::OsString;
use std::fmt;
use std::future::{self, Future};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_gatekeeper::audit::{DecisionEvent, Outcome, Stage};
use tower_gatekeeper::authenticate::{
    ApiKeyAuthenticator, ApiKeyEntry, ApiKeyHash, CacheConfig, CachedAuthenticator,
    CredentialChain, TokenCache,
};
use tower_gatekeeper::authorize::{
    AllowAll, BoxPolicy, ClaimConfig, ClientAddr, RegoConfig, RouteTable, RouteTableError,
    RuleConfig,
};
use tower_gatekeeper::credential::RequestHead;
use tower_gatekeeper::jwt::Validation;
use tower_gatekeeper::keys::{IssuerKeys, SigningKey, StaticKeys};
use tower_gatekeeper::limits::Limits;
use tower_gatekeeper::reject::{DefaultRejection, Protocol};
use tower_gatekeeper::revocation::{
    FailMode, MemoryRevocations, Revocable, Revocation, RevocationError, RevocationStatus,
    RevocationStore, TokenFacts,
};
use tower_gatekeeper::{
    Algorithm, AuthContext, AuthMode, AuthenticateLayer, Authenticator, AuthorizeLayer,
    ContextPropagationLayer, JwtAuthenticator, PolicyEvaluator, Rejection,
};
use tracing::{debug, info, warn};

// ---------------------------------------------------------------------------------------------
// main: arguments and wiring only
// ---------------------------------------------------------------------------------------------

const USAGE: &str = "\
usage: gateway [--config FILE] [--listen ADDR]
       gateway explain --config FILE [TOKEN | -]

  (no arguments)    run the embedded demo on 127.0.0.1:8080
  --config FILE     run the gateway described by FILE (TOML; see gateway.example.toml)
  --listen ADDR     listen on ADDR (e.g. 127.0.0.1:8080), overriding the file's `listen`
  explain           explain why a token is accepted or rejected (gateway explain --help)
  -h, --help        print this help

Logs go to stderr; set RUST_LOG (default \"info\", \"debug\" logs one line per request).";

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "explain") {
        return explain_main(std::env::args_os().skip(2)).await;
    }
    let args = match Args::parse(std::env::args_os().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    init_tracing();
    match serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> Result<(), BoxError> {
    let (config, demo) = match &args.config {
        Some(path) => (load_config(path)?, None),
        None => {
            let demo = start_demo().await?;
            (demo.config, Some((demo.token, demo.upstream)))
        }
    };
    let listen = args.listen.unwrap_or(config.listen());
    start_admin(&config).await?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e} (--listen ADDR picks another)"))?;
    if let Some((token, upstream)) = demo {
        println!(
            "{}",
            demo_instructions(listener.local_addr()?, upstream, &token)
        );
    }
    // Serve at once (requests get 503 with Retry-After until keys are in), but stop with a
    // clear message when an issuer's keys can never work.
    let ready = config.keys_ready();
    let server = run(config, listener, shutdown_signal());
    tokio::pin!(server);
    tokio::select! {
        served = &mut server => return Ok(served?),
        checked = ready => match checked {
            Ok(()) => info!("every issuer has usable keys"),
            Err(error) => return Err(format!("issuer keys: {error}").into()),
        },
    }
    server.await?;
    Ok(())
}

/// Command-line arguments.
#[derive(Debug, Default)]
struct Args {
    config: Option<PathBuf>,
    listen: Option<SocketAddr>,
}

impl Args {
    /// `Ok(None)` for `--help`.
    fn parse(mut args: impl Iterator<Item = OsString>) -> Result<Option<Args>, String> {
        let mut parsed = Args::default();
        while let Some(arg) = args.next() {
            let text = arg.to_string_lossy();
            let (name, inline) = match text.split_once('=') {
                Some((name, value)) if name.starts_with("--") => (name, Some(value)),
                _ => (&*text, None),
            };
            let mut value = |name: &str| -> Result<OsString, String> {
                match inline {
                    Some(v) => Ok(OsString::from(v)),
                    None => args.next().ok_or_else(|| format!("{name} needs a value")),
                }
            };
            match name {
                "-h" | "--help" => return Ok(None),
                "--config" => parsed.config = Some(PathBuf::from(value(name)?)),
                "--listen" => {
                    let addr = value(name)?;
                    let addr = addr.to_string_lossy();
                    parsed.listen = Some(addr.parse().map_err(|_| {
                        format!(
                            "--listen {addr:?} is not an IP address and port, e.g. 127.0.0.1:8080"
                        )
                    })?);
                }
                _ => return Err(format!("unknown argument {text:?}")),
            }
        }
        Ok(Some(parsed))
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .init();
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            warn!(%error, "cannot listen for SIGINT");
            future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(error) => {
                warn!(%error, "cannot listen for SIGTERM");
                future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = future::pending::<()>();
    tokio::select! {
        () = interrupt => info!("SIGINT received"),
        () = terminate => info!("SIGTERM received"),
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration: the file form (serde), then the checked form (`Config`)
// ---------------------------------------------------------------------------------------------

/// The address the gateway listens on when neither the file nor `--listen` says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// How long the gateway waits for an upstream's response head by default.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a shutdown waits for in-flight requests before giving up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The key sources an `[[issuer]]` may name; exactly one must be set.
const KEY_SOURCES: &str = "jwks_file, hmac_secret_file, jwks_url, discovery_url";

/// The configuration file as written (DESIGN.md §4). Unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    realm: Option<String>,
    upstream_timeout_seconds: Option<f64>,
    #[serde(default, rename = "issuer")]
    issuers: Vec<FileIssuer>,
    #[serde(default, rename = "route")]
    routes: Vec<FileRoute>,
    /// A Rego policy for every route that authenticates and has no `rego` of its own.
    rego: Option<RegoConfig>,
    /// The verified-token cache (on by default).
    cache: Option<FileCache>,
    /// Operations (issue #8): admin listener, audit log, limits.
    admin_listen: Option<String>,
    audit_log: Option<String>,
    limits: Option<FileLimits>,
    /// Credentials beyond JWTs and shared revocation (issue #7).
    api_keys: Option<FileApiKeys>,
    introspection: Option<FileIntrospection>,
    revocation: Option<FileRevocation>,
}

/// One `[[issuer]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIssuer {
    issuer: String,
    audiences: Vec<String>,
    algorithms: Option<Vec<String>>,
    jwks_file: Option<PathBuf>,
    hmac_secret_file: Option<PathBuf>,
    jwks_url: Option<String>,
    discovery_url: Option<String>,
    roles_claim: Option<String>,
    tenant_claim: Option<String>,
    leeway_seconds: Option<u64>,
    typ: Option<String>,
    /// Keys given in code (the embedded demo); never read from a file.
    #[serde(skip)]
    keys: Option<StaticKeys>,
}

/// One `[[route]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRoute {
    path: String,
    methods: Option<Vec<String>>,
    upstream: String,
    #[serde(default)]
    upstream_protocol: UpstreamProtocol,
    #[serde(default)]
    auth: RouteAuth,
    query_token: Option<String>,
    roles_any: Option<Vec<String>>,
    roles_all: Option<Vec<String>>,
    scopes_any: Option<Vec<String>>,
    scopes_all: Option<Vec<String>>,
    claims: Option<Vec<ClaimConfig>>,
    owner_param: Option<String>,
    tenant_param: Option<String>,
    bypass_roles: Option<Vec<String>>,
    rego: Option<RegoConfig>,
}

/// A route's `upstream_protocol`: how the gateway talks to the upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum UpstreamProtocol {
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
enum RouteAuth {
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

/// A configuration that failed to load; the message names the file and the key, route or
/// issuer at fault.
#[derive(Debug)]
pub struct ConfigFileError {
    file: PathBuf,
    message: String,
}

impl ConfigFileError {
    fn new(file: &Path, message: impl Into<String>) -> Self {
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
/// [`run`].
#[derive(Debug)]
pub struct Config {
    listen: SocketAddr,
    realm: DefaultRejection,
    upstream_timeout: Duration,
    authenticator: Option<JwtAuthenticator<IssuerKeys>>,
    token_cache: Option<TokenCache>,
    routes: Vec<RouteSpec>,
    /// (method, path pattern) → index into `routes`.
    table: RouteTable<usize>,
    ops: Ops,
    credentials: Credentials,
}

impl Config {
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

/// A checked `[[route]]`.
#[derive(Debug)]
struct RouteSpec {
    /// How messages and logs name this route: `[[route]] #2 (path "/orders/{*rest}")`.
    label: String,
    path: String,
    /// `None`: every method.
    methods: Option<Vec<Method>>,
    upstream: Authority,
    upstream_protocol: UpstreamProtocol,
    auth: RouteAuth,
    /// The query parameter that may carry the access token (RFC 6750 §2.3), if any.
    query_token: Option<String>,
    policy: BoxPolicy,
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
    compile(file, base).map_err(|message| ConfigFileError::new(path, message))
}

/// Checks a parsed file and builds the [`Config`]; errors are messages without the file name.
fn compile(file: FileConfig, base: &Path) -> Result<Config, String> {
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
    let upstream_timeout = match file.upstream_timeout_seconds {
        None => DEFAULT_UPSTREAM_TIMEOUT,
        Some(secs) => Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                format!("`upstream_timeout_seconds` = {secs} must be a positive number of seconds")
            })?,
    };

    let mut authenticator: Option<JwtAuthenticator<IssuerKeys>> = None;
    for (i, issuer) in file.issuers.into_iter().enumerate() {
        let n = i + 1;
        let (keys, validation) = compile_issuer(n, issuer, base)?;
        let built = match authenticator {
            None => JwtAuthenticator::new(keys, validation),
            Some(auth) => auth.with_issuer(keys, validation),
        };
        authenticator = Some(built.map_err(|e| format!("[[issuer]] #{n}: {e}"))?);
    }
    let credentials =
        compile_credentials(file.api_keys, file.introspection, file.revocation, base)?;
    let can_authenticate = authenticator.is_some() || credentials.authenticates();

    if file.routes.is_empty() {
        return Err(
            "no [[route]] is configured: every request would get 404; add at least one".to_owned(),
        );
    }
    let routes = file
        .routes
        .into_iter()
        .enumerate()
        .map(|(i, route)| compile_route(i + 1, route, can_authenticate, file.rego.as_ref(), base))
        .collect::<Result<Vec<_>, _>>()?;
    let table = compile_table(&routes)?;
    let token_cache = compile_cache(file.cache)?;
    let ops = compile_ops(file.admin_listen, file.audit_log, file.limits, base)?;

    Ok(Config {
        listen,
        realm,
        upstream_timeout,
        authenticator,
        token_cache,
        routes,
        table,
        ops,
        credentials,
    })
}

fn compile_issuer(
    n: usize,
    raw: FileIssuer,
    base: &Path,
) -> Result<(IssuerKeys, Validation), String> {
    if raw.issuer.is_empty() {
        return Err(format!("[[issuer]] #{n}: `issuer` must not be empty"));
    }
    let at = format!("[[issuer]] #{n} (issuer {:?})", raw.issuer);
    if raw.audiences.is_empty() {
        return Err(format!(
            "{at}: `audiences` must list at least one audience the tokens must carry"
        ));
    }

    let mut sources = Vec::new();
    for (key, set) in [
        ("jwks_file", raw.jwks_file.is_some()),
        ("hmac_secret_file", raw.hmac_secret_file.is_some()),
        ("jwks_url", raw.jwks_url.is_some()),
        ("discovery_url", raw.discovery_url.is_some()),
    ] {
        if set {
            sources.push(format!("`{key}`"));
        }
    }
    match (sources.len(), raw.keys.is_some()) {
        (0, false) => {
            return Err(format!(
                "{at}: no key source; set exactly one of {KEY_SOURCES}"
            ));
        }
        (0, true) | (1, false) => {}
        _ => {
            return Err(format!(
                "{at}: {} are all set; set exactly one of {KEY_SOURCES}",
                sources.join(" and ")
            ));
        }
    }
    let keys: IssuerKeys = if let Some(keys) = raw.keys {
        keys.into()
    } else if let Some(file) = &raw.jwks_file {
        StaticKeys::from_jwks_file(base.join(file))
            .map_err(|e| format!("{at}: `jwks_file` {:?}: {e}", file.display().to_string()))?
            .into()
    } else if let Some(file) = &raw.hmac_secret_file {
        StaticKeys::from_hmac_secret_file(base.join(file))
            .map_err(|e| {
                format!(
                    "{at}: `hmac_secret_file` {:?}: {e}",
                    file.display().to_string()
                )
            })?
            .into()
    } else {
        remote_keys(&at, &raw)?
    };

    let mut validation = Validation::new(raw.issuer.clone()).audiences(raw.audiences);
    if let Some(names) = raw.algorithms {
        if names.is_empty() {
            return Err(format!(
                "{at}: `algorithms` is empty; list the allowed algorithms or remove the key to allow what the keys support"
            ));
        }
        let algorithms = names
            .iter()
            .map(|name| {
                name.parse::<Algorithm>().map_err(|_| {
                    let known: Vec<&str> = Algorithm::ALL.iter().map(|a| a.as_str()).collect();
                    format!(
                        "{at}: `algorithms`: unknown algorithm {name:?}; names are exact and case-sensitive, one of {}",
                        known.join(", ")
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        validation = validation.algorithms(algorithms);
    }
    if let Some(path) = raw.roles_claim {
        validation = validation.roles_claim(path);
    }
    if let Some(path) = raw.tenant_claim {
        validation = validation.tenant_claim(path);
    }
    if let Some(secs) = raw.leeway_seconds {
        validation = validation.leeway(Duration::from_secs(secs));
    }
    if let Some(typ) = raw.typ {
        if typ.is_empty() {
            return Err(format!(
                "{at}: `typ` must not be empty (remove it to accept any token type)"
            ));
        }
        validation = validation.required_typ(typ);
    }
    Ok((keys, validation))
}

/// An issuer's `jwks_url` or `discovery_url` source. Nothing is fetched here: the keys arrive
/// in the background, and [`Config::keys_ready`] waits for them.
#[cfg(feature = "remote")]
fn remote_keys(at: &str, raw: &FileIssuer) -> Result<IssuerKeys, String> {
    use tower_gatekeeper::keys::RemoteJwks;
    let (key, builder) = match (&raw.jwks_url, &raw.discovery_url) {
        (Some(url), _) => (
            "jwks_url",
            RemoteJwks::builder(url.clone()).issuer(raw.issuer.clone()),
        ),
        (None, Some(url)) => (
            "discovery_url",
            RemoteJwks::discovery(url.clone(), raw.issuer.clone()),
        ),
        (None, None) => unreachable!("exactly one key source is set"),
    };
    builder
        .build()
        .map(IssuerKeys::from)
        .map_err(|e| format!("{at}: `{key}`: {e}"))
}

#[cfg(not(feature = "remote"))]
fn remote_keys(at: &str, raw: &FileIssuer) -> Result<IssuerKeys, String> {
    let key = if raw.jwks_url.is_some() {
        "jwks_url"
    } else {
        "discovery_url"
    };
    Err(format!(
        "{at}: `{key}` needs the `remote` feature (add `rustls` for https): cargo run --example gateway --features remote -- --config FILE"
    ))
}

fn compile_route(
    n: usize,
    raw: FileRoute,
    can_authenticate: bool,
    global_rego: Option<&RegoConfig>,
    base: &Path,
) -> Result<RouteSpec, String> {
    let label = format!("[[route]] #{n} (path {:?})", raw.path);
    if !raw.path.starts_with('/') {
        return Err(format!("{label}: `path` must start with \"/\""));
    }
    let methods = match raw.methods {
        None => None,
        Some(names) if names.is_empty() => {
            return Err(format!(
                "{label}: `methods` is empty; list methods or remove the key to allow all"
            ));
        }
        Some(names) => {
            let mut methods = Vec::with_capacity(names.len());
            for name in &names {
                let method = Method::from_bytes(name.as_bytes())
                    .ok()
                    .filter(|_| !name.bytes().any(|b| b.is_ascii_lowercase()))
                    .ok_or_else(|| {
                        format!(
                            "{label}: `methods`: {name:?} is not an HTTP method (methods are upper case, e.g. \"GET\")"
                        )
                    })?;
                if !methods.contains(&method) {
                    methods.push(method);
                }
            }
            Some(methods)
        }
    };
    let upstream = parse_upstream(&raw.upstream)
        .map_err(|why| format!("{label}: `upstream` {:?}: {why}", raw.upstream))?;
    match &raw.query_token {
        Some(name) if name.is_empty() || name.contains(['&', '=', '#', '?', ' ']) => {
            return Err(format!(
                "{label}: `query_token` {name:?} is not a query parameter name (e.g. \"access_token\")"
            ));
        }
        Some(_) if raw.auth == RouteAuth::Public => {
            return Err(format!(
                "{label}: `query_token` needs a route that authenticates; it cannot be used with auth = \"public\""
            ));
        }
        _ => {}
    }

    let rules = RuleConfig {
        issuers: None,
        roles_any: raw.roles_any,
        roles_all: raw.roles_all,
        scopes_any: raw.scopes_any,
        scopes_all: raw.scopes_all,
        claims: raw.claims,
        owner_param: raw.owner_param,
        tenant_param: raw.tenant_param,
        bypass_roles: raw.bypass_roles,
        rego: raw.rego,
    };
    let policy = match raw.auth {
        RouteAuth::Public if !rules.is_empty() => {
            return Err(format!(
                "{label}: {} need an authenticated caller; they cannot be used with auth = \"public\"",
                rules
                    .keys()
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        RouteAuth::Public => AllowAll.boxed(),
        auth if !can_authenticate => {
            return Err(format!(
                "{label}: auth = \"{auth}\" needs at least one [[issuer]] to verify tokens (or [introspection] or [api_keys])"
            ));
        }
        auth => {
            let mut rules = rules;
            // The global policy applies where the route has no Rego policy of its own.
            if rules.rego.is_none() {
                rules.rego = global_rego.cloned();
            }
            if let Some(rego) = &mut rules.rego {
                rego.policy = base.join(&rego.policy);
                rego.data = rego.data.as_ref().map(|data| base.join(data));
            }
            if rules.is_empty() && auth == RouteAuth::Optional {
                AllowAll.boxed()
            } else {
                // With no rule keys this is "any authenticated caller".
                rules.compile().map_err(|e| format!("{label}: {e}"))?
            }
        }
    };
    Ok(RouteSpec {
        label,
        path: raw.path,
        methods,
        upstream,
        upstream_protocol: raw.upstream_protocol,
        auth: raw.auth,
        query_token: raw.query_token,
        policy,
    })
}

/// `http://host[:port]` with no path, query or user info.
fn parse_upstream(text: &str) -> Result<Authority, &'static str> {
    const SHAPE: &str = "must be http://host:port";
    let uri: Uri = text.parse().map_err(|_| SHAPE)?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err("https upstreams are not supported yet; use http://host:port");
        }
        _ => return Err(SHAPE),
    }
    let authority = uri.authority().ok_or(SHAPE)?;
    if authority.as_str().contains('@') {
        return Err("must not contain user info");
    }
    if authority.host().is_empty() {
        return Err(SHAPE);
    }
    if uri
        .path_and_query()
        .is_some_and(|pq| !matches!(pq.as_str(), "" | "/"))
    {
        return Err(
            "must not have a path or query: the request's path and query are appended as they are",
        );
    }
    Ok(authority.clone())
}

/// Builds the routing table; two routes that could both serve a request are a conflict.
fn compile_table(routes: &[RouteSpec]) -> Result<RouteTable<usize>, String> {
    let mut builder = RouteTable::builder();
    for (i, route) in routes.iter().enumerate() {
        builder = match &route.methods {
            None => builder.any_method(route.path.clone(), i),
            Some(methods) => builder.route(methods.iter().cloned(), route.path.clone(), i),
        };
    }
    builder.build().map_err(|error| match error {
        RouteTableError::Conflict {
            index,
            other,
            methods,
            ..
        } if routes[index].path == routes[other].path => format!(
            "{} conflicts with {}: both handle {methods}",
            routes[index].label, routes[other].label
        ),
        RouteTableError::Conflict { index, other, .. } => format!(
            "{} conflicts with {}: the two path patterns overlap ambiguously",
            routes[index].label, routes[other].label
        ),
        RouteTableError::InvalidPattern { index, reason, .. } => {
            format!("{}: invalid path pattern: {reason}", routes[index].label)
        }
        other => other.to_string(),
    })
}

fn method_list(methods: &[Method]) -> String {
    methods
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// Serving
// ---------------------------------------------------------------------------------------------

type BoxError = Box<dyn StdError + Send + Sync>;
type GatewayBody = BoxBody<Bytes, BoxError>;
type RouteService = BoxCloneSyncService<Request<Incoming>, Response<GatewayBody>, Infallible>;
type HttpClient = Client<HttpConnector, SentBody>;

/// Serves `config` on `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish (at most 30 s) and returns.
///
/// # Errors
///
/// Only when the listener's address cannot be read; per-connection errors are logged.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    // Reloads the API keys file on change and on SIGHUP while serving.
    let _reload = config
        .credentials
        .api_keys
        .clone()
        .map(|source| AbortOnDrop(tokio::spawn(watch_api_keys(source))));
    let gateway = Gateway::new(config);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    info!(address = %local, "gateway listening (HTTP/1.1 and HTTP/2)");

    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ClientAddr(peer));
            let gateway = gateway.clone();
            async move { Ok::<_, Infallible>(gateway.handle_logged(req).await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%peer, error = %error_chain(&*error), "connection closed with an error");
            }
        });
    }

    drop(listener);
    info!("shutting down: no new connections, waiting for in-flight requests");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            "in-flight requests did not finish within {}s; stopping anyway",
            DRAIN_TIMEOUT.as_secs()
        );
    }
    info!("gateway stopped");
    Ok(())
}

/// The routing table with one service stack per route.
#[derive(Clone)]
struct Gateway {
    inner: Arc<Table>,
}

struct Table {
    /// (method, path pattern) → index into `entries`.
    table: RouteTable<usize>,
    entries: Vec<RouteEntry>,
}

struct RouteEntry {
    path: Arc<str>,
    service: RouteService,
}

impl Gateway {
    fn new(config: Config) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.upstream_timeout));
        let http1: HttpClient = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector.clone());
        // h2c: one multiplexed connection per upstream, pinged while idle so a dead one is
        // noticed before a request is sent on it.
        let h2c: HttpClient = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .timer(TokioTimer::new())
            .http2_only(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_timeout(Duration::from_secs(10))
            .build(connector);
        let Config {
            realm,
            upstream_timeout,
            authenticator,
            token_cache,
            routes,
            table,
            ops,
            credentials,
            ..
        } = config;
        let parts = RouteParts {
            http1,
            h2c,
            realm,
            upstream_timeout,
            ops,
            // The API key is a secret for the gateway: never forwarded.
            strip: credentials
                .api_keys
                .as_ref()
                .map(|source| source.keys.header().clone()),
        };
        // Revocable(Cached(jwt)) as before, or, with [introspection] or [api_keys],
        // Revocable(chain(Cached(jwt), introspection, API keys)): the verified-token cache
        // holds JWTs only, so introspection results keep their own TTLs (`cache_ttl_seconds`,
        // `negative_ttl_seconds`) instead of living as long as `[cache] max_ttl_seconds`. Each
        // layer only when configured; revocation is checked outermost, for every request.
        let revocations = credentials.revocations.clone();
        let entries = if !credentials.authenticates() {
            layered(authenticator, token_cache, revocations, routes, &parts)
        } else if let Some(cache) = token_cache {
            let jwt = authenticator.map(|a| CachedAuthenticator::with_cache(a, cache));
            layered(credentials.chain(jwt), None, revocations, routes, &parts)
        } else {
            layered(
                credentials.chain(authenticator),
                None,
                revocations,
                routes,
                &parts,
            )
        };
        Gateway {
            inner: Arc::new(Table { table, entries }),
        }
    }

    async fn handle_logged(&self, req: Request<Incoming>) -> Response<GatewayBody> {
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

    async fn handle(&self, mut req: Request<Incoming>) -> Response<GatewayBody> {
        let protocol = Protocol::of(&req);
        let (service, rewritten, params) = {
            let Some(path) = normalize_path(req.uri().path()) else {
                return gateway_error(
                    protocol,
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the request path has dot segments or malformed escapes",
                );
            };
            let Some(matched) = self.inner.table.at(req.method(), &path) else {
                return gateway_error(
                    protocol,
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "no route matches this request",
                );
            };
            let entry = &self.inner.entries[*matched.value()];
            debug!(route = %entry.path, "matched");
            // Path parameters for the route's attribute rules (`owner_param`, ...).
            let params = matched.path_params();
            let rewritten = match path {
                Cow::Owned(path) => Some(path),
                Cow::Borrowed(_) => None,
            };
            (entry.service.clone(), rewritten, params)
        };
        req.extensions_mut().insert(params);
        if let Some(path) = rewritten {
            match with_path(req.uri(), &path) {
                Some(uri) => *req.uri_mut() = uri,
                None => {
                    return gateway_error(
                        protocol,
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "the request path is malformed",
                    );
                }
            }
        }
        match service.oneshot(req).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// What every route's stack is built from, besides the authenticator.
struct RouteParts {
    http1: HttpClient,
    h2c: HttpClient,
    realm: DefaultRejection,
    upstream_timeout: Duration,
    ops: Ops,
    /// A header removed before proxying (the API key header).
    strip: Option<HeaderName>,
}

/// Wraps `auth` in the token cache and then in the revocation check, when given, and builds
/// the routes with the result: `Revocable(Cached(auth))`.
fn layered<A: Authenticator>(
    auth: Option<A>,
    cache: Option<TokenCache>,
    store: Option<Revocations>,
    routes: Vec<RouteSpec>,
    parts: &RouteParts,
) -> Vec<RouteEntry> {
    match (cache, store) {
        (Some(cache), Some(store)) => route_entries(
            auth.map(|a| Revocable::new(CachedAuthenticator::with_cache(a, cache), store)),
            routes,
            parts,
        ),
        (Some(cache), None) => route_entries(
            auth.map(|a| CachedAuthenticator::with_cache(a, cache)),
            routes,
            parts,
        ),
        (None, Some(store)) => route_entries(auth.map(|a| Revocable::new(a, store)), routes, parts),
        (None, None) => route_entries(auth, routes, parts),
    }
}

fn route_entries<A: Authenticator>(
    authenticator: Option<A>,
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
                http1: parts.http1.clone(),
                h2c: parts.h2c.clone(),
                protocol: route.upstream_protocol,
                upstream: route.upstream.clone(),
                timeout: parts.upstream_timeout,
                strip: parts.strip.clone(),
            };
            let service = route_service(
                &route,
                authenticator.as_ref(),
                &parts.realm,
                proxy,
                &parts.ops,
            );
            RouteEntry {
                path: Arc::from(route.path),
                service,
            }
        })
        .collect()
}

/// The service stack of one route.
fn route_service<A: Authenticator>(
    route: &RouteSpec,
    authenticator: Option<&A>,
    realm: &DefaultRejection,
    proxy: Proxy,
    ops: &Ops,
) -> RouteService {
    let proxy = tower::service_fn(move |req: Request<Incoming>| {
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(proxy.forward(req).await) }
    });
    let mode = match route.auth {
        RouteAuth::Public => {
            return boxed(
                ServiceBuilder::new()
                    .layer(ContextPropagationLayer::new())
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
            .layer(ops.authenticate_layer(authenticate.rejection_response(realm.clone())))
            .layer(ops.authorize_layer(
                AuthorizeLayer::new(route.policy.clone()).rejection_response(realm.clone()),
            ))
            .layer(ContextPropagationLayer::new())
            .service(proxy),
    )
}

fn boxed<S, B>(service: S) -> RouteService
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

/// The reverse proxy to one upstream.
#[derive(Clone)]
struct Proxy {
    /// A request header never forwarded (the API key header).
    strip: Option<HeaderName>,
    http1: HttpClient,
    h2c: HttpClient,
    protocol: UpstreamProtocol,
    upstream: Authority,
    timeout: Duration,
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

impl Proxy {
    async fn forward(&self, mut req: Request<Incoming>) -> Response<GatewayBody> {
        let protocol = Protocol::of(&req);
        let original_host = req.headers().get(header::HOST).cloned().or_else(|| {
            req.uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let client = req.extensions().get::<ClientAddr>().map(|c| c.0.ip());
        let path_and_query = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.upstream.clone())
            .path_and_query(path_and_query)
            .build();
        let Ok(uri) = uri else {
            return gateway_error(
                protocol,
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the request target is malformed",
            );
        };
        *req.uri_mut() = uri;
        // The upstream's protocol is the route's, whatever the client spoke.
        let h2c = match self.protocol {
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::H2c => true,
            UpstreamProtocol::Auto => protocol == Protocol::Grpc,
        };
        *req.version_mut() = if h2c {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };

        let headers = req.headers_mut();
        // `TE: trailers` is the one TE HTTP/2 allows (RFC 9113 §8.2.2); gRPC peers send it
        // to say they read trailers. Kept for an h2c upstream, dropped (hop-by-hop) for
        // HTTP/1.1.
        let te_trailers = h2c
            && headers
                .get_all(header::TE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
        remove_hop_by_hop(headers);
        if te_trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if let Some(name) = &self.strip {
            headers.remove(name);
        }
        if h2c {
            // The upstream's authority travels as `:authority`, from the URI.
            headers.remove(header::HOST);
        } else if let Ok(host) = HeaderValue::from_str(self.upstream.as_str()) {
            headers.insert(header::HOST, host);
        }
        if let Some(ip) = client {
            append_forwarded_for(headers, ip);
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        match original_host {
            Some(host) => headers.insert(X_FORWARDED_HOST, host),
            None => headers.remove(X_FORWARDED_HOST),
        };

        // The timeout runs from the moment the request is sent in full: a large upload may
        // take longer than the upstream has to answer.
        let (sent_tx, sent_rx) = oneshot::channel();
        let client = if h2c { &self.h2c } else { &self.http1 };
        let response = client.request(req.map(|body| SentBody::new(body, sent_tx)));
        let deadline = async {
            let _ = sent_rx.await;
            tokio::time::sleep(self.timeout).await;
        };
        let outcome = tokio::select! {
            response = response => Some(response),
            () = deadline => None,
        };
        match outcome {
            Some(Ok(mut response)) => {
                remove_hop_by_hop(response.headers_mut());
                response.map(|body| body.map_err(Into::into).boxed())
            }
            Some(Err(error)) => {
                warn!(upstream = %self.upstream, error = %error_chain(&error), "upstream request failed");
                gateway_error(
                    protocol,
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    "the upstream service is unreachable",
                )
            }
            None => {
                warn!(upstream = %self.upstream, timeout_s = self.timeout.as_secs_f64(), "upstream timed out");
                gateway_error(
                    protocol,
                    StatusCode::GATEWAY_TIMEOUT,
                    "gateway_timeout",
                    "the upstream service did not answer in time",
                )
            }
        }
    }
}

/// A request body on its way upstream that reports when it has been sent in full (or
/// dropped unsent).
struct SentBody {
    inner: Incoming,
    sent: Option<oneshot::Sender<()>>,
}

impl SentBody {
    fn new(inner: Incoming, sent: oneshot::Sender<()>) -> Self {
        let mut body = SentBody {
            inner,
            sent: Some(sent),
        };
        if body.inner.is_end_stream() {
            body.finish();
        }
        body
    }

    fn finish(&mut self) {
        if let Some(sent) = self.sent.take() {
            let _ = sent.send(());
        }
    }
}

impl http_body::Body for SentBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) || self.inner.is_end_stream() {
            self.finish();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Removes the hop-by-hop headers and every header `Connection` names.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Appends the client's address to `x-forwarded-for` (joining any values it already has).
fn append_forwarded_for(headers: &mut HeaderMap, ip: IpAddr) {
    let mut value = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ");
    if !value.is_empty() {
        value.push_str(", ");
    }
    value.push_str(&ip.to_string());
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_FOR, value);
    }
}

/// The canonical form of a request path, used for routing and forwarded upstream, so the
/// route the gateway checks is the resource the upstream serves: escapes of unreserved
/// characters decoded (RFC 3986 §6.2.2.2), other escapes upper-cased. `None` for a path that
/// is not absolute, has a malformed escape, or has a `.` or `..` segment (also when escaped),
/// which an upstream would resolve to a path under another route.
fn normalize_path(path: &str) -> Option<Cow<'_, str>> {
    if !path.starts_with('/') {
        return None;
    }
    let normalized = if path.contains('%') {
        let bytes = path.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'%' {
                out.push(bytes[i]);
                i += 1;
                continue;
            }
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let value = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~') {
                out.push(value);
            } else {
                out.push(b'%');
                out.extend(hex.iter().map(u8::to_ascii_uppercase));
            }
            i += 3;
        }
        // Only ASCII was decoded, so the result is as valid UTF-8 as the input.
        let out = String::from_utf8(out).ok()?;
        if out == path {
            Cow::Borrowed(path)
        } else {
            Cow::Owned(out)
        }
    } else {
        Cow::Borrowed(path)
    };
    if normalized.split('/').any(|s| s == "." || s == "..") {
        return None;
    }
    Some(normalized)
}

/// `uri` with its path replaced, query kept.
fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    Uri::from_parts(parts).ok()
}

/// A gateway-made error response, shaped like the library's rejections: JSON for HTTP, and
/// for gRPC a Trailers-Only response whose `grpc-status` follows gRPC's HTTP status mapping
/// (404 → 12 UNIMPLEMENTED, 502/503/504 → 14 UNAVAILABLE; a malformed request → 3
/// INVALID_ARGUMENT), so gRPC clients see a status rather than a body they cannot decode.
fn gateway_error(
    protocol: Protocol,
    status: StatusCode,
    error: &str,
    description: &str,
) -> Response<GatewayBody> {
    if protocol == Protocol::Grpc {
        let code: u16 = match status {
            StatusCode::BAD_REQUEST => 3,
            StatusCode::NOT_FOUND => 12,
            _ => 14,
        };
        let mut response = Response::new(GatewayBody::default());
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from(code));
        // The descriptions are fixed ASCII sentences: no percent-encoding needed beyond spaces.
        if let Ok(message) = HeaderValue::from_str(&description.replace(' ', "%20")) {
            headers.insert("grpc-message", message);
        }
        return response;
    }
    json_error(status, error, description)
}

/// A gateway-made error response with the same JSON shape as the library's rejections.
fn json_error(status: StatusCode, error: &str, description: &str) -> Response<GatewayBody> {
    let body = json!({ "error": error, "error_description": description }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An error and its sources, for logs.
fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// ---------------------------------------------------------------------------------------------
// The embedded demo
// ---------------------------------------------------------------------------------------------

/// The demo's issuer.
pub const DEMO_ISSUER: &str = "https://demo-issuer.gatekeeper.invalid";
/// The demo's audience.
pub const DEMO_AUDIENCE: &str = "api://demo";

/// The embedded demo, ready to [`run`]: its config, token and echo upstream.
#[derive(Debug)]
pub struct Demo {
    /// Routes `/orders/{*rest}` (role clerk), `/admin/{*rest}` (role admin) and
    /// `/public/{*rest}` (public) to the echo upstream; listens on [`DEFAULT_LISTEN`].
    pub config: Config,
    /// A token for `demo-user` (role clerk, scope orders:read, tenant demo), valid a day.
    pub token: String,
    /// The echo upstream's address.
    pub upstream: SocketAddr,
}

/// Sets up the demo: starts the echo upstream on a free loopback port, makes an ephemeral
/// Ed25519 key, builds the config and mints the demo token.
///
/// # Errors
///
/// When the upstream cannot listen or no randomness is available for the key.
pub async fn start_demo() -> Result<Demo, Box<dyn StdError + Send + Sync>> {
    let upstream = spawn_demo_upstream().await?;
    let signer = SigningKey::generate_ed25519()?.with_kid("demo-1");
    let route = |path: &str, auth: RouteAuth, roles: Option<&str>| FileRoute {
        path: path.to_owned(),
        methods: None,
        upstream: format!("http://{upstream}"),
        auth,
        roles_any: roles.map(|r| vec![r.to_owned()]),
        ..FileRoute::default()
    };
    let file = FileConfig {
        listen: Some(DEFAULT_LISTEN.to_owned()),
        realm: Some("gatekeeper-demo".to_owned()),
        upstream_timeout_seconds: None,
        issuers: vec![FileIssuer {
            issuer: DEMO_ISSUER.to_owned(),
            audiences: vec![DEMO_AUDIENCE.to_owned()],
            keys: Some(StaticKeys::new([signer.verifying_key().clone()])),
            ..FileIssuer::default()
        }],
        routes: vec![
            route("/orders/{*rest}", RouteAuth::Required, Some("clerk")),
            route("/admin/{*rest}", RouteAuth::Required, Some("admin")),
            route("/public/{*rest}", RouteAuth::Public, None),
        ],
        rego: None,
        cache: None,
        ..FileConfig::default()
    };
    let config = compile(file, Path::new("."))
        .map_err(|message| ConfigFileError::new(Path::new("<embedded demo>"), message))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let token = signer.sign(&json!({
        "iss": DEMO_ISSUER,
        "aud": DEMO_AUDIENCE,
        "sub": "demo-user",
        "roles": ["clerk"],
        "scope": "orders:read",
        "tenant_id": "demo",
        "iat": now,
        "exp": now + 24 * 60 * 60,
    }))?;
    Ok(Demo {
        config,
        token,
        upstream,
    })
}

/// What the demo prints: the token and `curl` lines that work as printed against `gateway`.
pub fn demo_instructions(gateway: SocketAddr, upstream: SocketAddr, token: &str) -> String {
    let mut gateway = gateway;
    if gateway.ip().is_unspecified() {
        gateway.set_ip(match gateway.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    let base = format!("http://{gateway}");
    format!(
        "\
tower-gatekeeper demo gateway on {base}
  upstream  http://{upstream} (echoes the method, path and headers it receives, as JSON)
  issuer    {DEMO_ISSUER}, audience {DEMO_AUDIENCE} (ephemeral Ed25519 key, kid demo-1)
  routes    /orders/{{*rest}} needs role clerk, /admin/{{*rest}} needs role admin, /public/{{*rest}} is public

Demo token (sub demo-user, roles [\"clerk\"], scope orders:read, tenant demo, valid for 24 h):

{token}

Try it:

# 200: a clerk reads an order; the upstream sees x-user-id, x-user-roles, ... but no token
curl -i -H 'Authorization: Bearer {token}' {base}/orders/42

# 401: no token
curl -i {base}/orders/42

# 403: /admin needs role admin
curl -i -H 'Authorization: Bearer {token}' {base}/admin/users

Ctrl-C stops the gateway. RUST_LOG=debug logs one line per request."
    )
}

/// Starts the demo's echo upstream on a free loopback port.
async fn spawn_demo_upstream() -> io::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    warn!(%error, "demo upstream: cannot accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(demo_echo);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Echoes the request as JSON: method, path with query, headers, body size (streamed).
async fn demo_echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, mut body) = req.into_parts();
    let mut body_bytes = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => body_bytes += frame.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let values: Vec<&str> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("<binary>"))
            .collect();
        headers.insert(name.as_str().to_owned(), values.join(", ").into());
    }
    let echo = json!({
        "upstream": "tower-gatekeeper demo echo",
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
        "headers": headers,
        "body_bytes": body_bytes,
    });
    let mut text = serde_json::to_string_pretty(&echo).unwrap_or_default();
    text.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

// ---------------------------------------------------------------------------------------------
// The verified-token cache (`[cache]`, issue #6)
// ---------------------------------------------------------------------------------------------

/// `[cache]`: the verified-token cache in front of JWT verification, on by default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCache {
    /// `false` verifies every request's token again.
    enabled: Option<bool>,
    max_entries: Option<u64>,
    max_bytes: Option<u64>,
    max_ttl_seconds: Option<u64>,
}

/// The cache the `[cache]` section asks for (default: on, library defaults), or `None`.
fn compile_cache(section: Option<FileCache>) -> Result<Option<TokenCache>, String> {
    let section = section.unwrap_or_default();
    if section.enabled == Some(false) {
        return Ok(None);
    }
    let mut config = CacheConfig::default();
    if let Some(n) = section.max_entries {
        config = config.max_entries(n);
    }
    if let Some(n) = section.max_bytes {
        config = config.max_bytes(n);
    }
    if let Some(secs) = section.max_ttl_seconds {
        config = config.max_ttl(Duration::from_secs(secs));
    }
    TokenCache::new(config)
        .map(Some)
        .map_err(|e| format!("[cache]: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Operations (issue #8): admin listener, audit log, limits, `explain`
// ---------------------------------------------------------------------------------------------

/// `[limits]`: abuse limits (see `tower_gatekeeper::limits`; every key is optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_credential_header_bytes: Option<usize>,
    max_claims_bytes: Option<usize>,
    max_roles: Option<usize>,
    max_scopes: Option<usize>,
}

/// The checked operations settings.
#[derive(Debug, Default)]
struct Ops {
    admin_listen: Option<SocketAddr>,
    audit: Option<AuditLog>,
    limits: Limits,
}

fn compile_ops(
    admin_listen: Option<String>,
    audit_log: Option<String>,
    limits: Option<FileLimits>,
    base: &Path,
) -> Result<Ops, String> {
    let admin_listen = admin_listen
        .map(|text| {
            text.parse().map_err(|_| {
                format!(
                    "`admin_listen` {text:?} is not an IP address and port, e.g. \"127.0.0.1:9091\""
                )
            })
        })
        .transpose()?;
    let audit = audit_log
        .map(|target| AuditLog::open(&target, base))
        .transpose()?;
    let mut checked = Limits::default();
    if let Some(raw) = limits {
        if let Some(n) = raw.max_credential_header_bytes {
            checked = checked.max_credential_header_bytes(n);
        }
        if let Some(n) = raw.max_claims_bytes {
            checked = checked.max_claims_bytes(n);
        }
        if let Some(n) = raw.max_roles {
            checked = checked.max_roles(n);
        }
        if let Some(n) = raw.max_scopes {
            checked = checked.max_scopes(n);
        }
        checked.check().map_err(|e| format!("[limits]: {e}"))?;
    }
    Ok(Ops {
        admin_listen,
        audit,
        limits: checked,
    })
}

impl Ops {
    fn authenticate_layer<A, R>(&self, layer: AuthenticateLayer<A, R>) -> AuthenticateLayer<A, R> {
        let layer = match layer.limits(self.limits) {
            Ok(layer) => layer,
            Err(_) => unreachable!("limits are checked when the configuration is loaded"),
        };
        match &self.audit {
            Some(audit) => layer.on_decision(audit.hook()),
            None => layer,
        }
    }

    fn authorize_layer<P, R>(&self, layer: AuthorizeLayer<P, R>) -> AuthorizeLayer<P, R> {
        match &self.audit {
            Some(audit) => layer.on_decision(audit.hook()),
            None => layer,
        }
    }
}

impl Config {
    /// The admin listener's address (`admin_listen`), when configured.
    pub fn admin_listen(&self) -> Option<SocketAddr> {
        self.ops.admin_listen
    }
}

/// Audit records as JSON lines (`audit_log = "stdout"` or a file path, appended to).
///
/// Records are written by a dedicated thread: the request path only formats the record and
/// hands it over without blocking. When the writer falls 8192 records behind, records are
/// dropped (and counted) rather than slowing requests down.
#[derive(Clone)]
struct AuditLog {
    tx: std::sync::mpsc::SyncSender<String>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

impl AuditLog {
    fn open(target: &str, base: &Path) -> Result<AuditLog, String> {
        let mut out: Box<dyn io::Write + Send> = if target == "stdout" {
            Box::new(io::stdout())
        } else if target.is_empty() {
            return Err(
                "`audit_log` is empty; use \"stdout\" or a file path (appended to)".to_owned(),
            );
        } else {
            let path = base.join(target);
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| format!("`audit_log` {:?}: cannot open: {e}", path.display()))?;
            Box::new(io::BufWriter::new(file))
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<String>(8192);
        std::thread::Builder::new()
            .name("audit-log".to_owned())
            .spawn(move || {
                while let Ok(line) = rx.recv() {
                    let mut write = |line: String| {
                        out.write_all(line.as_bytes())
                            .and_then(|()| out.write_all(b"\n"))
                    };
                    let mut result = write(line);
                    while let Ok(more) = rx.try_recv() {
                        result = result.and_then(|()| write(more));
                    }
                    if let Err(error) = result.and_then(|()| out.flush()) {
                        warn!(%error, "cannot write the audit log");
                    }
                }
            })
            .map_err(|e| format!("`audit_log`: cannot start the writer thread: {e}"))?;
        Ok(AuditLog {
            tx,
            dropped: Arc::default(),
        })
    }

    /// The hook for both layers. A request that authenticates is recorded once, by the
    /// authorize layer (which sees the caller); denials are recorded by the layer that denied.
    fn hook(&self) -> impl Fn(&DecisionEvent<'_>) + Send + Sync + 'static {
        let audit = self.clone();
        move |event: &DecisionEvent<'_>| {
            if event.stage() == Stage::Authenticate && event.outcome() == Outcome::Allow {
                return;
            }
            if audit.tx.try_send(event.to_json().to_string()).is_err() {
                let dropped = audit
                    .dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if dropped.is_power_of_two() {
                    warn!(dropped = dropped + 1, "audit log behind; records dropped");
                }
            }
        }
    }
}

/// Serves the admin endpoints on `listener` until `shutdown` resolves: `/healthz` (200 while
/// the process serves), `/readyz` (200 once `ready` resolved `Ok`: every issuer has keys;
/// 503 before) and `/metrics` (Prometheus text; needs the `metrics` feature).
///
/// # Errors
///
/// Only when the listener's address cannot be read.
pub async fn run_admin(
    listener: TcpListener,
    ready: impl Future<Output = Result<(), String>> + Send + 'static,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let local = listener.local_addr()?;
    let is_ready = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&is_ready);
    tokio::spawn(async move {
        if ready.await.is_ok() {
            flag.store(true, Ordering::Release);
        }
    });
    #[cfg(feature = "metrics")]
    let _ = prometheus();
    info!(address = %local, "admin listening (/healthz, /readyz, /metrics)");
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "admin: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let is_ready = Arc::clone(&is_ready);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let ready = is_ready.load(Ordering::Acquire);
                async move { Ok::<_, Infallible>(admin_response(req.method(), req.uri().path(), ready)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn admin_response(method: &Method, path: &str, ready: bool) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: &'static str| {
        let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    };
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if ready => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: verification keys are not loaded yet\n",
        ),
        "/metrics" => metrics_response(),
        _ => text(
            StatusCode::NOT_FOUND,
            "admin endpoints: /healthz /readyz /metrics\n",
        ),
    }
}

#[cfg(feature = "metrics")]
fn metrics_response() -> Response<Full<Bytes>> {
    let handle = prometheus();
    handle.run_upkeep();
    let mut response = Response::new(Full::new(Bytes::from(handle.render())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

#[cfg(not(feature = "metrics"))]
fn metrics_response() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(
        b"metrics need the `metrics` feature: cargo run --example gateway --features metrics\n",
    )));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

/// The process-wide Prometheus recorder, installed on first use.
#[cfg(feature = "metrics")]
fn prometheus() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            warn!("another metrics recorder is installed; /metrics will be empty");
        }
        handle
    })
}

const EXPLAIN_USAGE: &str = "\
usage: gateway explain --config FILE [TOKEN | -]

  Prints, step by step, what the gateway checks for TOKEN (header, alg, issuer, each claim,
  key, signature) and whether it would be accepted. No upstream is called; remote key
  sources are fetched. Without TOKEN, or with -, the token is read from stdin (keeps it out
  of shell history). A leading \"Bearer \" is ignored. Exit status: 0 accepted, 1 rejected,
  2 usage or configuration error.";

/// `gateway explain ...`: returns the exit status and the report.
pub async fn explain_command(
    mut args: impl Iterator<Item = OsString>,
    stdin: impl io::Read,
) -> (u8, String) {
    let mut config = None;
    let mut token = None;
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy().into_owned();
        match text.as_str() {
            "-h" | "--help" => return (0, EXPLAIN_USAGE.to_owned()),
            "--config" => match args.next() {
                Some(path) => config = Some(PathBuf::from(path)),
                None => {
                    return (
                        2,
                        format!("error: --config needs a value\n\n{EXPLAIN_USAGE}"),
                    );
                }
            },
            _ if text.starts_with("--config=") => {
                config = Some(PathBuf::from(&text["--config=".len()..]));
            }
            _ if token.is_none() && (text == "-" || !text.starts_with('-')) => token = Some(text),
            _ => return (2, format!("error: unexpected argument\n\n{EXPLAIN_USAGE}")),
        }
    }
    let Some(path) = config else {
        return (
            2,
            format!("error: --config FILE is required\n\n{EXPLAIN_USAGE}"),
        );
    };
    let token = match token.filter(|t| t != "-") {
        Some(token) => token,
        None => {
            let mut text = String::new();
            let mut stdin = stdin;
            if let Err(error) = stdin.read_to_string(&mut text) {
                return (
                    2,
                    format!("error: cannot read the token from stdin: {error}"),
                );
            }
            text
        }
    };
    let token = token.trim();
    let token = match token.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("bearer ") => token[7..].trim_start(),
        _ => token,
    };
    let config = match load_config(&path) {
        Ok(config) => config,
        Err(error) => return (2, format!("error: {error}")),
    };
    let Some(auth) = config.authenticator.clone() else {
        return (
            2,
            format!(
                "error: {}: no [[issuer]] is configured: no token can be accepted",
                path.display()
            ),
        );
    };
    let mut out = format!(
        "config: {}\nissuers: {}\n(no upstream is called)\n\n",
        path.display(),
        auth.issuers()
            .map(|i| format!("{i:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Remote keys: wait a bounded time for the first fetch; the report says when they are
    // missing.
    match tokio::time::timeout(Duration::from_secs(10), config.keys_ready()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => out.push_str(&format!("warning: issuer keys: {error}\n\n")),
        Err(_) => out.push_str("warning: keys not loaded within 10 s\n\n"),
    }
    let report = tower_gatekeeper::explain::explain(&auth, token).await;
    out.push_str(&report.to_string());
    out.push('\n');
    (if report.accepted() { 0 } else { 1 }, out)
}

async fn explain_main(args: impl Iterator<Item = OsString>) -> ExitCode {
    let (code, text) = explain_command(args, io::stdin()).await;
    if code == 2 {
        eprintln!("{text}");
    } else {
        print!("{text}");
    }
    ExitCode::from(code)
}

/// Starts the admin listener when `admin_listen` is configured; it lives as long as the process.
async fn start_admin(config: &Config) -> Result<(), BoxError> {
    if let Some(addr) = config.admin_listen() {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} (`admin_listen`): {e}"))?;
        tokio::spawn(run_admin(listener, config.keys_ready(), future::pending()));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Credentials beyond JWTs and shared revocation (`[api_keys]`, `[introspection]`,
// `[revocation]`, issue #7)
// ---------------------------------------------------------------------------------------------

/// A secret read from the file: never shown by `Debug`.
#[derive(Default, Deserialize)]
#[serde(transparent)]
#[cfg_attr(
    not(any(feature = "introspection", feature = "redis")),
    allow(dead_code)
)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `[api_keys]`: API keys from a keys file, reloaded when it changes and on SIGHUP.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileApiKeys {
    /// The keys file (TOML, `[[key]]` entries), relative to the config file's directory.
    file: PathBuf,
    /// The header carrying the key (default `x-api-key`).
    header: Option<String>,
    /// How often the file is checked for changes, in seconds (default 5).
    reload_interval_seconds: Option<f64>,
}

/// The keys file: `[[key]]` entries.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKeys {
    #[serde(default, rename = "key")]
    keys: Vec<FileKey>,
}

/// One `[[key]]` of the keys file: the key's SHA-256 and the identity it stands for.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKey {
    /// Hex SHA-256 of the key (`printf %s "$KEY" | sha256sum`); the key itself is never stored.
    sha256: String,
    subject: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    tenant: Option<String>,
}

/// How the gateway authenticates to the introspection endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum IntrospectionAuthMethod {
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
struct FileIntrospection {
    endpoint: String,
    client_id: Option<String>,
    client_secret: Option<Secret>,
    client_secret_file: Option<PathBuf>,
    auth_method: Option<IntrospectionAuthMethod>,
    issuer: Option<String>,
    audiences: Option<Vec<String>>,
    roles_claim: Option<String>,
    tenant_claim: Option<String>,
    timeout_seconds: Option<f64>,
    cache_ttl_seconds: Option<u64>,
    negative_ttl_seconds: Option<u64>,
    cache_capacity: Option<usize>,
    /// Results shared by replicas through Redis (feature `redis`).
    redis_url: Option<Secret>,
    redis_prefix: Option<String>,
}

/// `[revocation]`: revoked tokens, in memory or shared by replicas through Redis.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
struct FileRevocation {
    redis_url: Option<Secret>,
    prefix: Option<String>,
    fail_mode: Option<FileFailMode>,
    subject_retention_seconds: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FileFailMode {
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

/// The opaque-token authenticator: introspection with the feature, nothing without.
#[cfg(feature = "introspection")]
type OpaqueAuth = tower_gatekeeper::authenticate::IntrospectionAuthenticator;
#[cfg(not(feature = "introspection"))]
type OpaqueAuth = tower_gatekeeper::authenticate::Unconfigured;

/// The checked `[api_keys]`, `[introspection]` and `[revocation]` sections.
#[derive(Debug, Default)]
struct Credentials {
    api_keys: Option<ApiKeySource>,
    introspection: Option<OpaqueAuth>,
    revocations: Option<Revocations>,
}

impl Credentials {
    /// Whether anything besides `[[issuer]]` authenticates callers.
    fn authenticates(&self) -> bool {
        self.api_keys.is_some() || self.introspection.is_some()
    }

    /// The credential chain of `jwt` (an empty slot without `[[issuer]]`), introspection and
    /// API keys, as configured.
    // Without the feature the opaque slot is `Unconfigured`, which is `Copy`.
    #[cfg_attr(not(feature = "introspection"), allow(clippy::clone_on_copy))]
    fn chain<J: Authenticator>(
        &self,
        jwt: Option<J>,
    ) -> Option<CredentialChain<Slot<J>, Slot<OpaqueAuth>>> {
        let chain = CredentialChain::new()
            .jwt(Slot(jwt))
            .opaque(Slot(self.introspection.clone()));
        Some(match &self.api_keys {
            Some(source) => chain.api_keys(source.keys.clone()),
            None => chain,
        })
    }
}

/// A slot of the credential chain that may be empty (its credentials are then refused).
#[derive(Clone, Debug)]
struct Slot<A>(Option<A>);

impl<A: Authenticator> Authenticator for Slot<A> {
    type Future = A::Future;

    fn authenticate(&self, head: &RequestHead<'_>) -> Result<Self::Future, Rejection> {
        match &self.0 {
            Some(auth) => auth.authenticate(head),
            None => Err(Rejection::invalid_token(
                "this kind of credential is not accepted",
            )),
        }
    }

    fn still_trusted(&self, ctx: &AuthContext) -> bool {
        self.0.as_ref().is_some_and(|auth| auth.still_trusted(ctx))
    }
}

/// The API keys and the file they are reloaded from.
#[derive(Debug, Clone)]
struct ApiKeySource {
    keys: ApiKeyAuthenticator,
    file: PathBuf,
    interval: Duration,
    /// The file's contents when the keys were loaded (hashes only, no secrets).
    loaded: Arc<Vec<u8>>,
}

/// The gateway's revocation store (`[revocation]`). Revoke through it (an admin tool, a
/// test): the gateway enforces the revocation for every authenticated request.
#[derive(Debug, Clone)]
pub enum Revocations {
    /// In memory: this process only.
    Memory(MemoryRevocations),
    /// Shared by every replica configured with the same Redis and prefix.
    #[cfg(feature = "redis")]
    Redis(tower_gatekeeper::revocation::RedisRevocations),
}

impl Revocations {
    /// Resolves once the store holds the shared set (at once in memory).
    fn ready(&self) -> impl Future<Output = ()> + Send + 'static {
        let store = self.clone();
        async move {
            match store {
                Revocations::Memory(_) => {}
                #[cfg(feature = "redis")]
                Revocations::Redis(store) => store.ready().await,
            }
        }
    }
}

impl RevocationStore for Revocations {
    fn check(&self, token: &TokenFacts<'_>) -> RevocationStatus {
        match self {
            Revocations::Memory(store) => store.check(token),
            #[cfg(feature = "redis")]
            Revocations::Redis(store) => store.check(token),
        }
    }

    fn revoke(
        &self,
        revocation: Revocation,
    ) -> impl Future<Output = Result<(), RevocationError>> + Send {
        let store = self.clone();
        async move {
            match store {
                Revocations::Memory(store) => store.revoke(revocation).await,
                #[cfg(feature = "redis")]
                Revocations::Redis(store) => store.revoke(revocation).await,
            }
        }
    }
}

impl Config {
    /// The revocation store (`[revocation]`), when configured.
    pub fn revocations(&self) -> Option<Revocations> {
        self.credentials.revocations.clone()
    }
}

fn compile_credentials(
    api_keys: Option<FileApiKeys>,
    introspection: Option<FileIntrospection>,
    revocation: Option<FileRevocation>,
    base: &Path,
) -> Result<Credentials, String> {
    Ok(Credentials {
        api_keys: api_keys
            .map(|raw| compile_api_keys(raw, base))
            .transpose()?,
        introspection: introspection
            .map(|raw| compile_introspection(raw, base))
            .transpose()?,
        revocations: revocation.map(compile_revocation).transpose()?,
    })
}

fn compile_api_keys(raw: FileApiKeys, base: &Path) -> Result<ApiKeySource, String> {
    let file = base.join(&raw.file);
    let interval = match raw.reload_interval_seconds {
        None => Duration::from_secs(5),
        Some(secs) => Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                format!(
                    "[api_keys]: `reload_interval_seconds` = {secs} must be a positive number of seconds"
                )
            })?,
    };
    let bytes =
        std::fs::read(&file).map_err(|e| format!("[api_keys]: `file` {}: {e}", file.display()))?;
    let entries = parse_api_keys(&bytes, &file).map_err(|e| format!("[api_keys]: {e}"))?;
    let mut keys = ApiKeyAuthenticator::new(entries)
        .map_err(|e| format!("[api_keys]: {}: {e}", file.display()))?;
    if let Some(header) = &raw.header {
        keys = keys
            .with_header(header)
            .map_err(|e| format!("[api_keys]: `header`: {e}"))?;
    }
    Ok(ApiKeySource {
        keys,
        file,
        interval,
        loaded: Arc::new(bytes),
    })
}

/// Parses a keys file; errors name the file and the entry.
fn parse_api_keys(bytes: &[u8], file: &Path) -> Result<Vec<ApiKeyEntry>, String> {
    let at = file.display();
    let text = std::str::from_utf8(bytes).map_err(|_| format!("{at}: not UTF-8"))?;
    let parsed: FileKeys = toml::from_str(text).map_err(|e| format!("{at}: {e}"))?;
    parsed
        .keys
        .into_iter()
        .enumerate()
        .map(|(i, key)| {
            let n = i + 1;
            let hash = ApiKeyHash::from_hex(&key.sha256)
                .map_err(|e| format!("{at}: [[key]] #{n}: `sha256`: {e}"))?;
            if key.subject.is_empty() {
                return Err(format!("{at}: [[key]] #{n}: `subject` must not be empty"));
            }
            let mut entry = ApiKeyEntry::new(hash, key.subject)
                .roles(key.roles)
                .scopes(key.scopes);
            if let Some(tenant) = key.tenant {
                entry = entry.tenant(tenant);
            }
            Ok(entry)
        })
        .collect()
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reloads the keys file when its contents change (checked every `interval`) and on SIGHUP.
/// A file that does not parse is logged and the current keys stay.
async fn watch_api_keys(source: ApiKeySource) {
    let hangup = Arc::new(tokio::sync::Notify::new());
    #[cfg(unix)]
    let _hangup_task = {
        use tokio::signal::unix::{SignalKind, signal};
        let hangup = Arc::clone(&hangup);
        match signal(SignalKind::hangup()) {
            Ok(mut signals) => Some(AbortOnDrop(tokio::spawn(async move {
                while signals.recv().await.is_some() {
                    hangup.notify_one();
                }
            }))),
            Err(error) => {
                warn!(%error, "cannot listen for SIGHUP; API keys reload on file changes only");
                None
            }
        }
    };
    let mut loaded = source.loaded;
    let mut ticks = tokio::time::interval(source.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        let signalled = tokio::select! {
            _ = ticks.tick() => false,
            () = hangup.notified() => true,
        };
        let file = source.file.clone();
        let read = tokio::task::spawn_blocking(move || std::fs::read(file)).await;
        let bytes = match read {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(error)) => {
                warn!(file = %source.file.display(), %error, "cannot read the API keys file; keeping the current keys");
                continue;
            }
            Err(_) => continue,
        };
        if !signalled && bytes == *loaded {
            continue;
        }
        match parse_api_keys(&bytes, &source.file).and_then(|entries| {
            let n = entries.len();
            source
                .keys
                .replace(entries)
                .map(|()| n)
                .map_err(|e| e.to_string())
        }) {
            Ok(n) => info!(file = %source.file.display(), keys = n, "API keys reloaded"),
            Err(error) => warn!(%error, "API keys file not reloaded; keeping the current keys"),
        }
        loaded = Arc::new(bytes);
    }
}

#[cfg(feature = "introspection")]
fn compile_introspection(raw: FileIntrospection, base: &Path) -> Result<OpaqueAuth, String> {
    use tower_gatekeeper::authenticate::{
        ClientAuth, IntrospectionAuthenticator, IntrospectionConfig,
    };
    let secret = match (raw.client_secret, &raw.client_secret_file) {
        (Some(_), Some(_)) => {
            return Err(
                "[introspection]: `client_secret` and `client_secret_file` are both set; set one"
                    .to_owned(),
            );
        }
        (Some(secret), None) => Some(secret.0),
        (None, Some(file)) => {
            let text = std::fs::read_to_string(base.join(file)).map_err(|e| {
                format!(
                    "[introspection]: `client_secret_file` {:?}: {e}",
                    file.display().to_string()
                )
            })?;
            Some(text.trim_end_matches(['\r', '\n']).to_owned())
        }
        (None, None) => None,
    };
    let method = raw.auth_method.unwrap_or_default();
    let auth = match (method, raw.client_id, secret) {
        (IntrospectionAuthMethod::None, None, None) => ClientAuth::None,
        (IntrospectionAuthMethod::None, _, _) => {
            return Err(
                "[introspection]: auth_method = \"none\" takes no `client_id` or client secret"
                    .to_owned(),
            );
        }
        (_, Some(client_id), Some(client_secret)) if !client_secret.is_empty() => {
            if method == IntrospectionAuthMethod::Basic {
                ClientAuth::Basic {
                    client_id,
                    client_secret,
                }
            } else {
                ClientAuth::Post {
                    client_id,
                    client_secret,
                }
            }
        }
        _ => {
            return Err(
                "[introspection]: auth_method \"basic\" and \"post\" need `client_id` and a non-empty `client_secret` or `client_secret_file`"
                    .to_owned(),
            );
        }
    };
    let mut config = IntrospectionConfig::new(raw.endpoint, auth);
    if let Some(issuer) = raw.issuer {
        config = config.issuer(issuer);
    }
    if let Some(audiences) = raw.audiences {
        config = config.audiences(audiences);
    }
    if let Some(claim) = raw.roles_claim {
        config = config.roles_claim(claim);
    }
    if let Some(claim) = raw.tenant_claim {
        config = config.tenant_claim(claim);
    }
    if let Some(secs) = raw.timeout_seconds {
        let timeout = Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                format!(
                    "[introspection]: `timeout_seconds` = {secs} must be a positive number of seconds"
                )
            })?;
        config = config.timeout(timeout);
    }
    if let Some(secs) = raw.cache_ttl_seconds {
        config = config.cache_ttl(Duration::from_secs(secs));
    }
    if let Some(secs) = raw.negative_ttl_seconds {
        config = config.negative_ttl(Duration::from_secs(secs));
    }
    if let Some(n) = raw.cache_capacity {
        config = config.cache_capacity(n);
    }
    match raw.redis_url {
        Some(url) => config = shared_introspection_cache(config, url, raw.redis_prefix)?,
        None if raw.redis_prefix.is_some() => {
            return Err(
                "[introspection]: `redis_prefix` applies to the shared Redis cache; set `redis_url` or remove it"
                    .to_owned(),
            );
        }
        None => {}
    }
    IntrospectionAuthenticator::new(config).map_err(|e| format!("[introspection]: {e}"))
}

/// Shares introspection results with the other replicas through Redis (connected lazily).
#[cfg(all(feature = "introspection", feature = "redis"))]
fn shared_introspection_cache(
    config: tower_gatekeeper::authenticate::IntrospectionConfig,
    url: Secret,
    prefix: Option<String>,
) -> Result<tower_gatekeeper::authenticate::IntrospectionConfig, String> {
    let mut builder = tower_gatekeeper::authenticate::RedisIntrospectionCache::builder(url.0);
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err("[introspection]: `redis_prefix` must not be empty".to_owned());
        }
        builder = builder.prefix(prefix);
    }
    let cache = builder
        .build()
        .map_err(|e| format!("[introspection]: `redis_url`: {e}"))?;
    Ok(config.shared_cache(cache))
}

#[cfg(all(feature = "introspection", not(feature = "redis")))]
fn shared_introspection_cache(
    _: tower_gatekeeper::authenticate::IntrospectionConfig,
    _: Secret,
    _: Option<String>,
) -> Result<tower_gatekeeper::authenticate::IntrospectionConfig, String> {
    Err("[introspection]: `redis_url` needs the `redis` feature: cargo run --example gateway --features introspection,redis -- --config FILE".to_owned())
}

#[cfg(not(feature = "introspection"))]
fn compile_introspection(_: FileIntrospection, _: &Path) -> Result<OpaqueAuth, String> {
    Err("[introspection] needs the `introspection` feature: cargo run --example gateway --features introspection -- --config FILE".to_owned())
}

fn compile_revocation(raw: FileRevocation) -> Result<Revocations, String> {
    let Some(url) = raw.redis_url else {
        if raw.prefix.is_some() || raw.fail_mode.is_some() {
            return Err(
                "[revocation]: `prefix` and `fail_mode` apply to the shared Redis store; set `redis_url` or remove them"
                    .to_owned(),
            );
        }
        let mut store = MemoryRevocations::new();
        if let Some(secs) = raw.subject_retention_seconds {
            store = store.subject_retention(Duration::from_secs(secs));
        }
        return Ok(Revocations::Memory(store));
    };
    redis_revocations(
        url,
        raw.prefix,
        raw.fail_mode,
        raw.subject_retention_seconds,
    )
}

/// Opens the shared store (needs a tokio runtime: `load_config` is called inside one).
#[cfg(feature = "redis")]
fn redis_revocations(
    url: Secret,
    prefix: Option<String>,
    fail_mode: Option<FileFailMode>,
    retention: Option<u64>,
) -> Result<Revocations, String> {
    let mut builder = tower_gatekeeper::revocation::RedisRevocations::builder(url.0);
    if let Some(prefix) = prefix {
        builder = builder.prefix(prefix);
    }
    if let Some(mode) = fail_mode {
        builder = builder.fail_mode(mode.into());
    }
    if let Some(secs) = retention {
        builder = builder.subject_retention(Duration::from_secs(secs));
    }
    builder
        .build()
        .map(Revocations::Redis)
        .map_err(|e| format!("[revocation]: `redis_url`: {e}"))
}

#[cfg(not(feature = "redis"))]
fn redis_revocations(
    _: Secret,
    _: Option<String>,
    _: Option<FileFailMode>,
    _: Option<u64>,
) -> Result<Revocations, String> {
    Err("[revocation]: `redis_url` needs the `redis` feature: cargo run --example gateway --features redis -- --config FILE".to_owned())
}
