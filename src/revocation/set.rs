//! The local revocation set every store checks against on the hot path.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Revocation, RevocationKind, TokenFacts};

/// The longest `jti` or subject a store keeps, in bytes. Longer ones are refused (and
/// logged): no identifier an identity provider issues comes near it.
pub const MAX_ID_BYTES: usize = 1024;

/// The default most entries of each kind (token ids, subjects) a store keeps. Beyond it new
/// entries are refused (and logged).
pub const DEFAULT_MAX_REVOCATIONS: usize = 1_000_000;

/// The default grace for which a token revocation is kept past the token's `exp`: at least
/// the largest `exp` leeway of any verifier in front of the store (30 s by default), so a
/// revoked token never comes back while a verifier would still accept it.
pub const DEFAULT_TOKEN_GRACE: Duration = Duration::from_secs(5 * 60);

/// A token revocation is kept at most this long from now, whatever expiry it names: a
/// token's `exp` beyond this horizon (or a corrupt score) does not pin memory for ever.
pub const MAX_TOKEN_HORIZON: Duration = Duration::from_secs(400 * 24 * 3600);

/// A subject cut-off may lie at most this far in the future (clock skew between the
/// revoking system and this one); later ones are clamped to it, so that no entry can lock a
/// subject out beyond the cut-off's moment.
pub const MAX_CUTOFF_SKEW: Duration = Duration::from_secs(5 * 60);

/// Revoked token ids (until their expiry plus the grace) and revoked subjects (tokens
/// issued up to a second).
///
/// One read lock and at most two hash lookups per check; no clock read and no allocation.
#[derive(Debug)]
pub(crate) struct RevocationSet {
    maps: RwLock<Maps>,
    /// Seconds a token entry is kept past its expiry.
    grace: AtomicU64,
    /// The most entries of each kind.
    max_entries: AtomicU64,
}

impl Default for RevocationSet {
    fn default() -> Self {
        RevocationSet {
            maps: RwLock::default(),
            grace: AtomicU64::new(DEFAULT_TOKEN_GRACE.as_secs()),
            max_entries: AtomicU64::new(DEFAULT_MAX_REVOCATIONS as u64),
        }
    }
}

#[derive(Debug, Default)]
struct Maps {
    /// `jti` → expiry (seconds since the epoch).
    tokens: HashMap<Box<str>, u64>,
    /// `sub` → tokens issued at or before this second are revoked.
    subjects: HashMap<Box<str>, u64>,
    /// Inserts since the last prune.
    inserts: usize,
}

/// Prune expired entries after this many inserts.
const PRUNE_EVERY: usize = 1024;

/// Why an entry was not taken into the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The `jti` or subject is empty or longer than [`MAX_ID_BYTES`].
    BadId,
    /// The set already holds the most entries of this kind.
    Full,
}

impl Refused {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refused::BadId => "the token id or subject is empty or longer than 1024 bytes",
            Refused::Full => "the revocation set is full (max_entries)",
        }
    }
}

impl RevocationSet {
    /// Keeps token entries `grace` past their expiry.
    pub(crate) fn set_grace(&self, grace: Duration) {
        self.grace.store(grace.as_secs(), Ordering::Relaxed);
    }

    /// The grace of token entries.
    #[cfg(feature = "redis")]
    pub(crate) fn grace(&self) -> Duration {
        Duration::from_secs(self.grace.load(Ordering::Relaxed))
    }

    /// Keeps at most `max` entries of each kind.
    pub(crate) fn set_max_entries(&self, max: usize) {
        self.max_entries.store(max as u64, Ordering::Relaxed);
    }

