use std::path::Path;

use crate::config::file::FileRoute;
use crate::config::file::RouteAuth;
use crate::config::file::UpstreamProtocol;
use http::Method;
use http::uri::{Authority, Uri};
use tower_gatekeeper::PolicyEvaluator;
use tower_gatekeeper::authorize::Shadow;
use tower_gatekeeper::authorize::{AllowAll, BoxPolicy, RegoConfig, RouteTable, RouteTableError};
use tower_gatekeeper::path::{PathForm, PathPolicy};

/// A checked `[[route]]`.
#[derive(Debug)]
pub(crate) struct RouteSpec {
    /// How messages and logs name this route: `[[route]] #2 (path "/orders/{*rest}")`.
    pub(crate) label: String,
    pub(crate) path: String,
    /// `None`: every method.
    pub(crate) methods: Option<Vec<Method>>,
    pub(crate) upstream: Authority,
    /// `https://` upstream: TLS, HTTP/2 or HTTP/1.1 by ALPN.
    pub(crate) upstream_tls: bool,
    pub(crate) upstream_protocol: UpstreamProtocol,
    pub(crate) auth: RouteAuth,
    /// The query parameter that may carry the access token (RFC 6750 §2.3), if any.
    pub(crate) query_token: Option<String>,
    /// At most this many requests of this route in flight upstream (`None`: no limit).
    pub(crate) max_concurrency: Option<usize>,
    /// The path forms refused by default that this route accepts (`allow_path_forms`).
    pub(crate) path_policy: PathPolicy,
    /// How much the route asks of callers, to report routes that take requests from a more
    /// protected one: 0 public, 1 optional, 2 required, 3 with rules.
    pub(crate) protection: u8,
    pub(crate) policy: BoxPolicy,
    /// The per-identity rate limit (`rate_limit`), if any.
    pub(crate) rate_limit: Option<crate::rate_limit::RateLimitSpec>,
    /// Rules evaluated report-only (`shadow`): logged and counted, never enforced.
    pub(crate) shadow: Option<Shadow<BoxPolicy>>,
    /// `Some(false)`: this route does not ask `[ext_authz]`.
    pub(crate) ext_authz: Option<bool>,
    /// `websocket = true`: upgrade handshakes are forwarded and the tunnel relayed.
    pub(crate) websocket: bool,
    /// Whether a tunnel is closed when the credential it was opened with expires.
    pub(crate) websocket_close_on_expiry: bool,
}

/// What every route is checked against.
#[derive(Clone, Copy)]
pub(crate) struct RouteContext<'a> {
    /// Whether anything can authenticate callers.
    pub(crate) can_authenticate: bool,
    /// Every issuer name a caller can have (`[[issuer]]`, API keys, introspection).
    pub(crate) issuers: &'a [String],
    /// The top-level `rego`, for routes without their own.
    pub(crate) global_rego: Option<&'a RegoConfig>,
    /// The configuration file's directory.
    pub(crate) base: &'a Path,
    /// Whether `[api_keys]` is configured.
    pub(crate) api_keys: bool,
}

