//! API keys: a configurable header, keys stored only as SHA-256 hashes, compared in
//! constant time, each mapped to an identity.

use std::collections::HashMap;
use std::fmt;
use std::future::{Ready, ready};
use std::sync::{Arc, RwLock};

use http::HeaderName;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Authenticator, Started};
use crate::config_error::ConfigError;
use crate::context::{AuthContext, CredentialKind};
use crate::credential::RequestHead;
use crate::reject::Rejection;

/// The longest API key accepted (longer values are rejected before hashing).
const MAX_KEY_BYTES: usize = 1024;

/// The SHA-256 hash of an API key: the only form in which keys are configured and kept.
///
/// **Why SHA-256.** API keys are long random secrets (generate at least 128 bits, e.g. 32
/// random bytes, base64url), not passwords: nobody can guess them, so a slow password hash
/// (argon2, bcrypt) would only add milliseconds of CPU to every request without adding
/// security. A fast preimage-resistant hash is what matters: whoever reads the key file (or
/// a memory dump) learns nothing usable.
///
/// **Why constant time.** The hash of the presented key is compared with the stored hashes
/// with [`subtle`]'s constant-time equality, so how long a failed comparison takes never
/// tells how many leading bytes matched. (Entries are indexed by the first 8 bytes of their
/// hash; matching those by chance takes about 2^64 attempts, so the index reveals nothing.)
///
/// ```
/// use tower_gatekeeper::authenticate::ApiKeyHash;
///
/// let hash = ApiKeyHash::of("my-very-secret-key");
/// assert_eq!(ApiKeyHash::from_hex(&hash.to_hex()).unwrap(), hash);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApiKeyHash([u8; 32]);

impl ApiKeyHash {
    /// The hash of `key` (for tools that provision keys; the gateway never sees plain keys
    /// in its configuration).
    pub fn of(key: &str) -> Self {
        ApiKeyHash(Sha256::digest(key.as_bytes()).into())
    }

    /// Parses 64 hexadecimal digits (either case), as printed by `sha256sum`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when `hex` is not 64 hexadecimal digits.
    pub fn from_hex(hex: &str) -> Result<Self, ConfigError> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return Err(ConfigError::invalid(
                "an API key hash must be 64 hexadecimal digits (SHA-256)",
            ));
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let hi = hex_value(pair[0]);
            let lo = hex_value(pair[1]);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out[i] = hi << 4 | lo,
                _ => {
                    return Err(ConfigError::invalid(
                        "an API key hash must be 64 hexadecimal digits (SHA-256)",
                    ));
                }
            }
        }
        Ok(ApiKeyHash(out))
    }

    /// The hash as 64 lowercase hexadecimal digits.
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(DIGITS[usize::from(b >> 4)] as char);
            s.push(DIGITS[usize::from(b & 15)] as char);
        }
        s
    }

    fn index(&self) -> u64 {
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&self.0[..8]);
        u64::from_le_bytes(prefix)
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

impl fmt::Debug for ApiKeyHash {
    /// Shows only the first 4 bytes, enough to tell entries apart in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeyHash({}…)", &self.to_hex()[..8])
    }
}

/// One configured API key: its hash and the identity it stands for.
///
/// ```
/// use tower_gatekeeper::authenticate::{ApiKeyEntry, ApiKeyHash};
///
/// let entry = ApiKeyEntry::new(ApiKeyHash::of("k"), "ci-bot")
///     .roles(["deployer"])
///     .scopes(["orders:read"])
///     .tenant("acme");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ApiKeyEntry {
    hash: ApiKeyHash,
    subject: String,
    roles: Vec<String>,
    scopes: Vec<String>,
    tenant: Option<String>,
}

impl ApiKeyEntry {
    /// The key whose hash is `hash`, authenticating as `subject`.
    pub fn new(hash: ApiKeyHash, subject: impl Into<String>) -> Self {
        ApiKeyEntry {
            hash,
            subject: subject.into(),
            roles: Vec::new(),
            scopes: Vec::new(),
            tenant: None,
        }
    }

