//! DPoP (RFC 9449) through the gateway over loopback HTTP: `[[issuer]] dpop`, `[dpop]`,
//! `public_origin`. Bound access tokens and hostile proofs come from the committed fixtures
//! minted by PyJWT (`tests/fixtures/dpop/`, `generate_dpop.py`); fresh proofs (current `iat`,
//! new `jti`) are signed here with RustCrypto's `p256`, another implementation than the
//! aws-lc-rs that verifies them.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac;
use p256::ecdsa::signature::Signer;
use p256::pkcs8::DecodePrivateKey;
use serde_json::{Value, json};
use sha2::Digest;
use support::redis_server::RedisServer;
use support::{BOUND, Running, Upstream, client, fixtures, gateway_dir, json_body};

const ORIGIN: &str = "https://api.example.test";

fn dpop_dir() -> PathBuf {
    fixtures().join("dpop")
}

fn cases() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dpop_dir().join("cases.json")).unwrap()).unwrap()
}

fn fixture_token(name: &str) -> String {
    cases()["tokens"][name].as_str().unwrap().to_owned()
}

fn fixture_proof(name: &str) -> String {
    cases()["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()["proof"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A client holding a P-256 proof key (a committed fixture key).
struct ProofKey {
    key: p256::ecdsa::SigningKey,
    jwk: Value,
}

impl ProofKey {
    fn load(name: &str) -> Self {
        let pem = std::fs::read_to_string(dpop_dir().join(format!("{name}.key.pem"))).unwrap();
        let key = p256::ecdsa::SigningKey::from_pkcs8_pem(&pem).unwrap();
        let point = key.verifying_key().to_encoded_point(false);
        let jwk = json!({
            "kty": "EC", "crv": "P-256",
            "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap()),
        });
        ProofKey { key, jwk }
    }

    fn client() -> Self {
        Self::load("client-es256")
    }

    /// A proof for `method` `htu` with `token`'s `ath`, made now with a new `jti`; `edit`
    /// changes the claims before signing.
    fn proof_with(
        &self,
        method: &str,
        htu: &str,
        token: &str,
        edit: impl FnOnce(&mut Value),
    ) -> String {
        let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk});
        let mut claims = json!({
            "jti": uuid(),
            "htm": method,
            "htu": htu,
            "iat": now(),
            "ath": b64(&sha2::Sha256::digest(token.as_bytes())),
        });
        edit(&mut claims);
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature: p256::ecdsa::Signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", b64(&signature.to_bytes()))
    }

    fn proof(&self, method: &str, htu: &str, token: &str) -> String {
        self.proof_with(method, htu, token, |_| {})
    }
}

