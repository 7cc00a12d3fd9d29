//! The signed context: a short-lived compact JWS minted by the gateway and verified by the
//! services behind it. The claim layout is shared by both sides and lives here.

use std::hash::{Hash, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method};
use serde_json::{Map, Value};

use crate::clock::Clock;
use crate::config_error::ConfigError;
use crate::context::{AuthContext, CredentialKind};
use crate::keys::{KeyError, SigningKey};

/// The JWS `typ` of a signed context (RFC 8725 §3.11 explicit typing): an access token signed
/// by the same key can never pass for a context, nor a context for an access token that is
/// checked for `typ`.
pub const CONTEXT_TYP: &str = "gatekeeper-ctx+jwt";

/// The default `iss` of minted contexts.
pub const DEFAULT_CONTEXT_ISSUER: &str = "tower-gatekeeper";

/// The default lifetime of a signed context.
pub const DEFAULT_CONTEXT_LIFETIME: Duration = Duration::from_secs(5);

/// The longest lifetime accepted: a context is for one hop, not a session.
pub(crate) const MAX_CONTEXT_LIFETIME: Duration = Duration::from_secs(300);

/// Claim names of the signed context.
pub(crate) mod claim {
    /// The caller's roles (array of strings).
    pub(crate) const ROLES: &str = "roles";
    /// The caller's tenant (string).
    pub(crate) const TENANT: &str = "tenant";
    /// Where the caller's credential came from: `{"iss", "kind", "exp", "kid"}`.
    pub(crate) const SOURCE: &str = "src";
    /// The allow-listed claims of the caller's credential (object).
    pub(crate) const CLAIMS: &str = "claims";
    /// The request id the gateway forwarded with this context.
    pub(crate) const REQUEST_ID: &str = "rid";
    /// The method of the request the context was minted for (as DPoP's `htm`).
    pub(crate) const METHOD: &str = "htm";
    /// The path of the request the context was minted for, without the query (as DPoP's
    /// `htu`, the path alone: the gateway and the service see different authorities).
    pub(crate) const PATH: &str = "htu";
}

/// Mints signed contexts; part of the propagation rules.
#[derive(Debug)]
pub(crate) struct ContextSigner {
    key: SigningKey,
    issuer: String,
    audience: Option<String>,
    lifetime_secs: u64,
    clock: Clock,
    /// Contexts minted for cached identities, reused for the first half of their lifetime
    /// (`None`: every request mints).
    reuse: Option<ContextReuse>,
}

impl ContextSigner {
    pub(crate) fn new(
        key: SigningKey,
        issuer: String,
        audience: Option<String>,
        lifetime: Duration,
        clock: Clock,
        reuse: bool,
    ) -> Result<Self, ConfigError> {
        if key.kid().is_none() {
            return Err(ConfigError::invalid(
                "the context signing key has no kid; set one with SigningKey::with_kid so that services can pick the right key while keys rotate",
            ));
        }
        if issuer.is_empty() {
            return Err(ConfigError::invalid("context_issuer must not be empty"));
        }
        if audience.as_deref() == Some("") {
            return Err(ConfigError::invalid("context_audience must not be empty"));
        }
        if lifetime < Duration::from_secs(1) || lifetime > MAX_CONTEXT_LIFETIME {
            return Err(ConfigError::invalid(format!(
                "context_lifetime must be between 1 s and {} s (a context is for one hop); got {lifetime:?}",
                MAX_CONTEXT_LIFETIME.as_secs()
            )));
        }
        // Whole seconds, rounded up: NumericDate claims are compared in seconds.
        let lifetime_secs = lifetime.as_secs() + u64::from(lifetime.subsec_nanos() > 0);
        Ok(ContextSigner {
            key,
            issuer,
            audience,
            lifetime_secs,
            clock,
            reuse: reuse.then(ContextReuse::new),
        })
    }