    pub(crate) fn max_entries(&self) -> usize {
        usize::try_from(self.max_entries.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
    }

    /// Whether the token described by `facts` is revoked.
    pub(crate) fn is_revoked(&self, facts: &TokenFacts<'_>) -> bool {
        let maps = self.maps.read().unwrap_or_else(|e| e.into_inner());
        if let Some(jti) = facts.jti
            && maps.tokens.contains_key(jti)
        {
            return true;
        }
        if let Some(sub) = facts.subject
            && let Some(&through) = maps.subjects.get(sub)
        {
            // Without `iat` the token cannot prove it was issued after the cut-off; one
            // issued in the cut-off's second may have been issued before it: revoked.
            return facts.issued_at.is_none_or(|iat| iat <= through);
        }
        false
    }

    /// Adds `revocation` (its time clamped: see [`clamp`]); returns whether the set changed,
    /// or why the entry was refused.
    pub(crate) fn insert(&self, revocation: &Revocation) -> Result<bool, Refused> {
        let now = unix_now();
        let (key, at) = match &revocation.kind {
            RevocationKind::Token { jti, expires_at } => (jti, *expires_at),
            RevocationKind::Subject {
                subject,
                issued_through,
            } => (subject, *issued_through),
        };
        if key.is_empty() || key.len() > MAX_ID_BYTES {
            return Err(Refused::BadId);
        }
        let at = clamp(&revocation.kind, at, now);
        let max = self.max_entries();
        let grace = self.grace.load(Ordering::Relaxed);
        let mut maps = self.maps.write().unwrap_or_else(|e| e.into_inner());
        maps.inserts += 1;
        if maps.inserts >= PRUNE_EVERY {
            maps.inserts = 0;
            maps.prune(now, grace, None);
        }
        let map = match &revocation.kind {
            RevocationKind::Token { .. } => &mut maps.tokens,
            RevocationKind::Subject { .. } => &mut maps.subjects,
        };
        let full = map.len() >= max;
        match map.get_mut(key.as_str()) {
            Some(existing) if *existing >= at => Ok(false),
            Some(existing) => {
                *existing = at;
                Ok(true)
            }
            None if full => Err(Refused::Full),
            None => {
                map.insert(key.as_str().into(), at);
                Ok(true)
            }
        }
    }

    /// Drops token entries past their expiry and grace, and subject entries older than
    /// `retention`.
    pub(crate) fn prune(&self, retention: Duration) {
        let grace = self.grace.load(Ordering::Relaxed);
        let mut maps = self.maps.write().unwrap_or_else(|e| e.into_inner());
        maps.prune(unix_now(), grace, Some(retention));
    }

    /// Every entry, for pushing to a shared store.
    #[cfg(any(feature = "redis", test))]
    pub(crate) fn snapshot(&self) -> Vec<Revocation> {
        let maps = self.maps.read().unwrap_or_else(|e| e.into_inner());
        maps.tokens
            .iter()
            .map(|(jti, exp)| Revocation::token_at(&**jti, *exp))
            .chain(
                maps.subjects
                    .iter()
                    .map(|(sub, through)| Revocation::subject_at(&**sub, *through)),
            )
            .collect()
    }

    /// Number of entries (tokens, subjects).
    pub(crate) fn len(&self) -> (usize, usize) {
        let maps = self.maps.read().unwrap_or_else(|e| e.into_inner());
        (maps.tokens.len(), maps.subjects.len())
    }
}

/// `at` (seconds) of an entry of `kind`, clamped at `now`: a token expiry to at most
/// [`MAX_TOKEN_HORIZON`] ahead, a subject cut-off to at most [`MAX_CUTOFF_SKEW`] ahead.
pub(crate) fn clamp(kind: &RevocationKind, at: u64, now: u64) -> u64 {
    let horizon = match kind {
        RevocationKind::Token { .. } => MAX_TOKEN_HORIZON,
        RevocationKind::Subject { .. } => MAX_CUTOFF_SKEW,
    };
    at.min(now.saturating_add(horizon.as_secs()))
}

impl Maps {
    fn prune(&mut self, now: u64, grace: u64, retention: Option<Duration>) {
        self.tokens
            .retain(|_, exp| exp.saturating_add(grace) >= now);
        if let Some(retention) = retention {
            let oldest = now.saturating_sub(retention.as_secs());
            self.subjects.retain(|_, through| *through >= oldest);
        }
    }
}

pub(crate) fn unix_now() -> u64 {
    unix_secs(SystemTime::now())
}

/// Seconds since the epoch, rounded down.
pub(crate) fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Seconds since the epoch, rounded up.
pub(crate) fn unix_secs_ceil(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
}
