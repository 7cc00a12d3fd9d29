//! A chain that picks the authenticator by the shape of the credential.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::{ApiKeyAuthenticator, Authenticator, Started};
use crate::context::{AuthContext, CredentialKind};
use crate::credential::{RequestHead, bearer_token};
use crate::reject::Rejection;

/// Picks the authenticator by the credential presented:
///
/// | request carries | goes to |
/// |---|---|
/// | the API key header | the [`ApiKeyAuthenticator`] |
/// | `Authorization: Bearer` with three dot-separated segments (a JWS) | `jwt` |
/// | any other bearer token (opaque) | `opaque` (e.g. introspection) |
/// | both an API key and a bearer token | 400 `invalid_request` (ambiguous) |
/// | nothing | `MissingCredential` |
///
/// A kind that is not configured answers `invalid_token` for its credentials. Wrap the
/// chain in [`Revocable`](crate::revocation::Revocable) to check revocations for all kinds.
///
/// ```
/// use tower_gatekeeper::{JwtAuthenticator, jwt::Validation};
/// use tower_gatekeeper::authenticate::{ApiKeyAuthenticator, ApiKeyEntry, ApiKeyHash, CredentialChain};
/// use tower_gatekeeper::keys::{SigningKey, StaticKeys};
///
/// let signer = SigningKey::generate_ed25519().unwrap();
/// let jwt = JwtAuthenticator::new(
///     StaticKeys::new([signer.verifying_key().clone()]),
///     Validation::new("https://idp.example.test").audiences(["api://orders"]),
/// ).unwrap();
/// let keys = ApiKeyAuthenticator::new([ApiKeyEntry::new(ApiKeyHash::of("k"), "bot")]).unwrap();
/// let chain = CredentialChain::new().jwt(jwt).api_keys(keys);
/// ```
#[derive(Clone)]
pub struct CredentialChain<J = Unconfigured, O = Unconfigured> {
    jwt: J,
    opaque: O,
    api_keys: Option<ApiKeyAuthenticator>,
}

/// An empty slot of a [`CredentialChain`]: rejects its credentials as `invalid_token`.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct Unconfigured;

impl Authenticator for Unconfigured {
    type Future = std::future::Ready<Result<AuthContext, Rejection>>;

    fn authenticate(&self, _: &RequestHead<'_>) -> Result<Self::Future, Rejection> {
        Err(not_accepted())
    }
}

/// An authenticator that may not be configured: `Some(a)` is `a`; `None` is
/// [`Unconfigured`], so its credentials are refused as `invalid_token` ("this kind of
/// credential is not accepted"). For a gateway whose credential kinds are optional, a
/// [`CredentialChain`] slot of type `Option<A>` keeps one type whether the kind is configured
/// or not.
///
/// `start` and `still_trusted` are forwarded, so a ready outcome of `a` (a cache hit, an API
/// key) stays ready; `None` trusts no context (it produced none).
///
/// ```
/// use tower_gatekeeper::{JwtAuthenticator, jwt::Validation};
/// use tower_gatekeeper::authenticate::CredentialChain;
/// use tower_gatekeeper::keys::{SigningKey, StaticKeys};
///
/// # fn introspection_from_config() -> Option<JwtAuthenticator<StaticKeys>> { None }
/// let signer = SigningKey::generate_ed25519().unwrap();
/// let jwt = JwtAuthenticator::new(
///     StaticKeys::new([signer.verifying_key().clone()]),
///     Validation::new("https://idp.example.test").audiences(["api://orders"]),
/// ).unwrap();
/// // Opaque tokens are accepted only when the configuration asks for it.
/// let opaque: Option<_> = introspection_from_config();
/// let chain = CredentialChain::new().jwt(Some(jwt)).opaque(opaque);
/// ```
impl<A: Authenticator> Authenticator for Option<A> {
    type Future = A::Future;

    fn authenticate(&self, head: &RequestHead<'_>) -> Result<Self::Future, Rejection> {
        match self {
            Some(auth) => auth.authenticate(head),
            None => Err(not_accepted()),
        }
    }

    fn start(&self, head: &RequestHead<'_>) -> Result<Started<Self::Future>, Rejection> {
        match self {
            Some(auth) => auth.start(head),
            None => Err(not_accepted()),
        }
    }

    fn still_trusted(&self, ctx: &AuthContext) -> bool {
        self.as_ref().is_some_and(|auth| auth.still_trusted(ctx))
    }
}

fn not_accepted() -> Rejection {
    Rejection::invalid_token("this kind of credential is not accepted")
}

impl CredentialChain {
    /// A chain with nothing configured.
    pub fn new() -> Self {
        CredentialChain {
            jwt: Unconfigured,
            opaque: Unconfigured,
            api_keys: None,
        }
    }
}

impl Default for CredentialChain {
    fn default() -> Self {
        Self::new()
    }
}