    /// The current time of the signer's clock.
    pub(crate) fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// The reuse store, when contexts are reused.
    pub(crate) fn reuse(&self) -> Option<&ContextReuse> {
        self.reuse.as_ref()
    }

    /// Until when a context minted at `now` is reused: while more than half of its lifetime
    /// (from `now`, rounded down to the second as `iat` is, to `exp`) remains.
    pub(crate) fn reuse_until(&self, now: SystemTime) -> (u64, SystemTime) {
        let iat = unix_secs(now);
        let exp = UNIX_EPOCH + Duration::from_secs(iat + self.lifetime_secs);
        (iat, exp - Duration::from_secs(self.lifetime_secs) / 2)
    }

    /// Signs the context of one request: `method` and `path` (without the query) are the
    /// request's, and bind the context to it; `now` is its `iat`.
    pub(crate) fn mint(
        &self,
        ctx: &AuthContext,
        claims: Map<String, Value>,
        request_id: &HeaderValue,
        method: &http::Method,
        path: &str,
        now: SystemTime,
    ) -> Result<String, KeyError> {
        let now = unix_secs(now);
        let mut payload = Map::new();
        payload.insert("iss".into(), self.issuer.clone().into());
        if let Some(aud) = &self.audience {
            payload.insert("aud".into(), aud.clone().into());
        }
        payload.insert("iat".into(), now.into());
        payload.insert("exp".into(), (now + self.lifetime_secs).into());
        if let Some(sub) = ctx.subject() {
            payload.insert("sub".into(), sub.into());
        }
        if !ctx.roles().is_empty() {
            payload.insert(claim::ROLES.into(), ctx.roles().into());
        }
        if !ctx.scopes().is_empty() {
            payload.insert("scope".into(), ctx.scopes().join(" ").into());
        }
        if let Some(tenant) = ctx.tenant() {
            payload.insert(claim::TENANT.into(), tenant.into());
        }
        let mut source = Map::new();
        if let Some(iss) = ctx.issuer() {
            source.insert("iss".into(), iss.into());
        }
        source.insert("kind".into(), ctx.credential_kind().as_str().into());
        if let Some(exp) = ctx
            .expires_at()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        {
            source.insert("exp".into(), exp.as_secs().into());
        }
        if let Some(kid) = ctx.key_id() {
            source.insert("kid".into(), kid.into());
        }
        payload.insert(claim::SOURCE.into(), Value::Object(source));
        if !claims.is_empty() {
            payload.insert(claim::CLAIMS.into(), Value::Object(claims));
        }
        if let Ok(rid) = request_id.to_str() {
            payload.insert(claim::REQUEST_ID.into(), rid.into());
        }
        payload.insert(claim::METHOD.into(), method.as_str().into());
        payload.insert(claim::PATH.into(), path.into());
        let mut header = Map::new();
        header.insert("typ".into(), CONTEXT_TYP.into());
        self.key.sign_with_header(header, &Value::Object(payload))
    }
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The most signed contexts kept for reuse by one propagation layer (all identities).
pub(crate) const MAX_REUSED_CONTEXTS: u64 = 4096;

/// The most memory the reused contexts of one propagation layer hold, as estimated per
/// entry (path, context and bookkeeping; each counted as at least
/// `MAX_REUSED_BYTES / MAX_REUSED_CONTEXTS`).
pub(crate) const MAX_REUSED_BYTES: u64 = 4 * 1024 * 1024;

/// Paths longer than this never have their context reused (each such request mints).
pub(crate) const MAX_REUSED_PATH: usize = 1024;

/// Bookkeeping per reused context beyond its path and value (order of magnitude).
const REUSE_OVERHEAD: u64 = 160;

/// Signed contexts kept for reuse, by identity (one cached [`AuthContext`]), method and
/// path: a bounded cache (count and bytes, scan-resistant eviction), so that a flood of
/// distinct paths cycles through it without growing memory.
///
/// The identity is a number drawn once per context object ([`PlainValues::identity`], never
/// reused): a context verified again after its cache entry was evicted or invalidated is a
/// new object with a new number, and finds none of the old one's contexts.
///
/// [`PlainValues::identity`]: crate::context::PlainValues::identity
pub(crate) struct ContextReuse {
    entries: quick_cache::sync::Cache<ReuseKey, Reused, ReuseWeight>,
}

impl std::fmt::Debug for ContextReuse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextReuse")
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

#[derive(Clone, PartialEq, Eq)]
struct ReuseKey {
    identity: u64,
    method: Method,
    path: Box<str>,
}

/// A borrowed [`ReuseKey`], for lookups without allocating.
struct ReuseQuery<'a> {
    identity: u64,
    method: &'a Method,
    path: &'a str,
}

