//! Operations over real loopback HTTP: the admin listener (`/healthz`, `/readyz`,
//! `/metrics`), the audit log, the `explain` command, and the configuration keys that drive
//! them.

mod support;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use support::{BOUND, TempDir, client, token};

/// A temp dir with the fixture JWKS under `keys/`.
fn ops_dir() -> TempDir {
    TempDir::new("ops").with_fixture_keys(&["jwks.json"])
}

/// Writes the gateway configuration of these tests, with `extra` top-level keys.
fn ops_config(dir: &TempDir, extra: &str, upstream: &str) -> PathBuf {
    dir.write_config(&format!(
        r#"
listen = "127.0.0.1:0"
{extra}

[[issuer]]
issuer = "https://idp.example.test"
audiences = ["api://orders"]
algorithms = ["RS256", "ES256", "EdDSA"]
jwks_file = "keys/jwks.json"

[[route]]
path = "/orders/{{*rest}}"
upstream = "http://{upstream}"
roles_any = ["clerk", "admin"]
"#
    ))
}

/// An upstream that answers 200 to everything.
async fn upstream() -> SocketAddr {
    support::http_server::serve(|_req| async {
        http::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(
            b"upstream",
        )))
    })
    .await
}

/// Starts the gateway for `config`; returns its address and a shutdown trigger.
async fn start_gateway(config: gatekeeper::Config) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(gatekeeper::run(config, listener, async {
        let _ = rx.await;
    }));
    (addr, tx)
}

