//! Policies from configuration (serde): rule keys and route tables.

use std::error::Error as StdError;
use std::path::PathBuf;

use http::Method;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    Authenticated, BoxPolicy, PolicyEvaluator, RouteTable, RouteTableError, all_of, any_of, claim,
    issuers_any, path_param, roles_all, roles_any, scopes_all, scopes_any, subject, tenant,
};

/// The rule keys of a route, as written in configuration. Every key given must hold (they
/// are combined with [`all_of`]); with none, any authenticated caller is allowed.
///
/// | key | meaning |
/// |---|---|
/// | `issuers` | the caller's issuer (a token's `iss`, or an API-key or introspection authenticator's name) is one of these |
/// | `roles_any` | the caller has at least one of these roles |
/// | `roles_all` | the caller has every one of these roles |
/// | `scopes_any` | the caller has at least one of these scopes (403 names them all) |
/// | `scopes_all` | the caller has every one of these scopes (403 names the missing) |
/// | `claims` | a list of `{ path = "dotted.claim", equals = v }` (or `one_of = [..]`, or `contains = v`) |
/// | `owner_param` | the named path parameter equals the caller's `sub` |
/// | `tenant_param` | the named path parameter equals the caller's tenant |
/// | `bypass_roles` | callers with one of these roles pass `owner_param` / `tenant_param` anyway |
/// | `rego` | `{ policy = "file.rego", data = "data.json", rule = "data.pkg.allow" }` (feature `rego`; `data` and `rule` optional) |
///
/// Unknown keys are errors. Construct it in code with `..Default::default()`.
///
/// **Several issuers.** `owner_param` and `tenant_param` compare a path parameter with the
/// caller's `sub` or tenant, and `alice` of one issuer is not `alice` of another. The
/// `issuers` rule holds for the whole route, `bypass_roles` included. A table built with
/// [`RouteTable::from_config_for_issuers`] for more than one issuer refuses a route with
/// `owner_param` or `tenant_param` unless its `issuers` names exactly one issuer, so the
/// comparison is between issuer-qualified identities.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The caller's issuer is one of these.
    pub issuers: Option<Vec<String>>,
    /// At least one of these roles.
    pub roles_any: Option<Vec<String>>,
    /// Every one of these roles.
    pub roles_all: Option<Vec<String>>,
    /// At least one of these scopes.
    pub scopes_any: Option<Vec<String>>,
    /// Every one of these scopes.
    pub scopes_all: Option<Vec<String>>,
    /// Claim predicates.
    pub claims: Option<Vec<ClaimConfig>>,
    /// The path parameter that must equal the caller's `sub`.
    pub owner_param: Option<String>,
    /// The path parameter that must equal the caller's tenant.
    pub tenant_param: Option<String>,
    /// Roles that pass the `owner_param` and `tenant_param` checks anyway.
    pub bypass_roles: Option<Vec<String>>,
    /// A Rego policy (feature `rego`).
    pub rego: Option<RegoConfig>,
}

/// One claim predicate: `path` and exactly one of `equals`, `one_of`, `contains`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimConfig {
    /// The claim's dotted path.
    pub path: String,
    /// The claim equals this value.
    pub equals: Option<Value>,
    /// The claim equals one of these values.
    pub one_of: Option<Vec<Value>>,
    /// The claim (an array, or a single value) contains this value.
    pub contains: Option<Value>,
}

/// A Rego policy in configuration. Relative paths are resolved by the caller (the gateway
/// example resolves them against its configuration file's directory).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegoConfig {
    /// The policy file.
    pub policy: PathBuf,
    /// An optional JSON data file.
    pub data: Option<PathBuf>,
    /// The rule to evaluate; default `allow` in the policy's package.
    pub rule: Option<String>,
}