fn hash_key<H: Hasher>(identity: u64, method: &Method, path: &str, state: &mut H) {
    state.write_u64(identity);
    method.as_str().hash(state);
    path.hash(state);
}

impl Hash for ReuseKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_key(self.identity, &self.method, &self.path, state);
    }
}

impl Hash for ReuseQuery<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_key(self.identity, self.method, self.path, state);
    }
}

impl quick_cache::Equivalent<ReuseKey> for ReuseQuery<'_> {
    fn equivalent(&self, key: &ReuseKey) -> bool {
        self.identity == key.identity && *self.method == key.method && *self.path == *key.path
    }
}

#[derive(Clone)]
struct Reused {
    value: HeaderValue,
    /// The context's `iat` (seconds): never served to a clock before it.
    issued_at: u64,
    /// Served until then: while more than half of the context's lifetime remains.
    until: SystemTime,
}

#[derive(Clone, Copy)]
struct ReuseWeight;

impl quick_cache::Weighter<ReuseKey, Reused> for ReuseWeight {
    fn weight(&self, key: &ReuseKey, value: &Reused) -> u64 {
        let bytes = key.path.len() as u64 + value.value.len() as u64 + REUSE_OVERHEAD;
        bytes.max(MAX_REUSED_BYTES.div_ceil(MAX_REUSED_CONTEXTS))
    }
}

impl ContextReuse {
    fn new() -> Self {
        // One shard per 64 entries at most (so a shard holds several contexts), a power of
        // two; the weight capacity a multiple of it, so rounding never exceeds a bound.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let shards = (cores * 4).clamp(1, MAX_REUSED_CONTEXTS / 64);
        let shards = 1u64 << shards.ilog2();
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(MAX_REUSED_CONTEXTS as usize)
            .weight_capacity(MAX_REUSED_BYTES / shards * shards)
            .shards(shards as usize)
            .build()
            .expect("valid reuse cache options");
        ContextReuse {
            entries: quick_cache::sync::Cache::with_options(
                options,
                ReuseWeight,
                Default::default(),
                Default::default(),
            ),
        }
    }

    /// The context minted for `identity`'s `method` `path`, while it is still to be reused at
    /// `now`.
    pub(crate) fn get(
        &self,
        identity: u64,
        method: &Method,
        path: &str,
        now: SystemTime,
    ) -> Option<HeaderValue> {
        let query = ReuseQuery {
            identity,
            method,
            path,
        };
        let reused = self.entries.get(&query)?;
        if now < reused.until && unix_secs(now) >= reused.issued_at {
            Some(reused.value)
        } else {
            self.entries.remove(&query);
            None
        }
    }

    /// Keeps `value`, minted at `issued_at` for `identity`'s `method` `path`, until `until`.
    pub(crate) fn insert(
        &self,
        identity: u64,
        method: &Method,
        path: &str,
        value: HeaderValue,
        (issued_at, until): (u64, SystemTime),
    ) {
        self.entries.insert(
            ReuseKey {
                identity,
                method: method.clone(),
                path: path.into(),
            },
            Reused {
                value,
                issued_at,
                until,
            },
        );
    }

