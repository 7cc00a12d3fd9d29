//! `[tls]`: checked at load. The files are read here, so a missing file or bad PEM stops the
//! gateway before it serves.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::header::HeaderName;

use crate::config::file::FileTls;
use crate::config::server::Server;
use crate::tls::{ClientAuth, TlsListener, read_roots, upstream_client_config, upstream_roots};

/// The checked `[tls]` section.
#[derive(Debug, Default)]
pub(crate) struct Tls {
    /// `cert_file` + `key_file`: `listen` speaks TLS.
    pub(crate) listener: Option<TlsListener>,
    /// Where a trusted proxy puts the client certificate (removed from every request).
    pub(crate) client_cert_header: Option<HeaderName>,
    /// `upstream_ca_file`, resolved against the configuration's directory.
    pub(crate) upstream_ca_file: Option<PathBuf>,
    /// The client configuration for `https://` upstreams: built when a route has one or
    /// `upstream_ca_file` is set.
    pub(crate) upstream: Option<Arc<rustls::ClientConfig>>,
}

pub(crate) fn compile(raw: Option<FileTls>, base: &Path, server: &Server) -> Result<Tls, String> {
    let Some(raw) = raw else {
        return Ok(Tls::default());
    };
    let client_auth = raw.client_auth.unwrap_or_default();
    let listener = match (raw.cert_file, raw.key_file) {
        (Some(cert), Some(key)) => {
            let client_roots = match (&raw.client_ca_file, client_auth) {
                (None, ClientAuth::None) => None,
                (None, auth) => {
                    return Err(format!(
                        "[tls]: `client_auth` = \"{}\" needs `client_ca_file` (the CAs client certificates must chain to)",
                        auth.name()
                    ));
                }
                (Some(ca), ClientAuth::None) => {
                    return Err(format!(
                        "[tls]: `client_ca_file` {} is unused with `client_auth` = \"none\"; set `client_auth` = \"optional\" or \"required\"",
                        ca.display()
                    ));
                }
                (Some(ca), _) => Some(read_roots("client_ca_file", &base.join(ca))?),
            };
            Some(TlsListener::new(
                base.join(cert),
                base.join(key),
                client_auth,
                client_roots,
            )?)
        }
        (Some(_), None) => {
            return Err(
                "[tls]: `cert_file` needs `key_file` (the certificate's private key)".to_owned(),
            );
        }
        (None, Some(_)) => {
            return Err("[tls]: `key_file` needs `cert_file` (the certificate chain)".to_owned());
        }
        (None, None) => {
            if raw.client_ca_file.is_some() || raw.client_auth.is_some() {
                return Err(
                    "[tls]: `client_ca_file` and `client_auth` need `cert_file` and `key_file`: client certificates are asked for by the gateway's own TLS listener"
                        .to_owned(),
                );
            }
            None
        }
    };
    let client_cert_header = match raw.client_cert_header {
        None => None,
        Some(name) => {
            let header = HeaderName::from_bytes(name.as_bytes())
                .ok()
                .ok_or_else(|| {
                    format!("[tls]: `client_cert_header` {name:?} is not a header name (e.g. \"x-client-cert\")")
                })?;
            if server.trusted_proxies.is_empty() {
                return Err(format!(
                    "[tls]: `client_cert_header` {name:?} is honoured only from [server] `trusted_proxies`, which is empty"
                ));
            }
            Some(header)
        }
    };
    let upstream_ca_file = raw.upstream_ca_file.map(|file| base.join(file));
    if let Some(file) = &upstream_ca_file {
        read_roots("upstream_ca_file", file)?;
    }
    Ok(Tls {
        listener,
        client_cert_header,
        upstream_ca_file,
        upstream: None,
    })
}

impl Tls {
    /// Builds the client configuration for `https://` upstreams when `needed` (a route has
    /// one) or `upstream_ca_file` is set.
    pub(crate) fn prepare_upstream(&mut self, needed: bool) -> Result<(), String> {
        if needed || self.upstream_ca_file.is_some() {
            let roots = upstream_roots(self.upstream_ca_file.as_deref())?;
            self.upstream = Some(Arc::new(upstream_client_config(roots)?));
        }
        Ok(())
    }
}
