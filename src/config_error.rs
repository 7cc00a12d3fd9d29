//! [`ConfigError`]: a configuration value the library cannot work with. Re-exported as
//! [`tower_gatekeeper::ConfigError`](crate::ConfigError) and
//! [`jwt::ConfigError`](crate::jwt::ConfigError).

/// Errors in verification configuration, found when the authenticator is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A configuration value is unusable; the text names it and says what to fix.
    #[error("{0}")]
    Invalid(String),
}

impl ConfigError {
    pub(crate) fn invalid(text: impl Into<String>) -> Self {
        ConfigError::Invalid(text.into())
    }
}
