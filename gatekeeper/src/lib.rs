//! The gatekeeper program as a library: what `main` wires together and what its tests drive
//! in-process.
#![forbid(unsafe_code)]

pub(crate) mod admin;
pub(crate) mod body;
pub(crate) mod config;
pub(crate) mod credentials;
pub(crate) mod demo;
pub(crate) mod explain;
pub(crate) mod proxy;
pub(crate) mod response;
pub(crate) mod routes;
pub(crate) mod serve;
pub(crate) mod tls;

pub use admin::{run_admin, start_admin};
pub use config::{Config, ConfigFileError, DEFAULT_LISTEN, DEFAULT_UPSTREAM_TIMEOUT, load_config};
pub use demo::{DEMO_AUDIENCE, DEMO_ISSUER, Demo, demo_instructions, start_demo};
pub use explain::explain_command;
pub use serve::BoxError;
pub use serve::run;
pub use tls::TlsReloader;
/// The revocation store `[revocation]` configures ([`Config::revocations`]).
pub use tower_gatekeeper::revocation::Revocations;