/// A configuration that cannot be turned into a policy; the message names the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyConfigError {
    /// A list key is empty.
    #[error("`{key}` is empty; {hint}")]
    Empty {
        /// The key.
        key: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// A `claims` entry is malformed.
    #[error("`claims` entry {index} (path {path:?}): {problem}")]
    Claim {
        /// The entry, from 1.
        index: usize,
        /// Its path.
        path: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// `owner_param` or `tenant_param` on a table built for several issuers, without an
    /// `issuers` key naming exactly one.
    #[error(
        "`{key}` compares the caller's identity with a path parameter, and {issuers} issuers are configured: add `issuers = [\"...\"]` naming the one issuer whose identities this route means"
    )]
    IdentityNeedsIssuer {
        /// `owner_param` or `tenant_param`.
        key: &'static str,
        /// How many issuers the table was built for.
        issuers: usize,
    },
    /// An `issuers` value names no configured issuer.
    #[error("`issuers`: {0:?} is not a configured issuer (a token `iss` or an authenticator name)")]
    UnknownIssuer(String),
    /// `bypass_roles` without `owner_param` or `tenant_param`.
    #[error("`bypass_roles` needs `owner_param` or `tenant_param`")]
    BypassWithoutParam,
    /// A key that needs a cargo feature that is not enabled.
    #[error("`{key}` needs the `{feature}` feature of tower-gatekeeper")]
    FeatureDisabled {
        /// The key.
        key: &'static str,
        /// The feature.
        feature: &'static str,
    },
    /// The Rego policy does not build.
    #[error("`rego`: {0}")]
    Rego(#[source] Box<dyn StdError + Send + Sync>),
    /// A method name is not an upper-case HTTP method.
    #[error("`methods`: {0:?} is not an HTTP method (methods are upper case, e.g. \"GET\")")]
    InvalidMethod(String),
    /// A route's rules are wrong.
    #[error("route {index} (path {path:?}): {source}")]
    Route {
        /// The route, from 0.
        index: usize,
        /// Its pattern.
        path: String,
        /// What is wrong.
        #[source]
        source: Box<PolicyConfigError>,
    },
    /// The route table cannot be built (conflicting routes, invalid pattern).
    #[error(transparent)]
    Table(#[from] RouteTableError),
}

impl RuleConfig {
    /// Whether no rule key is set.
    pub fn is_empty(&self) -> bool {
        *self == RuleConfig::default()
    }

    /// The names of the keys that are set, for messages.
    pub fn keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut add = |key, set: bool| {
            if set {
                keys.push(key);
            }
        };
        add("issuers", self.issuers.is_some());
        add("roles_any", self.roles_any.is_some());
        add("roles_all", self.roles_all.is_some());
        add("scopes_any", self.scopes_any.is_some());
        add("scopes_all", self.scopes_all.is_some());
        add("claims", self.claims.is_some());
        add("owner_param", self.owner_param.is_some());
        add("tenant_param", self.tenant_param.is_some());
        add("bypass_roles", self.bypass_roles.is_some());
        add("rego", self.rego.is_some());
        keys
    }

    /// Builds the policy: every key given must hold; none allows any authenticated caller.
    ///
    /// # Errors
    ///
    /// [`PolicyConfigError`] naming the key: empty lists, malformed claim predicates,
    /// `bypass_roles` alone, a Rego policy that does not compile, or `rego` without the
    /// `rego` feature.
    pub fn compile(&self) -> Result<BoxPolicy, PolicyConfigError> {
        let mut rules: Vec<BoxPolicy> = Vec::new();
        let list =
            |key: &'static str, hint: &'static str, values: &Option<Vec<String>>| match values {
                Some(v) if v.is_empty() => Err(PolicyConfigError::Empty { key, hint }),
                Some(v) => Ok(Some(v.clone())),
                None => Ok(None),
            };
        const NOBODY: &str = "it would allow nobody; list values or remove the key";
        const REMOVE: &str = "list values or remove the key";
        if let Some(v) = list("issuers", NOBODY, &self.issuers)? {
            rules.push(issuers_any(v).boxed());
        }
        if let Some(v) = list("roles_any", NOBODY, &self.roles_any)? {
            rules.push(roles_any(v).boxed());
        }
        if let Some(v) = list("roles_all", REMOVE, &self.roles_all)? {
            rules.push(roles_all(v).boxed());
        }
        if let Some(v) = list("scopes_any", NOBODY, &self.scopes_any)? {
            rules.push(scopes_any(v).boxed());
        }
        if let Some(v) = list("scopes_all", REMOVE, &self.scopes_all)? {
            rules.push(scopes_all(v).boxed());
        }
        for (i, c) in self.claims.iter().flatten().enumerate() {
            rules.push(compile_claim(i + 1, c)?);
        }
        let mut params: Vec<BoxPolicy> = Vec::new();
        if let Some(name) = &self.owner_param {
            params.push(path_param(name.as_str()).equals(subject()).boxed());
        }
        if let Some(name) = &self.tenant_param {
            params.push(path_param(name.as_str()).equals(tenant()).boxed());
        }
        let bypass = list("bypass_roles", REMOVE, &self.bypass_roles)?;
        match (params.len(), bypass) {
            (0, Some(_)) => return Err(PolicyConfigError::BypassWithoutParam),
            (0, None) => {}
            (_, None) => rules.extend(params),
            (_, Some(roles)) => {
                let params = if params.len() == 1 {
                    params.pop().expect("one")
                } else {
                    all_of(params).boxed()
                };
                rules.push(any_of([params, roles_any(roles).boxed()]).boxed());
            }
        }
        if let Some(rego) = &self.rego {
            rules.push(compile_rego(rego)?);
        }
        Ok(match rules.len() {
            0 => Authenticated.boxed(),
            1 => rules.pop().expect("one"),
            _ => all_of(rules).boxed(),
        })
    }
}

