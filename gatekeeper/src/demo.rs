use std::convert::Infallible;
use std::error::Error as StdError;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::Config;
use crate::ConfigFileError;
use crate::DEFAULT_LISTEN;
use crate::config::compile;
use crate::config::file::FileConfig;
use crate::config::file::FileIssuer;
use crate::config::file::FileRoute;
use crate::config::file::RouteAuth;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tower_gatekeeper::authorize::RuleConfig;
use tower_gatekeeper::keys::{SigningKey, StaticKeys};
use tracing::warn;

/// The demo's issuer.
pub const DEMO_ISSUER: &str = "https://demo-issuer.gatekeeper.invalid";
/// The demo's audience.
pub const DEMO_AUDIENCE: &str = "api://demo";

/// The embedded demo, ready to [`run`](crate::run): its config, token and echo upstream.
#[derive(Debug)]
pub struct Demo {
    /// Routes `/orders/{*rest}` (role clerk), `/admin/{*rest}` (role admin) and
    /// `/public/{*rest}` (public) to the echo upstream; listens on [`DEFAULT_LISTEN`].
    pub config: Config,
    /// A token for `demo-user` (role clerk, scope orders:read, tenant demo), valid a day.
    pub token: String,
    /// The echo upstream's address.
    pub upstream: SocketAddr,
}

/// Sets up the demo: starts the echo upstream on a free loopback port, makes an ephemeral
/// Ed25519 key, builds the config and mints the demo token.
///
/// # Errors
///
/// When the upstream cannot listen or no randomness is available for the key.
pub async fn start_demo() -> Result<Demo, Box<dyn StdError + Send + Sync>> {
    let upstream = spawn_demo_upstream().await?;
    let signer = SigningKey::generate_ed25519()?.with_kid("demo-1");
    let route = |path: &str, auth: RouteAuth, roles: Option<&str>| FileRoute {
        path: path.to_owned(),
        methods: None,
        upstream: format!("http://{upstream}"),
        auth,
        rules: RuleConfig {
            roles_any: roles.map(|r| vec![r.to_owned()]),
            ..RuleConfig::default()
        },
        ..FileRoute::default()
    };
    let file = FileConfig {
        listen: Some(DEFAULT_LISTEN.to_owned()),
        realm: Some("gatekeeper-demo".to_owned()),
        upstream_timeout_seconds: None,
        issuers: vec![FileIssuer {
            issuer: DEMO_ISSUER.to_owned(),
            audiences: vec![DEMO_AUDIENCE.to_owned()],
            keys: Some(StaticKeys::new([signer.verifying_key().clone()])),
            ..FileIssuer::default()
        }],
        routes: vec![
            route("/orders/{*rest}", RouteAuth::Required, Some("clerk")),
            route("/admin/{*rest}", RouteAuth::Required, Some("admin")),
            route("/public/{*rest}", RouteAuth::Public, None),
        ],
        rego: None,
        cache: None,
        ..FileConfig::default()
    };
    let config = compile(file, Path::new("."))
        .map_err(|message| ConfigFileError::new(Path::new("<embedded demo>"), message))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let token = signer.sign(&json!({
        "iss": DEMO_ISSUER,
        "aud": DEMO_AUDIENCE,
        "sub": "demo-user",
        "roles": ["clerk"],
        "scope": "orders:read",
        "tenant_id": "demo",
        "iat": now,
        "exp": now + 24 * 60 * 60,
    }))?;
    Ok(Demo {
        config,
        token,
        upstream,
    })
}

/// What the demo prints: the token and `curl` lines that work as printed against `gateway`.
pub fn demo_instructions(gateway: SocketAddr, upstream: SocketAddr, token: &str) -> String {
    let mut gateway = gateway;
    if gateway.ip().is_unspecified() {
        gateway.set_ip(match gateway.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    let base = format!("http://{gateway}");
    format!(
        "\
tower-gatekeeper demo gateway on {base}
  upstream  http://{upstream} (echoes the method, path and headers it receives, as JSON)
  issuer    {DEMO_ISSUER}, audience {DEMO_AUDIENCE} (ephemeral Ed25519 key, kid demo-1)
  routes    /orders/{{*rest}} needs role clerk, /admin/{{*rest}} needs role admin, /public/{{*rest}} is public

Demo token (sub demo-user, roles [\"clerk\"], scope orders:read, tenant demo, valid for 24 h):

{token}

Try it:

# 200: a clerk reads an order; the upstream sees x-user-id, x-user-roles, ... but no token
curl -i -H 'Authorization: Bearer {token}' {base}/orders/42

# 401: no token
curl -i {base}/orders/42

# 403: /admin needs role admin
curl -i -H 'Authorization: Bearer {token}' {base}/admin/users

Ctrl-C stops the gateway. RUST_LOG=debug logs one line per request."
    )
}

/// Starts the demo's echo upstream on a free loopback port.
pub(crate) async fn spawn_demo_upstream() -> io::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    warn!(%error, "demo upstream: cannot accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(demo_echo);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Echoes the request as JSON: method, path with query, headers, body size (streamed).
pub(crate) async fn demo_echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, mut body) = req.into_parts();
    let mut body_bytes = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => body_bytes += frame.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let values: Vec<&str> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("<binary>"))
            .collect();
        headers.insert(name.as_str().to_owned(), values.join(", ").into());
    }
    let echo = json!({
        "upstream": "tower-gatekeeper demo echo",
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
        "headers": headers,
        "body_bytes": body_bytes,
    });
    let mut text = serde_json::to_string_pretty(&echo).unwrap_or_default();
    text.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
