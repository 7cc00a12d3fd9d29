//! The local revocation set every store checks against on the hot path.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Revocation, RevocationKind, TokenFacts};

/// Revoked token ids (until their expiry) and revoked subjects (tokens issued before a time).
///
/// One read lock and at most two hash lookups per check; no clock read and no allocation.
#[derive(Debug, Default)]
pub(crate) struct RevocationSet {
    maps: RwLock<Maps>,
}

#[derive(Debug, Default)]
struct Maps {
    /// `jti` → expiry (seconds since the epoch).
    tokens: HashMap<Box<str>, u64>,
    /// `sub` → tokens issued strictly before this second are revoked.
    subjects: HashMap<Box<str>, u64>,
    /// Inserts since the last prune.
    inserts: usize,
}

/// Prune expired entries after this many inserts.
const PRUNE_EVERY: usize = 1024;

impl RevocationSet {
    /// Whether the token described by `facts` is revoked.
    pub(crate) fn is_revoked(&self, facts: &TokenFacts<'_>) -> bool {
        let maps = self.maps.read().unwrap_or_else(|e| e.into_inner());
        if let Some(jti) = facts.jti
            && maps.tokens.contains_key(jti)
        {
            return true;
        }
        if let Some(sub) = facts.subject
            && let Some(&before) = maps.subjects.get(sub)
        {
            // Without `iat` the token cannot prove it was issued after the cut-off.
            return facts.issued_at.is_none_or(|iat| iat < before);
        }
        false
    }

    /// Adds `revocation`; returns whether the set changed.
    pub(crate) fn insert(&self, revocation: &Revocation) -> bool {
        let mut maps = self.maps.write().unwrap_or_else(|e| e.into_inner());
        maps.inserts += 1;
        if maps.inserts >= PRUNE_EVERY {
            maps.inserts = 0;
            maps.prune(unix_now(), None);
        }
        let (map, key, at) = match &revocation.kind {
            RevocationKind::Token { jti, expires_at } => (&mut maps.tokens, jti, *expires_at),
            RevocationKind::Subject {
                subject,
                issued_before,
            } => (&mut maps.subjects, subject, *issued_before),
        };
        match map.get_mut(key.as_str()) {
            Some(existing) if *existing >= at => false,
            Some(existing) => {
                *existing = at;
                true
            }
            None => {
                map.insert(key.as_str().into(), at);
                true
            }
        }
    }

    /// Drops token entries past their expiry and subject entries older than `retention`.
    pub(crate) fn prune(&self, retention: Duration) {
        let mut maps = self.maps.write().unwrap_or_else(|e| e.into_inner());
        maps.prune(unix_now(), Some(retention));
    }

    /// Every entry, for pushing to a shared store.
    #[cfg(feature = "redis")]
    pub(crate) fn snapshot(&self) -> Vec<Revocation> {
        let maps = self.maps.read().unwrap_or_else(|e| e.into_inner());
        maps.tokens
            .iter()
            .map(|(jti, exp)| Revocation::token_at(&**jti, *exp))
            .chain(
                maps.subjects
                    .iter()
                    .map(|(sub, before)| Revocation::subject_at(&**sub, *before)),
            )
            .collect()
    }

    /// Number of entries (tokens, subjects).
    pub(crate) fn len(&self) -> (usize, usize) {
        let maps = self.maps.read().unwrap_or_else(|e| e.into_inner());
        (maps.tokens.len(), maps.subjects.len())
    }
}

impl Maps {
    fn prune(&mut self, now: u64, retention: Option<Duration>) {
        self.tokens.retain(|_, exp| *exp >= now);
        if let Some(retention) = retention {
            let oldest = now.saturating_sub(retention.as_secs());
            self.subjects.retain(|_, before| *before >= oldest);
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