impl<J, O> CredentialChain<J, O> {
    /// Authenticates JWTs (three dot-separated segments) with `jwt`.
    pub fn jwt<J2>(self, jwt: J2) -> CredentialChain<J2, O> {
        CredentialChain {
            jwt,
            opaque: self.opaque,
            api_keys: self.api_keys,
        }
    }

    /// Authenticates other bearer tokens with `opaque` (e.g. introspection).
    pub fn opaque<O2>(self, opaque: O2) -> CredentialChain<J, O2> {
        CredentialChain {
            jwt: self.jwt,
            opaque,
            api_keys: self.api_keys,
        }
    }

    /// Authenticates requests carrying `keys`' header with `keys`.
    #[must_use]
    pub fn api_keys(mut self, keys: ApiKeyAuthenticator) -> Self {
        self.api_keys = Some(keys);
        self
    }
}

impl<J, O> fmt::Debug for CredentialChain<J, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialChain")
            .field("jwt", &std::any::type_name::<J>())
            .field("opaque", &std::any::type_name::<O>())
            .field("api_keys", &self.api_keys)
            .finish()
    }
}

/// Whether `token` has the shape of a compact JWS: three non-empty dot-separated segments.
fn is_jws(token: &str) -> bool {
    let mut parts = token.split('.');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(a), Some(b), Some(c), None) if !a.is_empty() && !b.is_empty() && !c.is_empty()
    )
}

impl<J: Authenticator, O: Authenticator> Authenticator for CredentialChain<J, O> {
    type Future = ChainFuture<J::Future, O::Future>;

    fn authenticate(&self, head: &RequestHead<'_>) -> Result<Self::Future, Rejection> {
        Ok(match self.start(head)? {
            Started::Ready(ctx) => ChainFuture {
                state: State::Ready {
                    fut: std::future::ready(Ok(ctx)),
                },
            },
            Started::Pending(fut) => fut,
        })
    }

    /// Picks the authenticator as [`authenticate`](Authenticator::authenticate) does and
    /// starts it, so a ready outcome (a cache hit, an API key) stays ready.
    fn start(&self, head: &RequestHead<'_>) -> Result<Started<Self::Future>, Rejection> {
        // Only the shape is read here; each authenticator applies its own size limit.
        let bearer = bearer_token(head, 64 * 1024)?;
        if let Some(keys) = &self.api_keys
            && keys.is_present(head)
        {
            if bearer.is_some() {
                return Err(Rejection::invalid_request(
                    "both an API key and a bearer token were presented",
                ));
            }
            return Ok(keys.start(head)?.map(|fut| ChainFuture {
                state: State::Ready { fut },
            }));
        }
        match bearer {
            None => Err(Rejection::missing_credential()),
            Some(token) if is_jws(token) => Ok(self.jwt.start(head)?.map(|fut| ChainFuture {
                state: State::Jwt { fut },
            })),
            Some(_) => Ok(self.opaque.start(head)?.map(|fut| ChainFuture {
                state: State::Opaque { fut },
            })),
        }
    }

    /// Asks the authenticator that produced `ctx`, by its credential kind.
    fn still_trusted(&self, ctx: &AuthContext) -> bool {
        match ctx.credential_kind() {
            CredentialKind::Jwt => self.jwt.still_trusted(ctx),
            CredentialKind::Introspected => self.opaque.still_trusted(ctx),
            CredentialKind::ApiKey => self
                .api_keys
                .as_ref()
                .is_none_or(|keys| keys.still_trusted(ctx)),
            _ => false,
        }
    }
}

