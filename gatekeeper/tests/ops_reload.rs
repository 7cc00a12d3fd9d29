//! The full configuration reload, in-process through `Live::reload` (what SIGHUP calls) and
//! through the admin endpoint: new routes, a bad file keeping the old configuration,
//! requests in flight finishing, revocations and the API keys file across a reload.

mod support;

use std::net::SocketAddr;

use http::StatusCode;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use support::{
    BOUND, CI_KEY, ISSUER, NEXT_KEY, TempDir, Upstream, client, json_body, key_entry, token,
};

struct Served {
    addr: SocketAddr,
    live: gatekeeper::Live,
    _stop: oneshot::Sender<()>,
}

async fn serve(path: &std::path::Path) -> Served {
    let config = gatekeeper::load_config(path).unwrap_or_else(|e| panic!("{e}"));
    let live = gatekeeper::Live::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(gatekeeper::run_live(live.clone(), listener, async {
        let _ = stopped.await;
    }));
    Served {
        addr,
        live,
        _stop: stop,
    }
}

fn route(path: &str, upstream: SocketAddr, extra: &str) -> String {
    format!("\n[[route]]\npath = \"{path}\"\nupstream = \"http://{upstream}\"\n{extra}\n")
}

async fn status(addr: SocketAddr, path: &str, bearer: Option<&str>) -> StatusCode {
    let mut request = client().get(format!("http://{addr}{path}"));
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    request.send().await.unwrap().status()
}