impl RuleConfig {
    /// Checks the rules against the issuers the deployment configures (every JWT issuer's
    /// `iss` and every API-key or introspection authenticator's name): `issuers` values must
    /// be among them, and with more than one, `owner_param` and `tenant_param` need an
    /// `issuers` naming exactly one.
    ///
    /// # Errors
    ///
    /// [`PolicyConfigError::UnknownIssuer`] or [`PolicyConfigError::IdentityNeedsIssuer`].
    pub fn check_issuers(&self, known: &[String]) -> Result<(), PolicyConfigError> {
        if !known.is_empty() {
            for issuer in self.issuers.iter().flatten() {
                if !known.contains(issuer) {
                    return Err(PolicyConfigError::UnknownIssuer(issuer.clone()));
                }
            }
        }
        if known.len() > 1 && self.issuers.as_ref().is_none_or(|list| list.len() != 1) {
            for (key, set) in [
                ("owner_param", self.owner_param.is_some()),
                ("tenant_param", self.tenant_param.is_some()),
            ] {
                if set {
                    return Err(PolicyConfigError::IdentityNeedsIssuer {
                        key,
                        issuers: known.len(),
                    });
                }
            }
        }
        Ok(())
    }
}

fn compile_claim(index: usize, c: &ClaimConfig) -> Result<BoxPolicy, PolicyConfigError> {
    let problem = |problem| PolicyConfigError::Claim {
        index,
        path: c.path.clone(),
        problem,
    };
    if c.path.is_empty() {
        return Err(problem("`path` must not be empty"));
    }
    let attribute = claim(c.path.as_str());
    match (&c.equals, &c.one_of, &c.contains) {
        (Some(v), None, None) => Ok(attribute.equals(v.clone()).boxed()),
        (None, Some(v), None) if v.is_empty() => {
            Err(problem("`one_of` is empty, which would allow nobody"))
        }
        (None, Some(v), None) => Ok(attribute.one_of(v.iter().cloned()).boxed()),
        (None, None, Some(v)) => Ok(attribute.contains(v.clone()).boxed()),
        _ => Err(problem(
            "give exactly one of `equals`, `one_of`, `contains`",
        )),
    }
}

#[cfg(feature = "rego")]
fn compile_rego(config: &RegoConfig) -> Result<BoxPolicy, PolicyConfigError> {
    let mut builder = super::rego::RegoPolicy::builder().policy_file(&config.policy);
    if let Some(data) = &config.data {
        builder = builder.data_file(data);
    }
    if let Some(rule) = &config.rule {
        builder = builder.rule(rule.as_str());
    }
    let policy = builder
        .build()
        .map_err(|e| PolicyConfigError::Rego(Box::new(e)))?;
    Ok(policy.boxed())
}

