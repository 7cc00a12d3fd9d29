//! Configuration mistakes: every one is rejected at load with a message that names the file,
//! the section and the key; the example configuration loads.

mod support;

use std::path::Path;

use support::{CI_KEY, ISSUER, ROUTE, assert_mentions, gateway_dir, key_entry};

/// Loads `toml` from a fresh temp dir and returns the error message, which must name the file.
fn config_error(toml: &str) -> String {
    let dir = gateway_dir();
    let path = dir.write_config(toml);
    let error = gatekeeper::load_config(&path)
        .map(|_| ())
        .expect_err("the config is rejected")
        .to_string();
    assert!(
        error.contains(&path.display().to_string()),
        "the message names the file: {error}"
    );
    error
}

#[test]
fn example_config_file_loads() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.example.toml"));
    let config = gatekeeper::load_config(path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.listen().to_string(), "127.0.0.1:8080");
}

#[test]
fn unknown_keys_are_named() {
    let error = config_error(&format!("bogus_key = 1\n{ISSUER}{ROUTE}"));
    assert_mentions(&error, &["bogus_key", "unknown field"]);

    let error = config_error(&format!("{ISSUER}jwks_uri = \"http://x\"\n{ROUTE}"));
    assert_mentions(&error, &["jwks_uri", "unknown field"]);

    let error = config_error(&format!("{ISSUER}{ROUTE}timeout = 3\n"));
    assert_mentions(&error, &["`timeout`", "unknown field"]);

    // `pem_file` is not part of the contract.
    let error = config_error(&format!("{ISSUER}pem_file = \"k.pem\"\n{ROUTE}"));
    assert_mentions(&error, &["pem_file"]);
}

#[test]
fn issuer_key_sources_are_checked() {
    let error = config_error(&format!(
        "{ISSUER}hmac_secret_file = \"keys/hmac.secret\"\n{ROUTE}"
    ));
    assert_mentions(
        &error,
        &[
            "https://idp.example.test",
            "jwks_file",
            "hmac_secret_file",
            "exactly one",
        ],
    );

    let none = r#"
[[issuer]]
issuer = "https://idp.example.test"
audiences = ["api://orders"]
"#;
    let error = config_error(&format!("{none}{ROUTE}"));
    assert_mentions(&error, &["https://idp.example.test", "exactly one of"]);

    for key in ["jwks_url", "discovery_url"] {
        // Remote sources are checked when loading; keys are fetched later (tests/credentials.rs).
        let remote = format!(
            "[[issuer]]\nissuer = \"https://idp.example.test\"\naudiences = [\"api://orders\"]\n{key} = \"ftp://127.0.0.1:9000/jwks\"\n"
        );
        let error = config_error(&format!("{remote}{ROUTE}"));
        if cfg!(feature = "remote") {
            assert_mentions(&error, &[key, "ftp", "https://idp.example.test"]);
        } else {
            assert_mentions(&error, &[key, "needs the `remote` feature"]);
        }
    }

    let missing = ISSUER.replace("keys/jwks.json", "keys/nope.json");
    let error = config_error(&format!("{missing}{ROUTE}"));
    assert_mentions(
        &error,
        &["jwks_file", "nope.json", "https://idp.example.test"],
    );
}

#[test]
fn issuer_values_are_checked() {
    for bad in ["rs256", "none", "HS257"] {
        let error = config_error(&format!(
            "{ISSUER}algorithms = [\"RS256\", \"{bad}\"]\n{ROUTE}"
        ));
        assert_mentions(
            &error,
            &[
                "algorithms",
                &format!("{bad:?}"),
                "https://idp.example.test",
            ],
        );
    }
    // Allowed, but no key can verify it.
    let error = config_error(&format!("{ISSUER}algorithms = [\"HS256\"]\n{ROUTE}"));
    assert_mentions(&error, &["[[issuer]] #1", "HS256"]);

    let error = config_error(&format!("{ISSUER}{ISSUER}{ROUTE}"));
    assert_mentions(&error, &["[[issuer]] #2", "twice"]);

    let error = config_error(&format!(
        "{}{ROUTE}",
        ISSUER.replace("audiences = [\"api://orders\"]", "audiences = []")
    ));
    assert_mentions(&error, &["audiences"]);

    let error = config_error(&format!(
        "{}{ROUTE}",
        ISSUER.replace("audiences = [\"api://orders\"]\n", "")
    ));
    assert_mentions(&error, &["missing field `audiences`"]);
}