#[tokio::test]
async fn a_reload_serves_new_routes_and_a_bad_file_keeps_the_old_ones() {
    let upstream = Upstream::start().await;
    let dir = TempDir::new("reload").with_fixture_keys(&["jwks.json"]);
    let head = format!("listen = \"127.0.0.1:0\"\n{ISSUER}");
    let path = dir.write_config(&format!(
        "{head}{}",
        route("/orders/{*rest}", upstream.addr, "roles_any = [\"admin\"]")
    ));
    let served = serve(&path).await;
    let clerk = token("rs256_valid");
    assert_eq!(
        status(served.addr, "/orders/1", Some(&clerk)).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(served.addr, "/public/1", None).await,
        StatusCode::NOT_FOUND
    );

    // Rules change, a route appears.
    dir.write_config(&format!(
        "{head}{}{}",
        route("/orders/{*rest}", upstream.addr, "roles_any = [\"clerk\"]"),
        route("/public/{*rest}", upstream.addr, "auth = \"public\""),
    ));
    let reloaded = served.live.reload().await.unwrap();
    assert_eq!(reloaded.routes, 2);
    assert!(
        reloaded.needs_restart.is_empty(),
        "{:?}",
        reloaded.needs_restart
    );
    assert_eq!(
        status(served.addr, "/orders/1", Some(&clerk)).await,
        StatusCode::OK
    );
    assert_eq!(status(served.addr, "/public/1", None).await, StatusCode::OK);

    // Broken files: refused with the error, and the current routes stay.
    for broken in [
        "listen = [".to_owned(),
        format!(
            "{head}{}",
            route("/orders/{*rest}", upstream.addr, "roles_anyy = [\"x\"]")
        ),
        format!(
            "{head}\n[[issuer]]\nissuer = \"x\"\naudiences = [\"a\"]\njwks_file = \"keys/missing.json\"\n"
        ),
        head.clone(),
    ] {
        dir.write_config(&broken);
        let error = served.live.reload().await.unwrap_err().to_string();
        assert!(error.contains("gateway.toml"), "{error}");
        assert_eq!(
            status(served.addr, "/orders/1", Some(&clerk)).await,
            StatusCode::OK
        );
        assert_eq!(status(served.addr, "/public/1", None).await, StatusCode::OK);
    }

    // A setting that needs a restart is reported; the rest is applied.
    dir.write_config(&format!(
        "listen = \"127.0.0.1:1\"\n[server]\nmax_connections = 7\n{ISSUER}{}",
        route("/public/{*rest}", upstream.addr, "auth = \"public\"")
    ));
    let reloaded = served.live.reload().await.unwrap();
    assert_eq!(
        reloaded.needs_restart,
        ["`listen`", "[server] `max_connections`"]
    );
    assert_eq!(
        status(served.addr, "/orders/1", Some(&clerk)).await,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn requests_in_flight_finish_on_the_configuration_they_started_with() {
    let upstream = Upstream::start().await;
    let dir = TempDir::new("reload").with_fixture_keys(&["jwks.json"]);
    let head = format!("listen = \"127.0.0.1:0\"\n{ISSUER}");
    let path = dir.write_config(&format!(
        "{head}{}",
        route("/hold/{*rest}", upstream.addr, "auth = \"public\"")
    ));
    let served = serve(&path).await;
    // One client connection (keep-alive) for the request in flight and the ones after.
    let http = client();
    let url = format!("http://{}/hold/1", served.addr);
    let arrived = upstream.state.arrived.notified();
    let in_flight = tokio::spawn({
        let http = http.clone();
        async move { http.get(url).send().await.unwrap() }
    });
    tokio::time::timeout(BOUND, arrived).await.unwrap();

    // The route goes away while the request waits upstream.
    dir.write_config(&format!(
        "{head}{}",
        route("/other/{*rest}", upstream.addr, "auth = \"public\"")
    ));
    served.live.reload().await.unwrap();
    let next = http
        .get(format!("http://{}/hold/2", served.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(
        next.status(),
        StatusCode::NOT_FOUND,
        "new requests use the new routes"
    );
    upstream.state.release.notify_one();
    let response = tokio::time::timeout(BOUND, in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the request in flight finished"
    );
    let response = http
        .get(format!("http://{}/other/1", served.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn revocations_and_api_keys_across_a_reload() {
    use tower_gatekeeper::revocation::{Revocation, RevocationStore};
    let upstream = Upstream::start().await;
    let dir = TempDir::new("reload").with_fixture_keys(&["jwks.json"]);
    std::fs::write(
        dir.0.join("keys.toml"),
        key_entry(CI_KEY, "ci", "\"deployer\""),
    )
    .unwrap();
    let toml = |route_roles: &str| {
        format!(
            "listen = \"127.0.0.1:0\"\n{ISSUER}\n[revocation]\n\n[api_keys]\nfile = \"keys.toml\"\nreload_interval_seconds = 3600\n{}",
            route("/orders/{*rest}", upstream.addr, route_roles)
        )
    };
    let path = dir.write_config(&toml("roles_any = [\"clerk\", \"deployer\"]"));
    let served = serve(&path).await;
    let clerk = token("rs256_valid");
    assert_eq!(
        status(served.addr, "/orders/1", Some(&clerk)).await,
        StatusCode::OK
    );
    let key = |addr: SocketAddr, key: &'static str| async move {
        client()
            .get(format!("http://{addr}/orders/1"))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(key(served.addr, CI_KEY).await, StatusCode::OK);
    assert_eq!(key(served.addr, NEXT_KEY).await, StatusCode::UNAUTHORIZED);

    // Revoke through the store the gateway serves with.
    let store = served
        .live
        .revocations()
        .expect("[revocation] is configured");
    store
        .revoke(Revocation::subject(
            "user-123",
            std::time::SystemTime::now(),
        ))
        .await
        .unwrap();
    assert_eq!(
        status(served.addr, "/orders/1", Some(&clerk)).await,
        StatusCode::UNAUTHORIZED
    );

    // The keys file changes (the 1-hour poll will not see it); a reload reads it.
    std::fs::write(
        dir.0.join("keys.toml"),
        key_entry(NEXT_KEY, "next", "\"deployer\""),
    )
    .unwrap();
    served.live.reload().await.unwrap();
    assert_eq!(key(served.addr, NEXT_KEY).await, StatusCode::OK);
    assert_eq!(key(served.addr, CI_KEY).await, StatusCode::UNAUTHORIZED);
    // The revocation survived the reload.
    assert_eq!(
        status(served.addr, "/orders/1", Some(&clerk)).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_admin_endpoint_reloads() {
    let upstream = Upstream::start().await;
    let dir = TempDir::new("reload").with_fixture_keys(&["jwks.json"]);
    let admin = support::closed_port().await;
    let sha = tower_gatekeeper::authenticate::ApiKeyHash::of("admin-token-for-reload").to_hex();
    let head = format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"{admin}\"\nadmin_token_sha256 = \"{sha}\"\n{ISSUER}"
    );
    let path = dir.write_config(&format!(
        "{head}{}",
        route("/a/{*rest}", upstream.addr, "auth = \"public\"")
    ));
    let served = serve(&path).await;
    gatekeeper::start_admin(&served.live, async { Ok(()) })
        .await
        .unwrap();
    dir.write_config(&format!(
        "{head}{}",
        route("/b/{*rest}", upstream.addr, "auth = \"public\"")
    ));
    let response = client()
        .post(format!("http://{admin}/reload"))
        .bearer_auth("admin-token-for-reload")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_body(response).await;
    assert_eq!(body["routes"], 1, "{body}");
    assert_eq!(status(served.addr, "/b/1", None).await, StatusCode::OK);
    assert_eq!(
        status(served.addr, "/a/1", None).await,
        StatusCode::NOT_FOUND
    );

    dir.write_config("listen = 7");
    let response = client()
        .post(format!("http://{admin}/reload"))
        .bearer_auth("admin-token-for-reload")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = json_body(response).await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("gateway.toml"),
        "{body}"
    );
    assert_eq!(status(served.addr, "/b/1", None).await, StatusCode::OK);
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_reload_is_not_held_up_by_a_redis_outage() {
    let Some(redis) = support::redis_server::RedisServer::start() else {
        return;
    };
    let upstream = Upstream::start().await;
    let dir = TempDir::new("reload").with_fixture_keys(&["jwks.json"]);
    let head = format!(
        "listen = \"127.0.0.1:0\"\n{ISSUER}\n[revocation]\nredis_url = \"{}\"\nprefix = \"reload-test\"\nfail_mode = \"closed\"\n",
        redis.url()
    );
    let path = dir.write_config(&format!(
        "{head}{}",
        route("/orders/{*rest}", upstream.addr, "")
    ));
    let served = serve(&path).await;
    let clerk = token("rs256_valid");
    let deadline = std::time::Instant::now() + BOUND;
    while status(served.addr, "/orders/1", Some(&clerk)).await != StatusCode::OK {
        assert!(std::time::Instant::now() < deadline, "never synchronised");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(redis);
    dir.write_config(&format!(
        "{head}{}{}",
        route("/orders/{*rest}", upstream.addr, ""),
        route("/public/{*rest}", upstream.addr, "auth = \"public\"")
    ));
    let reloaded = tokio::time::timeout(std::time::Duration::from_secs(10), served.live.reload())
        .await
        .expect("the reload does not wait for Redis")
        .unwrap();
    assert_eq!(reloaded.routes, 2);
    assert_eq!(status(served.addr, "/public/1", None).await, StatusCode::OK);
}
