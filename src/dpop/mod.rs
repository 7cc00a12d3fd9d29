//! Sender-constrained access tokens: DPoP proofs (RFC 9449) and certificate-bound tokens
//! (RFC 8705 §3), as an [`Authenticator`] wrapper usable in any tower stack.
//!
//! [`DpopAuthenticator`] wraps the authenticator that verifies access tokens (a JWT
//! authenticator, a chain, a token cache, a revocation check) and, for every request:
//!
//! - with `Authorization: DPoP <token>` and one `DPoP` header, checks the proof per RFC 9449
//!   §4.3 (`typ`, asymmetric `alg` from an allow-list, a public `jwk` and nothing private,
//!   the signature, `htm`, `htu` against the public origin, `iat` window, `ath`, server
//!   nonce when configured), lets the inner authenticator verify the token, requires the
//!   token's `cnf.jkt` to be the RFC 7638 thumbprint of the proof's key, and only then
//!   records the proof's `jti` (replays are refused);
//! - with any other credential, refuses a token that carries `cnf.jkt` (a bound token is
//!   never accepted without its proof) and, under [`DpopMode::Required`], any token;
//! - in both cases, refuses a token whose `cnf.x5t#S256` (RFC 8705 §3.1) is not the SHA-256
//!   thumbprint of the [`PeerCertificate`] in the request extensions, or that has no peer
//!   certificate to compare with: 401 `invalid_token`.
//!
//! Introspected tokens are checked the same way: their `cnf` member is part of the
//! [`AuthContext`]'s claims.
//!
//! # Where it sits
//!
//! Outside the verified-token cache: a cache hit skips the token's signature, never the
//! proof, which is checked on every request.
//!
//! ```text
//! AuthenticateLayer(DpopAuthenticator(Revocable(CachedAuthenticator(JwtAuthenticator))))
//! ```
//!
//! Rejections carry a `WWW-Authenticate: DPoP algs="…"` challenge (RFC 9449 §7.1) beside
//! the `Bearer` one when Bearer tokens are accepted, with `error="invalid_dpop_proof"`,
//! `"use_dpop_nonce"` (and a `DPoP-Nonce` header) or `"invalid_token"`. Add
//! [`DpopNonceLayer`] to send a fresh nonce on answered requests, and
//! [`ContextPropagationLayer`](crate::ContextPropagationLayer) removes the `DPoP` header
//! before the request goes on, like `Authorization`.
//!
//! # Example
//!
//! ```
//! use tower_gatekeeper::{JwtAuthenticator, AuthenticateLayer, jwt::Validation};
//! use tower_gatekeeper::dpop::{DpopAuthenticator, DpopConfig, DpopMode};
//! use tower_gatekeeper::keys::{SigningKey, StaticKeys};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let signer = SigningKey::generate_ed25519()?;
//! let jwt = JwtAuthenticator::new(
//!     StaticKeys::new([signer.verifying_key().clone()]),
//!     Validation::new("https://idp.example.test").audiences(["api://orders"]),
//! )?;
//! let config = DpopConfig::new()
//!     .mode(DpopMode::Allowed)
//!     .public_origin("https://api.example.test")?;
//! let layer = AuthenticateLayer::new(DpopAuthenticator::new(jwt, config));
//! # let _ = layer;
//! # Ok(()) }
//! ```

mod nonce;
mod proof;
mod replay;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderName, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use serde_json::Value;
use tower_layer::Layer;
use tower_service::Service;

pub use self::nonce::{MIN_NONCE_SECRET_BYTES, NonceSource};
use self::proof::{CheckedProof, Expected};
pub use self::proof::{ProofError, jwk_thumbprint};
pub use self::replay::{DEFAULT_REPLAY_CAPACITY, ReplayCache};
use self::replay::{Seen, replay_key};
use crate::authenticate::{Authenticator, BoxAuthFuture, Started};
use crate::clock::Clock;
use crate::config_error::ConfigError;
use crate::context::AuthContext;
use crate::credential::{PeerCertificate, RequestHead};
use crate::reject::{DpopChallenge, DpopError, Rejection};
use crate::{Algorithm, AlgorithmSet};

/// The `DPoP` request header (RFC 9449 §4.1).
pub const DPOP: HeaderName = HeaderName::from_static("dpop");
pub use crate::reject::DPOP_NONCE;

