use std::future::{Ready, ready};
use std::sync::Arc;

use super::{Decision, Denial, PolicyEvaluator};
use crate::context::AuthContext;
use crate::credential::RequestHead;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quantifier {
    Any,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attribute {
    Roles,
    Scopes,
}

/// Requires roles or scopes of the caller: any or all of a list. Built by [`roles_any`],
/// [`roles_all`], [`scopes_any`] and [`scopes_all`].
#[derive(Debug, Clone)]
pub struct Require {
    attribute: Attribute,
    quantifier: Quantifier,
    values: Arc<[String]>,
}

fn require<I, S>(attribute: Attribute, quantifier: Quantifier, values: I) -> Require
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    Require {
        attribute,
        quantifier,
        values: values.into_iter().map(Into::into).collect(),
    }
}

/// Allows callers with at least one of `roles`. An empty list allows nobody.
///
/// ```
/// use tower_gatekeeper::{AuthContext, CredentialKind};
/// use tower_gatekeeper::authorize::{roles_any, Require};
///
/// let policy = roles_any(["clerk", "admin"]);
/// let ctx = AuthContext::builder(CredentialKind::Jwt).roles(["admin"]).build();
/// assert!(policy.decide(Some(&ctx)).is_allow());
/// assert!(!policy.decide(None).is_allow());
/// ```
pub fn roles_any<I, S>(roles: I) -> Require
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    require(Attribute::Roles, Quantifier::Any, roles)
}

/// Allows callers with every one of `roles`; a denial names the missing ones (logged, not
/// sent to the client).
pub fn roles_all<I, S>(roles: I) -> Require
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    require(Attribute::Roles, Quantifier::All, roles)
}

/// Allows callers with at least one of `scopes`. An empty list allows nobody. A denial names
/// all of them in the 403 challenge (`scope="…"`): any one would do.
pub fn scopes_any<I, S>(scopes: I) -> Require
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    require(Attribute::Scopes, Quantifier::Any, scopes)
}

/// Allows callers with every one of `scopes`; a denial names the missing ones in the 403
/// challenge (`scope="…"`).
///
/// ```
/// use tower_gatekeeper::{AuthContext, CredentialKind};
/// use tower_gatekeeper::authorize::{scopes_all, Decision};
///
/// let ctx = AuthContext::builder(CredentialKind::Jwt).scopes(["orders:read"]).build();
/// let Decision::Deny(denial) = scopes_all(["orders:read", "orders:write"]).decide(Some(&ctx))
/// else { unreachable!() };
/// assert_eq!(denial.scopes(), ["orders:write"]);
/// ```
pub fn scopes_all<I, S>(scopes: I) -> Require
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    require(Attribute::Scopes, Quantifier::All, scopes)
}

impl Require {
    /// The decision for `ctx`, synchronously.
    pub fn decide(&self, ctx: Option<&AuthContext>) -> Decision {
        let Some(ctx) = ctx else {
            return Decision::deny("authentication required");
        };
        let held = |value: &str| match self.attribute {
            Attribute::Roles => ctx.has_role(value),
            Attribute::Scopes => ctx.has_scope(value),
        };
        let allowed = match self.quantifier {
            Quantifier::Any => self.values.iter().any(|v| held(v)),
            Quantifier::All => self.values.iter().all(|v| held(v)),
        };
        if allowed {
            return Decision::Allow;
        }
        let missing: Vec<&String> = match self.quantifier {
            Quantifier::Any => self.values.iter().collect(),
            Quantifier::All => self.values.iter().filter(|v| !held(v)).collect(),
        };
        let denial = match self.attribute {
            Attribute::Roles => Denial::new("a required role is missing")
                .missing_roles(missing.into_iter().cloned()),
            Attribute::Scopes => Denial::new("the access token lacks a required scope")
                .missing_scopes(missing.into_iter().cloned()),
        };
        Decision::Deny(denial)
    }
}

impl PolicyEvaluator for Require {
    type Future = Ready<Decision>;