#[test]
fn routes_are_checked() {
    let route = |extra: &str| format!("{ISSUER}{ROUTE}{extra}\n");

    let error = config_error(&format!(
        "{ISSUER}[[route]]\npath = \"/orders/{{*rest}}/x\"\nupstream = \"http://127.0.0.1:9001\"\n"
    ));
    assert_mentions(
        &error,
        &["[[route]] #1", "/orders/{*rest}/x", "invalid path pattern"],
    );

    let error = config_error(&format!(
        "{ISSUER}[[route]]\npath = \"orders\"\nupstream = \"http://127.0.0.1:9001\"\n"
    ));
    assert_mentions(&error, &["[[route]] #1", "`path`"]);

    let error = config_error(&route("methods = [\"get\"]"));
    assert_mentions(&error, &["[[route]] #1", "methods", "\"get\""]);

    let error = config_error(&route("auth = \"sometimes\""));
    assert_mentions(&error, &["sometimes", "required", "optional", "public"]);

    let error = config_error(&format!(
        "{ISSUER}[[route]]\npath = \"/x\"\nupstream = \"ftp://127.0.0.1:9001\"\n"
    ));
    assert_mentions(
        &error,
        &[
            "[[route]] #1",
            "`upstream`",
            "http://host:port or https://host:port",
        ],
    );

    let error = config_error(&format!(
        "{ISSUER}[[route]]\npath = \"/x\"\nupstream = \"http://127.0.0.1:9001/prefix\"\n"
    ));
    assert_mentions(&error, &["`upstream`", "path"]);

    let error = config_error(&format!("{ISSUER}[[route]]\npath = \"/x\"\n"));
    assert_mentions(&error, &["missing field `upstream`"]);

    let error = config_error(&route("auth = \"public\"\nroles_any = [\"clerk\"]"));
    assert_mentions(&error, &["[[route]] #1", "roles_any", "public"]);

    let error = config_error(&route("roles_any = []"));
    assert_mentions(&error, &["[[route]] #1", "roles_any"]);

    let error = config_error(ROUTE);
    assert_mentions(&error, &["[[route]] #1", "[[issuer]]"]);

    let error = config_error(ISSUER);
    assert_mentions(&error, &["no [[route]]"]);

    let error = config_error(&format!("listen = \"localhost:80\"\n{ISSUER}{ROUTE}"));
    assert_mentions(&error, &["`listen`", "localhost:80"]);

    let error = config_error(&format!("upstream_timeout_seconds = 0\n{ISSUER}{ROUTE}"));
    assert_mentions(&error, &["upstream_timeout_seconds"]);
}

#[test]
fn conflicting_routes_are_named() {
    let two = |a: &str, b: &str| {
        format!(
            "{ISSUER}[[route]]\npath = \"/a/{{id}}\"\nupstream = \"http://127.0.0.1:9001\"\n{a}\n\
             [[route]]\npath = \"{b}\"\nupstream = \"http://127.0.0.1:9002\"\n"
        )
    };
    let error = config_error(&two("", "/a/{name}"));
    assert_mentions(
        &error,
        &[
            "[[route]] #2 (path \"/a/{name}\")",
            "[[route]] #1 (path \"/a/{id}\")",
            "conflict",
        ],
    );

    // Same pattern: the methods must not overlap.
    let error = config_error(&two("methods = [\"GET\", \"PUT\"]", "/a/{id}"));
    assert_mentions(&error, &["[[route]] #2", "[[route]] #1", "GET, PUT"]);
    let dir = gateway_dir();
    let ok = two("methods = [\"GET\"]", "/a/{id}").replace(
        "upstream = \"http://127.0.0.1:9002\"",
        "upstream = \"http://127.0.0.1:9002\"\nmethods = [\"POST\"]",
    );
    gatekeeper::load_config(dir.write_config(&ok)).unwrap();
}

#[test]
fn a_missing_config_file_is_named() {
    let dir = gateway_dir();
    let path = dir.0.join("absent.toml");
    let error = gatekeeper::load_config(&path).unwrap_err().to_string();
    assert_mentions(&error, &[&path.display().to_string(), "cannot read"]);
}

