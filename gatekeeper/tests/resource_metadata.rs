//! `[resource_metadata]` over loopback: the RFC 9728 document at
//! `/.well-known/oauth-protected-resource` and its path-suffixed forms (§3.1), served before
//! routing and authentication, and `resource_metadata="…"` in every 401 challenge (missing
//! and invalid credentials alike), plus the configuration checks.

mod support;

use std::net::SocketAddr;

use support::{
    ONE_ISSUER, Running, Upstream, admin_token, assert_mentions, gateway_dir, header, token,
};

fn routes(upstream: SocketAddr) -> String {
    format!(
        r#"
[[route]]
path = "/orders/{{*rest}}"
methods = ["GET"]
upstream = "http://{upstream}"

[[route]]
path = "/mcp"
upstream = "http://{upstream}"
"#
    )
}

async fn start(metadata: &str) -> (Upstream, Running, support::TempDir) {
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    let toml = format!("{ONE_ISSUER}{}{metadata}", routes(upstream.addr));
    let config = gatekeeper::load_config(dir.write_config(&toml)).unwrap_or_else(|e| panic!("{e}"));
    (upstream, Running::start(config).await, dir)
}

const ORIGIN_ONLY: &str = r#"
[resource_metadata]
resource = "https://api.example.test"
scopes_supported = ["orders:read", "orders:write"]
bearer_methods_supported = ["header"]
resource_name = "Orders API"
resource_documentation = "https://docs.example.test/orders"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_and_its_path_suffixed_forms() {
    let (upstream, gw, _dir) = start(ORIGIN_ONLY).await;
    let client = support::client();
    let response = client
        .get(gw.url("/.well-known/oauth-protected-resource"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), "application/json");
    let document = support::json_body(response).await;
    assert_eq!(
        document,
        serde_json::json!({
            "resource": "https://api.example.test",
            // The [[issuer]] is the authorization server by default.
            "authorization_servers": ["https://idp.example.test"],
            "scopes_supported": ["orders:read", "orders:write"],
            "bearer_methods_supported": ["header"],
            "resource_name": "Orders API",
            "resource_documentation": "https://docs.example.test/orders",
        })
    );
    // §3.1: the resource at a path has its document at the path-suffixed URL, naming it.
    for (path, resource) in [
        ("/mcp", "https://api.example.test/mcp"),
        ("/orders/42", "https://api.example.test/orders/42"),
    ] {
        let response = client
            .get(gw.url(&format!("/.well-known/oauth-protected-resource{path}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let document = support::json_body(response).await;
        assert_eq!(document["resource"], resource);
        assert_eq!(
            document["authorization_servers"][0],
            "https://idp.example.test"
        );
    }
    // No document for paths no route serves, and the document is read, not written.
    let response = client
        .get(gw.url("/.well-known/oauth-protected-resource/nowhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let response = client
        .post(gw.url("/.well-known/oauth-protected-resource"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(header(&response, "allow"), "GET, HEAD");
    assert_eq!(
        upstream.hits(),
        0,
        "the document never comes from the upstream"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_with_a_path_is_described_at_its_suffixed_url() {
    let (_upstream, gw, _dir) = start(
        r#"
[resource_metadata]
resource = "https://api.example.test/mcp"
authorization_servers = ["https://login.example.test/tenant-1/v2.0"]
"#,
    )
    .await;
    let client = support::client();
    let response = client
        .get(gw.url("/.well-known/oauth-protected-resource/mcp"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let document = support::json_body(response).await;
    assert_eq!(document["resource"], "https://api.example.test/mcp");
    assert_eq!(
        document["authorization_servers"],
        serde_json::json!(["https://login.example.test/tenant-1/v2.0"])
    );
    // The bare URL would describe https://api.example.test, which is not this resource.
    let response = client
        .get(gw.url("/.well-known/oauth-protected-resource"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    // Challenges point to the suffixed URL.
    let response = client.get(gw.url("/mcp")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        header(&response, "www-authenticate"),
        r#"Bearer realm="api", resource_metadata="https://api.example.test/.well-known/oauth-protected-resource/mcp""#
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_401_challenge_carries_resource_metadata() {
    let (_upstream, gw, _dir) = start(ORIGIN_ONLY).await;
    let client = support::client();
    const PARAM: &str =
        r#"resource_metadata="https://api.example.test/.well-known/oauth-protected-resource""#;
    // Missing credential.
    let response = client.get(gw.url("/orders/1")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        header(&response, "www-authenticate"),
        format!(r#"Bearer realm="api", {PARAM}"#)
    );
    // Invalid credentials: garbage, a bad signature, a forged algorithm.
    for bad in [
        "not-a-jwt".to_owned(),
        token("tampered_payload"),
        token("alg_none_lower"),
    ] {
        let response = client
            .get(gw.url("/orders/1"))
            .bearer_auth(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        let challenge = header(&response, "www-authenticate");
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{challenge}"
        );
        assert!(challenge.ends_with(PARAM), "{challenge}");
    }
    // Accepted requests are unchanged.
    let response = client
        .get(gw.url("/orders/1"))
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("www-authenticate").is_none());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_resource_metadata_nothing_changes() {
    let (_upstream, gw, _dir) = start("").await;
    let client = support::client();
    let response = client
        .get(gw.url("/.well-known/oauth-protected-resource"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let response = client.get(gw.url("/orders/1")).send().await.unwrap();
    assert_eq!(
        header(&response, "www-authenticate"),
        r#"Bearer realm="api""#
    );
    gw.stop().await;
}

#[test]
fn resource_metadata_errors_name_the_key() {
    let dir = gateway_dir();
    for (section, expected) in [
        (
            r#"resource = "api.example.test""#,
            &["[resource_metadata]", "resource", "absolute https URL"][..],
        ),
        (
            r#"resource = "http://api.example.test""#,
            &["resource", "https"][..],
        ),
        (
            r#"resource = "https://api.example.test/#frag""#,
            &["resource", "fragment"][..],
        ),
        (
            r#"resource = "https://api.example.test/?a=b""#,
            &["resource", "query"][..],
        ),
        (
            "resource = \"https://api.example.test\"\nauthorization_servers = [\"idp\"]",
            &["authorization_servers", "\"idp\""][..],
        ),
        (
            "resource = \"https://api.example.test\"\nbearer_methods_supported = [\"cookie\"]",
            &["bearer_methods_supported", "cookie"][..],
        ),
        (
            "resource = \"https://api.example.test\"\nscopes_supported = [\"a b\"]",
            &["scopes_supported", "a b"][..],
        ),
        (
            "resource = \"https://api.example.test\"\nresource_documentation = \"docs\"",
            &["resource_documentation"][..],
        ),
        (
            "resource = \"https://api.example.test\"\nresource_nmae = \"x\"",
            &["resource_nmae"][..],
        ),
        ("scopes_supported = []", &["resource"][..]),
    ] {
        let toml = format!(
            "{ONE_ISSUER}\n[[route]]\npath = \"/a\"\nupstream = \"http://127.0.0.1:9\"\n\n[resource_metadata]\n{section}\n"
        );
        let error = gatekeeper::load_config(dir.write_config(&toml))
            .expect_err(section)
            .to_string();
        assert_mentions(&error, expected);
        assert_mentions(&error, &["gateway.toml"]);
    }
}
