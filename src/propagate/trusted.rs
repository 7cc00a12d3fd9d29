//! The downstream side: [`TrustedContextLayer`] rebuilds the [`AuthContext`] that a gateway
//! propagated, so services behind the gateway use the same extractor as the gateway itself.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderName, HeaderValue};
use pin_project_lite::pin_project;
use serde_json::{Map, Value};
use tower_layer::Layer;

use super::PropagationBuilder;
use super::headers::{HeaderNames, percent_decode};
use super::signed::{CONTEXT_TYP, DEFAULT_CONTEXT_ISSUER, MAX_CONTEXT_LIFETIME, claim, rebuild};
use crate::JwtAuthenticator;
use crate::authenticate::{AuthMode, Authenticate, AuthenticateLayer, Authenticator, JwtFuture};
use crate::clock::Clock;
use crate::config_error::ConfigError;
use crate::context::{AuthContext, CredentialKind};
use crate::credential::RequestHead;
use crate::jwt::Validation;
use crate::keys::{KeySource, StaticKeys};
use crate::reject::{DefaultRejection, Rejection};

/// The default leeway for a signed context's `exp` and `iat`: small, as contexts live
/// seconds.
pub const DEFAULT_CONTEXT_LEEWAY: Duration = Duration::from_secs(5);

/// The default longest lifetime (`exp` − `iat`) of a signed context accepted (5 minutes,
/// the longest a gateway may mint).
pub const DEFAULT_MAX_CONTEXT_LIFETIME: Duration = MAX_CONTEXT_LIFETIME;

/// The largest signed context accepted, in bytes.
const MAX_CONTEXT_BYTES: usize = 16 * 1024;

/// How a service checks the signed context minted by the gateway's
/// [`ContextPropagationLayer`](crate::ContextPropagationLayer) (see
/// [`PropagationBuilder::sign_context`]).
///
/// Checked: the signature with the configured keys (picked by `kid`, bound to their
/// algorithms), `typ` `gatekeeper-ctx+jwt`, `iss` (default `tower-gatekeeper`), `aud` (this
/// service), `exp` with a small leeway (default 5 s), `iat` no later than now plus the
/// leeway, a lifetime (`exp` − `iat`) no longer than
/// [`max_lifetime`](Self::max_lifetime) (default 5 minutes: a gateway with a fast clock or a
/// stolen key cannot mint long-lived contexts), and the request the context was minted for:
/// its `htm` must be this request's method and its `htu` this request's path (so a context
/// captured from one request cannot be replayed to another method or path). The path is
/// compared as the service receives it: a proxy between the gateway and the service must not
/// rewrite it.
///
/// ```
/// use std::time::Duration;
/// use tower_gatekeeper::propagate::SignedContextValidation;
///
/// let validation = SignedContextValidation::new()
///     .audience("orders-svc")
///     .leeway(Duration::from_secs(2));
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct SignedContextValidation {
    issuer: String,
    audience: Option<String>,
    any_audience: bool,
    leeway: Duration,
    max_lifetime: Duration,
    clock: Clock,
    header: String,
}

impl Default for SignedContextValidation {
    fn default() -> Self {
        Self::new()
    }
}

impl SignedContextValidation {
    /// Defaults: issuer `tower-gatekeeper`, header `x-auth-context`, leeway 5 s, and no
    /// audience yet: set [`audience`](Self::audience) (or choose
    /// [`any_audience`](Self::any_audience)).
    pub fn new() -> Self {
        SignedContextValidation {
            issuer: DEFAULT_CONTEXT_ISSUER.to_owned(),
            audience: None,
            any_audience: false,
            leeway: DEFAULT_CONTEXT_LEEWAY,
            max_lifetime: DEFAULT_MAX_CONTEXT_LIFETIME,
            clock: Clock::system(),
            header: "x-auth-context".to_owned(),
        }
    }