#[test]
fn rule_keys_are_checked() {
    let route = |extra: &str| format!("{ISSUER}{ROUTE}{extra}\n");

    let error = config_error(&route("claims = [{ path = \"a\", equal = 1 }]"));
    assert_mentions(&error, &["equal", "unknown field"]);

    let error = config_error(&route(
        "claims = [{ path = \"a\", equals = 1, one_of = [1] }]",
    ));
    assert_mentions(&error, &["[[route]] #1", "claims", "exactly one"]);

    let error = config_error(&route("scopes_any = []"));
    assert_mentions(&error, &["[[route]] #1", "scopes_any"]);

    let error = config_error(&route("bypass_roles = [\"admin\"]"));
    assert_mentions(&error, &["[[route]] #1", "bypass_roles", "owner_param"]);

    let error = config_error(&route("auth = \"public\"\nowner_param = \"id\""));
    assert_mentions(&error, &["[[route]] #1", "owner_param", "public"]);

    let error = config_error(&route("rego = { policy = \"p.rego\", rules = \"x\" }"));
    assert_mentions(&error, &["rules", "unknown field"]);

    if cfg!(feature = "rego") {
        let error = config_error(&route("rego = { policy = \"absent.rego\" }"));
        assert_mentions(&error, &["[[route]] #1", "rego", "absent.rego"]);

        let dir = gateway_dir();
        std::fs::write(dir.0.join("bad.rego"), "package bad\nallow if {\n").unwrap();
        let path = dir.write_config(&format!(
            "rego = {{ policy = \"bad.rego\" }}\n{ISSUER}{ROUTE}"
        ));
        let error = gatekeeper::load_config(&path).unwrap_err().to_string();
        assert_mentions(&error, &["[[route]] #1", "bad.rego", "does not compile"]);
    } else {
        let error = config_error(&route("rego = { policy = \"p.rego\" }"));
        assert_mentions(&error, &["[[route]] #1", "`rego` feature"]);
    }
}

#[test]
fn credential_sections_are_checked() {
    let error = config_error(&format!("{ISSUER}{ROUTE}[revocation]\nredis = \"x\"\n"));
    assert_mentions(&error, &["redis", "unknown field"]);
    let error = config_error(&format!(
        "{ISSUER}{ROUTE}[revocation]\nfail_mode = \"closed\"\n"
    ));
    assert_mentions(&error, &["[revocation]", "fail_mode", "redis_url"]);
    if !cfg!(feature = "redis") {
        let error = config_error(&format!(
            "{ISSUER}{ROUTE}[revocation]\nredis_url = \"redis://127.0.0.1:1/\"\n"
        ));
        assert_mentions(&error, &["redis_url", "`redis` feature"]);
    }
    let error = config_error(&format!(
        "{ISSUER}{ROUTE}[introspection]\nendpoint = \"http://127.0.0.1:1/i\"\nclient_id = \"gw\"\n"
    ));
    if cfg!(feature = "introspection") {
        assert_mentions(&error, &["[introspection]", "client_secret"]);
    } else {
        assert_mentions(&error, &["[introspection]", "`introspection` feature"]);
    }

    // The keys file: unknown keys name the key and the keys file.
    let dir = gateway_dir();
    let keys = dir.0.join("api_keys.toml");
    std::fs::write(
        &keys,
        format!("{}expires = 1\n", key_entry(CI_KEY, "x", "")),
    )
    .unwrap();
    let path = dir.write_config(&format!(
        "{ISSUER}{ROUTE}[api_keys]\nfile = \"api_keys.toml\"\n"
    ));
    let error = gatekeeper::load_config(&path)
        .map(|_| ())
        .expect_err("rejected")
        .to_string();
    assert_mentions(
        &error,
        &["[api_keys]", "expires", &keys.display().to_string()],
    );
    let error = config_error(&format!(
        "{ISSUER}{ROUTE}[api_keys]\nfile = \"missing.toml\"\n"
    ));
    assert_mentions(&error, &["[api_keys]", "missing.toml"]);
}

/// A route and no issuer: enough for configurations whose only credential is introspection.
#[cfg(feature = "introspection")]
const ROUTE_ONLY: &str = r#"
[[route]]
path = "/orders/{*rest}"
upstream = "http://127.0.0.1:9"
"#;

