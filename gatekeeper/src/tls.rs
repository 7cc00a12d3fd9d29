//! TLS: the listener's certificate (swapped on SIGHUP without dropping connections), the
//! handshake of one client connection, the client certificate as the library's
//! [`PeerCertificate`] (from the TLS session or a trusted proxy's header), and the client
//! configuration for `https://` upstreams. rustls with the ring provider throughout.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue};
use percent_encoding::percent_decode;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tower_gatekeeper::credential::PeerCertificate;
use tracing::{info, warn};

use crate::serve::BoxError;

/// The ALPN protocols the listener offers, in preference order.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The crypto provider of every TLS configuration the program builds.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `[tls] client_auth`: whether clients present a certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ClientAuth {
    /// No client certificate is asked for (the default).
    #[default]
    None,
    /// A certificate is asked for; a client without one is served, one with a certificate
    /// that `client_ca_file` did not issue is refused.
    Optional,
    /// A client without a certificate from `client_ca_file` is refused during the handshake.
    Required,
}

impl ClientAuth {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ClientAuth::None => "none",
            ClientAuth::Optional => "optional",
            ClientAuth::Required => "required",
        }
    }
}

/// The listener side of `[tls]`: the acceptor and the certificate it serves.
#[derive(Clone)]
pub(crate) struct TlsListener {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) certificate: Arc<CertificateStore>,
}

impl fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsListener")
            .field("certificate", &self.certificate)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Loads the certificate chain and key and builds the server configuration: ALPN h2 and
    /// http/1.1, TLS 1.2 and 1.3, client certificates per `client_auth` against
    /// `client_roots`.
    pub(crate) fn new(
        cert_file: PathBuf,
        key_file: PathBuf,
        client_auth: ClientAuth,
        client_roots: Option<RootCertStore>,
    ) -> Result<Self, String> {
        let provider = provider();
        let key = load_certified_key(&cert_file, &key_file, &provider)?;
        let certificate = Arc::new(CertificateStore {
            cert_file,
            key_file,
            current: ArcSwap::from_pointee(key),
            provider: Arc::clone(&provider),
        });
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("[tls]: {e}"))?;
        let builder = match (client_auth, client_roots) {
            (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
            (auth, Some(roots)) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if auth == ClientAuth::Optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| format!("[tls]: `client_ca_file`: {e}"))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(Arc::clone(&certificate) as _);
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(TlsListener {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            certificate,
        })
    }
}

/// The listener's certificate and key: read from their files at load, swapped by
/// [`CertificateStore::reload`]. Each handshake takes the current one, so connections already
/// open keep theirs and new ones get the new one.
pub(crate) struct CertificateStore {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: ArcSwap<CertifiedKey>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for CertificateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateStore")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertificateStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl CertificateStore {
    /// Reads the certificate chain and key files again and serves them to new connections.
    /// On any error (unreadable file, bad PEM, a key that does not match the certificate)
    /// the current certificate stays and the error is returned.
    pub(crate) fn reload(&self) -> Result<(), String> {
        let key = load_certified_key(&self.cert_file, &self.key_file, &self.provider)?;
        self.current.store(Arc::new(key));
        Ok(())
    }
}

/// Reloads the listener's certificate and key from their files (what SIGHUP does), for a
/// gateway serving [`Config`](crate::Config) with `[tls] cert_file` and `key_file`. Clones
/// share the running gateway's certificate.
#[derive(Clone, Debug)]
pub struct TlsReloader(pub(crate) Arc<CertificateStore>);

impl TlsReloader {
    /// Reads `cert_file` and `key_file` again; new connections get the new certificate,
    /// connections already open are not touched.
    ///
    /// # Errors
    ///
    /// A message naming the key and file at fault (unreadable file, bad PEM, a key that
    /// does not match the certificate); the certificate served so far stays.
    pub fn reload(&self) -> Result<(), BoxError> {
        self.0.reload().map_err(Into::into)
    }
}

/// Reloads the certificate on every SIGHUP, logging the outcome, until dropped.
pub(crate) async fn reload_on_hangup(certificate: Arc<CertificateStore>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(error) => {
                warn!(%error, "cannot listen for SIGHUP; the TLS certificate is not reloaded");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            let store = Arc::clone(&certificate);
            match tokio::task::spawn_blocking(move || store.reload()).await {
                Ok(Ok(())) => info!(
                    cert_file = %certificate.cert_file.display(),
                    "TLS certificate reloaded"
                ),
                Ok(Err(error)) => {
                    warn!(%error, "TLS certificate not reloaded; keeping the current one");
                }
                Err(_) => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = certificate;
        std::future::pending::<()>().await;
    }
}

/// The certificate chain of `cert_file` with the private key of `key_file`, checked to match.
fn load_certified_key(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain = read_certificates("cert_file", cert_file)?;
    let key_pem = read_file("key_file", key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!(
            "[tls]: `key_file` {}: no PKCS#8, PKCS#1 or SEC1 private key in PEM ({e})",
            key_file.display()
        )
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        format!(
            "[tls]: `key_file` {} does not go with `cert_file` {}: {e}",
            key_file.display(),
            cert_file.display()
        )
    })
}

fn read_file(key: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("[tls]: `{key}` {}: {e}", path.display()))
}