/// The default proof algorithms: ES256, ES384, EdDSA, RS256, PS256.
pub const DEFAULT_ALGORITHMS: AlgorithmSet = AlgorithmSet::EMPTY
    .with(Algorithm::ES256)
    .with(Algorithm::ES384)
    .with(Algorithm::EdDSA)
    .with(Algorithm::RS256)
    .with(Algorithm::PS256);

/// Whether an issuer's tokens may, must or must not be presented with DPoP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DpopMode {
    /// The `DPoP` scheme is refused (401); bound tokens are refused too, having no way in.
    Off,
    /// Bearer tokens and DPoP-bound tokens with their proofs (the default).
    #[default]
    Allowed,
    /// Only DPoP-bound tokens with their proofs: tokens without `cnf.jkt` are refused.
    Required,
}

impl std::str::FromStr for DpopMode {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(DpopMode::Off),
            "allowed" => Ok(DpopMode::Allowed),
            "required" => Ok(DpopMode::Required),
            other => Err(ConfigError::invalid(format!(
                "unknown DPoP mode {other:?} (expected \"off\", \"allowed\" or \"required\")"
            ))),
        }
    }
}

/// How [`DpopAuthenticator`] checks proofs.
#[derive(Clone, Debug)]
pub struct DpopConfig {
    algorithms: AlgorithmSet,
    max_age: Duration,
    future_skew: Duration,
    mode: DpopMode,
    issuer_modes: HashMap<String, DpopMode>,
    public_origin: Option<(String, String)>,
    scheme: &'static str,
    nonces: Option<NonceSource>,
    replay: ReplayCache,
    clock: Clock,
}

impl Default for DpopConfig {
    fn default() -> Self {
        DpopConfig::new()
    }
}

impl DpopConfig {
    /// Defaults: [`DEFAULT_ALGORITHMS`], proofs up to 60 s old and 5 s in the future, mode
    /// [`DpopMode::Allowed`], the origin from the request, no nonces, an in-memory replay
    /// cache of [`DEFAULT_REPLAY_CAPACITY`] proofs.
    pub fn new() -> Self {
        DpopConfig {
            algorithms: DEFAULT_ALGORITHMS,
            max_age: Duration::from_secs(60),
            future_skew: Duration::from_secs(5),
            mode: DpopMode::Allowed,
            issuer_modes: HashMap::new(),
            public_origin: None,
            scheme: "http",
            nonces: None,
            replay: ReplayCache::default(),
            clock: Clock::system(),
        }
    }

    /// The accepted proof algorithms.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when the set is empty or holds a symmetric (HMAC) algorithm: a proof
    /// must be signed by a key only the client has.
    pub fn algorithms(
        mut self,
        algorithms: impl IntoIterator<Item = Algorithm>,
    ) -> Result<Self, ConfigError> {
        let set: AlgorithmSet = algorithms.into_iter().collect();
        if set.is_empty() {
            return Err(ConfigError::invalid("no DPoP proof algorithm is allowed"));
        }
        if let Some(alg) = set.iter().find(|a| a.is_hmac()) {
            return Err(ConfigError::invalid(format!(
                "{} cannot sign DPoP proofs: only asymmetric algorithms are accepted",
                alg.as_str()
            )));
        }
        self.algorithms = set;
        Ok(self)
    }

    /// How old a proof's `iat` may be (default 60 s); also how long its `jti` is remembered.
    #[must_use]
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// How far in the future a proof's `iat` may be (default 5 s), for clock skew.
    #[must_use]
    pub fn future_skew(mut self, skew: Duration) -> Self {
        self.future_skew = skew;
        self
    }

    /// The mode of tokens whose issuer has no mode of its own (default
    /// [`DpopMode::Allowed`]).
    #[must_use]
    pub fn mode(mut self, mode: DpopMode) -> Self {
        self.mode = mode;
        self
    }

    /// The mode of tokens whose `iss` (or authenticator name, see
    /// [`AuthContext::issuer`]) is `issuer`.
    #[must_use]
    pub fn issuer_mode(mut self, issuer: impl Into<String>, mode: DpopMode) -> Self {
        self.issuer_modes.insert(issuer.into(), mode);
        self
    }

