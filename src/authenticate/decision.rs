//! The authenticate layer's decision once the credential's outcome is known, in one place
//! for the service (outcomes known at once) and the future (outcomes awaited).

use http::{Request, Response};

use super::{AuthMode, AuthenticateSeen};
use crate::audit::{Observation, Outcome};
use crate::body::ResponseBody;
use crate::context::AuthContext;
use crate::limits::Limits;
use crate::reject::{Protocol, Rejection, RejectionKind, RejectionResponse, render};

/// What becomes of the request.
pub(super) enum Verdict<B> {
    /// It goes on to the inner service.
    Admit,
    /// It is answered with this rejection.
    Reject(Response<ResponseBody<B>>),
}

/// What the layer does with a request once the credential's `outcome` is known, with the
/// decision observed:
///
/// - authenticated: the context, within the list limits, goes into the extensions and the
///   request goes on;
/// - no credential on an [`AuthMode::Optional`] route: the request goes on anonymous, marked
///   [`AuthenticateSeen`];
/// - anything else: the rejection rendered for the request's [`Protocol`].
pub(super) fn decide<B, R, ResBody>(
    req: &mut Request<B>,
    outcome: Result<AuthContext, Rejection>,
    mode: AuthMode,
    limits: Limits,
    observation: Observation,
    renderer: &R,
) -> Verdict<ResBody>
where
    R: RejectionResponse,
{
    match outcome {
        Ok(mut ctx) => {
            if ctx.truncate_lists(limits.roles_limit(), limits.scopes_limit()) {
                tracing::debug!(
                    max_roles = limits.roles_limit(),
                    max_scopes = limits.scopes_limit(),
                    "roles or scopes beyond the limits were dropped"
                );
            }
            observation.finish(Outcome::Allow, "authenticated", Some(&ctx), None);
            req.extensions_mut().insert(ctx);
            Verdict::Admit
        }
        Err(rejection)
            if rejection.kind() == RejectionKind::MissingCredential
                && mode == AuthMode::Optional =>
        {
            observation.finish(Outcome::Allow, "anonymous", None, None);
            req.extensions_mut().insert(AuthenticateSeen);
            Verdict::Admit
        }
        Err(rejection) => {
            let span = observation.span().clone();
            let _entered = span.enter();
            observation.finish(
                Outcome::Deny,
                rejection.description(),
                None,
                Some(&rejection),
            );
            Verdict::Reject(render(renderer, rejection, Protocol::of(req)))
        }
    }
}
