//! OPA/Rego policies evaluated in-process with [regorus](https://github.com/microsoft/regorus)
//! (feature `rego`).
//!
//! A [`RegoPolicy`] is compiled once, from one or more policy modules and optional data
//! documents, for one rule (by default `allow` in the first module's package). Each request
//! is evaluated with the [input document](super::policy_input) as `input`:
//!
//! - the rule is `true`: allow;
//! - `false` or undefined (no `default allow := false` and no body matched): deny (403, or
//!   401 without a caller);
//! - anything else, or an evaluation error: deny, and a `warn` log naming the rule and the
//!   error (fail closed).
//!
//! Evaluation is synchronous and CPU-bound (microseconds for typical policies; see the
//! README's figures), so it runs inline like the other built-ins.
//!
//! ```
//! use http::Request;
//! use serde_json::json;
//! use tower_gatekeeper::{AuthContext, CredentialKind, PolicyEvaluator};
//! use tower_gatekeeper::authorize::rego::RegoPolicy;
//! use tower_gatekeeper::credential::RequestHead;
//!
//! let policy = RegoPolicy::builder()
//!     .policy("orders.rego", r#"
//!         package orders
//!         default allow := false
//!         allow if input.caller.tenant == data.open_tenants[_]
//!         allow if "admin" in input.caller.roles
//!     "#)
//!     .data(json!({ "open_tenants": ["acme"] }))
//!     .build()
//!     .unwrap();
//!
//! let req = Request::new(());
//! let acme = AuthContext::builder(CredentialKind::Jwt).tenant("acme").build();
//! let other = AuthContext::builder(CredentialKind::Jwt).tenant("other").build();
//! assert!(policy.decide_now(Some(&acme), &RequestHead::of(&req)).unwrap().is_allow());
//! assert!(!policy.decide_now(Some(&other), &RequestHead::of(&req)).unwrap().is_allow());
//! ```

use std::fmt;
use std::future::{Ready, ready};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Decision, PolicyEvaluator, policy_input};
use crate::clock::Clock;
use crate::context::AuthContext;
use crate::credential::RequestHead;

/// A compiled Rego policy; see the [module docs](self).
#[derive(Clone)]
pub struct RegoPolicy {
    compiled: regorus::CompiledPolicy,
    rule: Arc<str>,
    clock: Clock,
}

impl fmt::Debug for RegoPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegoPolicy")
            .field("rule", &self.rule)
            .finish_non_exhaustive()
    }
}

/// A Rego policy that cannot be built. The message names the file or module and the
/// problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegoError {
    /// A policy or data file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A policy module does not compile.
    #[error("Rego policy {name} does not compile: {message}")]
    Policy {
        /// The module's name (its file name).
        name: String,
        /// The compiler's message.
        message: String,
    },
    /// A data document is not valid JSON or cannot be merged.
    #[error("Rego data {name} is not usable: {message}")]
    Data {
        /// The document's name (its file name).
        name: String,
        /// What is wrong.
        message: String,
    },
    /// No policy module was given.
    #[error("no Rego policy module was given")]
    NoPolicy,
    /// The rule to evaluate is not defined by the policy.
    #[error("Rego rule {rule} cannot be evaluated: {message}")]
    Rule {
        /// The rule path, e.g. `data.orders.allow`.
        rule: String,
        /// The compiler's message.
        message: String,
    },
}

enum Source {
    Text(String, String),
    File(PathBuf),
}

/// Builds a [`RegoPolicy`]; see [`RegoPolicy::builder`].
#[must_use]
pub struct RegoPolicyBuilder {
    modules: Vec<Source>,
    data: Vec<(String, Result<serde_json::Value, PathBuf>)>,
    rule: Option<String>,
    clock: Clock,
}

impl fmt::Debug for RegoPolicyBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegoPolicyBuilder")
            .field("modules", &self.modules.len())
            .field("rule", &self.rule)
            .finish_non_exhaustive()
    }
}

impl RegoPolicy {
    /// Starts building a policy.
    pub fn builder() -> RegoPolicyBuilder {
        RegoPolicyBuilder {
            modules: Vec::new(),
            data: Vec::new(),
            rule: None,
            clock: Clock::system(),
        }
    }

    /// The rule this policy evaluates, e.g. `data.orders.allow`.
    pub fn rule(&self) -> &str {
        &self.rule
    }

    /// The decision for this request, synchronously.
    pub fn decide(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Decision {
        let input = policy_input(ctx, req, self.clock.now());
        match self.compiled.eval_with_input(regorus::Value::from(input)) {
            Ok(regorus::Value::Bool(true)) => Decision::Allow,
            Ok(regorus::Value::Bool(false) | regorus::Value::Undefined) => {
                Decision::deny("denied by policy")
            }
            Ok(_) => {
                tracing::warn!(rule = %self.rule, "Rego rule is not a boolean; denying");
                Decision::deny("denied by policy")
            }
            Err(error) => {
                tracing::warn!(rule = %self.rule, %error, "Rego evaluation failed; denying");
                Decision::deny("denied by policy")
            }
        }
    }
}

impl RegoPolicyBuilder {
    /// Adds a policy module from text; `name` appears in error messages.
    pub fn policy(mut self, name: impl Into<String>, rego: impl Into<String>) -> Self {
        self.modules.push(Source::Text(name.into(), rego.into()));
        self
    }

