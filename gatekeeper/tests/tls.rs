//! TLS at the gateway, end to end over loopback with certificates made here by rcgen: HTTP/1.1
//! and HTTP/2 by ALPN, client certificates (`client_auth` required and optional), the
//! client-certificate header from trusted proxies, the certificate reloaded (in-process and by
//! SIGHUP to the real binary), `https://` upstreams with a private CA, a handshake that never
//! completes, and the configuration errors.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use reqwest::{Certificate, Identity, StatusCode, Version};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{
    BOUND, Running, TempDir, Upstream, assert_mentions, credentials_toml, gateway_dir, json_body,
    token,
};

// ---------------------------------------------------------------------------------------------
// Test PKI
// ---------------------------------------------------------------------------------------------

/// A certificate authority made for one test.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate issued by a [`Ca`], with its key (PKCS#8 PEM).
struct Leaf {
    cert_pem: String,
    key_pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(&self, name: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A server certificate for 127.0.0.1 and localhost.
    fn server(&self) -> Leaf {
        self.leaf(
            "localhost",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    fn client(&self, name: &str) -> Leaf {
        self.leaf(name, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn root(&self) -> Certificate {
        Certificate::from_pem(self.pem.as_bytes()).unwrap()
    }
}

impl Leaf {
    fn identity(&self) -> Identity {
        Identity::from_pem(format!("{}{}", self.cert_pem, self.key_pem).as_bytes()).unwrap()
    }

    /// A rustls server configuration with this certificate and ALPN h2, http/1.1.
    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let chain = vec![CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// The certificate as nginx's `$ssl_client_escaped_cert` sends it (URL-encoded PEM).
    fn escaped(&self) -> String {
        percent_encoding::utf8_percent_encode(&self.cert_pem, percent_encoding::NON_ALPHANUMERIC)
            .to_string()
    }
}

/// Writes the server certificate and key as `tls/server.pem` and `tls/server.key`, and `ca`
/// as `tls/ca.pem`.
fn write_server_files(dir: &TempDir, server: &Leaf, ca: &Ca) {
    let tls = dir.0.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    std::fs::write(tls.join("server.pem"), &server.cert_pem).unwrap();
    std::fs::write(tls.join("server.key"), &server.key_pem).unwrap();
    std::fs::write(tls.join("ca.pem"), &ca.pem).unwrap();
}

/// `[tls]` with the server files of [`write_server_files`], then `extra` keys.
fn tls_section(extra: &str) -> String {
    format!("\n[tls]\ncert_file = \"tls/server.pem\"\nkey_file = \"tls/server.key\"\n{extra}")
}

fn load(dir: &TempDir, toml: &str) -> gatekeeper::Config {
    let path = dir.write_config(toml);
    gatekeeper::load_config(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn load_error(dir: &TempDir, toml: &str) -> String {
    let path = dir.write_config(toml);
    gatekeeper::load_config(&path)
        .map(|_| ())
        .expect_err("the configuration must be refused")
        .to_string()
}

/// A TLS client trusting only `ca`, presenting `identity`.
fn tls_client(ca: &Ca, identity: Option<Identity>, http1_only: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca.root());
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

fn https(addr: SocketAddr, path: &str) -> String {
    format!("https://127.0.0.1:{}{path}", addr.port())
}

/// No header the upstream received carries anything of a certificate.
fn assert_no_certificate(echo: &Value) {
    for (name, value) in echo["headers"].as_object().unwrap() {
        let value = value.as_str().unwrap();
        assert!(
            !name.contains("cert") && !name.contains("ssl") && !value.contains("CERTIFICATE"),
            "{name}: {value} reached the upstream"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// TLS termination
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn http1_and_http2_by_alpn_carry_a_jwt_to_a_plain_upstream() {
    let ca = Ca::new("gateway CA");
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    write_server_files(&dir, &ca.server(), &ca);
    let running = Running::start(load(
        &dir,
        &credentials_toml(upstream.addr, &tls_section("")),
    ))
    .await;

    for (http1_only, version) in [(true, Version::HTTP_11), (false, Version::HTTP_2)] {
        let client = tls_client(&ca, None, http1_only);
        let response = client
            .get(https(running.addr, "/orders/1"))
            .bearer_auth(token("rs256_valid"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), version);
        let echo = json_body(response).await;
        assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
        assert_eq!(echo["headers"]["x-user-id"], "user-123", "{echo}");
        assert!(echo["headers"].get("authorization").is_none());

        let anonymous = client
            .get(https(running.addr, "/orders/1"))
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(upstream.hits(), 2);

    // Plain HTTP to the TLS listener gets no HTTP answer.
    let plain = support::client()
        .get(running.url("/orders/1"))
        .timeout(BOUND)
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    running.stop().await;
}

#[tokio::test]
async fn client_auth_required_refuses_missing_and_foreign_certificates() {
    let ca = Ca::new("gateway CA");
    let other = Ca::new("another CA");
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    write_server_files(&dir, &ca.server(), &ca);
    let toml = credentials_toml(
        upstream.addr,
        &tls_section("client_ca_file = \"tls/ca.pem\"\nclient_auth = \"required\"\n"),
    );
    let running = Running::start(load(&dir, &toml)).await;
    let url = https(running.addr, "/orders/1");
    let bearer = format!("Bearer {}", token("rs256_valid"));

    let without = tls_client(&ca, None, false)
        .get(&url)
        .header("authorization", &bearer)
        .send()
        .await;
    assert!(without.is_err(), "no client certificate: {without:?}");
    let foreign = tls_client(&ca, Some(other.client("mallory").identity()), false)
        .get(&url)
        .header("authorization", &bearer)
        .send()
        .await;
    assert!(foreign.is_err(), "a certificate of another CA: {foreign:?}");
    assert_eq!(upstream.hits(), 0);

    for http1_only in [true, false] {
        let response = tls_client(&ca, Some(ca.client("alice").identity()), http1_only)
            .get(&url)
            .header("authorization", &bearer)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let echo = json_body(response).await;
        assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
        assert_no_certificate(&echo);
    }
    assert_eq!(upstream.hits(), 2);
    running.stop().await;
}

#[tokio::test]
async fn client_auth_optional_serves_clients_without_a_certificate() {
    let ca = Ca::new("gateway CA");
    let other = Ca::new("another CA");
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    write_server_files(&dir, &ca.server(), &ca);
    let toml = credentials_toml(
        upstream.addr,
        &tls_section("client_ca_file = \"tls/ca.pem\"\nclient_auth = \"optional\"\n"),
    );
    let running = Running::start(load(&dir, &toml)).await;
    let url = https(running.addr, "/orders/1");

    for identity in [None, Some(ca.client("alice").identity())] {
        let response = tls_client(&ca, identity, false)
            .get(&url)
            .bearer_auth(token("rs256_valid"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_no_certificate(&json_body(response).await);
    }
    let foreign = tls_client(&ca, Some(other.client("mallory").identity()), false)
        .get(&url)
        .bearer_auth(token("rs256_valid"))
        .send()
        .await;
    assert!(foreign.is_err(), "a certificate of another CA: {foreign:?}");
    assert_eq!(upstream.hits(), 2);
    running.stop().await;
}

#[tokio::test]
async fn a_handshake_that_never_completes_is_closed_within_the_header_read_timeout() {
    let ca = Ca::new("gateway CA");
    let dir = gateway_dir();
    write_server_files(&dir, &ca.server(), &ca);
    let toml = format!(
        "[server]\nheader_read_timeout_seconds = 0.5\n{}{}",
        credentials_toml(support::closed_port().await, ""),
        tls_section("")
    );
    let running = Running::start(load(&dir, &toml)).await;

    // Silent, and stalled after the first bytes of a ClientHello record.
    for sent in [&b""[..], &b"\x16\x03\x01\x02\x00\x01"[..]] {
        let started = Instant::now();
        let mut stream = TcpStream::connect(running.addr).await.unwrap();
        stream.write_all(sent).await.unwrap();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(BOUND, stream.read(&mut buf))
            .await
            .expect("the gateway closes the connection");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(400) && waited < Duration::from_secs(10),
            "closed after {waited:?}"
        );
    }
    // The listener still serves.
    let response = tls_client(&ca, None, false)
        .get(https(running.addr, "/orders/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    running.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The client certificate from a trusted proxy's header
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn client_cert_header_is_never_forwarded_whoever_sends_it() {
    let ca = Ca::new("client CA");
    let alice = ca.client("alice");
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    // Plain HTTP: `[tls]` with only `client_cert_header`. The trusted proxy is 127.0.0.2.
    let toml = format!(
        "[server]\ntrusted_proxies = [\"127.0.0.2\"]\n{}\n[tls]\nclient_cert_header = \"x-client-cert\"\n",
        credentials_toml(upstream.addr, "")
    );
    let running = Running::start(load(&dir, &toml)).await;

    for local in ["127.0.0.2", "127.0.0.1"] {
        let client = reqwest::Client::builder()
            .no_proxy()
            .local_address(local.parse::<IpAddr>().unwrap())
            .build()
            .unwrap();
        let response = client
            .get(running.url("/orders/1"))
            .bearer_auth(token("rs256_valid"))
            .header("x-client-cert", alice.escaped())
            .header("x_client_cert", alice.escaped())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "from {local}");
        let echo = json_body(response).await;
        assert_eq!(echo["headers"]["x-forwarded-proto"], "http");
        assert_no_certificate(&echo);
    }
    assert_eq!(upstream.hits(), 2);
    running.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Certificate reload
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn reload_swaps_the_certificate_without_dropping_connections() {
    let first = Ca::new("first CA");
    let second = Ca::new("second CA");
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    write_server_files(&dir, &first.server(), &first);
    let config = load(&dir, &credentials_toml(upstream.addr, &tls_section("")));
    let reloader = config.tls_reloader().expect("a TLS listener");
    let running = Running::start(config).await;
    let url = https(running.addr, "/orders/1");
    let get = |client: &reqwest::Client| client.get(&url).bearer_auth(token("rs256_valid")).send();

    // An HTTP/2 connection opened before the reload.
    let before = tls_client(&first, None, false);
    assert_eq!(get(&before).await.unwrap().status(), StatusCode::OK);

    write_server_files(&dir, &second.server(), &second);
    reloader.reload().unwrap();
    // The connection stays (a new one would fail: the first CA no longer signs the server).
    let kept = get(&before).await.unwrap();
    assert_eq!(kept.status(), StatusCode::OK);
    assert!(get(&tls_client(&first, None, false)).await.is_err());
    assert_eq!(
        get(&tls_client(&second, None, false))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    // A bad file is refused and the current certificate stays.
    let cert_file = dir.0.join("tls/server.pem");
    std::fs::write(&cert_file, "not a certificate\n").unwrap();
    let error = reloader.reload().unwrap_err().to_string();
    assert_mentions(&error, &["cert_file", "server.pem", "no certificate"]);
    std::fs::write(&cert_file, &first.server().cert_pem).unwrap();
    let error = reloader.reload().unwrap_err().to_string();
    assert_mentions(&error, &["key_file", "server.key", "does not go with"]);
    assert_eq!(
        get(&tls_client(&second, None, false))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    running.stop().await;
}

/// The real binary, killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn sighup_reloads_the_certificate_of_the_running_binary() {
    let first = Ca::new("first CA");
    let second = Ca::new("second CA");
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    write_server_files(&dir, &first.server(), &first);
    let path = dir.write_config(&credentials_toml(upstream.addr, &tls_section("")));
    let addr = support::closed_port().await;
    let process = Process(
        Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
            .arg("--config")
            .arg(&path)
            .arg("--listen")
            .arg(addr.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = https(addr, "/orders/1");
    let served_to = |ca: &Ca| {
        let client = tls_client(ca, None, false);
        let url = url.clone();
        async move {
            let deadline = Instant::now() + BOUND;
            loop {
                if let Ok(response) = client.get(&url).send().await {
                    return response.status();
                }
                assert!(Instant::now() < deadline, "not served within {BOUND:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(served_to(&first).await, StatusCode::UNAUTHORIZED);

    write_server_files(&dir, &second.server(), &second);
    let status = Command::new("kill")
        .arg("-HUP")
        .arg(process.0.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(served_to(&second).await, StatusCode::UNAUTHORIZED);
    assert!(
        tls_client(&first, None, false)
            .get(&url)
            .send()
            .await
            .is_err(),
        "new connections get the new certificate"
    );
    drop(process);
}

// ---------------------------------------------------------------------------------------------
// https:// upstreams
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn https_upstreams_with_a_private_ca_by_alpn() {
    let upstream_ca = Ca::new("upstream CA");
    let other = Ca::new("another CA");
    let upstream = Upstream::start_tls(upstream_ca.server().server_config()).await;
    let impostor = Upstream::start_tls(other.server().server_config()).await;
    let dir = TempDir::new("tls-upstream");
    std::fs::write(dir.0.join("upstream-ca.pem"), &upstream_ca.pem).unwrap();
    let toml = format!(
        r#"
[tls]
upstream_ca_file = "upstream-ca.pem"

[[route]]
path = "/auto/{{*rest}}"
upstream = "https://127.0.0.1:{port}"
auth = "public"

[[route]]
path = "/legacy/{{*rest}}"
upstream = "https://localhost:{port}"
upstream_protocol = "http1"
auth = "public"

[[route]]
path = "/impostor/{{*rest}}"
upstream = "https://127.0.0.1:{impostor}"
auth = "public"
"#,
        port = upstream.addr.port(),
        impostor = impostor.addr.port(),
    );
    let running = Running::start(load(&dir, &toml)).await;
    let client = support::client();

    let auto = client.get(running.url("/auto/a")).send().await.unwrap();
    assert_eq!(auto.status(), StatusCode::OK);
    let echo = json_body(auto).await;
    assert_eq!(echo["version"], "HTTP/2.0", "h2 by ALPN: {echo}");
    assert_eq!(echo["path"], "/auto/a");

    let legacy = client
        .post(running.url("/legacy/b"))
        .body("twelve bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(legacy.status(), StatusCode::OK);
    let echo = json_body(legacy).await;
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(echo["body_length"], 12);
    assert_eq!(
        echo["headers"]["host"],
        format!("localhost:{}", upstream.addr.port())
    );

    let refused = client.get(running.url("/impostor/c")).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(impostor.hits(), 0);
    assert_eq!(upstream.hits(), 2);
    running.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Configuration errors
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tls_configuration_errors_name_the_key_and_the_file() {
    let ca = Ca::new("gateway CA");
    let other = Ca::new("another CA");
    let dir = gateway_dir();
    write_server_files(&dir, &ca.server(), &ca);
    std::fs::write(dir.0.join("tls/garbage.pem"), "hello\n").unwrap();
    std::fs::write(dir.0.join("tls/other.key"), other.server().key_pem).unwrap();
    let base = credentials_toml(support::closed_port().await, "");
    let cases: &[(&str, &[&str])] = &[
        (
            "[tls]\ncert_file = \"tls/missing.pem\"\nkey_file = \"tls/server.key\"\n",
            &["[tls]", "`cert_file`", "tls/missing.pem"],
        ),
        (
            "[tls]\ncert_file = \"tls/garbage.pem\"\nkey_file = \"tls/server.key\"\n",
            &["`cert_file`", "garbage.pem", "no certificate"],
        ),
        (
            "[tls]\ncert_file = \"tls/server.pem\"\nkey_file = \"tls/garbage.pem\"\n",
            &["`key_file`", "garbage.pem", "private key"],
        ),
        (
            "[tls]\ncert_file = \"tls/server.pem\"\nkey_file = \"tls/other.key\"\n",
            &["`key_file`", "other.key", "does not go with", "server.pem"],
        ),
        (
            "[tls]\ncert_file = \"tls/server.pem\"\n",
            &["`cert_file` needs `key_file`"],
        ),
        (
            &tls_section("client_auth = \"required\"\n"),
            &["`client_auth`", "\"required\"", "needs `client_ca_file`"],
        ),
        (
            &tls_section("client_ca_file = \"tls/ca.pem\"\n"),
            &["`client_ca_file`", "tls/ca.pem", "`client_auth`"],
        ),
        (
            &tls_section("client_ca_file = \"tls/nope.pem\"\nclient_auth = \"optional\"\n"),
            &["`client_ca_file`", "tls/nope.pem"],
        ),
        (
            "[tls]\nclient_auth = \"required\"\nclient_ca_file = \"tls/ca.pem\"\n",
            &["need `cert_file` and `key_file`"],
        ),
        (
            &tls_section("client_auth = \"sometimes\"\n"),
            &["sometimes", "client_auth"],
        ),
        (
            "[tls]\nclient_cert_header = \"x-client-cert\"\n",
            &["`client_cert_header`", "trusted_proxies"],
        ),
        (
            "[tls]\nclient_cert_header = \"bad header\"\n",
            &["`client_cert_header`", "not a header name"],
        ),
        ("[tls]\ncertfile = \"x\"\n", &["unknown field", "certfile"]),
        (
            "[tls]\nupstream_ca_file = \"tls/nope.pem\"\n",
            &["`upstream_ca_file`", "tls/nope.pem"],
        ),
    ];
    for (tls, parts) in cases {
        let error = load_error(&dir, &format!("{base}{tls}"));
        assert_mentions(&error, parts);
        assert_mentions(&error, &["gateway.toml"]);
    }

    // An https upstream with an unreadable CA file; h2c (HTTP/2 without TLS) to an https one.
    let https_route = |extra: &str| {
        format!(
            "[[route]]\npath = \"/s/{{*rest}}\"\nupstream = \"https://127.0.0.1:9\"\nauth = \"public\"\n{extra}"
        )
    };
    let error = load_error(
        &dir,
        &format!(
            "{}\n[tls]\nupstream_ca_file = \"tls/garbage.pem\"\n",
            https_route("")
        ),
    );
    assert_mentions(
        &error,
        &["`upstream_ca_file`", "garbage.pem", "no certificate"],
    );
    let error = load_error(&dir, &https_route("upstream_protocol = \"h2c\"\n"));
    assert_mentions(&error, &["[[route]] #1", "h2c", "https"]);
    let error = load_error(
        &dir,
        &https_route("").replace("https://127.0.0.1:9", "ftp://x:1"),
    );
    assert_mentions(
        &error,
        &["`upstream`", "http://host:port or https://host:port"],
    );
    assert!(Path::new(&dir.0).exists());
}

/// The hand-written tonic service behind TLS (ALPN h2), trusting the gateway's plain identity
/// headers.
async fn grpc_tls_upstream(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    use tower::{Layer, ServiceExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = tower_gatekeeper::TrustedContextLayer::plain_headers()
                    .layer(support::grpc::DemoServer);
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        service.clone().oneshot(req.map(tonic::body::Body::new))
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_reaches_an_https_upstream_over_h2() {
    use support::grpc::{DemoClient, pb, with_token};

    let upstream_ca = Ca::new("upstream CA");
    let service = grpc_tls_upstream(upstream_ca.server().server_config()).await;
    let dir = gateway_dir();
    std::fs::write(dir.0.join("upstream-ca.pem"), &upstream_ca.pem).unwrap();
    let toml = format!(
        r#"{}
[[route]]
path = "/gatekeeper.demo.Demo/{{method}}"
methods = ["POST"]
upstream = "https://127.0.0.1:{}"
roles_any = ["clerk", "admin"]

[tls]
upstream_ca_file = "upstream-ca.pem"
"#,
        support::ONE_ISSUER,
        service.port()
    );
    let running = Running::start(load(&dir, &toml)).await;
    let mut client = DemoClient::connect(running.addr).await.unwrap();
    let reply = client
        .who_am_i(with_token(
            tonic::Request::new(pb::WhoAmIRequest {}),
            &token("rs256_valid"),
        ))
        .await
        .unwrap();
    assert_eq!(reply.subject, "user-123");
    assert!(!reply.saw_authorization);
    let replies = client
        .count(with_token(
            tonic::Request::new(pb::CountRequest { upto: 5 }),
            &support::admin_token(),
        ))
        .await
        .unwrap();
    assert_eq!(replies.len(), 5);
    running.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Certificate-bound tokens (RFC 8705 §3): the certificate reaches the library's check
// ---------------------------------------------------------------------------------------------

/// The DPoP fixtures (minted by PyJWT, tests/fixtures/generate_dpop.py).
fn dpop_fixtures() -> Value {
    let text = std::fs::read_to_string(support::fixtures().join("dpop/cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A DER certificate as nginx's `$ssl_client_escaped_cert` sends it.
fn escaped_der(der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    );
    percent_encoding::utf8_percent_encode(&pem, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn certificate_bound_tokens_pass_with_the_trusted_proxys_certificate_only() {
    let fixtures = dpop_fixtures();
    let bound = fixtures["tokens"]["cert-bound"].as_str().unwrap();
    let unbound = fixtures["tokens"]["unbound"].as_str().unwrap();
    let client_cert =
        escaped_der(&std::fs::read(support::fixtures().join("dpop/client.cert.der")).unwrap());
    let other_cert =
        escaped_der(&std::fs::read(support::fixtures().join("dpop/other.cert.der")).unwrap());
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    let toml = format!(
        "[server]\ntrusted_proxies = [\"127.0.0.2\"]\n{}\n[tls]\nclient_cert_header = \"x-client-cert\"\n",
        credentials_toml(upstream.addr, "")
    );
    let running = Running::start(load(&dir, &toml)).await;
    let from = |local: &str| {
        reqwest::Client::builder()
            .no_proxy()
            .local_address(local.parse::<IpAddr>().unwrap())
            .build()
            .unwrap()
    };
    let (proxy, stranger) = (from("127.0.0.2"), from("127.0.0.1"));
    let call = |client: &reqwest::Client, token: &str, cert: Option<&str>| {
        let mut request = client.get(running.url("/orders/1")).bearer_auth(token);
        if let Some(cert) = cert {
            request = request.header("x-client-cert", cert);
        }
        request.send()
    };

    let passed = call(&proxy, bound, Some(&client_cert)).await.unwrap();
    assert_eq!(passed.status(), StatusCode::OK);
    let echo = json_body(passed).await;
    assert_eq!(echo["headers"]["x-user-id"], "mtls");
    assert_no_certificate(&echo);

    // Another certificate, none, or the right one from a peer that is not a trusted proxy.
    for (client, cert) in [
        (&proxy, Some(&other_cert)),
        (&proxy, None),
        (&stranger, Some(&client_cert)),
    ] {
        let refused = call(client, bound, cert.map(String::as_str)).await.unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert!(
            support::header(&refused, "www-authenticate").contains("invalid_token"),
            "{:?}",
            refused.headers()
        );
    }
    // Unbound tokens do not care; the header never reaches the upstream.
    let plain = call(&stranger, unbound, Some(&client_cert)).await.unwrap();
    assert_eq!(plain.status(), StatusCode::OK);
    assert_no_certificate(&json_body(plain).await);
    assert_eq!(upstream.hits(), 2);
    running.stop().await;
}

/// A token of the fixture issuer bound to `cert_der` (`cnf.x5t#S256` computed here with sha2
/// and base64, apart from the library's thumbprint).
fn token_bound_to(cert_pem: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    let x5t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&der));
    let pem = std::fs::read(support::fixtures().join("keys/rsa-1.key.pem")).unwrap();
    let key =
        tower_gatekeeper::keys::SigningKey::from_pem(tower_gatekeeper::Algorithm::RS256, &pem)
            .unwrap()
            .with_kid("rsa-1");
    key.sign(&serde_json::json!({
        "iss": "https://idp.example.test", "aud": "api://orders", "sub": "alice",
        "roles": ["clerk"], "scope": "orders:read", "exp": 4102444800u64,
        "cnf": { "x5t#S256": x5t },
    }))
    .unwrap()
}

#[tokio::test]
async fn certificate_bound_tokens_pass_over_mutual_tls_with_their_certificate_only() {
    let ca = Ca::new("client CA");
    let alice = ca.client("alice");
    let bob = ca.client("bob");
    let token = token_bound_to(&alice.cert_pem);
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    write_server_files(&dir, &ca.server(), &ca);
    let toml = credentials_toml(
        upstream.addr,
        &tls_section("client_ca_file = \"tls/ca.pem\"\nclient_auth = \"optional\"\n"),
    );
    let running = Running::start(load(&dir, &toml)).await;
    let url = https(running.addr, "/orders/1");

    for http1_only in [true, false] {
        let client = tls_client(&ca, Some(alice.identity()), http1_only);
        // Every request of the connection carries the certificate.
        for _ in 0..2 {
            let response = client.get(&url).bearer_auth(&token).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let echo = json_body(response).await;
            assert_eq!(echo["headers"]["x-user-id"], "alice");
            assert_no_certificate(&echo);
        }
    }
    for identity in [Some(bob.identity()), None] {
        let refused = tls_client(&ca, identity, false)
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert!(support::header(&refused, "www-authenticate").contains("invalid_token"));
    }
    assert_eq!(upstream.hits(), 4);
    running.stop().await;
}

/// A tracing writer into a shared buffer (the test's runtime is single-threaded, so the
/// gateway's tasks log into it too).
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn count(&self, message: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .matches(message)
            .count()
    }
}

#[tokio::test]
async fn an_idle_tls_connection_is_parked_and_keeps_its_client_certificate() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_env_filter(tracing_subscriber::EnvFilter::new("gatekeeper=trace"))
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let ca = Ca::new("client CA");
    let alice = ca.client("alice");
    let token = token_bound_to(&alice.cert_pem);
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    write_server_files(&dir, &ca.server(), &ca);
    let toml = credentials_toml(
        upstream.addr,
        &tls_section("client_ca_file = \"tls/ca.pem\"\nclient_auth = \"optional\"\n"),
    );
    let running = Running::start(load(&dir, &toml)).await;
    let url = https(running.addr, "/orders/1");
    let client = tls_client(&ca, Some(alice.identity()), true);
    for parks in 1..=2 {
        let response = client.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(json_body(response).await["headers"]["x-user-id"], "alice");
        tokio::time::timeout(BOUND, async {
            while logs.count("idle connection parked") < parks {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the idle TLS connection is parked");
    }
    // The second request woke the parked connection (the client kept it): the certificate-bound
    // token passed with the TLS session's certificate after the park.
    assert_eq!(logs.count("parked connection readable"), 1);
    assert_eq!(upstream.hits(), 2);
    running.stop().await;
}

#[tokio::test]
async fn the_examples_tls_keys_load_as_documented() {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.example.toml"))
            .unwrap();
    let block = example
        .split_once("\n# [tls]\n")
        .expect("a commented [tls] section")
        .1
        .split("\n\n")
        .next()
        .unwrap();
    let keys: Vec<&str> = block
        .lines()
        .filter_map(|line| line.strip_prefix("# "))
        .filter(|line| {
            line.split_once(" = ")
                .is_some_and(|(k, _)| !k.contains(' '))
        })
        .collect();
    assert_eq!(keys.len(), 6, "{keys:?}");

    let ca = Ca::new("example CA");
    let server = ca.server();
    let dir = gateway_dir();
    std::fs::create_dir_all(dir.0.join("tls")).unwrap();
    for (file, text) in [
        ("tls/gateway.pem", &server.cert_pem),
        ("tls/gateway.key", &server.key_pem),
        ("tls/clients-ca.pem", &ca.pem),
        ("tls/upstreams-ca.pem", &ca.pem),
    ] {
        std::fs::write(dir.0.join(file), text).unwrap();
    }
    let toml = format!(
        "[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n{}\n[tls]\n{}\n",
        credentials_toml(support::closed_port().await, ""),
        keys.join("\n")
    );
    let config = load(&dir, &toml);
    assert!(config.tls_reloader().is_some());
}

/// A DPoP proof (RFC 9449) by the committed fixture key `client-es256`, signed with
/// RustCrypto's p256, for `htu` and `token`.
fn dpop_proof(htu: &str, token: &str) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use p256::ecdsa::signature::Signer as _;
    use p256::pkcs8::DecodePrivateKey as _;
    use sha2::Digest as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);

    let pem =
        std::fs::read_to_string(support::fixtures().join("dpop/client-es256.key.pem")).unwrap();
    let key = p256::ecdsa::SigningKey::from_pkcs8_pem(&pem).unwrap();
    let point = key.verifying_key().to_encoded_point(false);
    let header = serde_json::json!({
        "typ": "dpop+jwt", "alg": "ES256",
        "jwk": {
            "kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        },
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "jti": format!("tls-{}-{now}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)),
        "htm": "GET",
        "htu": htu,
        "iat": now,
        "ath": URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(token.as_bytes())),
    });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature: p256::ecdsa::Signature = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

#[tokio::test]
async fn dpop_proofs_on_a_tls_listener_name_the_https_origin() {
    let token = dpop_fixtures()["tokens"]["bound-es256"]
        .as_str()
        .unwrap()
        .to_owned();
    let ca = Ca::new("gateway CA");
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    write_server_files(&dir, &ca.server(), &ca);
    let running = Running::start(load(
        &dir,
        &credentials_toml(upstream.addr, &tls_section("")),
    ))
    .await;
    let url = https(running.addr, "/orders/1");
    let http_url = url.replacen("https://", "http://", 1);

    for http1_only in [true, false] {
        let client = tls_client(&ca, None, http1_only);
        let send = |htu: &str| {
            client
                .get(&url)
                .header("authorization", format!("DPoP {token}"))
                .header("dpop", dpop_proof(htu, &token))
                .send()
        };
        let accepted = send(&url).await.unwrap();
        assert_eq!(accepted.status(), StatusCode::OK);
        assert_eq!(json_body(accepted).await["headers"]["x-user-id"], "dpop-es");
        let refused = send(&http_url).await.unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert!(
            refused
                .headers()
                .get_all("www-authenticate")
                .iter()
                .any(|v| v.to_str().unwrap().contains("invalid_dpop_proof")),
            "{:?}",
            refused.headers()
        );
    }
    assert_eq!(upstream.hits(), 2);
    running.stop().await;
}