#[cfg(feature = "introspection")]
#[test]
fn gateway_redis_keys_of_the_introspection_section_are_checked() {
    let section = "[introspection]\nendpoint = \"http://127.0.0.1:9/i\"\nauth_method = \"none\"\nany_audience = true\n";
    let error = config_error(&format!(
        "{ROUTE_ONLY}{section}redis_prefix = \"gw:introspection:\"\n"
    ));
    assert!(
        error.contains("[introspection]")
            && error.contains("redis_prefix")
            && error.contains("redis_url"),
        "{error}"
    );
    let error = config_error(&format!(
        "{ROUTE_ONLY}{section}redis_url = \"redis://127.0.0.1:9/\"\nredis_prefix = \"\"\n"
    ));
    if cfg!(feature = "redis") {
        assert!(
            error.contains("[introspection]") && error.contains("`redis_prefix` must not be empty"),
            "{error}"
        );
        let error = config_error(&format!("{ROUTE_ONLY}{section}redis_url = \"nope\"\n"));
        assert!(
            error.contains("[introspection]") && error.contains("redis_url"),
            "{error}"
        );
    } else {
        assert!(
            error.contains("[introspection]")
                && error.contains("redis_url")
                && error.contains("`redis` feature"),
            "{error}"
        );
    }
}

#[test]
fn server_keys_are_checked() {
    let server = |body: &str| format!("[server]\n{body}\n{ISSUER}{ROUTE}");
    for (body, key) in [
        (
            "header_read_timeout_seconds = 0",
            "header_read_timeout_seconds",
        ),
        ("idle_timeout_seconds = -1", "idle_timeout_seconds"),
        ("body_timeout_seconds = nan", "body_timeout_seconds"),
        ("max_connections = 0", "max_connections"),
        ("trusted_proxies = [\"10.0.0.0/33\"]", "trusted_proxies"),
        ("trusted_proxies = [\"proxy.internal\"]", "trusted_proxies"),
    ] {
        let error = config_error(&server(body));
        assert_mentions(&error, &["[server]", key]);
    }
    let error = config_error(&server("header_timeout = 3"));
    assert_mentions(&error, &["header_timeout", "unknown field"]);

    let error = config_error(&format!("{ISSUER}{ROUTE}max_concurrency = 0\n"));
    assert_mentions(&error, &["[[route]] #1", "max_concurrency"]);
}

#[cfg(feature = "introspection")]
#[test]
fn introspection_needs_audiences_or_an_explicit_any_audience() {
    let section = "[introspection]\nendpoint = \"http://127.0.0.1:9/i\"\nauth_method = \"none\"\n";
    let error = config_error(&format!("{ROUTE_ONLY}{section}"));
    assert_mentions(&error, &["[introspection]", "audiences", "any_audience"]);
    let error = config_error(&format!(
        "{ROUTE_ONLY}{section}audiences = [\"api://orders\"]\nany_audience = true\n"
    ));
    assert_mentions(
        &error,
        &["[introspection]", "audiences", "any_audience", "both"],
    );
    let dir = gateway_dir();
    for extra in ["audiences = [\"api://orders\"]\n", "any_audience = true\n"] {
        let path = dir.write_config(&format!("{ROUTE_ONLY}{section}{extra}"));
        gatekeeper::load_config(&path).unwrap_or_else(|e| panic!("{extra}: {e}"));
    }
}

#[test]
fn route_issuers_are_checked_against_the_configured_ones() {
    let two = format!(
        "{ISSUER}[[issuer]]\nissuer = \"https://other.example.test\"\naudiences = [\"api://orders\"]\njwks_file = \"keys/jwks.json\"\n"
    );
    let route = "[[route]]\npath = \"/users/{user_id}\"\nupstream = \"http://127.0.0.1:9001\"\nowner_param = \"user_id\"\n";
    // With two issuers, an owner rule must say whose `sub` it compares.
    let error = config_error(&format!("{two}{route}"));
    assert_mentions(&error, &["[[route]] #1", "owner_param"]);
    let error = config_error(&format!(
        "{two}{route}issuers = [\"https://nobody.example.test\"]\n"
    ));
    assert_mentions(&error, &["[[route]] #1", "nobody.example.test"]);
    let dir = gateway_dir();
    let path = dir.write_config(&format!(
        "{two}{route}issuers = [\"https://idp.example.test\"]\n"
    ));
    gatekeeper::load_config(&path).unwrap_or_else(|e| panic!("{e}"));
}