#[cfg(not(feature = "rego"))]
fn compile_rego(_config: &RegoConfig) -> Result<BoxPolicy, PolicyConfigError> {
    Err(PolicyConfigError::FeatureDisabled {
        key: "rego",
        feature: "rego",
    })
}

/// One route of a [`RouteTable`] in configuration: `path` (matchit syntax), optional
/// `methods` (default all) and the [`RuleConfig`] keys, side by side:
///
/// ```toml
/// [[route]]
/// path = "/users/{user_id}"
/// methods = ["GET", "PUT"]
/// owner_param = "user_id"
/// bypass_roles = ["admin"]
/// ```
///
/// Unknown keys are errors naming the key.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "Map<String, Value>")]
pub struct RouteConfig {
    /// The path pattern.
    pub path: String,
    /// The methods; `None` for all.
    pub methods: Option<Vec<String>>,
    /// The route's rules.
    pub rules: RuleConfig,
}

impl TryFrom<Map<String, Value>> for RouteConfig {
    type Error = String;

    fn try_from(mut map: Map<String, Value>) -> Result<Self, String> {
        let path = match map.remove("path") {
            Some(Value::String(path)) => path,
            Some(_) => return Err("`path` must be a string".to_owned()),
            None => return Err("missing field `path`".to_owned()),
        };
        let methods = match map.remove("methods") {
            None => None,
            Some(value) => Some(
                serde_json::from_value(value)
                    .map_err(|_| "`methods` must be a list of strings".to_owned())?,
            ),
        };
        let rules = serde_json::from_value(Value::Object(map))
            .map_err(|e| format!("route {path:?}: {e}"))?;
        Ok(RouteConfig {
            path,
            methods,
            rules,
        })
    }
}

/// Parses upper-case method names (`"GET"`).
///
/// # Errors
///
/// [`PolicyConfigError::InvalidMethod`] naming the first bad name.
pub(crate) fn parse_methods(names: &[String]) -> Result<Vec<Method>, PolicyConfigError> {
    names
        .iter()
        .map(|name| {
            Method::from_bytes(name.as_bytes())
                .ok()
                .filter(|_| !name.is_empty() && !name.bytes().any(|b| b.is_ascii_lowercase()))
                .ok_or_else(|| PolicyConfigError::InvalidMethod(name.clone()))
        })
        .collect()
}

impl RouteTable<BoxPolicy> {
    /// Builds a table from configuration; see [`RouteConfig`].
    ///
    /// ```
    /// use tower_gatekeeper::authorize::{RouteConfig, RouteTable};
    ///
    /// let routes: Vec<RouteConfig> = serde_json::from_value(serde_json::json!([
    ///     { "path": "/orders/{*rest}", "methods": ["GET"], "scopes_all": ["orders:read"] },
    ///     { "path": "/users/{user_id}", "owner_param": "user_id", "bypass_roles": ["admin"] },
    /// ])).unwrap();
    /// let table = RouteTable::from_config(&routes).unwrap();
    /// assert_eq!(table.len(), 2);
    ///
    /// let typo: Result<Vec<RouteConfig>, _> =
    ///     serde_json::from_value(serde_json::json!([{ "path": "/x", "role_any": ["a"] }]));
    /// assert!(typo.unwrap_err().to_string().contains("role_any"));
    /// ```
    ///
    /// # Errors
    ///
    /// [`PolicyConfigError`] naming the route and the key, or the conflicting routes.
    pub fn from_config(routes: &[RouteConfig]) -> Result<Self, PolicyConfigError> {
        Self::from_config_for_issuers(routes, std::iter::empty::<&str>())
    }

