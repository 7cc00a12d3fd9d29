//! Requests through the gateway over real loopback HTTP, against the echo upstream: the demo
//! as printed, authentication and what reaches the upstream, policies, public and optional
//! routes, routing and path normalisation, tokens in the query, and the route rules.

mod support;

use std::net::SocketAddr;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{
    BOUND, ISSUER, ONE_ISSUER, Running, Upstream, admin_token, assert_mentions, client,
    gateway_dir, header, json_body, setup, token,
};

// ---------------------------------------------------------------------------------------------
// The demo
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_flow_allows_401s_and_403s_as_printed() {
    let demo = gatekeeper::start_demo().await.unwrap();
    assert_eq!(demo.config.listen().to_string(), "127.0.0.1:8080");
    let token = demo.token.clone();
    let upstream = demo.upstream;
    let gw = Running::start(demo.config).await;

    let text = gatekeeper::demo_instructions(gw.addr, upstream, &token);
    let base = format!("http://{}", gw.addr);
    let auth = format!("-H 'Authorization: Bearer {token}'");
    assert!(
        text.contains(&format!("curl -i {auth} {base}/orders/42")),
        "{text}"
    );
    assert!(
        text.contains(&format!("curl -i {base}/orders/42")),
        "{text}"
    );
    assert!(
        text.contains(&format!("curl -i {auth} {base}/admin/users")),
        "{text}"
    );

    let http = client();
    let allowed = http
        .get(gw.url("/orders/42"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
    let echo = json_body(allowed).await;
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/orders/42");
    assert_eq!(echo["headers"]["x-user-id"], "demo-user");
    assert_eq!(echo["headers"]["x-user-roles"], "clerk");
    assert_eq!(echo["headers"]["x-user-scopes"], "orders:read");
    assert_eq!(echo["headers"]["x-tenant-id"], "demo");
    assert!(echo["headers"].get("authorization").is_none());

    let anonymous = http.get(gw.url("/orders/42")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&anonymous, "www-authenticate"),
        r#"Bearer realm="gatekeeper-demo""#
    );

    let forbidden = http
        .get(gw.url("/admin/users"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);

    let public = http.get(gw.url("/public/hello")).send().await.unwrap();
    assert_eq!(public.status(), StatusCode::OK);
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Authentication and propagation
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_tokens_of_both_issuers_reach_the_upstream_as_context() {
    let (upstream, gw, _dir) = setup().await;
    let http = client();
    for name in ["rs256_valid", "es256_valid", "eddsa_valid", "hs256_valid"] {
        let response = http
            .get(gw.url("/orders/42?expand=items&x=%2F"))
            .bearer_auth(token(name))
            .header("x-forwarded-for", "203.0.113.9")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{name}");
        let echo = json_body(response).await;
        let headers = &echo["headers"];
        assert_eq!(echo["path"], "/orders/42?expand=items&x=%2F", "{name}");
        assert_eq!(echo["version"], "HTTP/1.1");
        assert_eq!(headers["x-user-id"], "user-123", "{name}");
        assert_eq!(headers["x-user-roles"], "clerk", "{name}");
        assert_eq!(
            headers["x-user-scopes"], "orders:read orders:write",
            "{name}"
        );
        assert_eq!(headers["x-tenant-id"], "acme", "{name}");
        assert!(headers.get("authorization").is_none(), "{name}: {echo}");
        assert!(
            headers["x-request-id"]
                .as_str()
                .is_some_and(|id| !id.is_empty())
        );
        assert_eq!(headers["host"], upstream.addr.to_string());
        assert_eq!(headers["x-forwarded-host"], gw.addr.to_string());
        assert_eq!(headers["x-forwarded-proto"], "http");
        // The client's own X-Forwarded-For is not trusted (no `trusted_proxies`): replaced.
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    }
    assert_eq!(upstream.hits(), 4);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_missing_tokens_get_401_and_never_reach_the_upstream() {
    let (upstream, gw, _dir) = setup().await;
    let http = client();

    let response = http.get(gw.url("/orders/1")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&response, "www-authenticate"),
        r#"Bearer realm="gatekeeper-test""#
    );
    assert_eq!(header(&response, "content-type"), "application/json");
    assert_eq!(json_body(response).await["error"], "missing_credential");

    for (name, description) in [
        ("expired", "token expired"),
        ("alg_none_lower", "unsupported algorithm"),
        ("wrong_aud", "invalid audience"),
        ("tampered_payload", "invalid signature"),
    ] {
        let response = http
            .get(gw.url("/orders/1"))
            .bearer_auth(token(name))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{name}");
        let challenge = header(&response, "www-authenticate");
        assert!(
            challenge.starts_with(r#"Bearer realm="gatekeeper-test", error="invalid_token""#),
            "{name}: {challenge}"
        );
        assert!(challenge.contains(description), "{name}: {challenge}");
        let body = json_body(response).await;
        assert_eq!(body["error"], "invalid_token", "{name}");
    }

    // Two Authorization headers: 400.
    let response = http
        .get(gw.url("/orders/1"))
        .header("authorization", format!("Bearer {}", token("rs256_valid")))
        .header("authorization", "Bearer other")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    assert_eq!(upstream.hits(), 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_deny_with_403() {
    let (upstream, gw, _dir) = setup().await;
    let http = client();

    let response = http
        .get(gw.url("/admin/users"))
        .bearer_auth(token("rs256_valid"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let challenge = header(&response, "www-authenticate");
    assert!(
        challenge.contains(r#"error="insufficient_scope""#),
        "{challenge}"
    );
    assert!(
        !challenge.contains("scope=\"admin"),
        "roles are not scopes: {challenge}"
    );

    let response = http
        .get(gw.url("/reports/monthly"))
        .bearer_auth(token("es256_valid"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let challenge = header(&response, "www-authenticate");
    assert!(
        challenge.ends_with(r#"scope="orders:admin""#),
        "{challenge}"
    );
    assert_eq!(json_body(response).await["error"], "insufficient_scope");
    assert_eq!(upstream.hits(), 0);

    // An admin passes.
    let response = http
        .get(gw.url("/admin/users"))
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_body(response).await["headers"]["x-user-id"], "admin-1");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_routes_need_no_token_and_strip_spoofed_identity() {
    let (upstream, gw, _dir) = setup().await;
    let response = client()
        .get(gw.url("/public/status"))
        .header("x-user-id", "admin")
        .header("X_User_Id", "admin")
        .header("x-user-roles", "admin")
        .header("x-tenant-id", "other")
        .header("authorization", "Bearer not-even-a-jwt")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echo = json_body(response).await;
    let headers = echo["headers"].as_object().unwrap();
    for name in [
        "x-user-id",
        "x_user_id",
        "x-user-roles",
        "x-tenant-id",
        "authorization",
    ] {
        assert!(
            !headers.contains_key(name),
            "{name} reached the upstream: {echo}"
        );
    }
    assert_eq!(upstream.hits(), 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_routes_pass_without_a_token_but_reject_bad_ones() {
    let (upstream, gw, _dir) = setup().await;
    let http = client();

    let response = http
        .get(gw.url("/maybe/x"))
        .header("x-user-id", "spoofed")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        json_body(response).await["headers"]
            .get("x-user-id")
            .is_none()
    );

    let response = http
        .get(gw.url("/maybe/x"))
        .bearer_auth(token("hs256_valid"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        json_body(response).await["headers"]["x-user-id"],
        "user-123"
    );

    let response = http
        .get(gw.url("/maybe/x"))
        .bearer_auth(token("expired"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(upstream.hits(), 2);
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_paths_and_methods_get_404_without_touching_the_upstream() {
    let (upstream, gw, _dir) = setup().await;
    let http = client();
    let valid = token("rs256_valid");
    for (method, path) in [("GET", "/nowhere"), ("GET", "/"), ("GET", "/items/7/extra")] {
        let response = http
            .request(method.parse().unwrap(), gw.url(path))
            .bearer_auth(&valid)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(header(&response, "content-type"), "application/json");
        assert_eq!(json_body(response).await["error"], "not_found");
    }
    // A known path with a method its routes do not take: 405 with Allow, never a broader
    // route (HEAD goes wherever GET goes).
    for (method, path, allow) in [
        ("DELETE", "/orders/1", "GET, HEAD, POST"),
        ("PUT", "/items/7", "GET, HEAD, DELETE"),
    ] {
        let response = http
            .request(method.parse().unwrap(), gw.url(path))
            .bearer_auth(&valid)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(header(&response, "allow"), allow, "{method} {path}");
        assert_eq!(header(&response, "content-type"), "application/json");
    }
    assert_eq!(upstream.hits(), 0);
    // `/orders/{*rest}` covers `/orders` and `/orders/` with its own policy.
    for path in ["/orders", "/orders/"] {
        let anonymous = http.get(gw.url(path)).send().await.unwrap();
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED, "{path}");
        let clerk = http
            .get(gw.url(path))
            .bearer_auth(&valid)
            .send()
            .await
            .unwrap();
        assert_eq!(clerk.status(), StatusCode::OK, "{path}");
    }
    assert_eq!(upstream.hits(), 2);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_sharing_a_path_are_told_apart_by_method() {
    let (upstream, gw, _dir) = setup().await;
    let http = client();
    let get = http.get(gw.url("/items/7")).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(json_body(get).await["method"], "GET");

    let delete = http.delete(gw.url("/items/7")).send().await.unwrap();
    assert_eq!(delete.status(), StatusCode::UNAUTHORIZED);
    let delete = http
        .delete(gw.url("/items/7"))
        .bearer_auth(token("rs256_valid"))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::FORBIDDEN);
    let delete = http
        .delete(gw.url("/items/7"))
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::OK);
    assert_eq!(json_body(delete).await["method"], "DELETE");
    assert_eq!(upstream.hits(), 2);
    gw.stop().await;
}

/// Sends a raw HTTP/1.1 request (clients would normalise these paths) and returns the status
/// line.
async fn raw_request(addr: SocketAddr, target: &str, token: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(BOUND, stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&response);
    text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_normalised_before_routing() {
    let (upstream, gw, _dir) = setup().await;
    let clerk = token("rs256_valid");
    // Dot segments would let the upstream resolve a path under another route.
    for target in [
        "/orders/../admin/x",
        "/orders/%2e%2E/admin/x",
        "/orders/./1",
        "/orders/%+1",
        "/orders/%zz",
    ] {
        let status = raw_request(gw.addr, target, &clerk).await;
        assert!(status.starts_with("HTTP/1.1 400"), "{target}: {status}");
    }
    // Escaped unreserved characters are decoded before matching: this is /admin/x.
    let status = raw_request(gw.addr, "/%61dmin/x", &clerk).await;
    assert!(status.starts_with("HTTP/1.1 403"), "{status}");
    assert_eq!(upstream.hits(), 0);
    // ... and forwarded decoded.
    let response = client()
        .get(gw.url("/orders/%7Euser/%41?q=%61"))
        .bearer_auth(&clerk)
        .send()
        .await
        .unwrap();
    assert_eq!(json_body(response).await["path"], "/orders/~user/A?q=%61");
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Tokens in the query
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_tokens_only_where_configured_and_never_upstream() {
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    let toml = format!(
        r#"{ONE_ISSUER}
[[route]]
path = "/files/{{*rest}}"
upstream = "http://{up}"
query_token = "access_token"
roles_any = ["clerk"]

[[route]]
path = "/orders/{{*rest}}"
upstream = "http://{up}"
"#,
        up = upstream.addr
    );
    let config = gatekeeper::load_config(dir.write_config(&toml)).unwrap_or_else(|e| panic!("{e}"));
    let gw = Running::start(config).await;
    let good = token("rs256_valid");

    let response = client()
        .get(gw.url(&format!("/files/1?size=2&access_token={good}&z")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "cache-control"), "private");
    let echo = json_body(response).await;
    assert_eq!(echo["path"], "/files/1?size=2&z");
    assert_eq!(echo["headers"]["x-user-id"], "user-123");
    assert!(echo["headers"].get("authorization").is_none(), "{echo}");

    // Both methods at once, or twice in the query: 400 (RFC 6750 §3.1).
    for request in [
        client()
            .get(gw.url(&format!("/files/1?access_token={good}")))
            .bearer_auth(&good),
        client().get(gw.url(&format!("/files/1?access_token={good}&access_token={good}"))),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(header(&response, "www-authenticate").contains(r#"error="invalid_request""#));
    }
    // A bad token in the query is 401 like one in the header; the header still works.
    let response = client()
        .get(gw.url(&format!("/files/1?access_token={}", token("expired"))))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&response, "www-authenticate").contains(r#"error="invalid_token""#));
    let response = client()
        .get(gw.url("/files/1"))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("cache-control").is_none());

    // Where not configured, a query token is no credential at all.
    let hits = upstream.hits();
    let response = client()
        .get(gw.url(&format!("/orders/1?access_token={good}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&response, "www-authenticate"),
        r#"Bearer realm="api""#
    );
    assert_eq!(upstream.hits(), hits);

    for (key, needle) in [
        (r#"query_token = """#, "is not a query parameter name"),
        (r#"query_token = "a=b""#, "is not a query parameter name"),
    ] {
        let bad = toml.replace(r#"query_token = "access_token""#, key);
        let error = gatekeeper::load_config(dir.write_config(&bad))
            .unwrap_err()
            .to_string();
        assert_mentions(&error, &["query_token", needle]);
    }
    let bad = toml.replace(
        r#"query_token = "access_token"
roles_any = ["clerk"]"#,
        r#"query_token = "access_token"
auth = "public""#,
    );
    let error = gatekeeper::load_config(dir.write_config(&bad))
        .unwrap_err()
        .to_string();
    assert_mentions(&error, &["query_token", "public"]);
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Route rules: roles_all, scopes_any, claims, owner/tenant params, Rego
// ---------------------------------------------------------------------------------------------

fn rules_toml(upstream: SocketAddr) -> String {
    let mut toml = format!(
        r#"{ISSUER}
[[route]]
path = "/users/{{user_id}}"
upstream = "http://{upstream}"
owner_param = "user_id"
bypass_roles = ["admin"]

[[route]]
path = "/users/me"
methods = ["GET"]
upstream = "http://{upstream}"
roles_all = ["clerk"]

[[route]]
path = "/tenants/{{tenant}}/{{*rest}}"
upstream = "http://{upstream}"
tenant_param = "tenant"

[[route]]
path = "/scoped/{{*rest}}"
upstream = "http://{upstream}"
scopes_any = ["orders:admin", "orders:audit"]

[[route]]
path = "/claims/{{*rest}}"
upstream = "http://{upstream}"
claims = [{{ path = "tenant_id", equals = "acme" }}, {{ path = "roles", contains = "clerk" }}]
"#
    );
    if cfg!(feature = "rego") {
        toml.push_str(&format!(
            r#"
[[route]]
path = "/rego/{{*rest}}"
upstream = "http://{upstream}"
rego = {{ policy = "subjects.rego", data = "subjects.json" }}

[[route]]
path = "/rego-admin/{{*rest}}"
upstream = "http://{upstream}"
rego = {{ policy = "admins.rego" }}
"#
        ));
    }
    toml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_rules_allow_and_deny_over_http() {
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    std::fs::write(
        dir.0.join("subjects.rego"),
        "package subjects\ndefault allow := false\nallow if input.caller.subject in data.allowed\n",
    )
    .unwrap();
    std::fs::write(dir.0.join("subjects.json"), r#"{"allowed": ["user-123"]}"#).unwrap();
    std::fs::write(
        dir.0.join("admins.rego"),
        "package admins\nallow if \"admin\" in input.caller.roles\n",
    )
    .unwrap();
    let path = dir.write_config(&rules_toml(upstream.addr));
    let config = gatekeeper::load_config(&path).unwrap_or_else(|e| panic!("{e}"));
    let gw = Running::start(config).await;
    let http = client();
    let clerk = token("rs256_valid"); // sub user-123, roles [clerk], tenant acme
    let admin = admin_token(); // sub admin-1, roles [admin], no tenant

    let mut allowed = 0;
    for (method, path, who, status) in [
        // owner_param with bypass_roles
        ("GET", "/users/user-123", &clerk, 200),
        ("GET", "/users/someone", &clerk, 403),
        ("GET", "/users/someone", &admin, 200),
        // the static route is more specific than the parameter route ...
        ("GET", "/users/me", &clerk, 200),
        ("GET", "/users/me", &admin, 403),
        // tenant_param
        ("GET", "/tenants/acme/orders", &clerk, 200),
        ("GET", "/tenants/other/orders", &clerk, 403),
        ("GET", "/tenants/acme/orders", &admin, 403),
        // claims
        ("GET", "/claims/x", &clerk, 200),
        ("GET", "/claims/x", &admin, 403),
        // Rego with data, and without
        ("GET", "/rego/x", &clerk, 200),
        ("GET", "/rego/x", &admin, 403),
        ("GET", "/rego-admin/x", &admin, 200),
        ("GET", "/rego-admin/x", &clerk, 403),
    ] {
        if path.starts_with("/rego") && !cfg!(feature = "rego") {
            continue;
        }
        let response = http
            .request(method.parse().unwrap(), gw.url(path))
            .bearer_auth(who)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        if status == 200 {
            allowed += 1;
            let echo = json_body(response).await;
            assert_eq!(echo["path"], path);
        } else {
            assert_eq!(json_body(response).await["error"], "insufficient_scope");
        }
    }
    assert_eq!(upstream.hits(), allowed);

    // The static route is GET-only: DELETE /users/me is 405, never handed to the parameter
    // route with user_id = "me".
    let response = http
        .delete(gw.url("/users/me"))
        .bearer_auth(&clerk)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&response, "allow"), "GET, HEAD");

    // Without a token: 401, not 403.
    let response = http.get(gw.url("/users/user-123")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // scopes_any names every acceptable scope in the challenge.
    let response = http
        .get(gw.url("/scoped/x"))
        .bearer_auth(&clerk)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let challenge = header(&response, "www-authenticate");
    assert!(
        challenge.ends_with(r#"scope="orders:admin orders:audit""#),
        "{challenge}"
    );
    assert_eq!(upstream.hits(), allowed);
    gw.stop().await;
}
