//! The input document that external engines (Rego, external authorizers) decide on.

use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION};
use serde_json::{Map, Value, json};

use super::ClientAddr;
use crate::context::AuthContext;
use crate::credential::RequestHead;

/// The JSON document describing the caller, the request and the environment, as Rego
/// policies see it under `input` and external authorizers receive it as the request body:
///
/// ```json
/// {
///   "caller": {
///     "subject": "user-1", "issuer": "https://idp.example.test",
///     "roles": ["clerk"], "scopes": ["orders:read"], "tenant": "acme",
///     "credential_kind": "jwt", "claims": { "sub": "user-1", "...": "..." }
///   },
///   "request": {
///     "method": "GET", "path": "/users/42",
///     "path_params": { "user_id": "42" },
///     "headers": { "x-api-version": "2" },
///     "client_ip": "10.1.2.3"
///   },
///   "environment": { "now": 1767225600 }
/// }
/// ```
///
/// - `caller` is `null` for requests without an authenticated caller; absent subject,
///   issuer and tenant are `null`.
/// - `path` has no query string (queries may carry secrets); `path_params` are those of the
///   matched route, as they appear in the path; `client_ip` is `null` without a
///   [`ClientAddr`] extension.
/// - `headers` has lower-case names; repeated headers are joined with `", "`; values that
///   are not visible ASCII are left out, and so are `authorization`, `proxy-authorization`
///   and `cookie`: credentials never reach a policy. Identity must be read from `caller`,
///   never from headers such as `x-user-id`, which the client controls.
/// - `environment.now` is the time of the decision in seconds since the Unix epoch.
pub fn policy_input(ctx: Option<&AuthContext>, req: &RequestHead<'_>, now: SystemTime) -> Value {
    let caller = ctx.map_or(Value::Null, |ctx| {
        json!({
            "subject": ctx.subject(),
            "issuer": ctx.issuer(),
            "roles": ctx.roles(),
            "scopes": ctx.scopes(),
            "tenant": ctx.tenant(),
            "credential_kind": ctx.credential_kind().as_str(),
            "claims": ctx.claims_map(),
        })
    });
    let mut headers = Map::new();
    for name in req.headers().keys() {
        if name == AUTHORIZATION || name == PROXY_AUTHORIZATION || name == COOKIE {
            continue;
        }
        let values: Option<Vec<&str>> = req
            .headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().ok())
            .collect();
        if let Some(values) = values {
            headers.insert(name.as_str().to_owned(), Value::from(values.join(", ")));
        }
    }
    let path_params: Map<String, Value> = req
        .path_params()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::from(v)))
        .collect();
    let client_ip = req
        .extensions()
        .get::<ClientAddr>()
        .map(|a| a.0.ip().to_string());
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    json!({
        "caller": caller,
        "request": {
            "method": req.method().as_str(),
            "path": req.uri().path(),
            "path_params": path_params,
            "headers": headers,
            "client_ip": client_ip,
        },
        "environment": { "now": now },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authorize::PathParams;
    use crate::context::CredentialKind;

    #[test]
    fn input_document_leaves_credentials_out() {
        let mut req = http::Request::builder()
            .method("PUT")
            .uri("/users/42?token=secret")
            .header("authorization", "Bearer secret")
            .header("cookie", "session=secret")
            .header("x-a", "1")
            .header("x-a", "2")
            .body(())
            .unwrap();
        req.extensions_mut()
            .insert(PathParams::from_iter([("user_id", "42")]));
        req.extensions_mut()
            .insert(ClientAddr("[::1]:80".parse().unwrap()));
        let ctx = AuthContext::builder(CredentialKind::Jwt)
            .subject("u")
            .roles(["r"])
            .claim("sub", "u")
            .build();
        let input = policy_input(
            Some(&ctx),
            &RequestHead::of(&req),
            UNIX_EPOCH + std::time::Duration::from_secs(7),
        );
        assert!(!input.to_string().contains("secret"), "{input}");
        assert_eq!(input["request"]["path"], "/users/42");
        assert_eq!(input["request"]["headers"]["x-a"], "1, 2");
        assert_eq!(input["request"]["path_params"]["user_id"], "42");
        assert_eq!(input["request"]["client_ip"], "::1");
        assert_eq!(input["caller"]["roles"], json!(["r"]));
        assert_eq!(input["caller"]["tenant"], Value::Null);
        assert_eq!(input["environment"]["now"], 7);
        let anonymous = policy_input(None, &RequestHead::of(&req), UNIX_EPOCH);
        assert_eq!(anonymous["caller"], Value::Null);
    }
}