fn uuid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        now(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn config(upstream: std::net::SocketAddr, mode: &str, public_origin: bool, dpop: &str) -> String {
    let origin = if public_origin {
        format!("public_origin = \"{ORIGIN}\"")
    } else {
        String::new()
    };
    format!(
        r#"
listen = "127.0.0.1:0"
realm = "gatekeeper-test"
{origin}

[[issuer]]
issuer = "https://idp.example.test"
audiences = ["api://orders"]
algorithms = ["RS256"]
jwks_file = "keys/jwks.json"
roles_claim = "roles"
dpop = "{mode}"

[dpop]
{dpop}

[[route]]
path = "/orders/{{*rest}}"
upstream = "http://{upstream}"
roles_any = ["clerk"]

[[route]]
path = "/public/{{*rest}}"
upstream = "http://{upstream}"
auth = "public"
"#
    )
}

struct Gateway {
    upstream: Upstream,
    running: Running,
    _dir: support::TempDir,
}

async fn gateway(mode: &str, public_origin: bool, dpop: &str) -> Gateway {
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    let path = dir.write_config(&config(upstream.addr, mode, public_origin, dpop));
    let config = gatekeeper::load_config(&path).unwrap_or_else(|e| panic!("{e}"));
    Gateway {
        upstream,
        running: Running::start(config).await,
        _dir: dir,
    }
}

struct Answer {
    status: u16,
    error: String,
    description: String,
    challenges: Vec<String>,
    nonce: Option<String>,
    body: Value,
}

async fn send(gw: &Gateway, method: &str, path: &str, auth: &str, proof: Option<&str>) -> Answer {
    let mut req = client()
        .request(method.parse().unwrap(), gw.running.url(path))
        .header("authorization", auth);
    if let Some(proof) = proof {
        req = req.header("dpop", proof);
    }
    let response = tokio::time::timeout(BOUND, req.send())
        .await
        .unwrap()
        .unwrap();
    let status = response.status().as_u16();
    let challenges = response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let nonce = response
        .headers()
        .get("dpop-nonce")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = json_body(response).await;
    Answer {
        status,
        error: body["error"].as_str().unwrap_or_default().to_owned(),
        description: body["error_description"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        challenges,
        nonce,
        body,
    }
}

fn htu() -> String {
    format!("{ORIGIN}/orders/1")
}

async fn dpop_get(gw: &Gateway, proof: &str) -> Answer {
    let token = fixture_token("bound-es256");
    send(
        gw,
        "GET",
        "/orders/1",
        &format!("DPoP {token}"),
        Some(proof),
    )
    .await
}

#[track_caller]
fn assert_refused(answer: &Answer, error: &str, fragment: &str) {
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert_eq!(answer.error, error, "{}", answer.description);
    assert!(
        answer.description.contains(fragment),
        "expected {fragment:?}, got {:?}",
        answer.description
    );
    let dpop = answer
        .challenges
        .iter()
        .find(|c| c.starts_with("DPoP "))
        .unwrap_or_else(|| panic!("no DPoP challenge in {:?}", answer.challenges));
    assert!(
        dpop.contains(r#"algs="RS256 PS256 ES256 ES384 EdDSA""#),
        "{dpop}"
    );
    assert!(dpop.contains(&format!(r#"error="{error}""#)), "{dpop}");
}

#[tokio::test]
async fn a_fresh_proof_is_accepted_and_neither_dpop_nor_authorization_is_forwarded() {
    let gw = gateway("allowed", true, "").await;
    let token = fixture_token("bound-es256");
    let proof = ProofKey::client().proof("GET", &htu(), &token);
    let answer = dpop_get(&gw, &proof).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let headers = &answer.body["headers"];
    assert_eq!(headers["x-user-id"], "dpop-es");
    assert!(headers.get("dpop").is_none(), "{headers}");
    assert!(headers.get("authorization").is_none(), "{headers}");
    // The challenge of an unauthenticated request offers both schemes.
    let answer = send(&gw, "GET", "/orders/1", "", None).await;
    assert_eq!(answer.status, 401);
    assert!(answer.challenges.iter().any(|c| c.starts_with("Bearer ")));
    assert!(
        answer
            .challenges
            .iter()
            .any(|c| c.starts_with("DPoP ") && c.contains("algs="))
    );
    // A public route never forwards a DPoP header either.
    let answer = send(&gw, "GET", "/public/x", "", Some(&proof)).await;
    assert!(answer.body["headers"].get("dpop").is_none());
}

#[tokio::test]
async fn wrong_htm_is_refused() {
    let gw = gateway("allowed", true, "").await;
    let proof = ProofKey::client().proof("POST", &htu(), &fixture_token("bound-es256"));
    assert_refused(&dpop_get(&gw, &proof).await, "invalid_dpop_proof", "htm");
}

#[tokio::test]
async fn htu_with_a_query_is_refused() {
    let gw = gateway("allowed", true, "").await;
    let proof = ProofKey::client().proof(
        "GET",
        &format!("{}?a=1", htu()),
        &fixture_token("bound-es256"),
    );
    assert_refused(
        &dpop_get(&gw, &proof).await,
        "invalid_dpop_proof",
        "query or fragment",
    );
}

#[tokio::test]
async fn htu_on_another_host_is_refused() {
    let gw = gateway("allowed", true, "").await;
    let proof = ProofKey::client().proof(
        "GET",
        "https://other.example.test/orders/1",
        &fixture_token("bound-es256"),
    );
    assert_refused(
        &dpop_get(&gw, &proof).await,
        "invalid_dpop_proof",
        "htu does not match",
    );
}

#[tokio::test]
async fn htu_is_normalised_and_without_public_origin_the_host_is_the_origin() {
    let gw = gateway("allowed", false, "").await;
    let token = fixture_token("bound-es256");
    // The request's own origin, spelled differently: scheme and host case, an encoded
    // unreserved character.
    let htu = format!("HTTP://{}/orders/%31", gw.running.addr);
    let answer = dpop_get(&gw, &ProofKey::client().proof("GET", &htu, &token)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // The public origin is not this gateway's when it is not configured.
    let answer = dpop_get(&gw, &ProofKey::client().proof("GET", &self::htu(), &token)).await;
    assert_refused(&answer, "invalid_dpop_proof", "htu does not match");
}

#[tokio::test]
async fn stale_and_future_iat_are_refused() {
    let gw = gateway("allowed", true, "max_age_seconds = 60").await;
    let key = ProofKey::client();
    let token = fixture_token("bound-es256");
    let stale = key.proof_with("GET", &htu(), &token, |c| c["iat"] = json!(now() - 120));
    assert_refused(
        &dpop_get(&gw, &stale).await,
        "invalid_dpop_proof",
        "too old",
    );
    let future = key.proof_with("GET", &htu(), &token, |c| c["iat"] = json!(now() + 120));
    assert_refused(
        &dpop_get(&gw, &future).await,
        "invalid_dpop_proof",
        "future",
    );
}

#[tokio::test]
async fn a_replayed_proof_is_refused() {
    let gw = gateway("allowed", true, "").await;
    let proof = ProofKey::client().proof("GET", &htu(), &fixture_token("bound-es256"));
    assert_eq!(dpop_get(&gw, &proof).await.status, 200);
    assert_refused(
        &dpop_get(&gw, &proof).await,
        "invalid_dpop_proof",
        "already used",
    );
}

#[tokio::test]
async fn a_proof_accepted_by_one_replica_is_refused_by_another_sharing_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let shared = format!("redis_url = \"{}\"", redis.url());
    let a = gateway("allowed", true, &shared).await;
    let b = gateway("allowed", true, &shared).await;
    let key = ProofKey::client();
    let token = fixture_token("bound-es256");
    let proof = key.proof("GET", &htu(), &token);
    let first = dpop_get(&a, &proof).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_refused(
        &dpop_get(&b, &proof).await,
        "invalid_dpop_proof",
        "already used",
    );
    // Fresh proofs pass on either.
    assert_eq!(
        dpop_get(&b, &key.proof("GET", &htu(), &token)).await.status,
        200
    );

    // Redis down: DPoP requests fail closed (503, Retry-After) within the 250 ms bound plus
    // the connection's, Bearer requests go on.
    drop(redis);
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        let answer = dpop_get(&a, &key.proof("GET", &htu(), &token)).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(answer.status, 503, "{}", answer.body);
        assert_eq!(
            answer.description,
            "the DPoP replay check is temporarily unavailable"
        );
    }
    println!("DPoP with Redis down: 503 in at most {slowest:?} per request");
    assert!(slowest < Duration::from_secs(5), "{slowest:?}");
    let unbound = fixture_token("unbound");
    let answer = send(&a, "GET", "/orders/1", &format!("Bearer {unbound}"), None).await;
    assert_eq!(answer.status, 200);
    let _ = (&a.upstream, &b.upstream);
}

#[tokio::test]
async fn wrong_ath_is_refused() {
    let gw = gateway("allowed", true, "").await;
    let proof = ProofKey::client().proof_with("GET", &htu(), "x", |c| {
        c["ath"] = json!(b64(&sha2::Sha256::digest(b"another token")));
    });
    assert_refused(&dpop_get(&gw, &proof).await, "invalid_dpop_proof", "ath");
}

#[tokio::test]
async fn hostile_proof_headers_are_refused() {
    // The committed PyJWT proofs: the header checks come before the iat check, so their
    // fixed iat does not matter.
    let gw = gateway("allowed", true, "").await;
    for (name, fragment) in [
        ("jwk-with-private-d", "private key"),
        ("hs256", "algorithm is not accepted"),
        ("alg-none", "algorithm is not accepted"),
        ("typ-jwt", "typ is not dpop+jwt"),
        ("signed-by-other-key", "signature is invalid"),
    ] {
        let answer = dpop_get(&gw, &fixture_proof(name)).await;
        assert_refused(&answer, "invalid_dpop_proof", fragment);
    }
}

#[tokio::test]
async fn a_proof_by_another_key_than_cnf_jkt_is_refused() {
    let gw = gateway("allowed", true, "").await;
    let proof = ProofKey::load("other-es256").proof("GET", &htu(), &fixture_token("bound-es256"));
    assert_refused(
        &dpop_get(&gw, &proof).await,
        "invalid_token",
        "another DPoP key",
    );
}

#[tokio::test]
async fn a_bound_token_as_bearer_is_refused_in_every_mode() {
    for mode in ["off", "allowed", "required"] {
        let gw = gateway(mode, true, "").await;
        let token = fixture_token("bound-es256");
        let answer = send(&gw, "GET", "/orders/1", &format!("Bearer {token}"), None).await;
        assert_eq!(
            (answer.status, answer.error.as_str()),
            (401, "invalid_token"),
            "{mode}"
        );
        assert!(
            answer.description.contains("requires a DPoP proof"),
            "{mode}"
        );
    }
}

#[tokio::test]
async fn modes_off_and_required() {
    let token = fixture_token("bound-es256");
    let off = gateway("off", true, "").await;
    let proof = ProofKey::client().proof("GET", &htu(), &token);
    let answer = dpop_get(&off, &proof).await;
    assert_eq!(
        (answer.status, answer.error.as_str()),
        (401, "invalid_token")
    );
    let unbound = fixture_token("unbound");
    let answer = send(&off, "GET", "/orders/1", &format!("Bearer {unbound}"), None).await;
    assert_eq!(answer.status, 200);

    let required = gateway("required", true, "").await;
    let answer = send(
        &required,
        "GET",
        "/orders/1",
        &format!("Bearer {unbound}"),
        None,
    )
    .await;
    assert_eq!(
        (answer.status, answer.error.as_str()),
        (401, "invalid_token")
    );
    assert!(
        answer.challenges.iter().all(|c| !c.starts_with("Bearer")),
        "{:?}",
        answer.challenges
    );
    let proof = ProofKey::client().proof("GET", &htu(), &token);
    assert_eq!(dpop_get(&required, &proof).await.status, 200);
}

/// The gateway's nonce for `window` under the fixture secret, computed from the documented
/// format: base64url(window ‖ HMAC-SHA256(secret, "dpop-nonce" ‖ window)[..16]).
fn nonce_for(window: u64) -> String {
    let secret = std::fs::read(dpop_dir().join("nonce.secret")).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&secret).unwrap();
    mac.update(b"dpop-nonce");
    mac.update(&window.to_be_bytes());
    let tag = mac.finalize().into_bytes();
    let mut raw = window.to_be_bytes().to_vec();
    raw.extend_from_slice(&tag[..16]);
    b64(&raw)
}

#[tokio::test]
async fn nonces_required_expired_wrong_and_fresh_on_success() {
    let secret = dpop_dir().join("nonce.secret");
    let extra = format!(
        "nonce = true\nnonce_secret_file = {:?}",
        secret.display().to_string()
    );
    let gw = gateway("allowed", true, &extra).await;
    let key = ProofKey::client();
    let token = fixture_token("bound-es256");

    // Required: a proof without one gets use_dpop_nonce and a nonce to use.
    let answer = dpop_get(&gw, &key.proof("GET", &htu(), &token)).await;
    assert_refused(&answer, "use_dpop_nonce", "nonce is required");
    let nonce = answer.nonce.expect("a DPoP-Nonce header");
    // Retried with it: accepted, and a fresh nonce rides on the answer.
    let proof = key.proof_with("GET", &htu(), &token, |c| c["nonce"] = json!(nonce));
    let answer = dpop_get(&gw, &proof).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.nonce.is_some());
    // The format is the documented one: the test computes the current window's nonce too.
    let window = now() as u64 / 300;
    assert_eq!(nonce, nonce_for(window));
    // Expired: two windows old.
    let proof = key.proof_with("GET", &htu(), &token, |c| {
        c["nonce"] = json!(nonce_for(window - 2))
    });
    assert_refused(
        &dpop_get(&gw, &proof).await,
        "use_dpop_nonce",
        "invalid or expired",
    );
    // Wrong: not one of this gateway's.
    let proof = key.proof_with("GET", &htu(), &token, |c| {
        c["nonce"] = json!(b64(&[7u8; 24]))
    });
    assert_refused(
        &dpop_get(&gw, &proof).await,
        "use_dpop_nonce",
        "invalid or expired",
    );
}

#[tokio::test]
async fn dpop_config_errors_name_the_key() {
    let upstream = Upstream::start().await;
    let short = format!(
        "nonce = true\nnonce_secret_file = {:?}",
        fixtures()
            .join("keys/hmac-short.secret")
            .display()
            .to_string()
    );
    for (mode, dpop, origin, needle) in [
        ("sometimes", "", "", "`dpop`"),
        (
            "allowed",
            "algorithms = [\"HS256\"]",
            "",
            "[dpop]: `algorithms`",
        ),
        (
            "allowed",
            "algorithms = [\"XS256\"]",
            "",
            "[dpop]: `algorithms`",
        ),
        ("allowed", "max_age_seconds = 0", "", "`max_age_seconds`"),
        ("allowed", "nonce = true", "", "`nonce_secret_file`"),
        (
            "allowed",
            "nonce = true\nnonce_secret_file = \"missing\"",
            "",
            "`nonce_secret_file`",
        ),
        ("allowed", &short, "", "at least 32 bytes"),
        ("allowed", "redis_url = \"http://x\"", "", "`redis_url`"),
        ("allowed", "colour = 1", "", "colour"),
        ("allowed", "", "https://a.example/x", "`public_origin`"),
    ] {
        let dir = gateway_dir();
        let mut text = config(upstream.addr, mode, false, dpop);
        if !origin.is_empty() {
            text = format!("public_origin = \"{origin}\"\n{text}");
        }
        let path = dir.write_config(&text);
        let error = gatekeeper::load_config(&path).unwrap_err().to_string();
        assert!(error.contains(needle), "{needle}: {error}");
        assert!(error.contains(&path.display().to_string()), "{error}");
    }
}

#[tokio::test]
async fn explain_reports_the_binding_checks() {
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    let path = dir.write_config(&config(upstream.addr, "allowed", true, ""));
    let config = path.display().to_string();
    let token = fixture_token("bound-es256");
    let args = |list: &[&str]| {
        list.iter()
            .map(std::ffi::OsString::from)
            .collect::<Vec<_>>()
            .into_iter()
    };
    let explain = |list: Vec<std::ffi::OsString>| async move {
        gatekeeper::explain_command(list.into_iter(), std::io::empty()).await
    };

    let proof = ProofKey::client().proof("GET", &htu(), &token);
    let (code, out) = explain(
        args(&[
            "--config",
            &config,
            "--dpop",
            &proof,
            "--method",
            "GET",
            "--url",
            &htu(),
            &token,
        ])
        .collect(),
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("[ok  ] proof"), "{out}");
    assert!(out.contains("[ok  ] binding"), "{out}");
    assert!(out.contains(r#"htm "GET""#), "{out}");
    assert!(!out.contains(&proof), "the proof is echoed");

    // The same proof for another method.
    let (code, out) = explain(
        args(&[
            "--config",
            &config,
            "--dpop",
            &proof,
            "--method",
            "POST",
            "--url",
            &htu(),
            &token,
        ])
        .collect(),
    )
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[FAIL] proof"), "{out}");
    assert!(out.contains("htm does not match"), "{out}");

    // A bound token without its proof.
    let (code, out) = explain(args(&["--config", &config, &token]).collect()).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[FAIL] binding"), "{out}");
    assert!(out.contains("requires a DPoP proof"), "{out}");

    // --dpop alone is a usage error.
    let (code, _) = explain(args(&["--config", &config, "--dpop", &proof, &token]).collect()).await;
    assert_eq!(code, 2);
}