    /// The gateway's context issuer (its
    /// [`context_issuer`](PropagationBuilder::context_issuer)).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// This service's name, as the gateway's
    /// [`context_audience`](PropagationBuilder::context_audience) sets it. Contexts minted
    /// for another service are refused.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Accepts contexts for any audience (or none). Only when the gateway signs with a key
    /// used for this service alone.
    pub fn any_audience(mut self) -> Self {
        self.any_audience = true;
        self
    }

    /// Tolerance for clock skew between the gateway and this service (default 5 s).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The longest lifetime (`exp` − `iat`) of a context accepted (default
    /// [`DEFAULT_MAX_CONTEXT_LIFETIME`], 5 minutes). Set it to the gateway's
    /// `context_lifetime` (default 5 s) to refuse anything longer.
    pub fn max_lifetime(mut self, max_lifetime: Duration) -> Self {
        self.max_lifetime = max_lifetime;
        self
    }

    /// The clock used for `exp` and `iat` (tests).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The header carrying the signed context (default `x-auth-context`).
    pub fn header(mut self, name: impl Into<String>) -> Self {
        self.header = name.into();
        self
    }

    fn into_parts(self) -> Result<(Validation, HeaderName, Arc<Checks>), ConfigError> {
        let header = PropagationBuilder::default()
            .context_header(self.header)
            .header_names()?
            .context;
        if self.max_lifetime < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "signed context: max_lifetime must be at least one second",
            ));
        }
        let checks = Arc::new(Checks {
            clock: self.clock.clone(),
            leeway: self.leeway,
            max_lifetime: self.max_lifetime,
        });
        let mut validation = Validation::new(self.issuer)
            .required_typ(CONTEXT_TYP)
            // The gateway decides whether a caller needs a subject.
            .require_subject(false)
            .roles_claim(claim::ROLES)
            .tenant_claim(claim::TENANT)
            .leeway(self.leeway)
            .clock(self.clock)
            .max_token_bytes(MAX_CONTEXT_BYTES);
        validation = match (self.audience, self.any_audience) {
            (Some(audience), _) => validation.audiences([audience]),
            (None, true) => validation.any_audience(),
            (None, false) => {
                return Err(ConfigError::invalid(
                    "signed context: no audience configured; set SignedContextValidation::audience to this service's name (the gateway's context_audience), or choose any_audience explicitly",
                ));
            }
        };
        Ok((validation, header, checks))
    }
}

/// What is checked of a verified context beyond the JWT rules.
#[derive(Debug)]
struct Checks {
    clock: Clock,
    leeway: Duration,
    max_lifetime: Duration,
}

impl Checks {
    /// `iat`, the lifetime and the request binding of a verified context.
    fn check(
        &self,
        verified: &AuthContext,
        method: &http::Method,
        path: &str,
    ) -> Result<(), Rejection> {
        let claims = verified.claims_map();
        let number = |name| claims.get(name).and_then(Value::as_f64);
        let (Some(iat), Some(exp)) = (number("iat"), number("exp")) else {
            return Err(Rejection::invalid_token(
                "the signed context has no iat or exp",
            ));
        };
        let now = self
            .clock
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        if iat > now + self.leeway.as_secs_f64() {
            return Err(Rejection::invalid_token(
                "the signed context was issued in the future",
            ));
        }
        if exp - iat > self.max_lifetime.as_secs_f64() {
            return Err(Rejection::invalid_token(
                "the signed context lives longer than allowed",
            ));
        }
        let bound = claims.get(claim::METHOD).and_then(Value::as_str) == Some(method.as_str())
            && claims.get(claim::PATH).and_then(Value::as_str) == Some(path);
        if !bound {
            return Err(Rejection::invalid_token(
                "the signed context was minted for another request",
            ));
        }
        Ok(())
    }
}

/// Reads the context a gateway propagated into an [`AuthContext`]: the
/// [`Authenticator`] behind [`TrustedContextLayer`].
pub struct TrustedContext<K = StaticKeys> {
    mode: Mode<K>,
}

enum Mode<K> {
    Signed {
        verifier: JwtAuthenticator<K>,
        header: HeaderName,
        checks: Arc<Checks>,
    },
    Plain(Arc<HeaderNames>),
}

