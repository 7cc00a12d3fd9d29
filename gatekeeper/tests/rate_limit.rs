//! `[[route]] rate_limit` over loopback: a burst then 429 with `Retry-After`, other
//! identities unaffected, refill with time, gRPC status 8, and the `client_ip`, `api_key`
//! and `tenant` keys. Rates are small real rates (1 request per second) with bounds that
//! allow for a slow machine: counts, not timings.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::json;
use tower_gatekeeper::Algorithm;
use tower_gatekeeper::keys::SigningKey;

use support::{
    CI_KEY, NEXT_KEY, Running, Upstream, assert_mentions, fixtures, gateway_dir, key_entry,
};

/// A token of the fixture issuer for `sub`, with `tenant` in `tenant_id`.
fn token_for(sub: &str, tenant: &str) -> String {
    let pem = std::fs::read(fixtures().join("keys/rsa-1.key.pem")).unwrap();
    let key = SigningKey::from_pem(Algorithm::RS256, &pem)
        .unwrap()
        .with_kid("rsa-1");
    key.sign(&json!({
        "iss": "https://idp.example.test", "aud": "api://orders", "sub": sub,
        "tenant_id": tenant, "exp": 4102444800u64,
    }))
    .unwrap()
}

fn config(upstream: SocketAddr) -> String {
    format!(
        r#"
listen = "127.0.0.1:0"

[[issuer]]
issuer = "https://idp.example.test"
audiences = ["api://orders"]
algorithms = ["RS256"]
jwks_file = "keys/jwks.json"
tenant_claim = "tenant_id"

[api_keys]
file = "api_keys.toml"

[[route]]
path = "/subject/{{*rest}}"
upstream = "http://{upstream}"
rate_limit = {{ key = "subject", per_second = 1, burst = 3 }}

[[route]]
path = "/tenant/{{*rest}}"
upstream = "http://{upstream}"
rate_limit = {{ key = "tenant", per_second = 1, burst = 2 }}

[[route]]
path = "/ip/{{*rest}}"
upstream = "http://{upstream}"
auth = "public"
rate_limit = {{ key = "client_ip", per_second = 1, burst = 2 }}

[[route]]
path = "/keys/{{*rest}}"
upstream = "http://{upstream}"
rate_limit = {{ key = "api_key", per_second = 1, burst = 2 }}

[[route]]
path = "/free/{{*rest}}"
upstream = "http://{upstream}"
"#
    )
}

async fn start() -> (Upstream, Running, support::TempDir) {
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    // Two keys with the same subject: `api_key` counts them apart.
    std::fs::write(
        dir.0.join("api_keys.toml"),
        format!(
            "{}{}",
            key_entry(CI_KEY, "ci", ""),
            key_entry(NEXT_KEY, "ci", "")
        ),
    )
    .unwrap();
    let config = gatekeeper::load_config(dir.write_config(&config(upstream.addr)))
        .unwrap_or_else(|e| panic!("{e}"));
    (upstream, Running::start(config).await, dir)
}

fn client() -> reqwest::Client {
    support::client()
}

