use std::fmt;
use std::future::{Future, ready};
use std::sync::Arc;
use std::time::Duration;

use super::set::RevocationSet;
use super::{Revocation, RevocationError, RevocationStatus, RevocationStore, TokenFacts};

/// Revocations of one process, in memory. Clones share the set.
///
/// Token entries are dropped after their expiry plus [`token_grace`](Self::token_grace)
/// (default 5 minutes); subject entries after
/// [`subject_retention`](Self::subject_retention) (default 24 hours: set it to at least the
/// longest token lifetime of your issuers). See the [module docs](super#bounds) for the
/// bounds every store applies.
#[derive(Clone)]
pub struct MemoryRevocations {
    set: Arc<RevocationSet>,
    retention: Duration,
}

impl MemoryRevocations {
    /// An empty store.
    pub fn new() -> Self {
        MemoryRevocations {
            set: Arc::default(),
            retention: Duration::from_secs(24 * 3600),
        }
    }

    /// How long "tokens issued before T" entries are kept after T.
    #[must_use]
    pub fn subject_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// How long a token entry is kept past the token's `exp` (default
    /// [`DEFAULT_TOKEN_GRACE`](super::DEFAULT_TOKEN_GRACE)): at least the largest `exp`
    /// leeway of the verifiers in front of this store.
    #[must_use]
    pub fn token_grace(self, grace: Duration) -> Self {
        self.set.set_grace(grace);
        self
    }

    /// The most entries of each kind kept (default
    /// [`DEFAULT_MAX_REVOCATIONS`](super::DEFAULT_MAX_REVOCATIONS)); beyond it,
    /// [`revoke`](RevocationStore::revoke) fails with [`RevocationError::Refused`].
    #[must_use]
    pub fn max_entries(self, max: usize) -> Self {
        self.set.set_max_entries(max);
        self
    }

    /// Drops entries that no longer matter (also done every 1024 revocations).
    pub fn prune(&self) {
        self.set.prune(self.retention);
    }
}

impl Default for MemoryRevocations {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryRevocations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (tokens, subjects) = self.set.len();
        f.debug_struct("MemoryRevocations")
            .field("tokens", &tokens)
            .field("subjects", &subjects)
            .finish()
    }
}

impl RevocationStore for MemoryRevocations {
    fn check(&self, token: &TokenFacts<'_>) -> RevocationStatus {
        if self.set.is_revoked(token) {
            RevocationStatus::Revoked
        } else {
            RevocationStatus::Active
        }
    }

    fn revoke(
        &self,
        revocation: Revocation,
    ) -> impl Future<Output = Result<(), RevocationError>> + Send {
        ready(match self.set.insert(&revocation) {
            Ok(_) => Ok(()),
            Err(refused) => {
                tracing::warn!(revocation = ?revocation, reason = refused.reason(), "revocation refused");
                Err(RevocationError::Refused(refused.reason()))
            }
        })
    }
}
