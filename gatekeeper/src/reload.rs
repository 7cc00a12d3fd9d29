//! The live configuration: what new requests are served with, and its reload from the file
//! (on SIGHUP, or through the admin endpoint) without dropping connections.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tower_gatekeeper::keys::IssuerKeys;
use tower_gatekeeper::revocation::Revocations;
use tracing::{info, warn};

use http::header::HeaderName;

use crate::config::admin::AdminSettings;
use crate::credentials::{AbortOnDrop, watch_api_keys};
use crate::routes::Gateway;
use crate::tls::TlsListener;
use crate::{Config, ConfigFileError, load_config};

/// How long a reload waits for the new configuration's issuer keys (a new `jwks_url` is
/// fetched first); past it the reload is refused and the current configuration stays.
pub(crate) const RELOAD_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running gateway's configuration: new requests read the current one, and
/// [`reload`](Self::reload) replaces it from its file. Cheap to clone (one shared state).
///
/// [`run`](crate::run) builds one and reloads it on SIGHUP; build it yourself with
/// [`Live::new`] and serve it with [`run_live`](crate::run_live) to trigger reloads from code.
#[derive(Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

struct Inner {
    current: ArcSwap<Current>,
    /// The file reloads read; `None` for a configuration built in code (the demo).
    path: Option<PathBuf>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    /// The API keys file watcher of the current configuration.
    watcher: Mutex<Option<AbortOnDrop>>,
    /// `[tls]` of the listener, as started: a reload cannot switch it.
    listener_tls: (Option<TlsListener>, Option<HeaderName>),
}

/// What one configuration serves with, swapped as a whole by a reload.
pub(crate) struct Current {
    pub(crate) gateway: Gateway,
    pub(crate) admin: AdminSettings,
    /// The revocation store: made once at start-up and kept by every reload, so revocations
    /// survive it.
    pub(crate) revocations: Option<Revocations>,
    /// Each issuer's keys, for "refresh keys now".
    pub(crate) issuer_keys: Vec<(String, IssuerKeys)>,
    /// What only a restart changes, to report a reload that asks for more.
    fixed: Fixed,
}

/// The settings a reload cannot apply.
#[derive(Clone, PartialEq)]
struct Fixed {
    listen: std::net::SocketAddr,
    max_connections: usize,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    admin_listen: Option<std::net::SocketAddr>,
    log_format: crate::config::admin::LogFormat,
    /// The `[revocation]` section as written.
    revocation: Option<toml::Value>,
}

/// A successful reload.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Reloaded {
    /// How many routes the new configuration serves.
    pub routes: usize,
    /// The changed settings that take effect only after a restart (also logged).
    pub needs_restart: Vec<String>,
}

impl Live {
    /// Serves `config` from now on; reloads read the file it was loaded from. Starts the API
    /// keys file watcher, so it must be called inside a tokio runtime.
    pub fn new(config: Config) -> Live {
        for shadowed in config.shadowed_routes() {
            warn!("{shadowed}");
        }
        let path = config.path.clone();
        let revocation = path.as_deref().and_then(revocation_section);
        let listener_tls = (
            config.tls.listener.clone(),
            config.tls.client_cert_header.clone(),
        );
        let (current, watcher) = Current::build(config, revocation);
        Live {
            inner: Arc::new(Inner {
                current: ArcSwap::from_pointee(current),
                path,
                reloading: tokio::sync::Mutex::new(()),
                watcher: Mutex::new(watcher),
                listener_tls,
            }),
        }
    }

    /// The listener's TLS (acceptor and certificate store) and `client_cert_header`, as
    /// started.
    pub(crate) fn listener_tls(&self) -> (Option<TlsListener>, Option<HeaderName>) {
        self.inner.listener_tls.clone()
    }

    /// The configuration new requests are served with.
    pub(crate) fn current(&self) -> Arc<Current> {
        self.inner.current.load_full()
    }

    /// The route table new requests are served with.
    pub(crate) fn gateway(&self) -> Gateway {
        self.inner.current.load().gateway.clone()
    }

    /// The revocation store (`[revocation]`) the gateway serves with: the one it started
    /// with, kept by every reload.
    pub fn revocations(&self) -> Option<Revocations> {
        self.inner.current.load().revocations.clone()
    }

    /// The admin listener's address (`admin_listen`) as started.
    pub(crate) fn admin_listen(&self) -> Option<std::net::SocketAddr> {
        self.inner.current.load().fixed.admin_listen
    }

    /// Whether the configuration came from a file (and so can be reloaded).
    pub(crate) fn reloadable(&self) -> bool {
        self.inner.path.is_some()
    }

    /// Reads the configuration file again and, when it loads and its issuer keys are ready
    /// (at most 30 s), serves new requests with it: routes, issuers, keys, credentials,
    /// policies, `[context]`, `[ext_authz]`, the admin token. Requests in flight finish with
    /// the configuration they started with, and no connection is dropped. The revocation
    /// store is kept (revocations survive); `listen`, `[server]` `max_connections`
    /// and the connection timeouts, `admin_listen`, `log_format` and `[revocation]` need a restart: a change to them is
    /// logged and listed in [`Reloaded::needs_restart`].
    ///
    /// # Errors
    ///
    /// [`ConfigFileError`] when the file does not load or its keys are not ready; the current
    /// configuration stays in use (and the error is logged).
    pub async fn reload(&self) -> Result<Reloaded, ConfigFileError> {
        let _one = self.inner.reloading.lock().await;
        let Some(path) = self.inner.path.clone() else {
            return Err(ConfigFileError::new(
                std::path::Path::new("<built in code>"),
                "this configuration was not loaded from a file; there is nothing to reload",
            ));
        };
        let result = self.reload_from(&path).await;
        if let Err(error) = &result {
            warn!(%error, "configuration not reloaded; still serving the previous one");
        }
        result
    }

