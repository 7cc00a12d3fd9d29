//! The real `gatekeeper` binary: `log_format = "json"` (every stderr line one JSON object,
//! start-up and errors included), the full reload on `kill -HUP`, and two replicas sharing
//! revocations through a `redis-server` over TLS (`rediss://`, test-generated certificates).

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::Value;

use support::{BOUND, ISSUER, TempDir, Upstream, client, token};

/// A running `gatekeeper` process; its stderr lines are collected as they come.
struct Binary {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
}

fn collect(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

impl Binary {
    fn start(config: &Path, env: &[(&str, &Path)]) -> Binary {
        let mut command = Command::new(env!("CARGO_BIN_EXE_gatekeeper"));
        command
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start the gatekeeper binary");
        let lines = collect(child.stderr.take().unwrap());
        let stdout = collect(child.stdout.take().unwrap());
        Binary {
            child,
            lines,
            stdout,
        }
    }

    /// Waits for a JSON log line whose message starts with `message`; returns it.
    fn wait_for(&self, message: &str) -> Value {
        let deadline = Instant::now() + BOUND;
        loop {
            if let Some(found) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .find(|v| {
                    v["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with(message))
                })
            {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no {message:?} log line; got: {:#?}",
                self.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn count(&self, message: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|v| v["message"] == message)
            .count()
    }

    /// The gateway's address, from its "gateway listening" line.
    fn addr(&self) -> SocketAddr {
        self.wait_for("gateway listening")["address"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, then waits for the exit; every line the process wrote.
    fn stop(mut self) -> (Vec<String>, Vec<String>) {
        self.signal("TERM");
        let deadline = Instant::now() + BOUND;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the gateway did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The reader threads see end-of-file once the process is gone.
        std::thread::sleep(Duration::from_millis(100));
        let lines = self.lines.lock().unwrap().clone();
        let stdout = self.stdout.lock().unwrap().clone();
        (lines, stdout)
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails unless every line is one JSON object with a level and a message.
fn assert_all_json(lines: &[String]) {
    assert!(!lines.is_empty());
    for line in lines {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line:?}"));
        assert!(value.is_object(), "{line}");
        assert!(value["level"].is_string(), "no level: {line}");
        assert!(value["timestamp"].is_string(), "no timestamp: {line}");
    }
}

async fn status(addr: SocketAddr, path: &str) -> StatusCode {
    client()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap()
        .status()
}

/// Polls until `path` answers `want`.
async fn until(addr: SocketAddr, path: &str, want: StatusCode) {
    let deadline = Instant::now() + BOUND;
    loop {
        let got = status(addr, path).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{path}: {got}, wanted {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn route(path: &str, upstream: SocketAddr) -> String {
    format!("\n[[route]]\npath = \"{path}\"\nupstream = \"http://{upstream}\"\nauth = \"public\"\n")
}

#[tokio::test]
async fn json_logs_and_a_reload_on_sighup() {
    let upstream = Upstream::start().await;
    let dir = TempDir::new("binary").with_fixture_keys(&["jwks.json"]);
    let head = format!("listen = \"127.0.0.1:0\"\nlog_format = \"json\"\n{ISSUER}");
    let path = dir.write_config(&format!("{head}{}", route("/a/{*rest}", upstream.addr)));
    let gateway = Binary::start(&path, &[]);
    let addr = gateway.addr();
    assert_eq!(status(addr, "/a/1").await, StatusCode::OK);
    assert_eq!(status(addr, "/b/1").await, StatusCode::NOT_FOUND);

    // A new route after `kill -HUP`.
    dir.write_config(&format!("{head}{}", route("/b/{*rest}", upstream.addr)));
    gateway.signal("HUP");
    until(addr, "/b/1", StatusCode::OK).await;
    assert_eq!(status(addr, "/a/1").await, StatusCode::NOT_FOUND);
    gateway.wait_for("configuration reloaded");

    // A bad file is refused and logged; the routes stay.
    dir.write_config(&format!(
        "{head}{}\nbogus = 1\n",
        route("/c/{*rest}", upstream.addr)
    ));
    gateway.signal("HUP");
    let refused = gateway.wait_for("configuration not reloaded; still serving the previous one");
    assert!(
        refused["error"].as_str().unwrap().contains("bogus"),
        "{refused}"
    );
    assert_eq!(status(addr, "/b/1").await, StatusCode::OK);
    assert_eq!(status(addr, "/c/1").await, StatusCode::NOT_FOUND);

    // A setting that needs a restart is named.
    dir.write_config(&format!(
        "{}{}",
        head.replace("127.0.0.1:0", "127.0.0.1:1"),
        route("/b/{*rest}", upstream.addr)
    ));
    gateway.signal("HUP");
    let restart =
        gateway.wait_for("changed in the configuration file; needs a restart to take effect");
    assert_eq!(restart["setting"], "`listen`");
    let deadline = Instant::now() + BOUND;
    while gateway.count("configuration reloaded") < 2 {
        assert!(Instant::now() < deadline, "second reload not logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (lines, stdout) = gateway.stop();
    assert_all_json(&lines);
    assert!(stdout.is_empty(), "{stdout:?}");
    let messages: Vec<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["message"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    for expected in [
        "route",
        "gateway listening",
        "every issuer has usable keys",
        "SIGTERM received",
        "gateway stopped",
    ] {
        assert!(
            messages.iter().any(|m| m.starts_with(expected)),
            "{expected:?} not in {messages:?}"
        );
    }
}

/// `TOKIO_WORKER_THREADS=1` runs the gateway on the single-threaded scheduler: it serves,
/// reloads on SIGHUP and stops gracefully as with a worker pool.
#[tokio::test]
async fn one_worker_thread_serves_reloads_and_stops() {
    let upstream = Upstream::start().await;
    let dir = TempDir::new("binary").with_fixture_keys(&["jwks.json"]);
    let head = format!("listen = \"127.0.0.1:0\"\nlog_format = \"json\"\n{ISSUER}");
    let path = dir.write_config(&format!("{head}{}", route("/a/{*rest}", upstream.addr)));
    let gateway = Binary::start(&path, &[("TOKIO_WORKER_THREADS", Path::new("1"))]);
    let addr = gateway.addr();
    let answers = futures_util::future::join_all(
        (0..16).map(|i| status(addr, if i % 2 == 0 { "/a/1" } else { "/b/1" })),
    )
    .await;
    for (i, answer) in answers.into_iter().enumerate() {
        let want = if i % 2 == 0 {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        assert_eq!(answer, want, "request {i}");
    }
    dir.write_config(&format!("{head}{}", route("/b/{*rest}", upstream.addr)));
    gateway.signal("HUP");
    until(addr, "/b/1", StatusCode::OK).await;
    let (lines, _) = gateway.stop();
    assert_all_json(&lines);
    assert!(
        lines.iter().any(|l| l.contains("gateway stopped")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_configuration_error_is_a_json_line_too() {
    let dir = TempDir::new("binary").with_fixture_keys(&["jwks.json"]);
    let path = dir.write_config(&format!(
        "listen = \"127.0.0.1:0\"\nlog_format = \"json\"\n{ISSUER}\n[[route]]\npath = \"nope\"\nupstream = \"http://127.0.0.1:9\"\n"
    ));
    let mut gateway = Binary::start(&path, &[]);
    let deadline = Instant::now() + BOUND;
    let code = loop {
        if let Some(status) = gateway.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the gateway did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code.code(), Some(1));
    std::thread::sleep(Duration::from_millis(100));
    let lines = gateway.lines.lock().unwrap().clone();
    assert_all_json(&lines);
    let last: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(last["level"], "ERROR");
    let error = last["error"].as_str().unwrap();
    support::assert_mentions(error, &["gateway.toml", "[[route]] #1", "`path`"]);
}

/// A CA and a certificate for 127.0.0.1 signed by it, written as PEM files into `dir`.
fn tls_files(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("redis.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("redis.key"), key.serialize_pem()).unwrap();
}

/// `redis-server` with TLS on `port` and plain TCP on `plain_port` (for the test's own
/// reads only); killed on drop.
struct TlsRedis {
    child: Child,
    port: u16,
    plain_port: u16,
}

impl TlsRedis {
    fn start(dir: &Path) -> Option<TlsRedis> {
        let version = Command::new("redis-server")
            .arg("--version")
            .output()
            .ok()?;
        assert!(version.status.success());
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (port, plain_port) = (free(), free());
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(plain_port.to_string())
            .arg("--tls-port")
            .arg(port.to_string())
            .arg("--tls-cert-file")
            .arg(dir.join("redis.pem"))
            .arg("--tls-key-file")
            .arg(dir.join("redis.key"))
            .arg("--tls-ca-cert-file")
            .arg(dir.join("ca.pem"))
            .args([
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let deadline = Instant::now() + BOUND;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(TlsRedis {
            child,
            port,
            plain_port,
        })
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn two_replicas_share_revocations_over_rediss() {
    let dir = TempDir::new("binary-rediss").with_fixture_keys(&["jwks.json"]);
    tls_files(&dir.0);
    let Some(redis) = TlsRedis::start(&dir.0) else {
        eprintln!("SKIPPED: redis-server is not installed");
        return;
    };
    let upstream = Upstream::start().await;
    let admin_token = "rediss-admin-token-0123456789abcdef";
    let sha = tower_gatekeeper::authenticate::ApiKeyHash::of(admin_token).to_hex();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let admin = support::closed_port().await;
        let replica_dir = TempDir::new("binary-rediss").with_fixture_keys(&["jwks.json"]);
        let path = replica_dir.write_config(&format!(
            "listen = \"127.0.0.1:0\"\nlog_format = \"json\"\nadmin_listen = \"{admin}\"\nadmin_token_sha256 = \"{sha}\"\n{ISSUER}\n\
             [revocation]\nredis_url = \"rediss://127.0.0.1:{}/\"\nprefix = \"rediss-test\"\nfail_mode = \"closed\"\n\
             \n[[route]]\npath = \"/orders/{{*rest}}\"\nupstream = \"http://{}\"\n",
            redis.port, upstream.addr
        ));
        // The test CA is the only root the replicas trust (rustls-native-certs reads it).
        let binary = Binary::start(&path, &[("SSL_CERT_FILE", &dir.0.join("ca.pem"))]);
        let addr = binary.addr();
        replicas.push((binary, addr, admin, replica_dir));
    }
    let rs256 = token("rs256_valid");
    let get = |addr: SocketAddr| {
        let rs256 = rs256.clone();
        async move {
            client()
                .get(format!("http://{addr}/orders/1"))
                .bearer_auth(rs256)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // Fail closed: 503 until each replica has synchronised with Redis over TLS.
    let deadline = Instant::now() + BOUND;
    for (_, addr, _, _) in &replicas {
        while get(*addr).await != StatusCode::OK {
            assert!(
                Instant::now() < deadline,
                "a replica never synchronised over rediss://: {:#?}",
                replicas[0].0.lines.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let response = client()
        .post(format!("http://{}/revoke/token", replicas[0].2))
        .bearer_auth(admin_token)
        .body(r#"{"jti": "fixture-rs256_valid", "exp": 4102444800}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(get(replicas[0].1).await, StatusCode::UNAUTHORIZED);
    let deadline = Instant::now() + BOUND;
    while get(replicas[1].1).await != StatusCode::UNAUTHORIZED {
        assert!(
            Instant::now() < deadline,
            "the other replica never refused the token"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The revocation is in Redis (read over the plain port).
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{}/", redis.plain_port))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg("rediss-test:tokens")
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(members, ["fixture-rs256_valid"]);

    // A replica that does not trust the server's CA never synchronises: fail closed, 503.
    let (untrusting, addr, _dir) = {
        let replica_dir = TempDir::new("binary-rediss").with_fixture_keys(&["jwks.json"]);
        let path = replica_dir.write_config(&format!(
            "listen = \"127.0.0.1:0\"\nlog_format = \"json\"\n{ISSUER}\n\
             [revocation]\nredis_url = \"rediss://127.0.0.1:{}/\"\nprefix = \"rediss-test\"\nfail_mode = \"closed\"\n\
             \n[[route]]\npath = \"/orders/{{*rest}}\"\nupstream = \"http://{}\"\n",
            redis.port, upstream.addr
        ));
        let empty = replica_dir.0.join("no-roots.pem");
        std::fs::write(&empty, "").unwrap();
        let binary = Binary::start(&path, &[("SSL_CERT_FILE", &empty)]);
        let addr = binary.addr();
        (binary, addr, replica_dir)
    };
    for _ in 0..10 {
        assert_eq!(get(addr).await, StatusCode::SERVICE_UNAVAILABLE);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(untrusting);
    for (binary, ..) in replicas {
        let (lines, _) = binary.stop();
        assert_all_json(&lines);
    }
}

#[cfg(all(feature = "redis", feature = "introspection"))]
#[tokio::test]
async fn two_replicas_share_introspection_results_over_rediss() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = TempDir::new("binary-rediss").with_fixture_keys(&["jwks.json"]);
    tls_files(&dir.0);
    let Some(redis) = TlsRedis::start(&dir.0) else {
        eprintln!("SKIPPED: redis-server is not installed");
        return;
    };
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let idp = support::http_server::serve(move |_req| {
        counted.fetch_add(1, Ordering::SeqCst);
        async {
            http::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(
                br#"{"active": true, "sub": "opaque-user", "aud": "api://orders"}"#,
            )))
        }
    })
    .await;
    let upstream = Upstream::start().await;
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let replica_dir = TempDir::new("binary-rediss");
        let path = replica_dir.write_config(&format!(
            "listen = \"127.0.0.1:0\"\nlog_format = \"json\"\n\
             [introspection]\nendpoint = \"http://{idp}/introspect\"\nauth_method = \"none\"\n\
             audiences = [\"api://orders\"]\ncache_ttl_seconds = 60\n\
             redis_url = \"rediss://127.0.0.1:{}/\"\nredis_prefix = \"rediss-introspection:\"\n\
             \n[[route]]\npath = \"/orders/{{*rest}}\"\nupstream = \"http://{}\"\n",
            redis.port, upstream.addr
        ));
        let binary = Binary::start(&path, &[("SSL_CERT_FILE", &dir.0.join("ca.pem"))]);
        let addr = binary.addr();
        replicas.push((binary, addr, replica_dir));
    }
    let get = |addr: SocketAddr| async move {
        client()
            .get(format!("http://{addr}/orders/1"))
            .bearer_auth("an-opaque-token")
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(get(replicas[0].1).await, StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Replica A writes its result to Redis over TLS (read back over the plain port).
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{}/", redis.plain_port))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let deadline = Instant::now() + BOUND;
    loop {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("rediss-introspection:*")
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica A never wrote its result over rediss://"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Replica B answers from it without asking the authorization server.
    assert_eq!(get(replicas[1].1).await, StatusCode::OK);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "replica B used replica A's result"
    );
    for (binary, ..) in replicas {
        let (lines, _) = binary.stop();
        assert_all_json(&lines);
    }
}
