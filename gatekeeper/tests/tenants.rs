//! Multi-tenant issuers in the gateway (`issuer_template`): a loopback identity provider
//! serves each tenant its own discovery document and JWKS under the tenant's path (as Entra
//! ID does); the gateway creates a key source per tenant on first use, binds the tenant of
//! `iss` to the tenant claim, never fetches for a tenant it does not trust, and refuses
//! tokens whose header carries a `nonce`. Config mistakes name the key and the file.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Map, Value, json};
use support::{BOUND, Running, Upstream, assert_mentions, client, gateway_dir, json_body};
use tower_gatekeeper::Algorithm;
use tower_gatekeeper::keys::SigningKey;

const AUD: &str = "api://orders";

fn keys_dir() -> std::path::PathBuf {
    std::path::Path::new(support::FIXTURES).join("keys")
}

fn jwk(kid: &str) -> Value {
    let text = std::fs::read_to_string(keys_dir().join("jwks.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap()
        .clone()
}

fn signer(kid: &str) -> SigningKey {
    let (alg, file) = match kid {
        "rsa-1" => (Algorithm::RS256, "rsa-1.key.pem"),
        "ec256-1" => (Algorithm::ES256, "ec256-1.key.pem"),
        other => panic!("no signer {other}"),
    };
    let pem = std::fs::read(keys_dir().join(file)).unwrap();
    SigningKey::from_pem(alg, &pem).unwrap().with_kid(kid)
}

/// The loopback IdP: `/{tenant}/v2.0/.well-known/openid-configuration` and `/{tenant}/keys`
/// for the tenants it knows; counts requests per tenant.
#[derive(Clone)]
struct Idp {
    addr: SocketAddr,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl Idp {
    async fn start(tenants: &[(&str, &str)]) -> Idp {
        let kids: Arc<HashMap<String, String>> = Arc::new(
            tenants
                .iter()
                .map(|(t, k)| ((*t).to_owned(), (*k).to_owned()))
                .collect(),
        );
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let addr_cell: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let (h, cell) = (Arc::clone(&hits), Arc::clone(&addr_cell));
        let addr = support::http_server::serve(move |req| {
            let (kids, hits, cell) = (Arc::clone(&kids), Arc::clone(&h), Arc::clone(&cell));
            async move {
                let path = req.uri().path().to_owned();
                let tenant = path
                    .trim_start_matches('/')
                    .split('/')
                    .next()
                    .unwrap_or("")
                    .to_owned();
                *hits.lock().unwrap().entry(tenant.clone()).or_default() += 1;
                let addr = cell.lock().unwrap().unwrap();
                let body = match kids.get(&tenant) {
                    Some(_) if path.ends_with("/.well-known/openid-configuration") => json!({
                        "issuer": format!("http://{addr}/{tenant}/v2.0"),
                        "jwks_uri": format!("http://{addr}/{tenant}/keys"),
                    }),
                    Some(kid) if path.ends_with("/keys") => json!({"keys": [jwk(kid)]}),
                    _ => {
                        let mut response =
                            http::Response::new(Full::new(Bytes::from_static(b"{}")));
                        *response.status_mut() = http::StatusCode::NOT_FOUND;
                        return response;
                    }
                };
                http::Response::builder()
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body.to_string())))
                    .unwrap()
            }
        })
        .await;
        *addr_cell.lock().unwrap() = Some(addr);
        Idp { addr, hits }
    }

    fn hits(&self, tenant: &str) -> usize {
        self.hits.lock().unwrap().get(tenant).copied().unwrap_or(0)
    }

    fn iss(&self, tenant: &str) -> String {
        format!("http://{}/{tenant}/v2.0", self.addr)
    }
}

fn token(signer: &SigningKey, iss: &str, tid: &str, header: Option<(&str, &str)>) -> String {
    let claims = json!({"iss": iss, "aud": AUD, "sub": "user-1", "exp": 4102444800u64, "tid": tid});
    let mut extra = Map::new();
    if let Some((name, value)) = header {
        extra.insert(name.into(), value.into());
    }
    signer.sign_with_header(extra, &claims).unwrap()
}

async fn gateway(issuer_block: &str, upstream: SocketAddr) -> (Running, support::TempDir) {
    let dir = gateway_dir();
    let path = dir.write_config(&format!(
        r#"
listen = "127.0.0.1:0"
{issuer_block}
[[route]]
path = "/{{*rest}}"
upstream = "http://{upstream}"
"#
    ));
    let config = gatekeeper::load_config(&path).unwrap_or_else(|e| panic!("{e}"));
    (Running::start(config).await, dir)
}

