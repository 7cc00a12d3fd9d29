//! The gatekeeper program as a library: what `main` wires together and what its tests drive
//! in-process.
#![forbid(unsafe_code)]

pub(crate) mod admin;
pub(crate) mod admin_actions;
pub(crate) mod body;
pub(crate) mod config;
pub(crate) mod credentials;
pub(crate) mod demo;
pub(crate) mod explain;
pub(crate) mod proxy;
pub(crate) mod reload;
pub(crate) mod response;
pub(crate) mod routes;
pub(crate) mod serve;

pub use admin::{run_admin, run_admin_live, start_admin};
pub use config::admin::{LogFormat, log_format_of};
pub use config::{Config, ConfigFileError, DEFAULT_LISTEN, DEFAULT_UPSTREAM_TIMEOUT, load_config};
pub use demo::{DEMO_AUDIENCE, DEMO_ISSUER, Demo, demo_instructions, start_demo};
pub use explain::explain_command;
pub use reload::{Live, Reloaded};
pub use serve::BoxError;
pub use serve::{run, run_live};
/// The revocation store `[revocation]` configures ([`Config::revocations`]).
pub use tower_gatekeeper::revocation::Revocations;
