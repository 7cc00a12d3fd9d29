//! What a decision was: the [`Stage`] that decided and its [`Outcome`]. Shared by
//! [`audit`](crate::audit) (which re-exports both) and [`metrics`](crate::metrics).

/// Which layer decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stage {
    /// [`AuthenticateLayer`](crate::AuthenticateLayer): is the credential good?
    Authenticate,
    /// [`AuthorizeLayer`](crate::AuthorizeLayer): may this caller do this?
    Authorize,
}

impl Stage {
    /// `authenticate` or `authorize`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Authenticate => "authenticate",
            Stage::Authorize => "authorize",
        }
    }
}

/// What was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// The request goes on to the inner service.
    Allow,
    /// The request was answered with a rejection.
    Deny,
}

impl Outcome {
    /// `allow` or `deny`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
        }
    }
}
