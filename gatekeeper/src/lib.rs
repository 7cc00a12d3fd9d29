//! The gatekeeper program as a library: what `main` wires together and what its tests drive
//! in-process. The configuration reference is the package's README.
//!
//! - [`load_config`] reads and checks a TOML file into a [`Config`] (errors name the file and
//!   the key); [`start_demo`] builds the embedded demo's.
//! - [`run`] serves a `Config` on a listener until a shutdown future resolves; [`run_admin`]
//!   serves `/healthz`, `/readyz` and `/metrics`.
//! - [`explain_command`] is `gatekeeper explain`.
//!
//! A request goes through `serve` (the listener: connection limits and timeouts), `routes`
//! (canonical path, route table, one tower stack per route: authenticate, authorize,
//! propagate), then `proxy` (the upstream request: headers, bodies, timeouts).
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let config = gatekeeper::load_config("gateway.toml")?;
//! let listener = tokio::net::TcpListener::bind(config.listen()).await?;
//! gatekeeper::run(config, listener, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub(crate) mod admin;
pub(crate) mod admin_actions;
pub(crate) mod body;
pub(crate) mod config;
pub(crate) mod cors;
pub(crate) mod credentials;
pub(crate) mod demo;
pub(crate) mod explain;
pub(crate) mod metadata;
pub(crate) mod proxy;
pub(crate) mod rate_limit;
pub(crate) mod reload;
pub(crate) mod response;
pub(crate) mod routes;
pub(crate) mod serve;
pub(crate) mod tls;
pub(crate) mod upstream;
pub(crate) mod websocket;

pub use admin::{run_admin, run_admin_live, start_admin};
pub use config::admin::{LogFormat, log_format_of};
pub use config::{Config, ConfigFileError, DEFAULT_LISTEN, DEFAULT_UPSTREAM_TIMEOUT, load_config};
pub use demo::{DEMO_AUDIENCE, DEMO_ISSUER, Demo, demo_instructions, start_demo};
pub use explain::explain_command;
pub use reload::{Live, Reloaded};
pub use serve::BoxError;
pub use serve::{run, run_live};
pub use tls::TlsReloader;
/// The revocation store `[revocation]` configures ([`Config::revocations`]).
pub use tower_gatekeeper::revocation::Revocations;
