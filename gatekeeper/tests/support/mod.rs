//! What the gateway's tests share: the echo upstream, the gateway under test ([`Running`]),
//! configurations, the library's fixture tokens, temp dirs, a loopback HTTP server, a
//! `redis-server` starter and a hand-written gRPC service. Each test file uses a part of it,
//! so what one file leaves unused is no warning.
#![allow(dead_code, unused_imports)]

pub(crate) mod config;
pub(crate) mod grpc;
pub(crate) mod http_server;
pub(crate) mod redis_server;
pub(crate) mod running;
pub(crate) mod temp_dir;
pub(crate) mod tokens;
pub(crate) mod upstream;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;

pub(crate) use config::{
    CI_KEY, ISSUER, NEXT_KEY, ONE_ISSUER, ROUTE, assert_mentions, config_toml, credentials_toml,
    key_entry,
};
pub(crate) use running::Running;
pub(crate) use temp_dir::{TempDir, gateway_dir};
pub(crate) use tokens::{admin_token, fixtures, token};
pub(crate) use upstream::Upstream;

/// The library's committed fixtures (tokens, keys) at the workspace root: data files read at
/// run time.
pub(crate) const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");

/// Generous bound for anything that should take milliseconds; only hit when a test fails.
pub(crate) const BOUND: Duration = Duration::from_secs(30);

/// Where `needle` first occurs in `haystack` (raw HTTP bytes read off a socket).
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A loopback address where nothing listens.
pub(crate) async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Upstream, gateway and temp dir for the standard configuration ([`config_toml`]).
pub(crate) async fn setup() -> (Upstream, Running, TempDir) {
    let upstream = Upstream::start().await;
    let dir = gateway_dir();
    let path = dir.write_config(&config_toml(upstream.addr, closed_port().await));
    let config = gatekeeper::load_config(&path).unwrap_or_else(|e| panic!("{e}"));
    (upstream, Running::start(config).await, dir)
}

pub(crate) async fn json_body(response: reqwest::Response) -> Value {
    let bytes = response.bytes().await.unwrap();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

pub(crate) fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
        .to_owned()
}