    /// The origin clients address (`https://api.example.com`, a port when not the
    /// default): a proof's `htu` is compared with it plus the request's path. It replaces
    /// the request's scheme and `Host` entirely; set it whenever a proxy or load balancer
    /// sits in front.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when it is not an `http` or `https` origin without path, query,
    /// fragment or user information.
    pub fn public_origin(mut self, origin: &str) -> Result<Self, ConfigError> {
        let bad = || {
            ConfigError::invalid(format!(
                "public_origin {origin:?} must be an http or https origin such as https://api.example.com (no path, query or user information)"
            ))
        };
        let (scheme, rest) = origin.split_once("://").ok_or_else(bad)?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '@']) || authority.is_empty() {
            return Err(bad());
        }
        let normal = proof::normalize_parts(scheme, authority, "").ok_or_else(bad)?;
        let (scheme, authority) = normal
            .trim_end_matches('/')
            .split_once("://")
            .ok_or_else(bad)?;
        self.public_origin = Some((scheme.to_owned(), authority.to_owned()));
        Ok(self)
    }

    /// The scheme of requests whose URI has none (HTTP/1.1 origin-form), when no
    /// [`public_origin`](Self::public_origin) is set: `"http"` (default) or `"https"` for a
    /// server that terminates TLS itself.
    #[must_use]
    pub fn request_scheme(mut self, https: bool) -> Self {
        self.scheme = if https { "https" } else { "http" };
        self
    }

    /// Requires server nonces (RFC 9449 §8) from `nonces`.
    #[must_use]
    pub fn nonces(mut self, nonces: NonceSource) -> Self {
        self.nonces = Some(nonces);
        self
    }

    /// Where `jti`s are remembered (default: in memory).
    #[must_use]
    pub fn replay_cache(mut self, cache: ReplayCache) -> Self {
        self.replay = cache;
        self
    }

    /// The clock `iat` is compared with (tests).
    #[must_use]
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The accepted proof algorithms.
    pub fn allowed_algorithms(&self) -> AlgorithmSet {
        self.algorithms
    }

    /// The nonce source, when nonces are required.
    pub fn nonce_source(&self) -> Option<&NonceSource> {
        self.nonces.as_ref()
    }

    fn mode_for(&self, ctx: &AuthContext) -> DpopMode {
        ctx.issuer()
            .and_then(|iss| self.issuer_modes.get(iss))
            .copied()
            .unwrap_or(self.mode)
    }

    /// The time window during which a proof is accepted, and its `jti` remembered.
    fn window(&self) -> Duration {
        self.max_age + self.future_skew
    }
}

/// Wraps an [`Authenticator`] with DPoP (RFC 9449) and certificate binding (RFC 8705 §3)
/// checks; see the [module docs](self).
#[derive(Clone)]
pub struct DpopAuthenticator<A> {
    inner: A,
    shared: Arc<Shared>,
}

struct Shared {
    config: DpopConfig,
    /// `algs` of the challenge.
    algs: Arc<str>,
    /// Whether any mode accepts Bearer tokens (for the `Bearer` challenge).
    bearer: bool,
    /// Whether any mode accepts the DPoP scheme.
    dpop: bool,
}

impl<A: fmt::Debug> fmt::Debug for DpopAuthenticator<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopAuthenticator")
            .field("inner", &self.inner)
            .field("config", &self.shared.config)
            .finish()
    }
}

/// How a request presents its access token.
enum Presented<'a> {
    /// `Authorization: DPoP <token>`.
    Dpop(&'a str),
    /// Anything else (Bearer, an API key header, nothing): the inner authenticator decides.
    Other,
}

fn presented<'a>(head: &RequestHead<'a>) -> Result<Presented<'a>, Rejection> {
    let mut values = head.headers().get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(Presented::Other);
    };
    if values.next().is_some() {
        return Ok(Presented::Other); // bearer_token answers 400
    }
    let bytes = value.as_bytes();
    const SCHEME: &[u8] = b"dpop";
    let is_dpop = bytes.len() > SCHEME.len()
        && bytes[..SCHEME.len()].eq_ignore_ascii_case(SCHEME)
        && bytes[SCHEME.len()] == b' ';
    if !is_dpop {
        return Ok(Presented::Other);
    }
    let token = std::str::from_utf8(&bytes[SCHEME.len()..])
        .map_err(|_| Rejection::invalid_request("malformed DPoP authorization"))?
        .trim_start_matches(' ');
    let b64token = !token.is_empty()
        && token.trim_end_matches('=').bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        });
    if !b64token || token.len() > crate::credential::DEFAULT_MAX_TOKEN_BYTES {
        return Err(Rejection::invalid_request("malformed DPoP authorization"));
    }
    Ok(Presented::Dpop(token))
}