/// Sends `n` requests as fast as possible; returns the statuses and how long it took.
async fn burst(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> (Vec<u16>, Duration) {
    let started = Instant::now();
    let mut statuses = Vec::with_capacity(n);
    for _ in 0..n {
        let mut request = client.get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        statuses.push(request.send().await.unwrap().status().as_u16());
    }
    (statuses, started.elapsed())
}

/// At most `burst` plus what refilled at 1/s in `elapsed` (and one for rounding) passed.
fn assert_limited(statuses: &[u16], burst: usize, elapsed: Duration) {
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(ok + refused, statuses.len(), "{statuses:?}");
    assert!(ok >= burst, "the burst passes: {statuses:?}");
    let refilled = elapsed.as_secs() as usize + 1;
    assert!(ok <= burst + refilled, "{statuses:?} in {elapsed:?}");
    assert!(refused >= 1, "{statuses:?}");
    // Nothing passes once refused within the same second... unless it refilled.
    assert_eq!(&statuses[..burst], &vec![200; burst][..], "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_then_429_with_retry_after_per_subject_and_refill() {
    let (upstream, gw, _dir) = start().await;
    let client = client();
    let alice = format!("Bearer {}", token_for("alice", "acme"));
    let bob = format!("Bearer {}", token_for("bob", "acme"));
    let url = gw.url("/subject/x");

    let (statuses, elapsed) = burst(&client, &url, &[("authorization", &alice)], 8).await;
    assert_limited(&statuses, 3, elapsed);
    let passed = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(
        upstream.hits(),
        passed,
        "refused requests never reach the upstream"
    );

    let refused = client
        .get(&url)
        .header("authorization", &alice)
        .send()
        .await
        .unwrap();
    if refused.status() == 429 {
        let retry: u64 = support::header(&refused, "retry-after").parse().unwrap();
        assert!(
            (1..=1).contains(&retry),
            "at 1/s, a request is back within 1 s: {retry}"
        );
        let body = support::json_body(refused).await;
        assert_eq!(body["error"], "rate_limited");
    }

    // Another identity is unaffected.
    let (statuses, _) = burst(&client, &url, &[("authorization", &bob)], 3).await;
    assert_eq!(statuses, vec![200; 3]);
    // Another route (without a limit) is unaffected.
    let (statuses, _) = burst(
        &client,
        &gw.url("/free/x"),
        &[("authorization", &alice)],
        10,
    )
    .await;
    assert_eq!(statuses, vec![200; 10]);

    // Refill: after Retry-After, alice passes again.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let again = client
        .get(&url)
        .header("authorization", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);

    // Unauthenticated requests are 401, not counted (authentication comes first).
    let anonymous = client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_callers_get_resource_exhausted() {
    let (_upstream, gw, _dir) = start().await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let carol = format!("Bearer {}", token_for("carol", "acme"));
    let mut codes = Vec::new();
    for _ in 0..8 {
        let response = client
            .post(gw.url("/subject/gatekeeper.demo.Demo/WhoAmI"))
            .header("authorization", &carol)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(vec![0u8, 0, 0, 0, 0])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "gRPC answers are HTTP 200");
        let code = response
            .headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_owned());
        if code.as_deref() == Some("8") {
            assert!(response.headers().contains_key("retry-after"));
            assert_eq!(
                support::header(&response, "content-type"),
                "application/grpc"
            );
        }
        codes.push(code);
    }
    assert!(
        codes.iter().any(|c| c.as_deref() == Some("8")),
        "8 RESOURCE_EXHAUSTED after the burst: {codes:?}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_counts_addresses_apart() {
    let (_upstream, gw, _dir) = start().await;
    let url = gw.url("/ip/x");
    let (statuses, elapsed) = burst(&client(), &url, &[], 6).await;
    assert_limited(&statuses, 2, elapsed);
    // A token does not change the key: the client's address is counted.
    let alice = format!("Bearer {}", token_for("alice", "acme"));
    let again = client()
        .get(&url)
        .header("authorization", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 429);
    // Another loopback address is another client.
    let other = reqwest::Client::builder()
        .no_proxy()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()
        .unwrap();
    let (statuses, _) = burst(&other, &url, &[], 2).await;
    assert_eq!(statuses, vec![200; 2]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_counts_keys_apart_even_for_one_subject() {
    let (_upstream, gw, _dir) = start().await;
    let url = gw.url("/keys/x");
    let (statuses, elapsed) = burst(&client(), &url, &[("x-api-key", CI_KEY)], 6).await;
    assert_limited(&statuses, 2, elapsed);
    // The other key of the same subject has its own budget.
    let (statuses, _) = burst(&client(), &url, &[("x-api-key", NEXT_KEY)], 2).await;
    assert_eq!(statuses, vec![200; 2]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_shares_one_budget_between_its_callers() {
    let (_upstream, gw, _dir) = start().await;
    let url = gw.url("/tenant/x");
    let dave = format!("Bearer {}", token_for("dave", "acme"));
    let erin = format!("Bearer {}", token_for("erin", "acme"));
    let frank = format!("Bearer {}", token_for("frank", "globex"));
    let started = Instant::now();
    let (statuses, _) = burst(&client(), &url, &[("authorization", &dave)], 2).await;
    assert_eq!(statuses, vec![200; 2]);
    // Same tenant, another subject: the tenant's budget is spent (unless a second passed).
    let (statuses, _) = burst(&client(), &url, &[("authorization", &erin)], 3).await;
    let refilled = started.elapsed().as_secs() as usize + 1;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(ok < refilled + 1 && ok < 3, "{statuses:?}");
    let (statuses, _) = burst(&client(), &url, &[("authorization", &frank)], 2).await;
    assert_eq!(statuses, vec![200; 2]);
    gw.stop().await;
}

#[test]
fn rate_limit_errors_name_the_route_and_key() {
    let dir = gateway_dir();
    let head = r#"
[[issuer]]
issuer = "https://idp.example.test"
audiences = ["api://orders"]
jwks_file = "keys/jwks.json"
"#;
    for (limit, auth, expected) in [
        (
            r#"{ key = "subject", per_second = 0 }"#,
            "required",
            &["[[route]] #1", "rate_limit", "per_second"][..],
        ),
        (
            r#"{ key = "subject", per_second = -1 }"#,
            "required",
            &["[[route]] #1", "per_second"][..],
        ),
        (
            r#"{ key = "subject", per_second = 1, burst = 0 }"#,
            "required",
            &["burst"][..],
        ),
        (
            r#"{ key = "subject", per_second = 1, max_keys = 0 }"#,
            "required",
            &["max_keys"][..],
        ),
        (
            r#"{ key = "subject", per_second = 1 }"#,
            "public",
            &["key = \"subject\"", "public", "client_ip"][..],
        ),
        (
            r#"{ key = "api_key", per_second = 1 }"#,
            "required",
            &["api_key", "[api_keys]"][..],
        ),
        (
            r#"{ key = "user", per_second = 1 }"#,
            "required",
            &["user", "subject"][..],
        ),
        (
            r#"{ key = "subject", per_second = 1, brust = 2 }"#,
            "required",
            &["brust"][..],
        ),
    ] {
        let toml = format!(
            "{head}\n[[route]]\npath = \"/a/{{*rest}}\"\nupstream = \"http://127.0.0.1:9\"\nauth = \"{auth}\"\nrate_limit = {limit}\n"
        );
        let path = dir.write_config(&toml);
        let error = gatekeeper::load_config(&path).expect_err(limit).to_string();
        assert_mentions(&error, expected);
        assert_mentions(&error, &["gateway.toml"]);
    }
}
