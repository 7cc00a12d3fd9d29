use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Map;

use crate::context::AuthContext;
use crate::jwt::ConfigError;

#[derive(Debug, Clone)]
pub(crate) struct HeaderNames {
    pub(crate) user_id: HeaderName,
    pub(crate) roles: HeaderName,
    pub(crate) scopes: HeaderName,
    pub(crate) tenant: HeaderName,
    pub(crate) request_id: HeaderName,
    pub(crate) claims: HeaderName,
}

/// The propagation rules, shared by every clone of the service.
#[derive(Debug)]
pub(crate) struct Propagator {
    names: HeaderNames,
    /// Every owned name (lowercase, `-` form) stripped from inbound requests.
    owned: Vec<HeaderName>,
    /// The owned names with `_` in place of `-`, for comparison against odd spellings.
    forward_claims: Vec<String>,
    keep_authorization: bool,
    sensitive: bool,
}

/// The longest client request id kept.
const MAX_REQUEST_ID: usize = 128;

impl Propagator {
    pub(crate) fn new(
        names: HeaderNames,
        also_strip: Vec<HeaderName>,
        forward_claims: Vec<String>,
        keep_authorization: bool,
        sensitive: bool,
    ) -> Result<Self, ConfigError> {
        let mut owned = vec![
            names.user_id.clone(),
            names.roles.clone(),
            names.scopes.clone(),
            names.tenant.clone(),
            names.claims.clone(),
        ];
        for (i, a) in owned.iter().enumerate() {
            if owned[..i]
                .iter()
                .any(|b| normalize_eq(a.as_str(), b.as_str()))
                || normalize_eq(a.as_str(), names.request_id.as_str())
            {
                return Err(ConfigError::invalid(format!(
                    "header name {:?} is configured for two context values",
                    a.as_str()
                )));
            }
        }
        owned.extend(also_strip);
        if forward_claims.iter().any(String::is_empty) {
            return Err(ConfigError::invalid(
                "forward_claims contains an empty claim name",
            ));
        }
        Ok(Propagator {
            names,
            owned,
            forward_claims,
            keep_authorization,
            sensitive,
        })
    }

    /// Removes every owned inbound header (and `Authorization` unless kept), then inserts
    /// the context's values and the request id.
    pub(crate) fn apply(&self, headers: &mut HeaderMap, ctx: Option<&AuthContext>) {
        self.strip(headers);
        self.request_id(headers);
        if let Some(ctx) = ctx {
            self.inject(headers, ctx);
        }
    }

    fn strip(&self, headers: &mut HeaderMap) {
        for name in &self.owned {
            headers.remove(name);
        }
        if !self.keep_authorization {
            headers.remove(AUTHORIZATION);
        }
        // Header names are lowercase already; only odd spellings with `_` are left to find.
        let odd: Vec<HeaderName> = headers
            .keys()
            .filter(|name| name.as_str().contains('_'))
            .filter(|name| {
                self.owned
                    .iter()
                    .chain(std::iter::once(&self.names.request_id))
                    .chain((!self.keep_authorization).then_some(&AUTHORIZATION))
                    .any(|owned| normalize_eq(name.as_str(), owned.as_str()))
            })
            .cloned()
            .collect();
        for name in odd {
            headers.remove(name);
        }
    }

    fn request_id(&self, headers: &mut HeaderMap) {
        let name = &self.names.request_id;
        let mut values = headers.get_all(name).iter();
        let keep = match (values.next(), values.next()) {
            (Some(value), None) => is_request_id(value.as_bytes()),
            _ => false,
        };
        if !keep {
            let id = uuid::Uuid::new_v4();
            let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
            let text = id.hyphenated().encode_lower(&mut buf);
            headers.insert(
                name.clone(),
                HeaderValue::from_str(text).expect("uuid is ASCII"),
            );
        }
    }

    fn inject(&self, headers: &mut HeaderMap, ctx: &AuthContext) {
        let names = &self.names;
        if let Some(sub) = ctx.subject() {
            self.insert(headers, &names.user_id, sub);
        }
        if !ctx.roles().is_empty() {
            let roles = join(ctx.roles(), ",", |r| !r.contains(','));
            self.insert(headers, &names.roles, &roles);
        }
        if !ctx.scopes().is_empty() {
            let scopes = join(ctx.scopes(), " ", |s| !s.contains(' '));
            self.insert(headers, &names.scopes, &scopes);
        }
        if let Some(tenant) = ctx.tenant() {
            self.insert(headers, &names.tenant, tenant);
        }
        if !self.forward_claims.is_empty() {
            let claims = ctx.claims_map();
            let selected: Map<String, serde_json::Value> = self
                .forward_claims
                .iter()
                .filter_map(|name| claims.get(name).map(|v| (name.clone(), v.clone())))
                .collect();
            if !selected.is_empty() {
                let json = serde_json::Value::Object(selected).to_string();
                self.insert(headers, &names.claims, &URL_SAFE_NO_PAD.encode(json));
            }
        }
    }