impl<A: Authenticator> DpopAuthenticator<A> {
    /// Wraps `inner` with the checks of `config`.
    pub fn new(inner: A, config: DpopConfig) -> Self {
        let algs = config
            .algorithms
            .iter()
            .map(Algorithm::as_str)
            .collect::<Vec<_>>()
            .join(" ");
        let modes = std::iter::once(config.mode).chain(config.issuer_modes.values().copied());
        let (mut bearer, mut dpop) = (false, false);
        for mode in modes {
            bearer |= mode != DpopMode::Required;
            dpop |= mode != DpopMode::Off;
        }
        DpopAuthenticator {
            inner,
            shared: Arc::new(Shared {
                config,
                algs: Arc::from(algs),
                bearer,
                dpop,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DpopConfig {
        &self.shared.config
    }

    /// The wrapped authenticator.
    pub fn inner(&self) -> &A {
        &self.inner
    }
}

impl Shared {
    /// Adds the DPoP challenge to a rejection (when the DPoP scheme is accepted at all).
    fn challenge(&self, rejection: Rejection, error: Option<DpopError>) -> Rejection {
        self.challenge_with(rejection, error, self.bearer)
    }

    /// [`challenge`](Self::challenge), with or without the `Bearer` challenge.
    fn challenge_with(
        &self,
        rejection: Rejection,
        error: Option<DpopError>,
        bearer: bool,
    ) -> Rejection {
        if !self.dpop {
            return rejection;
        }
        let nonce = self
            .config
            .nonces
            .as_ref()
            .and_then(|n| HeaderValue::from_str(&n.issue()).ok());
        rejection.with_dpop_challenge(DpopChallenge {
            algs: Arc::clone(&self.algs),
            error,
            bearer,
            nonce,
        })
    }

    fn proof_rejection(&self, error: ProofError) -> Rejection {
        let dpop_error = if error.wants_nonce() {
            DpopError::UseDpopNonce
        } else {
            DpopError::InvalidDpopProof
        };
        self.challenge(
            Rejection::invalid_token(error.description()),
            Some(dpop_error),
        )
    }

    fn token_rejection(&self, description: &'static str) -> Rejection {
        self.challenge(Rejection::invalid_token(description), None)
    }

    fn now_secs(&self) -> u64 {
        self.config
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
    }

    /// The request's URI without query, normalised, as its proof's `htu` must be.
    fn request_uri(&self, head: &RequestHead<'_>) -> Option<String> {
        let uri = head.uri();
        let (scheme, authority) = match &self.config.public_origin {
            Some((scheme, authority)) => (scheme.as_str(), authority.as_str()),
            None => {
                let scheme = uri.scheme_str().unwrap_or(self.config.scheme);
                let authority = match uri.authority() {
                    Some(a) => a.as_str(),
                    None => head.headers().get(http::header::HOST)?.to_str().ok()?,
                };
                (scheme, authority)
            }
        };
        proof::normalize_parts(scheme, authority, uri.path())
    }

    /// Every check of the proof that needs no server state but the nonce source.
    fn check_proof(&self, head: &RequestHead<'_>, token: &str) -> Result<CheckedProof, Rejection> {
        let mut proofs = head.headers().get_all(&DPOP).iter();
        let proof = match (proofs.next(), proofs.next()) {
            (None, _) => return Err(self.proof_rejection(ProofError::Missing)),
            (Some(_), Some(_)) => return Err(self.proof_rejection(ProofError::MultipleProofs)),
            (Some(p), None) => p
                .to_str()
                .map_err(|_| self.proof_rejection(ProofError::Malformed))?,
        };
        let uri = self
            .request_uri(head)
            .ok_or_else(|| self.proof_rejection(ProofError::Uri))?;
        let expected = Expected {
            method: head.method().as_str(),
            uri: &uri,
            access_token: Some(token),
            now: self.now_secs(),
            max_age: self.config.max_age.as_secs(),
            future_skew: self.config.future_skew.as_secs(),
            algorithms: self.config.algorithms,
        };
        let checked = proof::check(proof, &expected).map_err(|e| self.proof_rejection(e))?;
        if let Some(nonces) = &self.config.nonces {
            match &checked.nonce {
                None => return Err(self.proof_rejection(ProofError::NonceRequired)),
                Some(nonce) if !nonces.check(nonce) => {
                    return Err(self.proof_rejection(ProofError::NonceInvalid));
                }
                Some(_) => {}
            }
        }
        Ok(checked)
    }

    /// The checks on the verified token: mode, `cnf.jkt` against the proof, `cnf.x5t#S256`
    /// against the peer certificate.
    fn check_token(
        &self,
        ctx: &AuthContext,
        proof: Option<&CheckedProof>,
        peer: Option<&PeerCertificate>,
    ) -> Result<(), Rejection> {
        let binding = Binding::of(ctx).map_err(|d| self.token_rejection(d))?;
        let mode = self.config.mode_for(ctx);
        match proof {
            None => {
                if binding.jkt.is_some() {
                    return Err(
                        self.token_rejection("a DPoP-bound access token requires a DPoP proof")
                    );
                }
                if mode == DpopMode::Required {
                    // This issuer takes no Bearer tokens: only the DPoP challenge.
                    return Err(self.challenge_with(
                        Rejection::invalid_token("this access token requires DPoP"),
                        None,
                        false,
                    ));
                }
            }
            Some(proof) => {
                if mode == DpopMode::Off {
                    return Err(
                        self.token_rejection("the DPoP scheme is not accepted for this token")
                    );
                }
                match binding.jkt {
                    None => {
                        return Err(self.token_rejection("the access token is not DPoP-bound"));
                    }
                    Some(jkt) if jkt != proof.jkt => {
                        return Err(
                            self.token_rejection("the access token is bound to another DPoP key")
                        );
                    }
                    Some(_) => {}
                }
            }
        }
        check_certificate(binding.x5t, peer).map_err(|d| self.token_rejection(d))
    }
}

/// A token's confirmation members (RFC 7800 `cnf`).
struct Binding<'a> {
    jkt: Option<&'a str>,
    x5t: Option<&'a str>,
}

impl<'a> Binding<'a> {
    fn of(ctx: &'a AuthContext) -> Result<Self, &'static str> {
        let Some(cnf) = ctx.claims_map().get("cnf") else {
            return Ok(Binding {
                jkt: None,
                x5t: None,
            });
        };
        let Value::Object(cnf) = cnf else {
            return Err("the access token's cnf claim is malformed");
        };
        let member = |name: &str| match cnf.get(name) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.as_str())),
            Some(_) => Err("the access token's cnf claim is malformed"),
        };
        Ok(Binding {
            jkt: member("jkt")?,
            x5t: member("x5t#S256")?,
        })
    }
}

/// RFC 8705 §3: a certificate-bound token only with the certificate it is bound to.
fn check_certificate(
    x5t: Option<&str>,
    peer: Option<&PeerCertificate>,
) -> Result<(), &'static str> {
    let Some(x5t) = x5t else { return Ok(()) };
    let Some(peer) = peer else {
        return Err("a certificate-bound access token requires the client certificate");
    };
    use subtle::ConstantTimeEq;
    if bool::from(x5t.as_bytes().ct_eq(peer.sha256_thumbprint().as_bytes())) {
        Ok(())
    } else {
        Err("the access token is bound to another client certificate")
    }
}