    fn evaluate(&self, ctx: Option<&AuthContext>, _req: &RequestHead<'_>) -> Self::Future {
        ready(self.decide(ctx))
    }

    fn decide_now(&self, ctx: Option<&AuthContext>, _req: &RequestHead<'_>) -> Option<Decision> {
        Some(self.decide(ctx))
    }
}

/// Allows every authenticated caller; denies (401) requests without one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Authenticated;

impl PolicyEvaluator for Authenticated {
    type Future = Ready<Decision>;

    fn evaluate(&self, ctx: Option<&AuthContext>, _req: &RequestHead<'_>) -> Self::Future {
        ready(authenticated(ctx))
    }

    fn decide_now(&self, ctx: Option<&AuthContext>, _req: &RequestHead<'_>) -> Option<Decision> {
        Some(authenticated(ctx))
    }
}

fn authenticated(ctx: Option<&AuthContext>) -> Decision {
    match ctx {
        Some(_) => Decision::Allow,
        None => Decision::deny("authentication required"),
    }
}

/// Allows every request, authenticated or not (public routes).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl PolicyEvaluator for AllowAll {
    type Future = Ready<Decision>;

    fn evaluate(&self, _ctx: Option<&AuthContext>, _req: &RequestHead<'_>) -> Self::Future {
        ready(Decision::Allow)
    }

    fn decide_now(&self, _ctx: Option<&AuthContext>, _req: &RequestHead<'_>) -> Option<Decision> {
        Some(Decision::Allow)
    }
}

/// Allows callers vouched for by one of `issuers` ([`AuthContext::issuer`]: a token's `iss`,
/// or the name of the API-key or introspection authenticator); the rule key `issuers` of
/// [`RuleConfig`](super::RuleConfig). An empty list allows nobody.
///
/// With several issuers behind one gateway, `alice` of one issuer is not `alice` of another:
/// a route comparing the subject or tenant with a path parameter should also name the one
/// issuer whose subjects it means.
///
/// ```
/// use tower_gatekeeper::{AuthContext, CredentialKind};
/// use tower_gatekeeper::authorize::issuers_any;
///
/// let policy = issuers_any(["https://idp-a.example.test"]);
/// let a = AuthContext::builder(CredentialKind::Jwt)
///     .subject("alice").issuer("https://idp-a.example.test").build();
/// let b = AuthContext::builder(CredentialKind::Jwt)
///     .subject("alice").issuer("https://idp-b.example.test").build();
/// assert!(policy.decide(Some(&a)).is_allow());
/// assert!(!policy.decide(Some(&b)).is_allow());
/// ```
pub fn issuers_any<I, S>(issuers: I) -> RequireIssuer
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    RequireIssuer {
        issuers: issuers.into_iter().map(Into::into).collect(),
    }
}

/// Requires the caller's issuer to be one of a list; built by [`issuers_any`].
#[derive(Debug, Clone)]
pub struct RequireIssuer {
    issuers: Arc<[String]>,
}

impl RequireIssuer {
    /// The decision for `ctx`, synchronously.
    pub fn decide(&self, ctx: Option<&AuthContext>) -> Decision {
        let Some(ctx) = ctx else {
            return Decision::deny("authentication required");
        };
        match ctx.issuer() {
            Some(iss) if self.issuers.iter().any(|i| i == iss) => Decision::Allow,
            _ => Decision::deny("the caller's issuer is not accepted on this route"),
        }
    }

    /// The accepted issuers.
    pub fn issuers(&self) -> &[String] {
        &self.issuers
    }
}

impl PolicyEvaluator for RequireIssuer {
    type Future = Ready<Decision>;

    fn evaluate(&self, ctx: Option<&AuthContext>, _req: &RequestHead<'_>) -> Self::Future {
        ready(self.decide(ctx))
    }

    fn decide_now(&self, ctx: Option<&AuthContext>, _req: &RequestHead<'_>) -> Option<Decision> {
        Some(self.decide(ctx))
    }
}