    fn insert(&self, headers: &mut HeaderMap, name: &HeaderName, value: &str) {
        // Visible ASCII and spaces only: anything else is left out, never altered.
        if value.is_empty() || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            tracing::debug!(
                header = name.as_str(),
                "context value not propagated: not header-safe"
            );
            return;
        }
        if let Ok(mut value) = HeaderValue::from_str(value) {
            value.set_sensitive(self.sensitive);
            headers.insert(name.clone(), value);
        }
    }
}

fn join(items: &[String], sep: &str, keep: impl Fn(&str) -> bool) -> String {
    let mut out = String::new();
    for item in items.iter().filter(|i| !i.is_empty() && keep(i)) {
        if !out.is_empty() {
            out.push_str(sep);
        }
        out.push_str(item);
    }
    out
}

/// Whether two lowercase header names are the same once `_` is read as `-`.
fn normalize_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes().zip(b.bytes()).all(|(x, y)| {
            let x = if x == b'_' { b'-' } else { x };
            let y = if y == b'_' { b'-' } else { y };
            x.eq_ignore_ascii_case(&y)
        })
}

fn is_request_id(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_REQUEST_ID
        && value.iter().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'+' | b'=')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::CredentialKind;

    fn propagator() -> Propagator {
        let layer = crate::propagate::ContextPropagationLayer::builder()
            .forward_claims(["email"])
            .build()
            .unwrap();
        std::sync::Arc::try_unwrap(layer_propagator(layer)).unwrap()
    }

    fn layer_propagator(
        layer: crate::propagate::ContextPropagationLayer,
    ) -> std::sync::Arc<Propagator> {
        use tower_layer::Layer;
        layer.layer(()).into_propagator()
    }

    #[test]
    fn strips_every_spelling() {
        let p = propagator();
        let mut h = HeaderMap::new();
        for name in [
            "x-user-id",
            "x_user_id",
            "x-user_id",
            "X_USER_ID",
            "x-user-roles",
            "x_user_roles",
            "x-user-scopes",
            "x_tenant_id",
            "x-tenant-id",
            "x-auth-claims",
            "x_auth_claims",
            "authorization",
        ] {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("spoof"),
            );
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("spoof2"),
            );
        }
        h.insert("x-other", HeaderValue::from_static("kept"));
        p.apply(&mut h, None);
        let left: Vec<_> = h.keys().map(|k| k.as_str().to_owned()).collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert_eq!(h["x-other"], "kept");
        assert!(h.contains_key("x-request-id"));
        assert!(!h.values().any(|v| v.as_bytes().starts_with(b"spoof")));
    }

    #[test]
    fn injects_context() {
        let p = propagator();
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("req-1"));
        let ctx = AuthContext::builder(CredentialKind::Jwt)
            .subject("u1")
            .roles(["a", "b,c", "d"])
            .scopes(["s1", "s2"])
            .tenant("t")
            .claim("email", "e@x.test")
            .claim("secret", "no")
            .build();
        p.apply(&mut h, Some(&ctx));
        assert_eq!(h["x-user-id"], "u1");
        assert_eq!(h["x-user-roles"], "a,d");
        assert_eq!(h["x-user-scopes"], "s1 s2");
        assert_eq!(h["x-tenant-id"], "t");
        assert_eq!(h["x-request-id"], "req-1");
        let claims = URL_SAFE_NO_PAD
            .decode(h["x-auth-claims"].as_bytes())
            .unwrap();
        assert_eq!(claims, br#"{"email":"e@x.test"}"#);
    }

    #[test]
    fn request_id_rules() {
        let p = propagator();
        for (given, kept) in [
            (vec!["abc-123"], true),
            (vec!["has space"], false),
            (vec!["a", "b"], false),
            (vec![], false),
        ] {
            let mut h = HeaderMap::new();
            for g in &given {
                h.append("x-request-id", HeaderValue::from_str(g).unwrap());
            }
            p.apply(&mut h, None);
            assert_eq!(h.get_all("x-request-id").iter().count(), 1);
            assert_eq!(
                h["x-request-id"] == given.first().copied().unwrap_or(""),
                kept
            );
        }
        let mut h = HeaderMap::new();
        h.insert(
            "x-request-id",
            HeaderValue::from_str(&"a".repeat(129)).unwrap(),
        );
        p.apply(&mut h, None);
        assert_eq!(h["x-request-id"].len(), 36);
    }

    #[test]
    fn unsafe_values_are_left_out() {
        let p = propagator();
        let mut h = HeaderMap::new();
        let ctx = AuthContext::builder(CredentialKind::Jwt)
            .subject("ünïcode")
            .build();
        p.apply(&mut h, Some(&ctx));
        assert!(h.get("x-user-id").is_none());
    }
}