    /// The identity's roles.
    pub fn roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// The identity's scopes.
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// The identity's tenant.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    fn context(&self, issuer: &str) -> AuthContext {
        let mut builder = AuthContext::builder(CredentialKind::ApiKey)
            .subject(self.subject.clone())
            .issuer(issuer)
            .roles(self.roles.clone())
            .scopes(self.scopes.clone())
            .claim("sub", self.subject.clone())
            .claim("roles", self.roles.clone())
            .claim("scope", self.scopes.join(" "));
        if let Some(tenant) = &self.tenant {
            builder = builder
                .tenant(tenant.clone())
                .claim("tenant", tenant.clone());
        }
        builder.build()
    }
}

/// Authenticates requests by an API key in a header (default `x-api-key`).
///
/// Keys are configured by hash only ([`ApiKeyHash`] says which hash and why) and compared in
/// constant time. The context of each key is built once, so a successful lookup costs a
/// SHA-256 of the presented key, one hash-map probe and a reference-count increment.
///
/// Rotation without restart: [`replace`](Self::replace) swaps the whole key set atomically
/// for every clone (the gateway example calls it when the key file changes or on `SIGHUP`).
///
/// | request | outcome |
/// |---|---|
/// | no key header | `MissingCredential` (401, or pass-through on optional routes) |
/// | two key headers, empty or over 1 KiB | 400 `invalid_request` |
/// | unknown key | 401 `invalid_token` |
///
/// ```
/// use tower_gatekeeper::{Authenticator, CredentialKind};
/// use tower_gatekeeper::authenticate::{ApiKeyAuthenticator, ApiKeyEntry, ApiKeyHash};
/// use tower_gatekeeper::credential::RequestHead;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let auth = ApiKeyAuthenticator::new([
///     ApiKeyEntry::new(ApiKeyHash::of("s3cr3t-key-of-ci"), "ci-bot").roles(["deployer"]),
/// ])
/// .unwrap();
/// let req = http::Request::builder().header("x-api-key", "s3cr3t-key-of-ci").body(()).unwrap();
/// let ctx = auth.authenticate(&RequestHead::of(&req)).unwrap().await.unwrap();
/// assert_eq!(ctx.subject(), Some("ci-bot"));
/// assert_eq!(ctx.credential_kind(), CredentialKind::ApiKey);
/// # }
/// ```
#[derive(Clone)]
pub struct ApiKeyAuthenticator {
    header: HeaderName,
    table: Arc<RwLock<Arc<KeyTable>>>,
}

struct KeyTable {
    by_index: HashMap<u64, Vec<(ApiKeyHash, AuthContext)>>,
    len: usize,
    /// The issuer of every context: the authenticator's name.
    issuer: String,
}

impl KeyTable {
    fn build(
        entries: impl IntoIterator<Item = ApiKeyEntry>,
        issuer: &str,
    ) -> Result<Self, ConfigError> {
        let mut table = KeyTable {
            by_index: HashMap::new(),
            len: 0,
            issuer: issuer.to_owned(),
        };
        for entry in entries {
            if entry.subject.is_empty() {
                return Err(ConfigError::invalid(
                    "an API key entry needs a non-empty id",
                ));
            }
            let ctx = entry.context(issuer);
            if let Err(error) = ctx.check_forwardable() {
                return Err(ConfigError::invalid(format!(
                    "API key {:?}: {error}",
                    entry.hash
                )));
            }
            let bucket = table.by_index.entry(entry.hash.index()).or_default();
            if bucket.iter().any(|(h, _)| *h == entry.hash) {
                return Err(ConfigError::invalid(format!(
                    "API key {:?} (id {:?}) is configured twice",
                    entry.hash, entry.subject
                )));
            }
            bucket.push((entry.hash, ctx));
            table.len += 1;
        }
        Ok(table)
    }