    /// Adds a policy module from a file, read by [`build`](Self::build).
    pub fn policy_file(mut self, path: impl AsRef<Path>) -> Self {
        self.modules.push(Source::File(path.as_ref().to_owned()));
        self
    }

    /// Adds a data document (merged under `data`).
    pub fn data(mut self, data: serde_json::Value) -> Self {
        self.data.push(("<data>".to_owned(), Ok(data)));
        self
    }

    /// Adds a JSON data document from a file, read by [`build`](Self::build).
    pub fn data_file(mut self, path: impl AsRef<Path>) -> Self {
        let path = path.as_ref().to_owned();
        self.data.push((path.display().to_string(), Err(path)));
        self
    }

    /// The rule to evaluate, e.g. `data.orders.allow`. Default: `allow` in the package of
    /// the first module.
    pub fn rule(mut self, rule: impl Into<String>) -> Self {
        self.rule = Some(rule.into());
        self
    }

    /// The clock for `input.environment.now` (tests inject a fixed one).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Reads, parses and compiles the policy.
    ///
    /// # Errors
    ///
    /// [`RegoError`] naming the file or module: unreadable files, syntax or compile errors,
    /// data that is not a JSON object, a rule the policy does not define.
    pub fn build(self) -> Result<RegoPolicy, RegoError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| RegoError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let mut engine = regorus::Engine::new();
        let mut first_package = None;
        for module in self.modules {
            let (name, text) = match module {
                Source::Text(name, text) => (name, text),
                Source::File(path) => (path.display().to_string(), read(&path)?),
            };
            let package = engine
                .add_policy(name.clone(), text)
                .map_err(|e| RegoError::Policy {
                    name,
                    message: e.to_string(),
                })?;
            first_package.get_or_insert(package);
        }
        let Some(package) = first_package else {
            return Err(RegoError::NoPolicy);
        };
        for (name, data) in self.data {
            let data = match data {
                Ok(value) => value,
                Err(path) => {
                    let text = read(&path)?;
                    serde_json::from_str(&text).map_err(|e| RegoError::Data {
                        name: name.clone(),
                        message: e.to_string(),
                    })?
                }
            };
            if !data.is_object() {
                return Err(RegoError::Data {
                    name,
                    message: "the document must be a JSON object".to_owned(),
                });
            }
            engine
                .add_data(regorus::Value::from(data))
                .map_err(|e| RegoError::Data {
                    name,
                    message: e.to_string(),
                })?;
        }
        let rule = self.rule.unwrap_or_else(|| {
            let package = package.strip_prefix("data.").unwrap_or(&package);
            format!("data.{package}.allow")
        });
        let entry: regorus::Rc<str> = rule.as_str().into();
        let compiled = engine
            .compile_with_entrypoint(&entry)
            .map_err(|e| RegoError::Rule {
                rule: rule.clone(),
                message: e.to_string(),
            })?;
        Ok(RegoPolicy {
            compiled,
            rule: rule.into(),
            clock: self.clock,
        })
    }
}

impl PolicyEvaluator for RegoPolicy {
    type Future = Ready<Decision>;

    fn evaluate(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Self::Future {
        ready(self.decide(ctx, req))
    }

    fn decide_now(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Option<Decision> {
        Some(self.decide(ctx, req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::CredentialKind;

    const POLICY: &str = r#"
        package gate
        default allow := false
        allow if {
            input.request.method == "GET"
            input.request.path_params.user_id == input.caller.subject
        }
    "#;

    #[test]
    fn compiles_once_and_decides() {
        let policy = RegoPolicy::builder()
            .policy("gate.rego", POLICY)
            .build()
            .unwrap();
        assert_eq!(policy.rule(), "data.gate.allow");
        let mut req = http::Request::new(());
        req.extensions_mut()
            .insert(crate::authorize::PathParams::from_iter([("user_id", "u1")]));
        let head = RequestHead::of(&req);
        let u1 = AuthContext::builder(CredentialKind::Jwt)
            .subject("u1")
            .build();
        let u2 = AuthContext::builder(CredentialKind::Jwt)
            .subject("u2")
            .build();
        assert!(policy.decide(Some(&u1), &head).is_allow());
        assert!(policy.decide(Some(&u2), &head).is_deny());
        assert!(policy.decide(None, &head).is_deny());
    }

    #[test]
    fn bad_policies_are_named() {
        let err = RegoPolicy::builder()
            .policy("broken.rego", "package x\nallow if {")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("broken.rego"), "{err}");
        let err = RegoPolicy::builder()
            .policy("gate.rego", POLICY)
            .rule("data.gate.nope")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("data.gate.nope"), "{err}");
        let err = RegoPolicy::builder()
            .policy("gate.rego", POLICY)
            .data(serde_json::json!([1]))
            .build()
            .unwrap_err();
        assert!(matches!(err, RegoError::Data { .. }), "{err}");
        assert!(matches!(
            RegoPolicy::builder().build().unwrap_err(),
            RegoError::NoPolicy
        ));
        let err = RegoPolicy::builder()
            .policy_file("/nonexistent/p.rego")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/p.rego"), "{err}");
    }

    #[test]
    fn errors_and_non_booleans_deny() {
        let policy = RegoPolicy::builder()
            .policy(
                "p.rego",
                "package p\nallow := \"yes\" if input.request.method == \"GET\"\n",
            )
            .build()
            .unwrap();
        let req = http::Request::new(());
        assert!(policy.decide(None, &RequestHead::of(&req)).is_deny());
    }
}
