//! axum integration (feature `axum`): [`AuthContext`] as an extractor and [`Rejection`] as
//! a response.

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderValue, StatusCode, header::CONTENT_TYPE};

use crate::authenticate::AuthenticateSeen;
use crate::context::AuthContext;
use crate::reject::{DefaultRejection, Protocol, Rejection, RejectionResponse};

/// Extracts the caller authenticated by [`AuthenticateLayer`](crate::AuthenticateLayer).
///
/// - no caller, and the layer saw the request (optional route): 401 with a bare challenge;
/// - no layer ran at all: 500, naming the missing layer (a wiring mistake, not the client's).
///
/// Use `Option<AuthContext>` on routes where authentication is optional.
impl<S: Send + Sync> FromRequestParts<S> for AuthContext {
    type Rejection = AuthContextRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(ctx) = parts.extensions.get::<AuthContext>() {
            return Ok(ctx.clone());
        }
        if parts.extensions.get::<AuthenticateSeen>().is_some() {
            Err(AuthContextRejection::Unauthenticated(
                Rejection::missing_credential(),
                Protocol::of_headers(&parts.headers),
            ))
        } else {
            Err(AuthContextRejection::MissingLayer)
        }
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for AuthContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<AuthContext>().cloned())
    }
}

/// Why the [`AuthContext`] extractor failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum AuthContextRejection {
    /// The request has no authenticated caller (401).
    Unauthenticated(Rejection, Protocol),
    /// No `AuthenticateLayer` ran for this route (500).
    MissingLayer,
}

impl IntoResponse for AuthContextRejection {
    fn into_response(self) -> Response {
        match self {
            AuthContextRejection::Unauthenticated(rejection, protocol) => {
                let response = DefaultRejection::default().response(&rejection, protocol);
                let (mut parts, body) = response.into_parts();
                parts.extensions.insert(rejection);
                Response::from_parts(parts, body.into())
            }
            AuthContextRejection::MissingLayer => {
                let mut response = Response::new(
                    "Missing AuthContext: no AuthenticateLayer ran for this route. Perhaps you forgot to add it (Router::route_layer)?"
                        .into(),
                );
                *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                response
            }
        }
    }
}

impl IntoResponse for Rejection {
    /// The default rendering for plain HTTP (realm `api`).
    fn into_response(self) -> Response {
        AuthContextRejection::Unauthenticated(self, Protocol::Http).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    async fn extract(req: Request<()>) -> Result<AuthContext, AuthContextRejection> {
        let (mut parts, ()) = req.into_parts();
        <AuthContext as FromRequestParts<()>>::from_request_parts(&mut parts, &()).await
    }

    #[tokio::test]
    async fn extractor_statuses() {
        let err = extract(Request::new(())).await.unwrap_err();
        assert_eq!(err.into_response().status(), 500);

        let mut req = Request::new(());
        req.extensions_mut().insert(AuthenticateSeen);
        let err = extract(req).await.unwrap_err();
        let response = err.into_response();
        assert_eq!(response.status(), 401);
        assert!(response.headers().contains_key("www-authenticate"));

        let mut req = Request::new(());
        req.extensions_mut().insert(
            AuthContext::builder(crate::CredentialKind::Jwt)
                .subject("s")
                .build(),
        );
        assert_eq!(extract(req).await.unwrap().subject(), Some("s"));
    }
}