    fn find(&self, presented: &ApiKeyHash) -> Option<AuthContext> {
        let bucket = self.by_index.get(&presented.index())?;
        let mut found = None;
        for (hash, ctx) in bucket {
            if bool::from(hash.0.ct_eq(&presented.0)) {
                found = Some(ctx);
            }
        }
        found.cloned()
    }
}

impl ApiKeyAuthenticator {
    /// The default header, `x-api-key`.
    pub const DEFAULT_HEADER: &'static str = "x-api-key";

    /// The default name of the authenticator, the issuer of its contexts: `api-key`.
    pub const DEFAULT_ISSUER: &'static str = "api-key";

    /// An authenticator for `entries`, reading the `x-api-key` header.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when a hash is configured twice or an id is empty.
    pub fn new(entries: impl IntoIterator<Item = ApiKeyEntry>) -> Result<Self, ConfigError> {
        Ok(ApiKeyAuthenticator {
            header: HeaderName::from_static(Self::DEFAULT_HEADER),
            table: Arc::new(RwLock::new(Arc::new(KeyTable::build(
                entries,
                Self::DEFAULT_ISSUER,
            )?))),
        })
    }

    /// Names this authenticator: the issuer of its contexts ([`AuthContext::issuer`]),
    /// forwarded as `x-user-issuer` and matched by a route's `issuers` (default `api-key`).
    ///
    /// ```
    /// use tower_gatekeeper::authenticate::{ApiKeyAuthenticator, ApiKeyEntry, ApiKeyHash};
    ///
    /// let auth = ApiKeyAuthenticator::new([ApiKeyEntry::new(ApiKeyHash::of("k"), "ci-bot")])
    ///     .unwrap()
    ///     .with_issuer("ci-keys")
    ///     .unwrap();
    /// assert_eq!(auth.verify("k").unwrap().issuer(), Some("ci-keys"));
    /// ```
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when `name` is empty or not visible ASCII (it is forwarded in a
    /// header).
    pub fn with_issuer(mut self, name: &str) -> Result<Self, ConfigError> {
        if !crate::context::is_exact_header_text(name) {
            return Err(ConfigError::invalid(format!(
                "API key authenticator name {name:?} must be non-empty visible ASCII"
            )));
        }
        let renamed = {
            let current = Arc::clone(&self.table.read().unwrap_or_else(|e| e.into_inner()));
            let by_index = current
                .by_index
                .iter()
                .map(|(index, bucket)| {
                    let bucket = bucket
                        .iter()
                        .map(|(hash, ctx)| (*hash, ctx.with_issuer(name)))
                        .collect();
                    (*index, bucket)
                })
                .collect();
            KeyTable {
                by_index,
                len: current.len,
                issuer: name.to_owned(),
            }
        };
        // A table of its own: clones made before keep their name.
        self.table = Arc::new(RwLock::new(Arc::new(renamed)));
        Ok(self)
    }

    /// Reads the key from `header` instead.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when `header` is not a valid header name, or is `authorization`
    /// (bearer tokens go through the other authenticators).
    pub fn with_header(mut self, header: &str) -> Result<Self, ConfigError> {
        let name = HeaderName::try_from(header).map_err(|_| {
            ConfigError::invalid(format!(
                "API key header {header:?} is not a valid header name"
            ))
        })?;
        if name == http::header::AUTHORIZATION {
            return Err(ConfigError::invalid(
                "the API key header cannot be `authorization`; use e.g. `x-api-key`",
            ));
        }
        self.header = name;
        Ok(self)
    }

    /// The header the key is read from.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// Replaces every key at once, for all clones (rotation without restart). On error the
    /// current keys stay.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn replace(
        &self,
        entries: impl IntoIterator<Item = ApiKeyEntry>,
    ) -> Result<(), ConfigError> {
        let issuer = self
            .table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .issuer
            .clone();
        let table = Arc::new(KeyTable::build(entries, &issuer)?);
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = table;
        Ok(())
    }

