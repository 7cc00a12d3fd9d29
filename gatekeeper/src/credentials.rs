use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::credentials::parse_api_keys;
use tower_gatekeeper::Authenticator;
use tower_gatekeeper::authenticate::{ApiKeyAuthenticator, CredentialChain};
use tower_gatekeeper::revocation::Revocations;
use tracing::{info, warn};

#[cfg(feature = "introspection")]
pub(crate) type OpaqueAuth = tower_gatekeeper::authenticate::IntrospectionAuthenticator;
#[cfg(not(feature = "introspection"))]
pub(crate) type OpaqueAuth = tower_gatekeeper::authenticate::Unconfigured;

/// The checked `[api_keys]`, `[introspection]` and `[revocation]` sections.
#[derive(Debug, Default)]
pub(crate) struct Credentials {
    pub(crate) api_keys: Option<ApiKeySource>,
    pub(crate) introspection: Option<OpaqueAuth>,
    pub(crate) revocations: Option<Revocations>,
    /// The issuer names the API keys and introspection give their callers.
    pub(crate) names: Vec<String>,
}

impl Credentials {
    /// Whether anything besides `[[issuer]]` authenticates callers.
    pub(crate) fn authenticates(&self) -> bool {
        self.api_keys.is_some() || self.introspection.is_some()
    }

    /// The credential chain of `jwt` (`None` without `[[issuer]]`), introspection and API
    /// keys, as configured.
    // Without the feature the opaque slot is `Unconfigured`, which is `Copy`.
    #[cfg_attr(not(feature = "introspection"), allow(clippy::clone_on_copy))]
    pub(crate) fn chain<J: Authenticator>(
        &self,
        jwt: Option<J>,
    ) -> CredentialChain<Option<J>, Option<OpaqueAuth>> {
        let chain = CredentialChain::new()
            .jwt(jwt)
            .opaque(self.introspection.clone());
        match &self.api_keys {
            Some(source) => chain.api_keys(source.keys.clone()),
            None => chain,
        }
    }
}

/// The API keys and the file they are reloaded from.
#[derive(Debug, Clone)]
pub(crate) struct ApiKeySource {
    pub(crate) keys: ApiKeyAuthenticator,
    pub(crate) file: PathBuf,
    pub(crate) interval: Duration,
    /// The file's contents when the keys were loaded (hashes only, no secrets).
    pub(crate) loaded: Arc<Vec<u8>>,
}

/// Aborts a background task when dropped.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reloads the keys file when its contents change (checked every `interval`); SIGHUP
/// reloads the whole configuration, keys file included ([`crate::Live::reload`]). A file
/// that does not parse is logged and the current keys stay.
pub(crate) async fn watch_api_keys(source: ApiKeySource) {
    let mut loaded = source.loaded;
    let mut ticks = tokio::time::interval(source.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
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
        if bytes == *loaded {
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