async fn call(gateway: &Running, token: &str) -> reqwest::Response {
    tokio::time::timeout(
        BOUND,
        client()
            .get(gateway.url("/orders/1"))
            .bearer_auth(token)
            .send(),
    )
    .await
    .unwrap()
    .unwrap()
}

fn challenge(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn listed_tenants_through_discovery() {
    let idp = Idp::start(&[("t-a", "rsa-1"), ("t-b", "ec256-1"), ("t-x", "rsa-1")]).await;
    let upstream = Upstream::start().await;
    let block = format!(
        r#"
[[issuer]]
issuer_template = "http://{addr}/{{tenant}}/v2.0"
discovery_url_template = "http://{addr}/{{tenant}}/v2.0/.well-known/openid-configuration"
tenant_claim = "tid"
tenants = ["t-a", "t-b"]
audiences = ["{AUD}"]
"#,
        addr = idp.addr
    );
    let (gateway, _dir) = gateway(&block, upstream.addr).await;
    let (rsa, ec) = (signer("rsa-1"), signer("ec256-1"));

    let response = call(&gateway, &token(&rsa, &idp.iss("t-a"), "t-a", None)).await;
    assert_eq!(response.status(), 200);
    let echo = json_body(response).await;
    assert_eq!(echo["headers"]["x-tenant-id"], "t-a");
    let response = call(&gateway, &token(&ec, &idp.iss("t-b"), "t-b", None)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        (idp.hits("t-a"), idp.hits("t-b")),
        (2, 2),
        "discovery + JWKS each"
    );

    // t-a's iss signed with t-b's key.
    let response = call(&gateway, &token(&ec, &idp.iss("t-a"), "t-a", None)).await;
    assert_eq!(response.status(), 401);
    // iss names t-a, tid names t-b.
    let response = call(&gateway, &token(&rsa, &idp.iss("t-a"), "t-b", None)).await;
    assert_eq!(response.status(), 401);
    assert!(
        challenge(&response).contains("tenant claim does not match"),
        "{}",
        challenge(&response)
    );
    // A tenant the IdP knows but the gateway does not trust: no fetch at all.
    let response = call(&gateway, &token(&rsa, &idp.iss("t-x"), "t-x", None)).await;
    assert_eq!(response.status(), 401);
    assert!(
        challenge(&response).contains("tenant not allowed"),
        "{}",
        challenge(&response)
    );
    assert_eq!(idp.hits("t-x"), 0);
    // A Microsoft Graph style token (header nonce).
    let response = call(
        &gateway,
        &token(&rsa, &idp.iss("t-a"), "t-a", Some(("nonce", "graph"))),
    )
    .await;
    assert_eq!(response.status(), 401);
    assert!(
        challenge(&response).contains("nonce"),
        "{}",
        challenge(&response)
    );
    assert_eq!(upstream.hits(), 2);
    gateway.stop().await;
}

#[tokio::test]
async fn any_tenant_through_jwks_url_template_with_two_issuer_forms() {
    let idp = Idp::start(&[("t-a", "rsa-1"), ("t-b", "ec256-1")]).await;
    let upstream = Upstream::start().await;
    let block = format!(
        r#"
[[issuer]]
issuer_template = ["http://{addr}/{{tenant}}/v2.0", "http://sts.{addr}/{{tenant}}/"]
jwks_url_template = "http://{addr}/{{tenant}}/keys"
tenant_claim = "tid"
any_tenant = true
max_tenants = 1
audiences = ["{AUD}"]
"#,
        addr = idp.addr
    );
    let (gateway, _dir) = gateway(&block, upstream.addr).await;
    let (rsa, ec) = (signer("rsa-1"), signer("ec256-1"));
    let v1 = format!("http://sts.{}/t-a/", idp.addr);
    for iss in [idp.iss("t-a"), v1] {
        let response = call(&gateway, &token(&rsa, &iss, "t-a", None)).await;
        assert_eq!(response.status(), 200, "{iss}");
    }
    assert_eq!(idp.hits("t-a"), 1, "one source for both issuer forms");
    let response = call(&gateway, &token(&ec, &idp.iss("t-b"), "t-b", None)).await;
    assert_eq!(response.status(), 200);
    // max_tenants = 1: t-b replaced t-a, so t-a is fetched again.
    let response = call(&gateway, &token(&rsa, &idp.iss("t-a"), "t-a", None)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(idp.hits("t-a"), 2);
    gateway.stop().await;
}

fn config_error(issuer_block: &str) -> String {
    let dir = gateway_dir();
    let path = dir.write_config(&format!(
        "listen = \"127.0.0.1:0\"\n{issuer_block}\n[[route]]\npath = \"/{{*rest}}\"\nupstream = \"http://127.0.0.1:9\"\n"
    ));
    let error = gatekeeper::load_config(&path)
        .map(|_| ())
        .expect_err("the config is rejected")
        .to_string();
    assert!(
        error.contains(&path.display().to_string()),
        "names the file: {error}"
    );
    error
}

#[test]
fn tenant_config_errors_name_the_key_and_the_file() {
    let base = "[[issuer]]\naudiences = [\"a\"]\n";
    let template = "issuer_template = \"https://login.example.com/{tenant}/v2.0\"\n";
    let url = "jwks_url_template = \"http://127.0.0.1:9/{tenant}/keys\"\n";
    let claim = "tenant_claim = \"tid\"\n";
    let cases: [(String, &[&str]); 10] = [
        (
            format!("{base}{template}{url}{claim}"),
            &["tenants", "any_tenant", "exactly one"],
        ),
        (
            format!("{base}{template}{url}{claim}tenants = [\"a\"]\nany_tenant = true\n"),
            &["tenants", "any_tenant", "both"],
        ),
        (
            format!("{base}{template}{url}tenants = [\"a\"]\n"),
            &["tenant_claim", "required"],
        ),
        (
            format!(
                "{base}issuer_template = \"https://login.example.com/v2.0\"\n{url}{claim}any_tenant = true\n"
            ),
            &["issuer_template", "{tenant}"],
        ),
        (
            format!(
                "{base}{template}jwks_url_template = \"http://127.0.0.1:9/keys\"\n{claim}any_tenant = true\n"
            ),
            &["jwks_url_template", "{tenant}"],
        ),
        (
            format!("{base}{template}{claim}any_tenant = true\n"),
            &["discovery_url_template", "jwks_url_template"],
        ),
        (
            format!("{base}{template}{url}{claim}tenants = [\"a/b\"]\n"),
            &["tenants", "a/b"],
        ),
        (
            format!("{base}issuer = \"https://x\"\n{template}{url}{claim}any_tenant = true\n"),
            &["issuer", "issuer_template", "both"],
        ),
        (
            format!(
                "{base}issuer = \"https://x\"\njwks_url = \"http://127.0.0.1:9/k\"\ntenants = [\"a\"]\n"
            ),
            &["tenants", "issuer_template"],
        ),
        (
            format!("{base}{template}{url}{claim}any_tenant = true\nmax_tenants = 0\n"),
            &["max_tenants"],
        ),
    ];
    for (block, parts) in cases {
        let error = config_error(&block);
        assert_mentions(&error, parts);
    }
}

#[tokio::test]
async fn explain_names_the_tenant_and_nonce_checks() {
    let idp = Idp::start(&[("t-a", "rsa-1")]).await;
    let dir = gateway_dir();
    let path = dir.write_config(&format!(
        r#"
[[issuer]]
issuer_template = "http://{addr}/{{tenant}}/v2.0"
jwks_url_template = "http://{addr}/{{tenant}}/keys"
tenant_claim = "tid"
tenants = ["t-a"]
audiences = ["{AUD}"]

[[route]]
path = "/{{*rest}}"
upstream = "http://127.0.0.1:9"
"#,
        addr = idp.addr
    ));
    let config = path.to_str().unwrap().to_owned();
    let explain = |token: String| {
        let config = config.clone();
        async move {
            let args = ["--config".to_owned(), config, token]
                .into_iter()
                .map(std::ffi::OsString::from);
            gatekeeper::explain_command(args, std::io::empty()).await
        }
    };
    let rsa = signer("rsa-1");
    let (code, out) = explain(token(&rsa, &idp.iss("t-a"), "t-a", None)).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("[ok  ] tenant") && out.contains("in the allow-list"),
        "{out}"
    );
    let (code, out) = explain(token(&rsa, &idp.iss("t-a"), "t-b", None)).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("[FAIL] tenant") && out.contains("\"tid\""),
        "{out}"
    );
    let (code, out) = explain(token(&rsa, &idp.iss("t-z"), "t-z", None)).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("[FAIL] tenant") && out.contains("not in the allow-list"),
        "{out}"
    );
    let (code, out) = explain(token(&rsa, &idp.iss("t-a"), "t-a", Some(("nonce", "g")))).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("[FAIL] nonce") && out.contains("Microsoft Graph"),
        "{out}"
    );
    assert_eq!(idp.hits("t-z"), 0);
}
