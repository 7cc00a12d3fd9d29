use std::future::Future;

use super::{
    MemoryRevocations, Revocation, RevocationError, RevocationStatus, RevocationStore, TokenFacts,
};

/// A revocation store that is either in memory or shared, chosen at run time (as
/// [`IssuerKeys`](crate::keys::IssuerKeys) is for keys): lets a gateway keep one
/// [`Revocable`](super::Revocable) type whichever store its configuration names.
///
/// Built with `From` ([`MemoryRevocations`], or `RedisRevocations` with the `redis`
/// feature). Checks and revocations go to the store inside.
///
/// ```
/// use tower_gatekeeper::revocation::{MemoryRevocations, RevocationStore, Revocations};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let store: Revocations = MemoryRevocations::new().into();
/// store.ready().await; // at once in memory; after the first sync for a shared store
/// assert!(store.is_synced());
/// # }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Revocations {
    /// In memory: this process only.
    Memory(MemoryRevocations),
    /// Shared through Redis by every replica configured with the same server and prefix.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    Redis(super::RedisRevocations),
}

impl Revocations {
    /// Resolves once the store holds the shared set: at once in memory, after the first
    /// synchronisation for a shared store (which keeps waiting while its backend is
    /// unreachable: apply a timeout).
    pub fn ready(&self) -> impl Future<Output = ()> + Send + 'static {
        let store = self.clone();
        async move {
            match store {
                Revocations::Memory(_) => {}
                #[cfg(feature = "redis")]
                Revocations::Redis(store) => store.ready().await,
            }
        }
    }

    /// Whether the store is in sync with what every replica sees right now (always in
    /// memory).
    pub fn is_synced(&self) -> bool {
        match self {
            Revocations::Memory(_) => true,
            #[cfg(feature = "redis")]
            Revocations::Redis(store) => store.is_synced(),
        }
    }

    /// Drops entries that no longer matter now (stores also do it on their own).
    pub fn prune(&self) {
        match self {
            Revocations::Memory(store) => store.prune(),
            #[cfg(feature = "redis")]
            Revocations::Redis(store) => store.prune(),
        }
    }
}

impl Default for Revocations {
    fn default() -> Self {
        Revocations::Memory(MemoryRevocations::new())
    }
}

impl From<MemoryRevocations> for Revocations {
    fn from(store: MemoryRevocations) -> Self {
        Revocations::Memory(store)
    }
}

#[cfg(feature = "redis")]
impl From<super::RedisRevocations> for Revocations {
    fn from(store: super::RedisRevocations) -> Self {
        Revocations::Redis(store)
    }
}

impl RevocationStore for Revocations {
    fn check(&self, token: &TokenFacts<'_>) -> RevocationStatus {
        match self {
            Revocations::Memory(store) => store.check(token),
            #[cfg(feature = "redis")]
            Revocations::Redis(store) => store.check(token),
        }
    }

    fn revoke(
        &self,
        revocation: Revocation,
    ) -> impl Future<Output = Result<(), RevocationError>> + Send {
        let store = self.clone();
        async move {
            match store {
                Revocations::Memory(store) => store.revoke(revocation).await,
                #[cfg(feature = "redis")]
                Revocations::Redis(store) => store.revoke(revocation).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    #[tokio::test]
    async fn memory_variant_checks_and_revokes_through_the_store_inside() {
        let inner = MemoryRevocations::new();
        let store = Revocations::from(inner.clone());
        store.ready().await;
        assert!(store.is_synced());
        let facts = TokenFacts::new(Some("t-1"), Some("alice"), Some(1_700_000_000));
        assert_eq!(store.check(&facts), RevocationStatus::Active);
        let expires = SystemTime::now() + Duration::from_secs(3600);
        store
            .revoke(Revocation::token("t-1", expires))
            .await
            .unwrap();
        assert_eq!(store.check(&facts), RevocationStatus::Revoked);
        // The same set as the store it wraps.
        assert_eq!(inner.check(&facts), RevocationStatus::Revoked);
        store.prune();
        assert_eq!(store.check(&facts), RevocationStatus::Revoked);
        assert!(matches!(Revocations::default(), Revocations::Memory(_)));
    }
}