impl<K> Clone for TrustedContext<K> {
    fn clone(&self) -> Self {
        let mode = match &self.mode {
            Mode::Signed {
                verifier,
                header,
                checks,
            } => Mode::Signed {
                verifier: verifier.clone(),
                header: header.clone(),
                checks: Arc::clone(checks),
            },
            Mode::Plain(names) => Mode::Plain(Arc::clone(names)),
        };
        TrustedContext { mode }
    }
}

impl<K> fmt::Debug for TrustedContext<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.mode {
            Mode::Signed {
                verifier,
                header,
                checks,
            } => f
                .debug_struct("TrustedContext::Signed")
                .field("verifier", verifier)
                .field("header", header)
                .field("checks", checks)
                .finish(),
            Mode::Plain(names) => f
                .debug_struct("TrustedContext::PlainHeaders")
                .field("names", names)
                .finish(),
        }
    }
}

impl<K: KeySource> Authenticator for TrustedContext<K> {
    type Future = TrustedContextFuture<K>;

    fn authenticate(&self, head: &RequestHead<'_>) -> Result<Self::Future, Rejection> {
        match &self.mode {
            Mode::Signed {
                verifier,
                header,
                checks,
            } => {
                let value =
                    single(head.headers(), header)?.ok_or_else(Rejection::missing_credential)?;
                let token = value
                    .to_str()
                    .map_err(|_| Rejection::invalid_token("malformed signed context"))?;
                Ok(TrustedContextFuture {
                    kind: FutureKind::Verifying {
                        fut: verifier.start(token)?,
                        request: Some(Bound {
                            checks: Arc::clone(checks),
                            method: head.method().clone(),
                            path: head.uri().path().to_owned(),
                        }),
                    },
                })
            }
            Mode::Plain(names) => {
                let ctx = read_plain(head.headers(), names)?;
                Ok(TrustedContextFuture {
                    kind: FutureKind::Ready { ctx: Some(ctx) },
                })
            }
        }
    }
}

/// The header's value when there is one; a repeated context header is never guessed at.
fn single<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a HeaderValue>, Rejection> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(value), None) => Ok(Some(value)),
        (Some(_), Some(_)) => Err(Rejection::invalid_request(
            "repeated propagated context header",
        )),
    }
}

fn read_plain(headers: &HeaderMap, names: &HeaderNames) -> Result<AuthContext, Rejection> {
    let text = |name: &HeaderName| -> Result<Option<&str>, Rejection> {
        match single(headers, name)? {
            None => Ok(None),
            Some(value) => value
                .to_str()
                .map(Some)
                .map_err(|_| Rejection::invalid_token("malformed propagated context")),
        }
    };
    let user = text(&names.user_id)?;
    let issuer = text(&names.issuer)?;
    let roles = text(&names.roles)?;
    let scopes = text(&names.scopes)?;
    let tenant = text(&names.tenant)?;
    let claims = text(&names.claims)?;
    if user.is_none() && roles.is_none() && scopes.is_none() && tenant.is_none() && claims.is_none()
    {
        return Err(Rejection::missing_credential());
    }
    // Tenant, roles and scopes arrive percent-encoded (see the propagate module docs).
    let malformed = || Rejection::invalid_token("malformed propagated context");
    let decode = |value: &str| percent_decode(value).ok_or_else(malformed);
    let mut builder = AuthContext::builder(CredentialKind::Forwarded);
    if let Some(user) = user {
        builder = builder.subject(user);
    }
    if let Some(issuer) = issuer {
        builder = builder.issuer(issuer);
    }
    if let Some(roles) = roles {
        let roles = roles
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(decode)
            .collect::<Result<Vec<_>, _>>()?;
        builder = builder.roles(roles);
    }
    if let Some(scopes) = scopes {
        let scopes = scopes
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(decode)
            .collect::<Result<Vec<_>, _>>()?;
        builder = builder.scopes(scopes);
    }
    if let Some(tenant) = tenant {
        builder = builder.tenant(decode(tenant)?);
    }
    if let Some(claims) = claims {
        let malformed = || Rejection::invalid_token("malformed propagated claims");
        let json = URL_SAFE_NO_PAD.decode(claims).map_err(|_| malformed())?;
        let map: Map<String, Value> = serde_json::from_slice(&json).map_err(|_| malformed())?;
        builder = builder.claims(map);
    }
    Ok(builder.build())
}