/// Every `CERTIFICATE` block of a PEM file (at least one), for `[tls]` key `key`.
pub(crate) fn read_certificates(
    key: &str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_file(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("[tls]: `{key}` {}: bad PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "[tls]: `{key}` {}: no certificate (PEM \"BEGIN CERTIFICATE\" block) found",
            path.display()
        ));
    }
    Ok(certs)
}

/// The CA certificates of a PEM file as trust anchors, for `[tls]` key `key`.
pub(crate) fn read_roots(key: &str, path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(key, path)? {
        roots
            .add(cert)
            .map_err(|e| format!("[tls]: `{key}` {}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// The trust anchors for `https://` upstreams: `upstream_ca_file`'s when given, else the
/// platform's.
pub(crate) fn upstream_roots(ca_file: Option<&Path>) -> Result<RootCertStore, String> {
    if let Some(path) = ca_file {
        return read_roots("upstream_ca_file", path);
    }
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), ToString::to_string);
        return Err(format!(
            "an https upstream needs root certificates and the platform has none usable ({why}); set [tls] `upstream_ca_file`"
        ));
    }
    Ok(roots)
}

/// The rustls client configuration for `https://` upstreams (ALPN is set by the connector).
pub(crate) fn upstream_client_config(roots: RootCertStore) -> Result<rustls::ClientConfig, String> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("[tls]: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Completes the TLS handshake of a client connection.
pub(crate) async fn accept(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
) -> io::Result<TlsStream<TcpStream>> {
    acceptor.accept(stream).await
}

/// The leaf certificate the client presented in the handshake, if any.
pub(crate) fn session_certificate(stream: &TlsStream<TcpStream>) -> Option<PeerCertificate> {
    let (_, session) = stream.get_ref();
    session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| PeerCertificate::from_der(leaf.to_vec()))
}

/// Why a `client_cert_header` was not used.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CertHeaderError {
    /// More than one header: which one the proxy meant is unknown.
    Repeated,
    /// Not URL-encoded PEM with a certificate.
    Malformed,
}

/// Takes every `name` header out of `headers` and, when the peer is trusted, reads the client
/// certificate it carries: URL-encoded PEM, as nginx's `$ssl_client_escaped_cert` sends it
/// (plain PEM is read too). `Ok(None)`: no header.
pub(crate) fn take_header_certificate(
    headers: &mut HeaderMap,
    name: &HeaderName,
    trusted: bool,
) -> Result<Option<PeerCertificate>, CertHeaderError> {
    let values: Vec<HeaderValue> = headers.get_all(name).iter().cloned().collect();
    // Also in spellings with `_`, which frameworks that read headers as CGI variables (WSGI,
    // PHP, Rack) take for the same name.
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|key| key.as_str().replace('_', "-") == name.as_str())
        .cloned()
        .collect();
    for key in doomed {
        headers.remove(key);
    }
    if !trusted {
        return Ok(None);
    }
    match values.as_slice() {
        [] => Ok(None),
        [value] => parse_escaped_pem(value.as_bytes()).map(Some),
        _ => Err(CertHeaderError::Repeated),
    }
}

/// The first certificate of URL-encoded (or plain) PEM.
fn parse_escaped_pem(value: &[u8]) -> Result<PeerCertificate, CertHeaderError> {
    let decoded: Vec<u8> = percent_decode(value).collect();
    let cert = CertificateDer::pem_slice_iter(&decoded)
        .next()
        .ok_or(CertHeaderError::Malformed)?
        .map_err(|_| CertHeaderError::Malformed)?;
    Ok(PeerCertificate::from_der(cert.to_vec()))
}

/// Marks a request that arrived over TLS (the upstream gets `X-Forwarded-Proto: https`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ArrivedOverTls;

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: HeaderName = HeaderName::from_static("x-client-cert");
    // A syntactically valid PEM block; the bytes are not parsed as X.509.
    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n";

    fn escaped(pem: &str) -> String {
        percent_encoding::utf8_percent_encode(pem, percent_encoding::NON_ALPHANUMERIC).to_string()
    }

    #[test]
    fn header_certificate_is_read_from_url_encoded_pem_only_when_trusted() {
        let mut headers = HeaderMap::new();
        headers.insert(NAME, HeaderValue::from_str(&escaped(PEM)).unwrap());
        let cert = take_header_certificate(&mut headers, &NAME, true)
            .unwrap()
            .unwrap();
        assert_eq!(cert.der(), b"\x30\x03\x02\x01\x01");
        assert!(headers.is_empty());

        headers.insert(NAME, HeaderValue::from_str(&escaped(PEM)).unwrap());
        headers.insert("x_client_cert", HeaderValue::from_static("x"));
        assert_eq!(
            take_header_certificate(&mut headers, &NAME, false),
            Ok(None)
        );
        assert!(headers.is_empty(), "stripped from untrusted peers too");
    }

    #[test]
    fn header_certificate_refuses_garbage_and_repeats() {
        let mut headers = HeaderMap::new();
        headers.insert(NAME, HeaderValue::from_static("not%20a%20certificate"));
        assert_eq!(
            take_header_certificate(&mut headers, &NAME, true),
            Err(CertHeaderError::Malformed)
        );
        headers.append(NAME, HeaderValue::from_str(&escaped(PEM)).unwrap());
        headers.append(NAME, HeaderValue::from_str(&escaped(PEM)).unwrap());
        assert_eq!(
            take_header_certificate(&mut headers, &NAME, true),
            Err(CertHeaderError::Repeated)
        );
        assert!(headers.is_empty());
    }
}
