//! Revocation: reject credentials that are still valid on their face but were withdrawn.
//!
//! A [`RevocationStore`] knows two kinds of [`Revocation`]:
//!
//! - one token, by its `jti`, until its `exp` plus a grace ([`DEFAULT_TOKEN_GRACE`], 5
//!   minutes; `token_grace` on each store). Verifiers accept a token until `exp` plus their
//!   leeway (30 s by default), so the entry must outlive `exp` by at least the largest leeway
//!   of any verifier in front of the store: within the grace the entry is kept, published
//!   and shared even when the revocation is issued after `exp`;
//! - every token of a subject issued up to a time ("log out everywhere"), by `sub` and
//!   `iat`. A token without `iat` cannot prove it was issued after the cut-off and is treated
//!   as revoked. `iat` is in whole seconds, so the cut-off is too, rounded towards revoking:
//!   a token issued in the same second as the cut-off is revoked too, one issued in a later
//!   second is not.
//!
//! # Bounds
//!
//! Whatever a store is told (by a caller, or by whoever can write to a shared backend), it
//! keeps: ids (`jti`, `sub`) of at most [`MAX_ID_BYTES`] bytes; at most `max_entries` entries
//! of each kind (default [`DEFAULT_MAX_REVOCATIONS`]); token expiries at most
//! [`MAX_TOKEN_HORIZON`] ahead and subject cut-offs at most [`MAX_CUTOFF_SKEW`] ahead (clamped
//! to them). What is refused or clamped is logged (without the id).
//!
//! # Trust
//!
//! A shared store is believed like the identity provider's own word about withdrawn
//! credentials. Whoever can write to its backend (the Redis of `RedisRevocations`) can
//! revoke any token or subject (a denial of service against any user, bounded in time by the
//! clamps above) and, by deleting entries, un-revoke tokens within the time a replica takes
//! to resynchronise: it can never make a token authenticate that the verifier rejects, and
//! never mint an identity. Protect it like the introspection cache: a Redis (or a database
//! number and prefix on it) that only the gateways and the revoking tool can reach, with a
//! password or an ACL user, on a private network, and TLS (`rediss://`, feature `redis-tls`:
//! rustls with the platform's root certificates) across untrusted ones.
//!
//! [`Revocable`] wraps any [`Authenticator`] and checks the store for every request it
//! authenticates, whatever the inner authenticator did (a verified-token cache hit
//! included), so put it outermost. The check is local and synchronous (a read lock and at
//! most two hash lookups, see `benches/revocation.rs`); stores keep their set in memory and
//! synchronise in the background.
//!
//! Stores: [`MemoryRevocations`] for one process, and `RedisRevocations` (feature `redis`)
//! shared by every replica of a gateway; [`Revocations`] is either, chosen at run time.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use tower_gatekeeper::{JwtAuthenticator, RejectionKind, jwt::Validation};
//! use tower_gatekeeper::keys::{SigningKey, StaticKeys};
//! use tower_gatekeeper::revocation::{MemoryRevocations, Revocable, Revocation, RevocationStore};
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let signer = SigningKey::generate_ed25519().unwrap().with_kid("k1");
//! let keys = StaticKeys::new([signer.verifying_key().clone()]);
//! let validation = Validation::new("https://idp.example.test").audiences(["api://orders"]);
//! let store = MemoryRevocations::new();
//! let auth = Revocable::new(JwtAuthenticator::new(keys, validation).unwrap(), store.clone());
//!
//! let token = signer.sign(&json!({
//!     "iss": "https://idp.example.test", "aud": "api://orders", "sub": "user-1",
//!     "jti": "t-1", "exp": 4102444800u64,
//! })).unwrap();
//! let head = http::Request::builder()
//!     .header("authorization", format!("Bearer {token}"))
//!     .body(())
//!     .unwrap();
//! # use tower_gatekeeper::{Authenticator, credential::RequestHead};
//! assert!(auth.authenticate(&RequestHead::of(&head)).unwrap().await.is_ok());
//!
//! let expires = SystemTime::UNIX_EPOCH + Duration::from_secs(4102444800);
//! store.revoke(Revocation::token("t-1", expires)).await.unwrap();
//! let rejection = auth.authenticate(&RequestHead::of(&head)).unwrap().await.unwrap_err();
//! assert_eq!(rejection.kind(), RejectionKind::InvalidToken);
//! # }
//! ```