pin_project! {
    /// The future of [`TrustedContext`]: verifies a signed context, or hands over the one
    /// read from plain headers.
    pub struct TrustedContextFuture<K>
    where
        K: KeySource,
    {
        #[pin]
        kind: FutureKind<JwtFuture<K>>,
    }
}

/// The request a signed context must have been minted for, and the checks to apply.
struct Bound {
    checks: Arc<Checks>,
    method: http::Method,
    path: String,
}

pin_project! {
    #[project = FutureKindProj]
    enum FutureKind<F> {
        Verifying { #[pin] fut: F, request: Option<Bound> },
        Ready { ctx: Option<AuthContext> },
    }
}

impl<K: KeySource> fmt::Debug for TrustedContextFuture<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedContextFuture")
            .finish_non_exhaustive()
    }
}

impl<K: KeySource> Future for TrustedContextFuture<K> {
    type Output = Result<AuthContext, Rejection>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            FutureKindProj::Verifying { fut, request } => {
                let verified = std::task::ready!(fut.poll(cx))?;
                let bound = request.take().expect("polled after completion");
                bound.checks.check(&verified, &bound.method, &bound.path)?;
                Poll::Ready(Ok(rebuild(&verified)))
            }
            FutureKindProj::Ready { ctx } => {
                Poll::Ready(Ok(ctx.take().expect("polled after completion")))
            }
        }
    }
}

/// For services behind a gateway: reads the context the gateway's
/// [`ContextPropagationLayer`](crate::ContextPropagationLayer) forwarded into the same
/// [`AuthContext`] the gateway had, in the request extensions. Handlers use one extractor
/// (`AuthContext`, or `request.extensions().get::<AuthContext>()` in tonic) whether they run
/// behind the gateway or in it.
///
/// Two modes:
///
/// - [`signed`](Self::signed): verifies the signed context (`x-auth-context`). A request
///   without one gets 401 (gRPC `UNAUTHENTICATED`), and so does a forged, expired or
///   tampered one, or one minted for another service (`aud`). This is the mode to use: the
///   service trusts the gateway's key, not the network.
/// - [`plain_headers`](Self::plain_headers): reads `x-user-id`, `x-user-roles`,
///   `x-user-scopes`, `x-tenant-id` and `x-auth-claims` as they are.
///
/// Rejections are rendered as by [`AuthenticateLayer`] (HTTP or gRPC Trailers-Only), and
/// [`optional`](Self::optional) lets requests without any context through.
///
/// # Plain headers: trusting the network
///
/// In plain-header mode, **anyone who can reach the service can claim to be anyone**: the
/// headers carry no proof. It is only sound when the network guarantees that every request
/// reaching the service went through the gateway (the service listens on a private
/// interface or a Unix socket, mTLS between gateway and service, a network policy that
/// admits the gateway alone), and when nothing else on that network (another compromised
/// service, an SSRF-prone component) can send requests to it. Those are the "inadequate
/// trust boundaries" of the OWASP API top ten: prefer the signed mode.
///
/// # Example
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response, StatusCode};
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_gatekeeper::keys::{SigningKey, StaticKeys};
/// use tower_gatekeeper::propagate::SignedContextValidation;
/// use tower_gatekeeper::{
///     AuthContext, ContextPropagationLayer, CredentialKind, TrustedContextLayer,
/// };
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let context_key = SigningKey::generate_ed25519().unwrap().with_kid("ctx-1");
///
/// // The gateway signs the context for "orders-svc" ...
/// let gateway = ContextPropagationLayer::builder()
///     .sign_context(context_key.clone())
///     .context_audience("orders-svc")
///     .build()
///     .unwrap();
/// // ... and the service trusts the gateway's public key.
/// let service = TrustedContextLayer::signed(
///     StaticKeys::new([context_key.verifying_key().clone()]),
///     SignedContextValidation::new().audience("orders-svc"),
/// )
/// .unwrap();
///
/// let stack = ServiceBuilder::new()
///     .layer(gateway)
///     .layer(service)
///     .service_fn(|req: Request<()>| async move {
///         let ctx = req.extensions().get::<AuthContext>().unwrap();
///         assert_eq!(ctx.subject(), Some("user-1"));
///         Ok::<_, Infallible>(Response::new(()))
///     });
///
/// let mut request = Request::new(());
/// request
///     .extensions_mut()
///     .insert(AuthContext::builder(CredentialKind::Jwt).subject("user-1").build());
/// let response = stack.clone().oneshot(request).await.unwrap();
/// assert_eq!(response.status(), StatusCode::OK);
///
/// // Straight to the service, without the gateway's signature: 401.
/// let response = ServiceBuilder::new()
///     .layer(TrustedContextLayer::signed(
///         StaticKeys::new([context_key.verifying_key().clone()]),
///         SignedContextValidation::new().audience("orders-svc"),
///     ).unwrap())
///     .service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) })
///     .oneshot(Request::builder().header("x-user-id", "admin").body(()).unwrap())
///     .await
///     .unwrap();
/// assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct TrustedContextLayer<K = StaticKeys, R = DefaultRejection> {
    inner: AuthenticateLayer<TrustedContext<K>, R>,
}

