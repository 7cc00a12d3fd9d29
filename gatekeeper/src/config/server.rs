//! `[server]`: timeouts and limits for client connections, and the proxies trusted to say who
//! the client is.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use crate::config::file::FileServer;
use crate::config::seconds;

/// How long a client has to send a complete request head, counted from the connection's
/// first moment (a connection that sends nothing, or only part of the HTTP/2 preface, is
/// closed when it runs out). nginx: `client_header_timeout` 60 s; HAProxy's documented
/// `timeout http-request` examples use 10 s; 10 s is generous for any real client.
pub(crate) const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection with no request in flight stays open (nginx `keepalive_timeout`
/// 75 s, HAProxy `timeout http-keep-alive` examples 10 s..1 min).
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest pause between two pieces of a request body (nginx `client_body_timeout` 60 s;
/// the upstream timeout, 30 s, covers the whole exchange anyway).
pub(crate) const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Client connections served at once; more wait in the listen backlog until one closes.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// The checked `[server]` section.
#[derive(Debug, Clone)]
pub(crate) struct Server {
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) body_timeout: Duration,
    pub(crate) max_connections: usize,
    /// Peers whose `X-Forwarded-*` headers are kept (and appended to) rather than replaced.
    pub(crate) trusted_proxies: Vec<IpNet>,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Server {
    /// Whether `peer` is one of `trusted_proxies`.
    pub(crate) fn trusts(&self, peer: IpAddr) -> bool {
        let peer = canonical(peer);
        self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }
}

/// An IPv4 address written as IPv4-mapped IPv6 (a dual-stack listener's peers) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

pub(crate) fn compile(raw: FileServer) -> Result<Server, String> {
    let max_connections = match raw.max_connections {
        None => DEFAULT_MAX_CONNECTIONS,
        Some(0) => return Err("[server]: `max_connections` must be at least 1".to_owned()),
        // A semaphore holds at most u32::MAX >> 3 permits.
        Some(n) if n > 100_000_000 => {
            return Err(format!(
                "[server]: `max_connections` = {n} is more than 100000000"
            ));
        }
        Some(n) => n,
    };
    let trusted_proxies = raw
        .trusted_proxies
        .unwrap_or_default()
        .iter()
        .map(|text| {
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    format!(
                        "[server]: `trusted_proxies`: {text:?} is not an IP address or CIDR block, e.g. \"10.0.0.0/8\""
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Server {
        header_read_timeout: seconds(
            "[server]: `header_read_timeout_seconds`",
            raw.header_read_timeout_seconds,
            DEFAULT_HEADER_READ_TIMEOUT,
        )?,
        idle_timeout: seconds(
            "[server]: `idle_timeout_seconds`",
            raw.idle_timeout_seconds,
            DEFAULT_IDLE_TIMEOUT,
        )?,
        body_timeout: seconds(
            "[server]: `body_timeout_seconds`",
            raw.body_timeout_seconds,
            DEFAULT_BODY_TIMEOUT,
        )?,
        max_connections,
        trusted_proxies,
    })
}