mod any;
mod memory;
#[cfg(feature = "redis")]
pub(crate) mod redis;
mod set;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use pin_project_lite::pin_project;
use serde_json::Value;

use crate::authenticate::{Authenticator, Started};
use crate::context::AuthContext;
use crate::credential::RequestHead;
use crate::reject::Rejection;

pub use self::any::Revocations;
pub use self::memory::MemoryRevocations;
#[cfg(feature = "redis")]
pub use self::redis::{RedisRevocations, RedisRevocationsBuilder};
pub use self::set::{
    DEFAULT_MAX_REVOCATIONS, DEFAULT_TOKEN_GRACE, MAX_CUTOFF_SKEW, MAX_ID_BYTES, MAX_TOKEN_HORIZON,
};

/// What a [`RevocationStore`] says about a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevocationStatus {
    /// Not revoked, as far as the store knows.
    Active,
    /// Revoked: reject with `401 invalid_token`.
    Revoked,
    /// The store cannot vouch for its set right now and is configured to fail closed
    /// ([`FailMode::Closed`]): reject with `503`.
    Unavailable,
}

/// What a shared store does while it cannot reach its backend.
///
/// Either way, revocations known before the outage keep being enforced (the local set is
/// kept), and the store catches up when the backend is back. The choice is about
/// revocations written *during* the outage by other replicas, which this replica cannot see:
///
/// - [`Open`](FailMode::Open) (the default) keeps serving with the last known set. A token
///   revoked elsewhere during the outage is accepted here until the store reconnects.
///   Availability first.
/// - [`Closed`](FailMode::Closed) answers `503` to every authenticated request until the
///   store has resynchronised. No revoked token is ever accepted, at the price of an outage
///   of the gateway whenever the backend is down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailMode {
    /// Keep serving with the last known set.
    #[default]
    Open,
    /// Reject (503) until resynchronised.
    Closed,
}

/// The facts about a token that revocation looks at, borrowed from an [`AuthContext`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenFacts<'a> {
    /// The token id (`jti`).
    pub jti: Option<&'a str>,
    /// The subject (`sub`).
    pub subject: Option<&'a str>,
    /// When the token was issued (`iat`, seconds since the epoch).
    pub issued_at: Option<u64>,
}

impl<'a> TokenFacts<'a> {
    /// The facts of `ctx`: its subject and its `jti` and `iat` claims.
    pub fn of(ctx: &'a AuthContext) -> Self {
        let claims = ctx.claims_map();
        TokenFacts {
            jti: claims.get("jti").and_then(Value::as_str),
            subject: ctx.subject(),
            issued_at: claims.get("iat").and_then(numeric_date),
        }
    }

    /// Facts given explicitly.
    pub fn new(jti: Option<&'a str>, subject: Option<&'a str>, issued_at: Option<u64>) -> Self {
        TokenFacts {
            jti,
            subject,
            issued_at,
        }
    }
}