    async fn reload_from(&self, path: &std::path::Path) -> Result<Reloaded, ConfigFileError> {
        let mut config = load_config(path)?;
        let old = self.current();
        let revocation = revocation_section(path);
        let fixed = Fixed::of(&config, revocation.clone());
        let needs_restart = old.fixed.changes(&fixed);
        for setting in &needs_restart {
            warn!(setting = %setting, "changed in the configuration file; needs a restart to take effect");
        }
        // Wait for the new issuers' keys only: the revocation store is not replaced (and a
        // Redis outage must not block a reload).
        config.credentials.revocations = None;
        let ready = config.keys_ready();
        // Revocations recorded so far stay enforced: the store is the one started with.
        config.credentials.revocations = old.revocations.clone();
        match tokio::time::timeout(RELOAD_READY_TIMEOUT, ready).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                return Err(ConfigFileError::new(path, format!("issuer keys: {error}")));
            }
            Err(_) => {
                return Err(ConfigFileError::new(
                    path,
                    format!(
                        "issuer keys: not ready within {}s",
                        RELOAD_READY_TIMEOUT.as_secs()
                    ),
                ));
            }
        }
        for shadowed in config.shadowed_routes() {
            warn!("{shadowed}");
        }
        let routes = config.routes.len();
        let (mut current, watcher) = Current::build(config, None);
        // The settings that need a restart stay as started, so a later reload reports
        // them again until the process restarts.
        current.fixed = old.fixed.clone();
        self.inner.current.store(Arc::new(current));
        *self
            .inner
            .watcher
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = watcher;
        info!(routes, file = %path.display(), "configuration reloaded");
        Ok(Reloaded {
            routes,
            needs_restart,
        })
    }

    /// Reloads on every SIGHUP until the returned guard is dropped (nothing on non-Unix
    /// systems or for a configuration built in code).
    pub(crate) fn reload_on_hangup(&self) -> Option<AbortOnDrop> {
        if !self.reloadable() {
            return None;
        }
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let live = self.clone();
            match signal(SignalKind::hangup()) {
                Ok(mut signals) => Some(AbortOnDrop(tokio::spawn(async move {
                    while signals.recv().await.is_some() {
                        info!("SIGHUP received: reloading the configuration");
                        let _ = live.reload().await;
                    }
                }))),
                Err(error) => {
                    warn!(%error, "cannot listen for SIGHUP; the configuration is not reloaded on it");
                    None
                }
            }
        }
        #[cfg(not(unix))]
        None
    }
}

impl Current {
    fn build(config: Config, revocation: Option<toml::Value>) -> (Current, Option<AbortOnDrop>) {
        let fixed = Fixed::of(&config, revocation);
        let admin = config.admin.clone();
        let revocations = config.credentials.revocations.clone();
        let issuer_keys = config.issuer_keys.clone();
        // Reloads the API keys file when it changes.
        let watcher = config
            .credentials
            .api_keys
            .clone()
            .map(|source| AbortOnDrop(tokio::spawn(watch_api_keys(source))));
        let current = Current {
            gateway: Gateway::new(config),
            admin,
            revocations,
            issuer_keys,
            fixed,
        };
        (current, watcher)
    }
}

impl Fixed {
    fn of(config: &Config, revocation: Option<toml::Value>) -> Fixed {
        Fixed {
            listen: config.listen,
            max_connections: config.server.max_connections,
            header_read_timeout: config.server.header_read_timeout,
            idle_timeout: config.server.idle_timeout,
            admin_listen: config.ops.admin_listen,
            log_format: config.admin.log_format,
            revocation,
        }
    }

    /// The names of the settings that differ in `new`.
    fn changes(&self, new: &Fixed) -> Vec<String> {
        let mut changed = Vec::new();
        if self.listen != new.listen {
            changed.push("`listen`".to_owned());
        }
        if self.max_connections != new.max_connections {
            changed.push("[server] `max_connections`".to_owned());
        }
        if self.header_read_timeout != new.header_read_timeout {
            changed.push("[server] `header_read_timeout_seconds`".to_owned());
        }
        if self.idle_timeout != new.idle_timeout {
            changed.push("[server] `idle_timeout_seconds`".to_owned());
        }
        if self.admin_listen != new.admin_listen {
            changed.push("`admin_listen`".to_owned());
        }
        if self.log_format != new.log_format {
            changed.push("`log_format`".to_owned());
        }
        if self.revocation != new.revocation {
            changed.push("[revocation]".to_owned());
        }
        changed
    }
}

/// The `[revocation]` section of the file at `path` as written (`None` when absent or
/// unreadable: the file was just loaded, so that is a race with an editor at worst).
fn revocation_section(path: &std::path::Path) -> Option<toml::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut table: toml::Table = toml::from_str(&text).ok()?;
    table.remove("revocation")
}
