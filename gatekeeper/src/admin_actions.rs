//! The admin actions on the admin listener: revoke a token or a subject, refresh the issuers'
//! keys now, reload the configuration (each `POST`, behind the admin token), and the shadow
//! rules' counts (`GET /shadow`, like `/metrics`, without it).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};
use tower_gatekeeper::keys::IssuerKeys;
use tower_gatekeeper::revocation::{Revocation, RevocationError, RevocationStore};
use tracing::{info, warn};

use crate::reload::Live;

/// The paths of the actions, all `POST`.
pub(crate) const ACTIONS: [&str; 4] = [
    "/revoke/token",
    "/revoke/subject",
    "/keys/refresh",
    "/reload",
];
/// The largest request body an action reads.
const MAX_BODY: usize = 64 * 1024;
/// How long "refresh keys now" waits for each issuer's fetch.
#[cfg(feature = "remote")]
const REFRESH_TIMEOUT: Duration = Duration::from_secs(15);
/// How far in the future a subject revocation's `issued_before` may be: a lock-out in
/// advance is the identity provider's job.
const MAX_FUTURE: Duration = Duration::from_secs(300);

/// Answers `POST` on one of [`ACTIONS`].
pub(crate) async fn action(live: Option<&Live>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::POST {
        let mut response = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "admin actions take POST",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let Some(live) = live else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "admin actions are not served by this listener",
        );
    };
    let current = live.current();
    let Some(token) = &current.admin.token else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "admin actions are off: configure `admin_token_sha256` or `admin_token_file` to serve them",
        );
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    if !presented.is_some_and(|presented| token.matches(presented)) {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "admin actions need `Authorization: Bearer <admin token>`",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"gatekeeper-admin\""),
        );
        return response;
    }
    let path = req.uri().path().to_owned();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the request body could not be read or is larger than 64 KiB",
            );
        }
    };
    match path.as_str() {
        "/revoke/token" => match parse::<RevokeToken>(&body) {
            Ok(body) => match UNIX_EPOCH.checked_add(Duration::from_secs(body.exp)) {
                Some(exp) => {
                    revoke(
                        current.revocations.as_ref(),
                        Revocation::token(body.jti, exp),
                        "token",
                    )
                    .await
                }
                None => error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "`exp` is out of range",
                ),
            },
            Err(response) => *response,
        },
        "/revoke/subject" => match parse::<RevokeSubject>(&body) {
            Ok(body) => {
                let now = SystemTime::now();
                let at = match body.issued_before {
                    None => Some(now),
                    Some(secs) => UNIX_EPOCH.checked_add(Duration::from_secs(secs)),
                };
                let Some(at) = at.filter(|at| *at <= now + MAX_FUTURE) else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "`issued_before` is more than 5 minutes in the future; revoke up to now, and disable future logins at the identity provider",
                    );
                };
                revoke(
                    current.revocations.as_ref(),
                    Revocation::subject(body.sub, at),
                    "subject",
                )
                .await
            }
            Err(response) => *response,
        },
        "/keys/refresh" => match parse::<Empty>(&body) {
            Ok(Empty {}) => refresh(&current).await,
            Err(response) => *response,
        },
        _ => match parse::<Empty>(&body) {
            Ok(Empty {}) => reload(live).await,
            Err(response) => *response,
        },
    }
}

/// `POST /revoke/token`: `{"jti": "...", "exp": <unix seconds>}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeToken {
    jti: String,
    exp: u64,
}

/// `POST /revoke/subject`: `{"sub": "...", "issued_before": <unix seconds, default now>}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeSubject {
    sub: String,
    issued_before: Option<u64>,
}