fn numeric_date(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

/// One revocation: a token by `jti`, or every token of a subject issued up to a time.
#[derive(Clone, PartialEq, Eq)]
pub struct Revocation {
    kind: RevocationKind,
}

#[derive(Clone, PartialEq, Eq)]
enum RevocationKind {
    Token {
        jti: String,
        expires_at: u64,
    },
    /// Tokens of `subject` whose `iat` is at most `issued_through` (seconds) are revoked.
    Subject {
        subject: String,
        issued_through: u64,
    },
}

impl Revocation {
    /// Revokes the token whose `jti` is `jti`, which expires at `expires_at` (its `exp`).
    /// The entry is kept until `exp` plus the store's token grace (see the
    /// [module docs](self)), so it outlives any verifier's leeway; a revocation issued after
    /// `exp` but within the grace is enforced and shared too.
    pub fn token(jti: impl Into<String>, expires_at: SystemTime) -> Self {
        Revocation::token_at(jti, set::unix_secs_ceil(expires_at))
    }

    /// Revokes every token of `subject` issued up to `issued_before`. Tokens carry `iat` in
    /// whole seconds, so the cut-off is the whole second it falls in: tokens issued in that
    /// second are revoked too (the safe side), tokens issued in a later second are
    /// accepted. Pass `SystemTime::now()` to log a user out everywhere.
    pub fn subject(subject: impl Into<String>, issued_before: SystemTime) -> Self {
        Revocation::subject_at(subject, set::unix_secs(issued_before))
    }

    pub(crate) fn token_at(jti: impl Into<String>, expires_at: u64) -> Self {
        Revocation {
            kind: RevocationKind::Token {
                jti: jti.into(),
                expires_at,
            },
        }
    }

    pub(crate) fn subject_at(subject: impl Into<String>, issued_through: u64) -> Self {
        Revocation {
            kind: RevocationKind::Subject {
                subject: subject.into(),
                issued_through,
            },
        }
    }

    /// Whether the entry still matters at `now` (seconds), given how long token entries
    /// outlive their expiry and how long subject entries are kept.
    #[cfg(feature = "redis")]
    pub(crate) fn is_live(&self, now: u64, grace: Duration, retention: Duration) -> bool {
        match &self.kind {
            RevocationKind::Token { expires_at, .. } => {
                expires_at.saturating_add(grace.as_secs()) >= now
            }
            RevocationKind::Subject { issued_through, .. } => {
                *issued_through >= now.saturating_sub(retention.as_secs())
            }
        }
    }
}

impl fmt::Debug for Revocation {
    /// Names the kind and time only: token ids and subjects stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            RevocationKind::Token { expires_at, .. } => f
                .debug_struct("Revocation::Token")
                .field("expires_at", expires_at)
                .finish_non_exhaustive(),
            RevocationKind::Subject { issued_through, .. } => f
                .debug_struct("Revocation::Subject")
                .field("issued_through", issued_through)
                .finish_non_exhaustive(),
        }
    }
}

/// Why a revocation could not be written to a shared store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RevocationError {
    /// The backend cannot be reached. The revocation is enforced by this replica already,
    /// and is written to the backend (and so reaches the other replicas) on reconnect.
    #[error("revocation backend unavailable; enforced locally, will be shared on reconnect")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store is misconfigured (bad URL, bad option).
    #[error("revocation store configuration: {0}")]
    Config(String),
    /// The revocation was refused: its id is empty or longer than [`MAX_ID_BYTES`], or the
    /// store holds its most entries of this kind. It is not enforced.
    #[error("revocation refused: {0}")]
    Refused(&'static str),
}

/// Where revocations live. Checked for every authenticated request by [`Revocable`].
///
/// [`check`](Self::check) is on the hot path: it must be synchronous and local (no network
/// round trip). Stores that share revocations keep a local copy and synchronise it in the
/// background.
pub trait RevocationStore: Clone + Send + Sync + 'static {
    /// Whether the token described by `token` is revoked.
    fn check(&self, token: &TokenFacts<'_>) -> RevocationStatus;

    /// Records `revocation`. It is enforced by this process when the call returns, even if
    /// it returns an error.
    ///
    /// # Errors
    ///
    /// [`RevocationError`] when a shared backend could not be written.
    fn revoke(
        &self,
        revocation: Revocation,
    ) -> impl Future<Output = Result<(), RevocationError>> + Send;
}

/// An [`Authenticator`] that rejects revoked credentials: `A` authenticates, then `S` is
/// checked for every context `A` produces (including contexts `A` served from a cache).
///
/// Revoked: `401 invalid_token` ("the access token has been revoked"). Store unavailable and
/// failing closed: `503` with `Retry-After: 1`.
///
/// See the [module docs](crate::revocation) for an example.
#[derive(Clone, Debug)]
pub struct Revocable<A, S> {
    inner: A,
    store: S,
}

impl<A, S> Revocable<A, S> {
    /// Wraps `inner`, checking `store`.
    pub fn new(inner: A, store: S) -> Self {
        Revocable { inner, store }
    }

    /// The wrapped authenticator.
    pub fn get_ref(&self) -> &A {
        &self.inner
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }
}

/// The rejection for a revoked token.
pub(crate) fn revoked() -> Rejection {
    Rejection::invalid_token("the access token has been revoked")
}