    /// How many keys are configured.
    pub fn len(&self) -> usize {
        self.table.read().unwrap_or_else(|e| e.into_inner()).len
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the request carries this authenticator's header (used by the chain).
    pub(crate) fn is_present(&self, head: &RequestHead<'_>) -> bool {
        head.headers().contains_key(&self.header)
    }

    /// Authenticates a bare key.
    ///
    /// # Errors
    ///
    /// `invalid_token` when the key is unknown.
    pub fn verify(&self, key: &str) -> Result<AuthContext, Rejection> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(Rejection::invalid_request("malformed API key"));
        }
        let presented = ApiKeyHash::of(key);
        let table = Arc::clone(&self.table.read().unwrap_or_else(|e| e.into_inner()));
        table
            .find(&presented)
            .ok_or_else(|| Rejection::invalid_token("unknown API key"))
    }
}

impl fmt::Debug for ApiKeyAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyAuthenticator")
            .field("header", &self.header)
            .field("keys", &self.len())
            .finish()
    }
}

impl Authenticator for ApiKeyAuthenticator {
    type Future = Ready<Result<AuthContext, Rejection>>;

    fn authenticate(&self, head: &RequestHead<'_>) -> Result<Self::Future, Rejection> {
        Ok(ready(self.check(head)))
    }

    /// Always [`Started::Ready`]: a key is known or not, with nothing to await.
    fn start(&self, head: &RequestHead<'_>) -> Result<Started<Self::Future>, Rejection> {
        self.check(head).map(Started::Ready)
    }
}