impl<A: Authenticator> Authenticator for DpopAuthenticator<A> {
    type Future = BoxAuthFuture;

    fn authenticate(&self, head: &RequestHead<'_>) -> Result<Self::Future, Rejection> {
        self.start(head).map(|started| match started {
            Started::Ready(ctx) => Box::pin(std::future::ready(Ok(ctx))) as BoxAuthFuture,
            Started::Pending(fut) => fut,
        })
    }

    fn start(&self, head: &RequestHead<'_>) -> Result<Started<Self::Future>, Rejection> {
        let shared = &self.shared;
        let peer = head.extensions().get::<PeerCertificate>().cloned();
        match presented(head).map_err(|r| shared.challenge(r, None))? {
            Presented::Other => {
                let started = self
                    .inner
                    .start(head)
                    .map_err(|r| shared.challenge(r, None))?;
                match started {
                    Started::Ready(ctx) => {
                        shared.check_token(&ctx, None, peer.as_ref())?;
                        Ok(Started::Ready(ctx))
                    }
                    Started::Pending(fut) => {
                        let shared = Arc::clone(shared);
                        Ok(Started::Pending(Box::pin(async move {
                            let ctx = fut.await.map_err(|r| shared.challenge(r, None))?;
                            shared.check_token(&ctx, None, peer.as_ref())?;
                            Ok(ctx)
                        })))
                    }
                }
            }
            Presented::Dpop(token) => {
                if !shared.dpop {
                    return Err(Rejection::invalid_token("the DPoP scheme is not accepted"));
                }
                let proof = shared.check_proof(head, token)?;
                let started = self
                    .inner
                    .start(&head.with_access_token(token))
                    .map_err(|r| shared.challenge(r, None))?;
                let ready = match started {
                    Started::Ready(ctx) => {
                        shared.check_token(&ctx, Some(&proof), peer.as_ref())?;
                        let key = replay_key(&proof.jkt, &proof.jti);
                        let now = shared.config.clock.now();
                        if shared
                            .config
                            .replay
                            .check_local(key, now, shared.config.window())
                            == Seen::Replayed
                        {
                            return Err(shared.proof_rejection(ProofError::Replayed));
                        }
                        if !shared.config.replay.is_shared() {
                            return Ok(Started::Ready(ctx));
                        }
                        Ok(ctx)
                    }
                    Started::Pending(fut) => Err(fut),
                };
                let shared = Arc::clone(shared);
                Ok(Started::Pending(Box::pin(async move {
                    let key = replay_key(&proof.jkt, &proof.jti);
                    let window = shared.config.window();
                    let ctx = match ready {
                        Ok(ctx) => ctx,
                        Err(fut) => {
                            let ctx = fut.await.map_err(|r| shared.challenge(r, None))?;
                            shared.check_token(&ctx, Some(&proof), peer.as_ref())?;
                            let now = shared.config.clock.now();
                            if shared.config.replay.check_local(key, now, window) == Seen::Replayed
                            {
                                return Err(shared.proof_rejection(ProofError::Replayed));
                            }
                            ctx
                        }
                    };
                    match shared.config.replay.check_shared(key, window).await {
                        Ok(Seen::New) => Ok(ctx),
                        Ok(Seen::Replayed) => Err(shared.proof_rejection(ProofError::Replayed)),
                        Err(e) => Err(Rejection::keys_unavailable(Duration::from_secs(1))
                            .with_description("the DPoP replay check is temporarily unavailable")
                            .with_source(e)),
                    }
                })))
            }
        }
    }