/// Applies a store's verdict to a context.
pub(crate) fn apply<S: RevocationStore>(
    store: &S,
    ctx: AuthContext,
) -> Result<AuthContext, Rejection> {
    match store.check(&TokenFacts::of(&ctx)) {
        RevocationStatus::Active => Ok(ctx),
        RevocationStatus::Revoked => Err(revoked()),
        RevocationStatus::Unavailable => Err(Rejection::keys_unavailable(Duration::from_secs(1))
            .with_description("revocation state is temporarily unavailable")),
    }
}

impl<A: Authenticator, S: RevocationStore> Authenticator for Revocable<A, S> {
    type Future = RevocableFuture<A::Future, S>;

    fn authenticate(&self, head: &RequestHead<'_>) -> Result<Self::Future, Rejection> {
        Ok(RevocableFuture {
            inner: self.inner.authenticate(head)?,
            store: Some(self.store.clone()),
        })
    }

    /// A ready outcome of the wrapped authenticator (a cache hit) is checked here and now.
    fn start(&self, head: &RequestHead<'_>) -> Result<Started<Self::Future>, Rejection> {
        match self.inner.start(head)? {
            Started::Ready(ctx) => apply(&self.store, ctx).map(Started::Ready),
            Started::Pending(inner) => Ok(Started::Pending(RevocableFuture {
                inner,
                store: Some(self.store.clone()),
            })),
        }
    }

    fn still_trusted(&self, ctx: &AuthContext) -> bool {
        self.inner.still_trusted(ctx)
    }
}

pin_project! {
    /// The future of [`Revocable`]: the inner authentication, then the revocation check.
    pub struct RevocableFuture<F, S> {
        #[pin]
        inner: F,
        store: Option<S>,
    }
}

impl<F, S> fmt::Debug for RevocableFuture<F, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocableFuture").finish_non_exhaustive()
    }
}