impl ApiKeyAuthenticator {
    /// The outcome for the key in `head`.
    fn check(&self, head: &RequestHead<'_>) -> Result<AuthContext, Rejection> {
        let mut values = head.headers().get_all(&self.header).iter();
        let Some(value) = values.next() else {
            return Err(Rejection::missing_credential());
        };
        if values.next().is_some() {
            return Err(Rejection::invalid_request("more than one API key header"));
        }
        let key = value
            .to_str()
            .map_err(|_| Rejection::invalid_request("malformed API key"))?
            .trim();
        self.verify(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reject::RejectionKind;

    fn auth() -> ApiKeyAuthenticator {
        ApiKeyAuthenticator::new([
            ApiKeyEntry::new(ApiKeyHash::of("key-one"), "one")
                .roles(["a"])
                .scopes(["s:1"])
                .tenant("t1"),
            ApiKeyEntry::new(ApiKeyHash::of("key-two"), "two"),
        ])
        .unwrap()
    }

    #[test]
    fn contexts_name_the_authenticator_as_issuer() {
        let auth = auth();
        assert_eq!(
            auth.verify("key-one").unwrap().issuer(),
            Some(ApiKeyAuthenticator::DEFAULT_ISSUER)
        );
        let named = auth.clone().with_issuer("ci-keys").unwrap();
        assert_eq!(named.verify("key-two").unwrap().issuer(), Some("ci-keys"));
        assert_eq!(auth.verify("key-two").unwrap().issuer(), Some("api-key"));
        // Rotation keeps the name.
        named
            .replace([ApiKeyEntry::new(ApiKeyHash::of("key-new"), "new")])
            .unwrap();
        assert_eq!(named.verify("key-new").unwrap().issuer(), Some("ci-keys"));
        for bad in ["", " ci", "ci\n", "clé"] {
            assert!(auth.clone().with_issuer(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn identities_that_cannot_be_forwarded_are_configuration_errors() {
        for entry in [
            ApiKeyEntry::new(ApiKeyHash::of("k"), "bot\r\nx-admin: 1"),
            ApiKeyEntry::new(ApiKeyHash::of("k"), "bøt"),
            ApiKeyEntry::new(ApiKeyHash::of("k"), "bot").roles(["a\u{0}"]),
            ApiKeyEntry::new(ApiKeyHash::of("k"), "bot").tenant("t\n"),
        ] {
            let err = ApiKeyAuthenticator::new([entry]).unwrap_err();
            assert!(err.to_string().contains("forwarded exactly"), "{err}");
        }
        // Non-ASCII tenants are forwarded percent-encoded.
        assert!(
            ApiKeyAuthenticator::new([ApiKeyEntry::new(ApiKeyHash::of("k"), "bot").tenant("acmé")])
                .is_ok()
        );
    }

    fn run(auth: &ApiKeyAuthenticator, values: &[&str]) -> Result<AuthContext, RejectionKind> {
        let mut req = http::Request::new(());
        for v in values {
            req.headers_mut()
                .append(auth.header().clone(), v.parse().unwrap());
        }
        let fut = auth
            .authenticate(&RequestHead::of(&req))
            .map_err(|r| r.kind())?;
        fut.into_inner().map_err(|r| r.kind())
    }

    #[test]
    fn known_unknown_missing_malformed() {
        let auth = auth();
        let ctx = run(&auth, &["key-one"]).unwrap();
        assert_eq!(ctx.subject(), Some("one"));
        assert_eq!(ctx.roles(), ["a"]);
        assert!(ctx.has_scope("s:1"));
        assert_eq!(ctx.tenant(), Some("t1"));
        assert_eq!(ctx.credential_kind(), CredentialKind::ApiKey);
        assert_eq!(run(&auth, &["key-two"]).unwrap().subject(), Some("two"));
        assert_eq!(
            run(&auth, &["key-three"]).unwrap_err(),
            RejectionKind::InvalidToken
        );
        assert_eq!(
            run(&auth, &[]).unwrap_err(),
            RejectionKind::MissingCredential
        );
        assert_eq!(
            run(&auth, &["key-one", "key-one"]).unwrap_err(),
            RejectionKind::InvalidRequest
        );
        assert_eq!(
            run(&auth, &[""]).unwrap_err(),
            RejectionKind::InvalidRequest
        );
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert_eq!(
            run(&auth, &[&long]).unwrap_err(),
            RejectionKind::InvalidRequest
        );
    }

    #[test]
    fn rotation_is_seen_by_clones() {
        let auth = auth();
        let clone = auth.clone();
        auth.replace([ApiKeyEntry::new(ApiKeyHash::of("key-new"), "new")])
            .unwrap();
        assert_eq!(
            run(&clone, &["key-one"]).unwrap_err(),
            RejectionKind::InvalidToken
        );
        assert_eq!(run(&clone, &["key-new"]).unwrap().subject(), Some("new"));
        // A bad replacement keeps the current keys.
        let dup = ApiKeyEntry::new(ApiKeyHash::of("x"), "x");
        assert!(auth.replace([dup.clone(), dup]).is_err());
        assert_eq!(run(&clone, &["key-new"]).unwrap().subject(), Some("new"));
    }

    #[test]
    fn custom_header_and_config_errors() {
        let auth = auth().with_header("X-Service-Key").unwrap();
        assert_eq!(auth.header().as_str(), "x-service-key");
        assert_eq!(run(&auth, &["key-one"]).unwrap().subject(), Some("one"));
        assert!(
            super::ApiKeyAuthenticator::new([])
                .unwrap()
                .with_header("authorization")
                .is_err()
        );
        assert!(
            super::ApiKeyAuthenticator::new([])
                .unwrap()
                .with_header("bad header")
                .is_err()
        );
        assert!(ApiKeyHash::from_hex("abc").is_err());
        assert!(ApiKeyHash::from_hex(&"g".repeat(64)).is_err());
        let hex = ApiKeyHash::of("key-one").to_hex();
        assert_eq!(
            ApiKeyHash::from_hex(&hex.to_uppercase()).unwrap(),
            ApiKeyHash::of("key-one")
        );
        // SHA-256("abc"), the FIPS 180-2 test vector.
        assert_eq!(
            ApiKeyHash::of("abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let shown = format!("{:?}", ApiKeyHash::of("abc"));
        assert_eq!(shown, "ApiKeyHash(ba7816bf…)");
    }
}