impl<K: KeySource> TrustedContextLayer<K> {
    /// Verifies the signed context with `keys`: the public halves of the gateway's context
    /// signing keys (several during a rotation, picked by `kid`).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when no audience is configured, the header name is invalid or
    /// reserved, or none of `keys` can verify anything.
    pub fn signed(keys: K, validation: SignedContextValidation) -> Result<Self, ConfigError> {
        let (validation, header, checks) = validation.into_parts()?;
        let verifier = JwtAuthenticator::new(keys, validation)?;
        Ok(Self::from_mode(Mode::Signed {
            verifier,
            header,
            checks,
        }))
    }
}

impl TrustedContextLayer<StaticKeys> {
    /// Reads the plain context headers with their default names. See the [type-level
    /// docs](Self#plain-headers-trusting-the-network) for what this trusts.
    pub fn plain_headers() -> Self {
        Self::plain_headers_from(&PropagationBuilder::default())
            .expect("the default names are valid")
    }

    /// Reads the plain context headers with the names configured in `names` (the same
    /// builder the gateway uses, or one with the same names).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when a configured name is invalid or reserved.
    pub fn plain_headers_from(names: &PropagationBuilder) -> Result<Self, ConfigError> {
        Ok(Self::from_mode(Mode::Plain(Arc::new(
            names.header_names()?,
        ))))
    }
}

impl<K> TrustedContextLayer<K> {
    fn from_mode(mode: Mode<K>) -> Self {
        TrustedContextLayer {
            inner: AuthenticateLayer::new(TrustedContext { mode }),
        }
    }
}

impl<K, R> TrustedContextLayer<K, R> {
    /// Lets requests without any propagated context through without an [`AuthContext`]
    /// (routes the gateway serves with optional authentication). A context that is present
    /// but bad is still rejected.
    pub fn optional(self) -> Self {
        self.mode(AuthMode::Optional)
    }

    /// Sets the mode (default [`AuthMode::Required`]).
    pub fn mode(self, mode: AuthMode) -> Self {
        TrustedContextLayer {
            inner: self.inner.mode(mode),
        }
    }

    /// Renders rejections with `rejection` instead of the default.
    pub fn rejection_response<R2>(self, rejection: R2) -> TrustedContextLayer<K, R2> {
        TrustedContextLayer {
            inner: self.inner.rejection_response(rejection),
        }
    }
}

impl<S, K, R: Clone> Layer<S> for TrustedContextLayer<K, R> {
    type Service = Authenticate<S, TrustedContext<K>, R>;

    fn layer(&self, inner: S) -> Self::Service {
        self.inner.layer(inner)
    }
}