pub(crate) fn compile_route(
    n: usize,
    raw: FileRoute,
    context: &RouteContext<'_>,
) -> Result<RouteSpec, String> {
    let RouteContext {
        can_authenticate,
        issuers,
        global_rego,
        base,
        api_keys,
    } = *context;
    let label = format!("[[route]] #{n} (path {:?})", raw.path);
    if !raw.path.starts_with('/') {
        return Err(format!("{label}: `path` must start with \"/\""));
    }
    let methods = match raw.methods {
        None => None,
        Some(names) if names.is_empty() => {
            return Err(format!(
                "{label}: `methods` is empty; list methods or remove the key to allow all"
            ));
        }
        Some(names) => {
            let mut methods = Vec::with_capacity(names.len());
            for name in &names {
                let method = Method::from_bytes(name.as_bytes())
                    .ok()
                    .filter(|_| !name.bytes().any(|b| b.is_ascii_lowercase()))
                    .ok_or_else(|| {
                        format!(
                            "{label}: `methods`: {name:?} is not an HTTP method (methods are upper case, e.g. \"GET\")"
                        )
                    })?;
                if !methods.contains(&method) {
                    methods.push(method);
                }
            }
            Some(methods)
        }
    };
    let (upstream, upstream_tls) = parse_upstream(&raw.upstream)
        .map_err(|why| format!("{label}: `upstream` {:?}: {why}", raw.upstream))?;
    if upstream_tls && raw.upstream_protocol == UpstreamProtocol::H2c {
        return Err(format!(
            "{label}: `upstream_protocol` = \"h2c\" is HTTP/2 without TLS, but `upstream` is https: an https upstream gets HTTP/2 or HTTP/1.1 by ALPN with \"auto\" (gRPC always HTTP/2), HTTP/1.1 only with \"http1\""
        ));
    }
    if raw.websocket_close_on_expiry.is_some() && !raw.websocket {
        return Err(format!(
            "{label}: `websocket_close_on_expiry` applies to WebSocket tunnels; it needs `websocket` = true"
        ));
    }
    if raw.websocket {
        check_websocket(&label, raw.upstream_protocol, methods.as_deref())?;
    }
    let mut path_policy = PathPolicy::strict();
    for name in raw.allow_path_forms.iter().flatten() {
        let form = name.parse::<PathForm>().map_err(|_| {
            let known: Vec<&str> = PathForm::ALL.iter().map(|f| f.name()).collect();
            format!(
                "{label}: `allow_path_forms`: {name:?} is not a path form; one of {}",
                known.join(", ")
            )
        })?;
        path_policy = path_policy.allow(form);
    }
    if raw.max_concurrency == Some(0) {
        return Err(format!("{label}: `max_concurrency` must be at least 1"));
    }
    match &raw.query_token {
        Some(name) if name.is_empty() || name.contains(['&', '=', '#', '?', ' ']) => {
            return Err(format!(
                "{label}: `query_token` {name:?} is not a query parameter name (e.g. \"access_token\")"
            ));
        }
        Some(_) if raw.auth == RouteAuth::Public => {
            return Err(format!(
                "{label}: `query_token` needs a route that authenticates; it cannot be used with auth = \"public\""
            ));
        }
        _ => {}
    }

    let rate_limit = raw
        .rate_limit
        .map(|limit| {
            crate::config::edge::compile_rate_limit(
                &label,
                limit,
                raw.auth == RouteAuth::Public,
                api_keys,
            )
        })
        .transpose()?;
    let shadow =
        crate::config::policy::compile_shadow(&label, raw.shadow, raw.auth, issuers, base)?;
    let rules = raw.rules;
    let protection = match raw.auth {
        RouteAuth::Public => 0,
        _ if !rules.is_empty() => 3,
        RouteAuth::Optional => 1,
        RouteAuth::Required => 2,
    };
    let policy = match raw.auth {
        RouteAuth::Public if !rules.is_empty() => {
            return Err(format!(
                "{label}: {} need an authenticated caller; they cannot be used with auth = \"public\"",
                rules
                    .keys()
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        RouteAuth::Public => AllowAll.boxed(),
        auth if !can_authenticate => {
            return Err(format!(
                "{label}: auth = \"{auth}\" needs at least one [[issuer]] to verify tokens (or [introspection] or [api_keys])"
            ));
        }
        auth => {
            rules
                .check_issuers(issuers)
                .map_err(|e| format!("{label}: {e}"))?;
            let mut rules = rules;
            // The global policy applies where the route has no Rego policy of its own.
            if rules.rego.is_none() {
                rules.rego = global_rego.cloned();
            }
            if let Some(rego) = &mut rules.rego {
                rego.policy = base.join(&rego.policy);
                rego.data = rego.data.as_ref().map(|data| base.join(data));
            }
            if rules.is_empty() && auth == RouteAuth::Optional {
                AllowAll.boxed()
            } else {
                // With no rule keys this is "any authenticated caller".
                rules.compile().map_err(|e| format!("{label}: {e}"))?
            }
        }
    };
    Ok(RouteSpec {
        label,
        path: raw.path,
        methods,
        upstream,
        upstream_tls,
        upstream_protocol: raw.upstream_protocol,
        auth: raw.auth,
        query_token: raw.query_token,
        max_concurrency: raw.max_concurrency,
        path_policy,
        protection,
        policy,
        rate_limit,
        shadow,
        ext_authz: raw.ext_authz,
        websocket: raw.websocket,
        websocket_close_on_expiry: raw.websocket_close_on_expiry.unwrap_or(true),
    })
}

/// `http://host[:port]` or `https://host[:port]` with no path, query or user info; `true`
/// for https.
pub(crate) fn parse_upstream(text: &str) -> Result<(Authority, bool), &'static str> {
    const SHAPE: &str = "must be http://host:port or https://host:port";
    let uri: Uri = text.parse().map_err(|_| SHAPE)?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(SHAPE),
    };
    let authority = uri.authority().ok_or(SHAPE)?;
    if authority.as_str().contains('@') {
        return Err("must not contain user info");
    }
    if authority.host().is_empty() {
        return Err(SHAPE);
    }
    if uri
        .path_and_query()
        .is_some_and(|pq| !matches!(pq.as_str(), "" | "/"))
    {
        return Err(
            "must not have a path or query: the request's path and query are appended as they are",
        );
    }
    Ok((authority.clone(), tls))
}

/// Builds the routing table; two routes that could both serve a request are a conflict. Also
/// returns, for the logs, each place where a route takes requests from a broader, more
/// protected one (e.g. a public `/api/health` inside an admin-only `/api/{*rest}`): usually
/// intended, worth a look when not.
pub(crate) fn compile_table(
    routes: &[RouteSpec],
) -> Result<(RouteTable<usize>, Vec<String>), String> {
    let mut builder = RouteTable::builder();
    for (i, route) in routes.iter().enumerate() {
        builder = match &route.methods {
            None => builder.any_method(route.path.clone(), i),
            Some(methods) => builder.route(methods.iter().cloned(), route.path.clone(), i),
        };
    }
    let table = builder.build().map_err(|error| match error {
        RouteTableError::Conflict {
            index,
            other,
            methods,
            ..
        } if routes[index].path == routes[other].path => format!(
            "{} conflicts with {}: both handle {methods}",
            routes[index].label, routes[other].label
        ),
        RouteTableError::Conflict { index, other, .. } => format!(
            "{} conflicts with {}: the two path patterns overlap ambiguously",
            routes[index].label, routes[other].label
        ),
        RouteTableError::InvalidPattern { index, reason, .. } => {
            format!("{}: invalid path pattern: {reason}", routes[index].label)
        }
        other => other.to_string(),
    })?;
    let shadowed = table
        .shadowed(|winner, broader| routes[*winner].protection < routes[*broader].protection)
        .into_iter()
        .map(|s| {
            let methods = s
                .methods
                .as_deref()
                .map_or_else(|| "every method".to_owned(), method_list);
            format!(
                "{} takes {methods} {} from the more protected {}",
                routes[s.by].label, s.example, routes[s.route].label
            )
        })
        .collect();
    Ok((table, shadowed))
}

pub(crate) fn method_list(methods: &[Method]) -> String {
    methods
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `websocket = true` needs of its route: an HTTP/1.1 upstream (the upgrade is an
/// HTTP/1.1 mechanism) and `GET` among its methods (the handshake is a `GET`).
fn check_websocket(
    label: &str,
    protocol: UpstreamProtocol,
    methods: Option<&[Method]>,
) -> Result<(), String> {
    if protocol == UpstreamProtocol::H2c {
        return Err(format!(
            "{label}: `websocket` = true needs an HTTP/1.1 upstream, but `upstream_protocol` = \"h2c\": the WebSocket handshake is an HTTP/1.1 upgrade (use \"auto\" or \"http1\")"
        ));
    }
    if let Some(methods) = methods
        && !methods.contains(&Method::GET)
    {
        return Err(format!(
            "{label}: `websocket` = true needs \"GET\" in `methods`: the WebSocket handshake is a GET"
        ));
    }
    Ok(())
}
