use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::Authenticator;
use crate::algorithm::{Algorithm, AlgorithmSet};
use crate::config_error::ConfigError;
use crate::context::AuthContext;
use crate::credential::{RequestHead, bearer_token};
use crate::jwt::{self, PendingToken, Validation, VerifyError};
use crate::keys::{KeyQuery, KeySource};
use crate::reject::Rejection;

/// Authenticates `Authorization: Bearer` JWTs against one or more issuers.
///
/// The token's `iss` (read before verification, only to choose) picks the issuer's
/// [`Validation`] and [`KeySource`]; the signature and every claim are then checked against
/// that issuer alone. Tokens of unknown issuers are rejected without any key lookup.
///
/// See the [module docs](crate::authenticate) for an example.
pub struct JwtAuthenticator<K> {
    inner: Arc<Inner<K>>,
}

struct Inner<K> {
    issuers: Vec<Issuer<K>>,
    max_token_bytes: usize,
}

struct Issuer<K> {
    validation: Validation,
    keys: K,
}

impl<K> Clone for JwtAuthenticator<K> {
    fn clone(&self) -> Self {
        JwtAuthenticator {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K> fmt::Debug for JwtAuthenticator<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field(
                "issuers",
                &self
                    .inner
                    .issuers
                    .iter()
                    .map(|i| i.validation.issuer())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl<K: KeySource> JwtAuthenticator<K> {
    /// An authenticator for tokens of `validation`'s issuer, verified with `keys`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when the validation is incomplete (no audience, empty allow-list) or
    /// when an allowed algorithm cannot be verified by any of `keys` (for sources that know
    /// their keys up front).
    pub fn new(keys: K, validation: Validation) -> Result<Self, ConfigError> {
        let mut inner = Inner {
            issuers: Vec::new(),
            max_token_bytes: 0,
        };
        inner.add(keys, validation)?;
        Ok(JwtAuthenticator {
            inner: Arc::new(inner),
        })
    }

    /// Adds another issuer.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new), and when the issuer is already configured.
    pub fn with_issuer(self, keys: K, validation: Validation) -> Result<Self, ConfigError> {
        let mut inner = match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner,
            Err(shared) => Inner {
                issuers: shared
                    .issuers
                    .iter()
                    .map(|i| Issuer {
                        validation: i.validation.clone(),
                        keys: i.keys.clone(),
                    })
                    .collect(),
                max_token_bytes: shared.max_token_bytes,
            },
        };
        inner.add(keys, validation)?;
        Ok(JwtAuthenticator {
            inner: Arc::new(inner),
        })
    }

    /// Readiness: waits until every issuer's keys are usable (see [`KeySource::ready`]).
    /// Remote sources are all started before waiting, so they fetch in parallel. While an
    /// identity provider cannot be reached this keeps waiting: apply a timeout.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the issuer, when a configuration cannot work: an allowed
    /// algorithm no key can verify, HMAC with a JWKS, a JWKS without usable keys, a discovery
    /// document naming another issuer.
    pub async fn ready(&self) -> Result<(), ConfigError> {
        let pending: Vec<_> = self
            .inner
            .issuers
            .iter()
            .map(|i| {
                let issuer = i.validation.issuer().to_owned();
                (issuer, i.keys.ready(i.validation.allowed_algorithms()))
            })
            .collect();
        for (issuer, ready) in pending {
            ready
                .await
                .map_err(|e| ConfigError::invalid(format!("issuer {issuer:?}: {e}")))?;
        }
        Ok(())
    }

    /// The configured issuers.
    pub fn issuers(&self) -> impl Iterator<Item = &str> {
        self.inner.issuers.iter().map(|i| i.validation.issuer())
    }

    /// Each issuer's rules and key source, for diagnostics ([`explain`](crate::explain)).
    pub(crate) fn issuer_parts(&self) -> impl Iterator<Item = (&Validation, &K)> {
        self.inner.issuers.iter().map(|i| (&i.validation, &i.keys))
    }

    /// The largest token any issuer accepts.
    pub(crate) fn max_token_bytes(&self) -> usize {
        self.inner.max_token_bytes
    }

    /// Verifies a bare token (no request around it), e.g. for tools and tests.
    ///
    /// # Errors
    ///
    /// The [`Rejection`] a request carrying this token would get.
    pub async fn verify(&self, token: &str) -> Result<AuthContext, Rejection> {
        self.start(token)?.await
    }

    pub(crate) fn start(&self, token: &str) -> Result<JwtFuture<K>, Rejection> {
        let parsed =
            jwt::parse(token, self.inner.max_token_bytes).map_err(VerifyError::into_rejection)?;
        let index = parsed
            .issuer()
            .and_then(|iss| {
                self.inner
                    .issuers
                    .iter()
                    .position(|i| i.validation.matches_issuer(iss))
            })
            .ok_or_else(|| VerifyError::UntrustedIssuer.into_rejection())?;
        let issuer = &self.inner.issuers[index];
        if token.len() > issuer.validation.token_limit() {
            return Err(VerifyError::TooLarge.into_rejection());
        }
        issuer
            .validation
            .check_token(&parsed)
            .map_err(VerifyError::into_rejection)?;
        // The token's own `iss`: equal to the issuer's, or for a multi-tenant issuer, the
        // tenant's (its key source picks the tenant from it).
        let query = KeyQuery::new(parsed.issuer(), parsed.kid.as_deref(), parsed.alg);
        let key = issuer.keys.key(&query);
        Ok(JwtFuture {
            key,
            pending: Some((parsed.into_pending(), Arc::clone(&self.inner), index)),
        })
    }
}

impl<K: KeySource> Inner<K> {
    fn add(&mut self, keys: K, validation: Validation) -> Result<(), ConfigError> {
        validation.check()?;
        let issuer = validation.issuer();
        if self.issuers.iter().any(|i| i.validation.issuer() == issuer) {
            return Err(ConfigError::invalid(format!(
                "issuer {issuer:?} is configured twice"
            )));
        }
        if let Some(available) = keys.algorithms() {
            check_algorithms(issuer, validation.allowed_algorithms(), available)?;
        }
        if let Some(allowed) = validation.allowed_algorithms() {
            let impossible: Vec<&str> = allowed
                .iter()
                .filter(|alg| !keys.possible_algorithms().contains(*alg))
                .map(|alg| alg.as_str())
                .collect();
            if !impossible.is_empty() {
                return Err(ConfigError::invalid(format!(
                    "issuer {issuer:?}: algorithm(s) {} are allowed but its key source can never verify them (a JWKS never carries HMAC secrets: HMAC and JWKS cannot be mixed for one issuer); fix `algorithms` or the key source",
                    impossible.join(", ")
                )));
            }
        }
        self.max_token_bytes = self.max_token_bytes.max(validation.token_limit());
        self.issuers.push(Issuer { validation, keys });
        Ok(())
    }
}

/// Every explicitly allowed algorithm must be verifiable by some key, and at least one
/// algorithm must be left.
fn check_algorithms(
    issuer: &str,
    allowed: Option<AlgorithmSet>,
    available: AlgorithmSet,
) -> Result<(), ConfigError> {
    match allowed {
        Some(allowed) => {
            let missing: Vec<Algorithm> = allowed
                .iter()
                .filter(|alg| !available.contains(*alg))
                .collect();
            if !missing.is_empty() {
                let names: Vec<&str> = missing.iter().map(|a| a.as_str()).collect();
                return Err(ConfigError::invalid(format!(
                    "issuer {issuer:?}: algorithm(s) {} are allowed but no configured key can verify them (keys can verify {:?}); fix `algorithms` or the keys",
                    names.join(", "),
                    available
                )));
            }
        }
        None if available.is_empty() => {
            return Err(ConfigError::invalid(format!(
                "issuer {issuer:?}: no usable key"
            )));
        }
        None => {}
    }
    Ok(())
}

impl<K: KeySource> Authenticator for JwtAuthenticator<K> {
    type Future = JwtFuture<K>;

    fn authenticate(&self, head: &RequestHead<'_>) -> Result<Self::Future, Rejection> {
        let token = bearer_token(head, self.inner.max_token_bytes)?
            .ok_or_else(Rejection::missing_credential)?;
        self.start(token)
    }

    fn still_trusted(&self, ctx: &AuthContext) -> bool {
        let Some(iss) = ctx.issuer() else {
            return false;
        };
        self.inner
            .issuers
            .iter()
            .find(|i| i.validation.issuer() == iss)
            .is_some_and(|i| {
                // A multi-tenant issuer's keys are per tenant: ask with the token's own `iss`.
                let iss = match i.validation.tenant_issuer() {
                    Some(_) => match ctx.claims_map().get("iss").and_then(|v| v.as_str()) {
                        Some(own) => own,
                        None => return false,
                    },
                    None => iss,
                };
                match ctx.key_fingerprint() {
                    Some(fingerprint) => i.keys.contains_key(Some(iss), ctx.key_id(), fingerprint),
                    None => i.keys.contains_kid(Some(iss), ctx.key_id()),
                }
            })
    }
}

pin_project! {
    /// The future of [`JwtAuthenticator`]: waits for the key, then checks the signature.
    pub struct JwtFuture<K>
    where
        K: KeySource,
    {
        #[pin]
        key: K::Future,
        pending: Option<(PendingToken, Arc<Inner<K>>, usize)>,
    }
}

impl<K: KeySource> fmt::Debug for JwtFuture<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtFuture").finish_non_exhaustive()
    }
}

impl<K: KeySource> Future for JwtFuture<K> {
    type Output = Result<AuthContext, Rejection>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let key = ready!(this.key.poll(cx));
        let (token, table, index) = this.pending.take().expect("polled after completion");
        let outcome = key
            .map_err(VerifyError::Key)
            .and_then(|key| token.finish(&table.issuers[index].validation, &key));
        Poll::Ready(outcome.map_err(VerifyError::into_rejection))
    }
}