impl<F, S> Future for RevocableFuture<F, S>
where
    F: Future<Output = Result<AuthContext, Rejection>>,
    S: RevocationStore,
{
    type Output = Result<AuthContext, Rejection>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let ctx = ready!(this.inner.poll(cx))?;
        let store = this.store.take().expect("polled after completion");
        Poll::Ready(apply(&store, ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::CredentialKind;
    use std::time::UNIX_EPOCH;

    fn ctx(jti: Option<&str>, sub: &str, iat: Option<u64>) -> AuthContext {
        let mut b = AuthContext::builder(CredentialKind::Jwt).subject(sub);
        if let Some(jti) = jti {
            b = b.claim("jti", jti);
        }
        if let Some(iat) = iat {
            b = b.claim("iat", iat);
        }
        b.build()
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[tokio::test]
    async fn token_and_subject_revocation() {
        let store = MemoryRevocations::new();
        let far = at(4_102_444_800);
        let a = ctx(Some("a"), "u1", Some(1_000));
        let b = ctx(Some("b"), "u1", Some(2_000));
        let c = ctx(Some("c"), "u2", None);
        for c in [&a, &b, &c] {
            assert_eq!(store.check(&TokenFacts::of(c)), RevocationStatus::Active);
        }
        store.revoke(Revocation::token("a", far)).await.unwrap();
        assert_eq!(store.check(&TokenFacts::of(&a)), RevocationStatus::Revoked);
        assert_eq!(store.check(&TokenFacts::of(&b)), RevocationStatus::Active);

        // Log u1 out as of second 1500: b, issued later, stays valid.
        store
            .revoke(Revocation::subject("u1", at(1_500)))
            .await
            .unwrap();
        assert_eq!(store.check(&TokenFacts::of(&b)), RevocationStatus::Active);
        assert_eq!(
            store.check(&TokenFacts::of(&ctx(None, "u1", Some(1_499)))),
            RevocationStatus::Revoked
        );
        // Same second as a whole-second cut-off: revoked (the safe side); the next second
        // is not.
        assert_eq!(
            store.check(&TokenFacts::of(&ctx(None, "u1", Some(1_500)))),
            RevocationStatus::Revoked
        );
        assert_eq!(
            store.check(&TokenFacts::of(&ctx(None, "u1", Some(1_501)))),
            RevocationStatus::Active
        );
        // A cut-off within a second revokes that second too, not the next one.
        let u3 = |iat| ctx(None, "u3", Some(iat));
        store
            .revoke(Revocation::subject(
                "u3",
                at(1_500) + Duration::from_millis(999),
            ))
            .await
            .unwrap();
        assert_eq!(
            store.check(&TokenFacts::of(&u3(1_500))),
            RevocationStatus::Revoked
        );
        assert_eq!(
            store.check(&TokenFacts::of(&u3(1_501))),
            RevocationStatus::Active
        );
        // No iat: revoked.
        assert_eq!(
            store.check(&TokenFacts::of(&ctx(None, "u1", None))),
            RevocationStatus::Revoked
        );
        // An earlier cut-off never moves the cut-off back.
        store
            .revoke(Revocation::subject("u1", at(10)))
            .await
            .unwrap();
        assert_eq!(
            store.check(&TokenFacts::of(&ctx(None, "u1", Some(1_499)))),
            RevocationStatus::Revoked
        );
        assert_eq!(store.check(&TokenFacts::of(&c)), RevocationStatus::Active);
    }

    #[test]
    fn expired_entries_are_pruned_after_the_grace() {
        let set = set::RevocationSet::default();
        let now = set::unix_now();
        set.insert(&Revocation::token("old", at(10))).unwrap();
        set.insert(&Revocation::token("new", at(4_102_444_800)))
            .unwrap();
        // Expired five seconds ago: a verifier with the default 30 s leeway still accepts
        // the token, so its revocation is kept.
        set.insert(&Revocation::token_at("just-expired", now - 5))
            .unwrap();
        set.insert(&Revocation::subject("u", at(10))).unwrap();
        set.prune(Duration::from_secs(3600));
        assert_eq!(set.len(), (2, 0));
        let facts = TokenFacts::new(Some("just-expired"), None, None);
        assert!(set.is_revoked(&facts));
        // Past the grace it goes.
        set.set_grace(Duration::from_secs(2));
        set.prune(Duration::from_secs(3600));
        assert!(!set.is_revoked(&facts));
        assert_eq!(set.len(), (1, 0));
    }

    #[test]
    fn hostile_entries_are_bounded() {
        let set = set::RevocationSet::default();
        let now = set::unix_now();
        // An 8 MiB id, or an empty one: refused.
        let huge = "j".repeat(8 << 20);
        assert!(set.insert(&Revocation::token_at(huge, now + 60)).is_err());
        assert!(set.insert(&Revocation::subject_at("", now)).is_err());
        assert!(
            set.insert(&Revocation::token_at("j".repeat(MAX_ID_BYTES), now))
                .is_ok()
        );
        // A subject cut-off of u64::MAX: clamped, so the lock-out ends with the skew bound.
        set.insert(&Revocation::subject_at("victim", u64::MAX))
            .unwrap();
        let later = now + MAX_CUTOFF_SKEW.as_secs() + 60;
        assert!(!set.is_revoked(&TokenFacts::new(None, Some("victim"), Some(later))));
        assert!(set.is_revoked(&TokenFacts::new(None, Some("victim"), Some(now))));
        // A token expiry of u64::MAX: kept no longer than the horizon.
        set.insert(&Revocation::token_at("forever", u64::MAX))
            .unwrap();
        let kept = set
            .snapshot()
            .into_iter()
            .find_map(|r| match r.kind {
                RevocationKind::Token { jti, expires_at } if jti == "forever" => Some(expires_at),
                _ => None,
            })
            .unwrap();
        assert!(kept <= now + MAX_TOKEN_HORIZON.as_secs() + 1);
        // Counts are capped.
        set.set_max_entries(2);
        assert_eq!(
            set.insert(&Revocation::token_at("one-too-many", now + 60)),
            Err(set::Refused::Full)
        );
        // Raising an existing entry is still possible when full.
        assert_eq!(
            set.insert(&Revocation::token_at("forever", u64::MAX)),
            Ok(false)
        );
    }

    #[test]
    fn debug_hides_ids() {
        let shown = format!("{:?}", Revocation::token("secret-jti", at(10)));
        assert!(!shown.contains("secret-jti"), "{shown}");
    }
}