    /// Builds a table from configuration for a deployment that trusts `issuers` (every JWT
    /// issuer's `iss` and every API-key or introspection authenticator's name, as
    /// [`AuthContext::issuer`](crate::AuthContext::issuer) reports them); see
    /// [`RuleConfig::check_issuers`]. With more than one issuer, a route with `owner_param`
    /// or `tenant_param` must name its one issuer in `issuers`:
    ///
    /// ```
    /// use tower_gatekeeper::authorize::{RouteConfig, RouteTable};
    ///
    /// let issuers = ["https://idp-a.example.test", "https://idp-b.example.test"];
    /// let ambiguous: Vec<RouteConfig> = serde_json::from_value(serde_json::json!([
    ///     { "path": "/users/{user_id}", "owner_param": "user_id" },
    /// ])).unwrap();
    /// let err = RouteTable::from_config_for_issuers(&ambiguous, issuers).unwrap_err();
    /// assert!(err.to_string().contains("issuers"));
    ///
    /// let qualified: Vec<RouteConfig> = serde_json::from_value(serde_json::json!([
    ///     { "path": "/users/{user_id}", "owner_param": "user_id",
    ///       "issuers": ["https://idp-a.example.test"] },
    /// ])).unwrap();
    /// assert!(RouteTable::from_config_for_issuers(&qualified, issuers).is_ok());
    /// ```
    ///
    /// # Errors
    ///
    /// As [`from_config`](Self::from_config), and [`PolicyConfigError::UnknownIssuer`] or
    /// [`PolicyConfigError::IdentityNeedsIssuer`] in a route.
    pub fn from_config_for_issuers<I, S>(
        routes: &[RouteConfig],
        issuers: I,
    ) -> Result<Self, PolicyConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut known: Vec<String> = Vec::new();
        for issuer in issuers {
            let issuer = issuer.as_ref();
            if !known.iter().any(|k| k == issuer) {
                known.push(issuer.to_owned());
            }
        }
        let mut builder = RouteTable::builder();
        for (index, route) in routes.iter().enumerate() {
            let in_route = |source| PolicyConfigError::Route {
                index,
                path: route.path.clone(),
                source: Box::new(source),
            };
            route.rules.check_issuers(&known).map_err(in_route)?;
            let policy = route.rules.compile().map_err(in_route)?;
            builder = match &route.methods {
                None => builder.any_method(route.path.clone(), policy),
                Some(names) => {
                    let methods = parse_methods(names).map_err(in_route)?;
                    builder.route(methods, route.path.clone(), policy)
                }
            };
        }
        Ok(builder.build()?)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::context::{AuthContext, CredentialKind};
    use crate::credential::RequestHead;

    fn rules(value: Value) -> RuleConfig {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn keys_compile_and_combine() {
        let policy = rules(json!({
            "roles_all": ["a", "b"],
            "claims": [{"path": "tier", "one_of": ["gold", "silver"]}],
            "owner_param": "user_id",
            "bypass_roles": ["admin"],
        }))
        .compile()
        .unwrap();
        let mut req = http::Request::new(());
        req.extensions_mut()
            .insert(crate::authorize::PathParams::from_iter([("user_id", "u1")]));
        let head = RequestHead::of(&req);
        let who = |sub: &str, roles: &[&str], tier: &str| {
            AuthContext::builder(CredentialKind::Jwt)
                .subject(sub)
                .roles(roles.iter().copied())
                .claim("tier", tier)
                .build()
        };
        let ok = |c: AuthContext| policy.decide_now(Some(&c), &head).unwrap().is_allow();
        assert!(ok(who("u1", &["a", "b"], "gold")));
        assert!(!ok(who("u2", &["a", "b"], "gold")));
        assert!(ok(who("u2", &["a", "b", "admin"], "gold")));
        assert!(!ok(who("u1", &["a"], "gold")));
        assert!(!ok(who("u1", &["a", "b"], "bronze")));
        assert!(
            rules(json!({}))
                .compile()
                .unwrap()
                .decide_now(None, &head)
                .unwrap()
                .is_deny()
        );
    }

    #[test]
    fn mistakes_are_named() {
        let err = |v: Value| rules(v).compile().unwrap_err().to_string();
        assert!(err(json!({"roles_any": []})).contains("`roles_any`"));
        assert!(err(json!({"claims": [{"path": "x"}]})).contains("exactly one"));
        assert!(
            err(json!({"claims": [{"path": "x", "equals": 1, "contains": 1}]})).contains("entry 1")
        );
        assert!(err(json!({"bypass_roles": ["a"]})).contains("bypass_roles"));
        let unknown = serde_json::from_value::<RuleConfig>(json!({"roles": ["a"]}))
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("unknown field `roles`"), "{unknown}");
        let routes: Vec<RouteConfig> = serde_json::from_value(json!([
            {"path": "/a/{id}"}, {"path": "/a/{name}", "methods": ["GET"]},
        ]))
        .unwrap();
        let e = RouteTable::from_config(&routes).unwrap_err().to_string();
        assert!(e.contains("/a/{name}") && e.contains("/a/{id}"), "{e}");
        let routes: Vec<RouteConfig> =
            serde_json::from_value(json!([{"path": "/a", "methods": ["get"]}])).unwrap();
        let e = RouteTable::from_config(&routes).unwrap_err().to_string();
        assert!(e.contains("\"get\"") && e.contains("route 0"), "{e}");
    }