    fn still_trusted(&self, ctx: &AuthContext) -> bool {
        self.inner.still_trusted(ctx)
    }
}

/// Adds a fresh `DPoP-Nonce` to the responses of requests that carried a `DPoP` proof
/// (RFC 9449 §8.2), so clients hold a current nonce before the one they use expires.
/// Responses that already have one (a `use_dpop_nonce` rejection) are left alone.
#[derive(Debug, Clone)]
pub struct DpopNonceLayer {
    nonces: NonceSource,
}

impl DpopNonceLayer {
    /// A layer issuing nonces from `nonces` (the same source as the authenticator's).
    pub fn new(nonces: NonceSource) -> Self {
        DpopNonceLayer { nonces }
    }
}

impl<S> Layer<S> for DpopNonceLayer {
    type Service = DpopNonce<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DpopNonce {
            inner,
            nonces: self.nonces.clone(),
        }
    }
}

/// The service of [`DpopNonceLayer`].
#[derive(Debug, Clone)]
pub struct DpopNonce<S> {
    inner: S,
    nonces: NonceSource,
}

impl<S, B, ResBody> Service<Request<B>> for DpopNonce<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = NonceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let nonces = req
            .headers()
            .contains_key(&DPOP)
            .then(|| self.nonces.clone());
        NonceFuture {
            inner: self.inner.call(req),
            nonces,
        }
    }
}

pin_project! {
    /// The future of [`DpopNonce`].
    pub struct NonceFuture<F> {
        #[pin]
        inner: F,
        nonces: Option<NonceSource>,
    }
}

impl<F: fmt::Debug> fmt::Debug for NonceFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NonceFuture").finish_non_exhaustive()
    }
}

impl<F, ResBody, E> Future for NonceFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match this.inner.poll(cx) {
            Poll::Ready(Ok(response)) => response,
            other => return other,
        };
        if let Some(nonces) = this.nonces.take()
            && !response.headers().contains_key(&DPOP_NONCE)
            && let Ok(value) = HeaderValue::from_str(&nonces.issue())
        {
            response.headers_mut().insert(DPOP_NONCE, value);
        }
        Poll::Ready(Ok(response))
    }
}

/// The access-token hash a proof sent with `token` carries in `ath` (base64url SHA-256).
pub fn access_token_hash(token: &str) -> String {
    proof::access_token_hash(token)
}

#[cfg(test)]
mod tests;