pin_project! {
    /// The future of [`CredentialChain`].
    pub struct ChainFuture<J, O> {
        #[pin]
        state: State<J, O>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<J, O> {
        Jwt { #[pin] fut: J },
        Opaque { #[pin] fut: O },
        Ready { fut: std::future::Ready<Result<AuthContext, Rejection>> },
    }
}

impl<J, O> fmt::Debug for ChainFuture<J, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainFuture").finish_non_exhaustive()
    }
}

impl<J, O> Future for ChainFuture<J, O>
where
    J: Future<Output = Result<AuthContext, Rejection>>,
    O: Future<Output = Result<AuthContext, Rejection>>,
{
    type Output = Result<AuthContext, Rejection>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Jwt { fut } => fut.poll(cx),
            StateProj::Opaque { fut } => fut.poll(cx),
            StateProj::Ready { fut } => Pin::new(fut).poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authenticate::{ApiKeyEntry, ApiKeyHash};
    use crate::context::CredentialKind;
    use crate::reject::RejectionKind;

    /// Answers a context whose subject names the slot.
    #[derive(Clone)]
    struct Named(&'static str);

    impl Authenticator for Named {
        type Future = std::future::Ready<Result<AuthContext, Rejection>>;
        fn authenticate(&self, _: &RequestHead<'_>) -> Result<Self::Future, Rejection> {
            Ok(std::future::ready(Ok(AuthContext::builder(
                CredentialKind::Jwt,
            )
            .subject(self.0)
            .build())))
        }
    }

    async fn pick<J: Authenticator, O: Authenticator>(
        chain: &CredentialChain<J, O>,
        headers: &[(&str, &str)],
    ) -> Result<String, RejectionKind> {
        let mut req = http::Request::builder();
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(()).unwrap();
        let fut = chain
            .authenticate(&RequestHead::of(&req))
            .map_err(|r| r.kind())?;
        fut.await
            .map(|c| c.subject().unwrap().to_owned())
            .map_err(|r| r.kind())
    }

    #[tokio::test]
    async fn picks_by_shape() {
        let keys =
            ApiKeyAuthenticator::new([ApiKeyEntry::new(ApiKeyHash::of("the-key"), "bot")]).unwrap();
        let chain = CredentialChain::new()
            .jwt(Named("jwt"))
            .opaque(Named("opaque"))
            .api_keys(keys);
        let ok = |s: &str| Ok(s.to_owned());
        assert_eq!(
            pick(&chain, &[("authorization", "Bearer a.b.c")]).await,
            ok("jwt")
        );
        assert_eq!(
            pick(&chain, &[("authorization", "Bearer abc123")]).await,
            ok("opaque")
        );
        assert_eq!(
            pick(&chain, &[("authorization", "Bearer a.b")]).await,
            ok("opaque")
        );
        assert_eq!(
            pick(&chain, &[("authorization", "Bearer a..c")]).await,
            ok("opaque")
        );
        assert_eq!(pick(&chain, &[("x-api-key", "the-key")]).await, ok("bot"));
        assert_eq!(
            pick(&chain, &[("x-api-key", "wrong")]).await,
            Err(RejectionKind::InvalidToken)
        );
        assert_eq!(
            pick(
                &chain,
                &[("x-api-key", "the-key"), ("authorization", "Bearer a.b.c")]
            )
            .await,
            Err(RejectionKind::InvalidRequest)
        );
        assert_eq!(
            pick(&chain, &[]).await,
            Err(RejectionKind::MissingCredential)
        );
        assert_eq!(
            pick(&chain, &[("authorization", "Basic dTpw")]).await,
            Err(RejectionKind::MissingCredential)
        );

        let jwt_only = CredentialChain::new().jwt(Named("jwt"));
        assert_eq!(
            pick(&jwt_only, &[("authorization", "Bearer opaque")]).await,
            Err(RejectionKind::InvalidToken)
        );
        assert_eq!(
            pick(&jwt_only, &[("x-api-key", "the-key")]).await,
            Err(RejectionKind::MissingCredential)
        );
    }

    #[tokio::test]
    async fn an_optional_slot_is_its_authenticator_or_unconfigured() {
        let keys =
            ApiKeyAuthenticator::new([ApiKeyEntry::new(ApiKeyHash::of("the-key"), "bot")]).unwrap();
        let jwt = "Bearer a.b.c";
        let opaque = "Bearer abc123";
        let configured = CredentialChain::new()
            .jwt(Some(Named("jwt")))
            .opaque(Some(Named("opaque")));
        assert_eq!(
            pick(&configured, &[("authorization", jwt)]).await,
            Ok("jwt".to_owned())
        );
        assert_eq!(
            pick(&configured, &[("authorization", opaque)]).await,
            Ok("opaque".to_owned())
        );
        let empty = CredentialChain::new()
            .jwt(None::<Named>)
            .opaque(None::<Named>)
            .api_keys(keys.clone());
        let unconfigured = CredentialChain::new()
            .jwt(Unconfigured)
            .opaque(Unconfigured)
            .api_keys(keys.clone());
        for headers in [
            &[("authorization", jwt)][..],
            &[("authorization", opaque)],
            &[("x-api-key", "the-key")],
            &[],
        ] {
            assert_eq!(
                pick(&empty, headers).await,
                pick(&unconfigured, headers).await,
                "{headers:?}"
            );
        }
        let head = http::Request::builder()
            .header("authorization", jwt)
            .body(())
            .unwrap();
        let rejection = None::<Named>.start(&RequestHead::of(&head)).err().unwrap();
        assert_eq!(rejection.kind(), RejectionKind::InvalidToken);
        assert_eq!(
            rejection.description(),
            "this kind of credential is not accepted"
        );

        // A ready outcome stays ready through `Some`.
        let head = http::Request::builder()
            .header("x-api-key", "the-key")
            .body(())
            .unwrap();
        let Ok(Started::Ready(ctx)) = Some(keys.clone()).start(&RequestHead::of(&head)) else {
            panic!("an API key is known at once");
        };
        assert!(Some(keys).still_trusted(&ctx));
        assert!(!None::<ApiKeyAuthenticator>.still_trusted(&ctx));
    }
}