    #[test]
    fn issuers_limit_the_whole_rule_bypass_included() {
        let rule = rules(json!({
            "issuers": ["https://a"],
            "owner_param": "user_id",
            "bypass_roles": ["admin"],
        }));
        assert_eq!(rule.keys(), ["issuers", "owner_param", "bypass_roles"]);
        let policy = rule.compile().unwrap();
        let mut req = http::Request::new(());
        req.extensions_mut()
            .insert(crate::authorize::PathParams::from_iter([(
                "user_id", "alice",
            )]));
        let head = RequestHead::of(&req);
        let who = |iss: &str, sub: &str, roles: &[&str]| {
            AuthContext::builder(CredentialKind::Jwt)
                .issuer(iss)
                .subject(sub)
                .roles(roles.iter().copied())
                .build()
        };
        let ok = |c: AuthContext| policy.decide_now(Some(&c), &head).unwrap().is_allow();
        assert!(ok(who("https://a", "alice", &[])));
        assert!(ok(who("https://a", "bob", &["admin"])));
        assert!(!ok(who("https://b", "alice", &[])));
        assert!(!ok(who("https://b", "alice", &["admin"])));
        assert!(!ok(AuthContext::builder(CredentialKind::Jwt)
            .subject("alice")
            .build()));
        let err = rules(json!({"issuers": []})).compile().unwrap_err();
        assert!(err.to_string().contains("`issuers`"), "{err}");
    }

    #[test]
    fn identity_rules_need_one_issuer_when_several_are_configured() {
        let known = ["https://a".to_owned(), "https://b".to_owned()];
        let check = |v: Value, known: &[String]| rules(v).check_issuers(known);
        for (rule, needs) in [
            (json!({"owner_param": "u"}), Some("owner_param")),
            (json!({"tenant_param": "t"}), Some("tenant_param")),
            (
                json!({"owner_param": "u", "issuers": ["https://a", "https://b"]}),
                Some("owner_param"),
            ),
            (json!({"owner_param": "u", "issuers": ["https://a"]}), None),
            (json!({"roles_any": ["r"]}), None),
        ] {
            match (check(rule.clone(), &known), needs) {
                (Ok(()), None) => {}
                (Err(PolicyConfigError::IdentityNeedsIssuer { key, issuers: 2 }), Some(k)) => {
                    assert_eq!(key, k);
                }
                (other, _) => panic!("{rule}: {other:?}"),
            }
            // One issuer (or none known): no ambiguity to refuse.
            assert!(check(rule.clone(), &known[..1]).is_ok() || rule.get("issuers").is_some());
            assert!(check(rule, &[]).is_ok());
        }
        let err = check(json!({"issuers": ["https://c"]}), &known).unwrap_err();
        assert!(matches!(err, PolicyConfigError::UnknownIssuer(ref i) if i == "https://c"));
        let routes: Vec<RouteConfig> =
            serde_json::from_value(json!([{"path": "/u/{u}", "owner_param": "u"}])).unwrap();
        let err = RouteTable::from_config_for_issuers(&routes, &known).unwrap_err();
        assert!(err.to_string().contains("route 0"), "{err}");
        assert!(RouteTable::from_config(&routes).is_ok());
    }

    #[cfg(not(feature = "rego"))]
    #[test]
    fn rego_needs_its_feature() {
        let e = rules(json!({"rego": {"policy": "p.rego"}}))
            .compile()
            .unwrap_err();
        assert!(e.to_string().contains("`rego` feature"), "{e}");
    }
}