/// The body of the actions without parameters: empty or `{}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// Parses a JSON body (an empty body reads as `{}`), or answers 400 saying what is wrong.
fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Box<Response<Full<Bytes>>>> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        body
    };
    let refuse = |why: String| Box::new(error(StatusCode::BAD_REQUEST, "invalid_request", &why));
    let value: Value =
        serde_json::from_slice(body).map_err(|e| refuse(format!("the body is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(refuse("the body must be a JSON object".to_owned()));
    }
    serde_json::from_value(value)
        .map_err(|e| refuse(format!("the body is not the expected JSON object: {e}")))
}

async fn revoke(
    store: Option<&tower_gatekeeper::revocation::Revocations>,
    revocation: Revocation,
    kind: &'static str,
) -> Response<Full<Bytes>> {
    let Some(store) = store else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no revocation store: add a [revocation] section (in memory, or `redis_url` to share with the other replicas)",
        );
    };
    match store.revoke(revocation).await {
        Ok(()) => {
            info!(kind, "revoked through the admin endpoint");
            ok(StatusCode::OK, json!({"revoked": kind, "shared": true}))
        }
        Err(RevocationError::Unavailable(cause)) => {
            warn!(kind, error = %cause, "revoked through the admin endpoint; the shared store is unreachable");
            ok(
                StatusCode::ACCEPTED,
                json!({
                    "revoked": kind,
                    "shared": false,
                    "detail": "enforced by this replica; written to the shared store, and so to the other replicas, when it is reachable again",
                }),
            )
        }
        Err(RevocationError::Refused(why)) => error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("not revoked: {why}"),
        ),
        Err(other) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            &other.to_string(),
        ),
    }
}

/// `POST /keys/refresh`: fetches every remote issuer's keys now, then empties the
/// verified-token cache, so that a key the identity provider removed verifies nothing from
/// here on. 200 when every fetch succeeded, 502 otherwise (the previous keys of a failed
/// issuer stay in use).
async fn refresh(current: &crate::reload::Current) -> Response<Full<Bytes>> {
    let mut issuers = Vec::new();
    let mut failed = false;
    for (issuer, keys) in &current.issuer_keys {
        issuers.push(match refresh_one(keys).await {
            None => json!({"issuer": issuer, "source": "static", "refreshed": false}),
            Some(Ok(())) => json!({"issuer": issuer, "source": "remote", "refreshed": true}),
            Some(Err(message)) => {
                failed = true;
                json!({"issuer": issuer, "source": "remote", "refreshed": false, "error": message})
            }
        });
    }
    let cleared = match &current.gateway.inner.cached {
        Some(cached) => {
            cached.purge_untrusted();
            cached.cache().invalidate_all();
            true
        }
        None => false,
    };
    info!(failed, "keys refreshed through the admin endpoint");
    let status = if failed {
        StatusCode::BAD_GATEWAY
    } else {
        StatusCode::OK
    };
    ok(
        status,
        json!({"issuers": issuers, "cache_cleared": cleared}),
    )
}

/// `None` for keys given in files (nothing to fetch).
async fn refresh_one(keys: &IssuerKeys) -> Option<Result<(), String>> {
    match keys {
        #[cfg(feature = "remote")]
        IssuerKeys::Remote(remote) => Some(
            match tokio::time::timeout(REFRESH_TIMEOUT, remote.refresh_now()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err(format!("no answer within {}s", REFRESH_TIMEOUT.as_secs())),
            },
        ),
        #[cfg(feature = "remote")]
        IssuerKeys::Tenants(tenants) => Some(
            match tokio::time::timeout(REFRESH_TIMEOUT, tenants.refresh_now()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err(format!("no answer within {}s", REFRESH_TIMEOUT.as_secs())),
            },
        ),
        _ => None,
    }
}

/// `POST /reload`: as SIGHUP. 200 with the route count and what needs a restart, or 422 with
/// the configuration error (the previous configuration stays).
async fn reload(live: &Live) -> Response<Full<Bytes>> {
    match live.reload().await {
        Ok(reloaded) => ok(
            StatusCode::OK,
            json!({"reloaded": true, "routes": reloaded.routes, "needs_restart": reloaded.needs_restart}),
        ),
        Err(refused) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_configuration",
            &refused.to_string(),
        ),
    }
}

/// `GET /shadow`: what each route's `shadow` rules would have decided since the
/// configuration was loaded.
pub(crate) fn shadow_counts(live: Option<&Live>) -> Response<Full<Bytes>> {
    let routes: Vec<Value> = live
        .map(|live| {
            live.gateway()
                .inner
                .shadows
                .iter()
                .map(|stats| {
                    json!({
                        "route": stats.name(),
                        "allowed": stats.allowed(),
                        "denied": stats.denied(),
                        "unavailable": stats.unavailable(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    ok(StatusCode::OK, json!({"shadow": routes}))
}

fn ok(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, code: &str, description: &str) -> Response<Full<Bytes>> {
    ok(
        status,
        json!({"error": code, "error_description": description}),
    )
}