async fn get(url: String, token: Option<&str>) -> (u16, String) {
    let mut request = client().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = tokio::time::timeout(BOUND, request.send())
        .await
        .unwrap()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn admin_listener_serves_health_readiness_and_metrics() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = listener.local_addr().unwrap();
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(gatekeeper::run_admin(
        listener,
        async move { ready_rx.await.map_err(|e| e.to_string()) },
        async {
            let _ = stop_rx.await;
        },
    ));

    assert_eq!(get(format!("http://{admin}/healthz"), None).await.0, 200);
    let (status, body) = get(format!("http://{admin}/readyz"), None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("keys"), "{body}");
    ready_tx.send(()).unwrap();
    // Readiness flips once the keys future resolved: wait for it, bounded.
    let started = Instant::now();
    loop {
        let (status, _) = get(format!("http://{admin}/readyz"), None).await;
        if status == 200 {
            break;
        }
        assert!(started.elapsed() < BOUND, "never became ready");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(get(format!("http://{admin}/nope"), None).await.0, 404);

    #[cfg(feature = "metrics")]
    {
        // A rejected request through the gateway shows up in /metrics.
        let dir = ops_dir();
        let up = upstream().await;
        let config = gatekeeper::load_config(ops_config(&dir, "", &up.to_string())).unwrap();
        let (gw, _stop) = start_gateway(config).await;
        let (status, _) = get(format!("http://{gw}/orders/1"), Some(&token("expired"))).await;
        assert_eq!(status, 401);
        let (status, text) = get(format!("http://{admin}/metrics"), None).await;
        assert_eq!(status, 200);
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("gatekeeper_decisions_total")
                    && l.contains("outcome=\"deny\"")
                    && l.contains("reason=\"token expired\"")
            })
            .unwrap_or_else(|| panic!("no expired-token counter in\n{text}"));
        assert!(line.contains("stage=\"authenticate\""), "{line}");
    }
    #[cfg(not(feature = "metrics"))]
    assert_eq!(get(format!("http://{admin}/metrics"), None).await.0, 404);

    stop_tx.send(()).unwrap();
    tokio::time::timeout(BOUND, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn audit_log_writes_one_json_line_per_decision_without_tokens() {
    let dir = ops_dir();
    let up = upstream().await;
    let path = ops_config(
        &dir,
        "audit_log = \"audit.jsonl\"\nadmin_listen = \"127.0.0.1:0\"",
        &up.to_string(),
    );
    let config = gatekeeper::load_config(&path).unwrap();
    assert_eq!(config.admin_listen(), Some("127.0.0.1:0".parse().unwrap()));
    let (gw, _stop) = start_gateway(config).await;

    let valid = token("rs256_valid");
    let expired = token("expired");
    assert_eq!(
        get(format!("http://{gw}/orders/1?q=SECRET"), Some(&valid))
            .await
            .0,
        200
    );
    assert_eq!(
        get(format!("http://{gw}/orders/2"), Some(&expired)).await.0,
        401
    );
    assert_eq!(get(format!("http://{gw}/orders/3"), None).await.0, 401);

    let log = dir.0.join("audit.jsonl");
    let started = Instant::now();
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= 3 {
            break text;
        }
        assert!(started.elapsed() < BOUND, "audit lines missing: {text:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 3, "{text}");
    let allowed = &records[0];
    assert_eq!(allowed["stage"], "authorize");
    assert_eq!(allowed["outcome"], "allow");
    assert_eq!(allowed["issuer"], "https://idp.example.test");
    assert_eq!(allowed["path"], "/orders/1");
    assert!(allowed["subject"].is_string(), "{allowed}");
    assert_eq!(records[1]["outcome"], "deny");
    assert_eq!(records[1]["reason"], "token expired");
    assert_eq!(records[1]["status"], 401);
    assert_eq!(records[2]["reason"], "authentication required");
    for token in [&valid, &expired] {
        assert!(!text.contains(token.as_str()));
        assert!(!text.contains(token.rsplit('.').next().unwrap()));
    }
    assert!(!text.contains("SECRET"));
}

#[tokio::test]
async fn config_mistakes_in_ops_keys_name_the_key() {
    let dir = ops_dir();
    for (extra, expected) in [
        ("admin_listen = \"localhost\"", "`admin_listen`"),
        ("audit_log = \"\"", "`audit_log`"),
        ("audit_log = \"no/such/dir/audit.jsonl\"", "`audit_log`"),
        ("[limits]\nmax_roles = 0", "max_roles"),
        ("[limits]\nmax_rolez = 3", "max_rolez"),
    ] {
        let path = ops_config(&dir, extra, "127.0.0.1:9");
        let error = gatekeeper::load_config(&path).unwrap_err().to_string();
        assert!(error.contains(expected), "{extra}: {error}");
    }
    // Limits from the file are applied: one role kept is still enough for `clerk`.
    let path = ops_config(
        &dir,
        "[limits]\nmax_roles = 1\nmax_claims_bytes = 64",
        "127.0.0.1:9",
    );
    let config = gatekeeper::load_config(&path).unwrap();
    let (gw, _stop) = start_gateway(config).await;
    let (status, body) = get(format!("http://{gw}/orders/1"), Some(&token("rs256_valid"))).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("claims too large"), "{body}");
}

fn args(list: &[&str]) -> impl Iterator<Item = OsString> {
    list.iter()
        .map(OsString::from)
        .collect::<Vec<_>>()
        .into_iter()
}

#[tokio::test]
async fn explain_reports_each_step_and_the_verdict() {
    let dir = ops_dir();
    let config = ops_config(&dir, "", "127.0.0.1:9");
    let config = config.to_str().unwrap();

    let valid = token("rs256_valid");
    let (code, out) =
        gatekeeper::explain_command(args(&["--config", config, &valid]), std::io::empty()).await;
    assert_eq!(code, 0, "{out}");
    for needle in [
        "[ok  ] header",
        "alg=\"RS256\"",
        "[ok  ] iss",
        "[ok  ] aud",
        "[ok  ] exp",
        "[ok  ] key",
        "[ok  ] signature",
        "ACCEPTED",
        "(no upstream is called)",
    ] {
        assert!(out.contains(needle), "{needle} missing in\n{out}");
    }

    // From stdin, with a pasted "Bearer " prefix.
    let expired = token("expired");
    let input = format!("Bearer {expired}\n");
    let (code, out) =
        gatekeeper::explain_command(args(&["--config", config, "-"]), input.as_bytes()).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[FAIL] exp"), "{out}");
    assert!(out.contains("token expired"), "{out}");
    assert!(out.contains("[ -  ] signature"), "{out}");
    assert!(out.contains("REJECTED: HTTP 401 invalid_token"), "{out}");

    for (name, step) in [
        ("wrong_aud", "[FAIL] aud"),
        ("wrong_iss", "[FAIL] iss"),
        ("alg_none_lower", "[FAIL] header"),
        ("signature_other_key_same_kid", "[FAIL] signature"),
        ("kid_unknown", "[FAIL] key"),
        ("hs256_with_rsa_pubkey", "[FAIL] alg"),
    ] {
        let bad = token(name);
        let (code, out) =
            gatekeeper::explain_command(args(&["--config", config, &bad]), std::io::empty()).await;
        assert_eq!(code, 1, "{name}: {out}");
        assert!(out.contains(step), "{name}: {step} missing in\n{out}");
        assert!(!out.contains(bad.as_str()), "{name}: the token is echoed");
        assert!(!out.contains(bad.rsplit('.').next().unwrap()) || bad.ends_with('.'));
    }

    let (code, out) = gatekeeper::explain_command(args(&[&valid]), std::io::empty()).await;
    assert_eq!(code, 2);
    assert!(out.contains("--config FILE is required"), "{out}");
}