    /// How many contexts are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Their total weight (estimated bytes).
    #[cfg(test)]
    pub(crate) fn weight(&self) -> u64 {
        self.entries.weight()
    }
}

/// Rebuilds the caller's [`AuthContext`] from a verified signed context. `verified` is the
/// context of the JWS itself (issuer: the gateway); the result describes the caller.
pub(crate) fn rebuild(verified: &AuthContext) -> AuthContext {
    let claims = verified.claims_map();
    let source = claims.get(claim::SOURCE).and_then(Value::as_object);
    let source_str = |name: &str| source.and_then(|s| s.get(name)).and_then(Value::as_str);
    let kind = match source_str("kind") {
        Some("jwt") => CredentialKind::Jwt,
        Some("introspected") => CredentialKind::Introspected,
        Some("api_key") => CredentialKind::ApiKey,
        _ => CredentialKind::Forwarded,
    };
    let mut builder = AuthContext::builder(kind)
        .roles(verified.roles().iter().cloned())
        .scopes(verified.scopes().iter().cloned());
    if let Some(sub) = verified.subject() {
        builder = builder.subject(sub);
    }
    if let Some(tenant) = verified.tenant() {
        builder = builder.tenant(tenant);
    }
    if let Some(iss) = source_str("iss") {
        builder = builder.issuer(iss);
    }
    if let Some(kid) = source_str("kid") {
        builder = builder.key_id(kid);
    }
    if let Some(exp) = source.and_then(|s| s.get("exp")).and_then(Value::as_f64) {
        builder = builder.expires_at_unix(exp);
    }
    if let Some(Value::Object(forwarded)) = claims.get(claim::CLAIMS) {
        builder = builder.claims(forwarded.clone());
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_paths_stays_within_the_bounds() {
        let reuse = ContextReuse::new();
        let now = SystemTime::now();
        let until = (unix_secs(now), now + Duration::from_secs(60));
        let value = HeaderValue::from_bytes(&[b'a'; 700]).unwrap();
        reuse.insert(1, &Method::GET, "/hot", value.clone(), until);
        for i in 0..20_000 {
            reuse.insert(
                2,
                &Method::GET,
                &format!("/flood/{i}"),
                value.clone(),
                until,
            );
            if i % 100 == 0 {
                assert!(
                    reuse.get(1, &Method::GET, "/hot", now).is_some(),
                    "hot entry lost at {i}"
                );
            }
            assert!(reuse.len() as u64 <= MAX_REUSED_CONTEXTS);
            assert!(reuse.weight() <= MAX_REUSED_BYTES);
        }
        assert!(reuse.len() > 1000, "{}", reuse.len());
    }

    #[test]
    fn served_only_in_the_first_half_and_for_the_exact_request() {
        let reuse = ContextReuse::new();
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let value = HeaderValue::from_static("ctx");
        reuse.insert(
            7,
            &Method::GET,
            "/a",
            value,
            (1_000_000, now + Duration::from_secs(2)),
        );
        assert!(reuse.get(7, &Method::GET, "/a", now).is_some());
        assert!(reuse.get(8, &Method::GET, "/a", now).is_none());
        assert!(reuse.get(7, &Method::POST, "/a", now).is_none());
        assert!(reuse.get(7, &Method::GET, "/a/", now).is_none());
        assert!(reuse.get(7, &Method::GET, "/A", now).is_none());
        assert!(
            reuse
                .get(7, &Method::GET, "/a", now - Duration::from_secs(1))
                .is_none()
        );
        // Dropped once refused for the clock, not served again.
        assert!(reuse.get(7, &Method::GET, "/a", now).is_none());
        reuse.insert(
            7,
            &Method::GET,
            "/a",
            HeaderValue::from_static("ctx"),
            (1_000_000, now + Duration::from_secs(2)),
        );
        assert!(
            reuse
                .get(7, &Method::GET, "/a", now + Duration::from_secs(2))
                .is_none()
        );
    }
}
