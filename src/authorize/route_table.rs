//! A route table: (methods, path pattern) → policy, with matchit (axum's router).

use std::fmt;
use std::future::Ready;

use http::Method;

use super::{BoxPolicy, Decision, PathParams, PolicyEvaluator};
use crate::context::AuthContext;
use crate::credential::RequestHead;

/// Maps (method, path pattern) to a value (a policy, or anything a host routes by), picking
/// the most specific match; see [`RouteTable::builder`].
///
/// Patterns use matchit (axum) syntax: `/static`, `/{param}`, `/{*rest}`. For a request the
/// table considers the routes that accept its method and takes the most specific pattern
/// among them (static segments beat parameters, parameters beat catch-alls), so
/// `GET /users/me` can have a rule of its own beside `GET /users/{id}`, and a `DELETE` route
/// on `/users/{id}` is found for `DELETE /users/me` when `/users/me` is `GET`-only.
///
/// As a [`PolicyEvaluator`], an unmatched request is denied (default deny), and the matched
/// route's policy sees the captured path parameters
/// ([`RequestHead::path_param`](crate::credential::RequestHead::path_param)).
///
/// ```
/// use http::{Method, Request};
/// use tower_gatekeeper::{AuthContext, CredentialKind, PolicyEvaluator};
/// use tower_gatekeeper::authorize::{
///     AllowAll, RouteTable, any_of, path_param, roles_any, subject,
/// };
/// use tower_gatekeeper::credential::RequestHead;
///
/// let table = RouteTable::builder()
///     .route([Method::GET], "/health", AllowAll.boxed())
///     .route(
///         [Method::GET, Method::PUT],
///         "/users/{user_id}",
///         any_of([path_param("user_id").equals(subject()).boxed(), roles_any(["admin"]).boxed()]).boxed(),
///     )
///     .build()
///     .unwrap();
///
/// let alice = AuthContext::builder(CredentialKind::Jwt).subject("alice").build();
/// let decide = |method: Method, path: &str| {
///     let req = Request::builder().method(method).uri(path).body(()).unwrap();
///     table.decide_now(Some(&alice), &RequestHead::of(&req)).unwrap().is_allow()
/// };
/// assert!(decide(Method::PUT, "/users/alice"));
/// assert!(!decide(Method::PUT, "/users/bob"));
/// assert!(!decide(Method::DELETE, "/users/alice")); // no route: default deny
/// ```
pub struct RouteTable<T = BoxPolicy> {
    routes: Vec<Route<T>>,
    /// One router per method named by some route; each also holds the all-method routes.
    by_method: Vec<(Method, matchit::Router<usize>)>,
    /// The all-method routes, for methods no route names.
    any_method: matchit::Router<usize>,
}

struct Route<T> {
    pattern: String,
    methods: Option<Vec<Method>>,
    value: T,
}

impl<T> RouteTable<T> {
    /// Starts an empty table.
    pub fn builder() -> RouteTableBuilder<T> {
        RouteTableBuilder { routes: Vec::new() }
    }

    /// The most specific route for `method` and `path`, with its captured parameters.
    pub fn at<'t, 'p>(&'t self, method: &Method, path: &'p str) -> Option<RouteMatch<'t, 'p, T>> {
        let router = self
            .by_method
            .iter()
            .find(|(m, _)| m == method)
            .map_or(&self.any_method, |(_, router)| router);
        let matched = router.at(path).ok()?;
        let index = *matched.value;
        Some(RouteMatch {
            index,
            route: &self.routes[index],
            params: matched.params,
        })
    }

    /// The number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether the table has no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The value of route `index` (in the order the routes were added).
    pub fn get(&self, index: usize) -> Option<&T> {
        self.routes.get(index).map(|r| &r.value)
    }
}

impl<T> fmt::Debug for RouteTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.routes.iter().map(|r| {
                format!(
                    "{} {}",
                    r.methods
                        .as_deref()
                        .map_or_else(|| "*".to_owned(), method_list),
                    r.pattern
                )
            }))
            .finish()
    }
}

/// A route found by [`RouteTable::at`].
pub struct RouteMatch<'t, 'p, T> {
    index: usize,
    route: &'t Route<T>,
    params: matchit::Params<'t, 'p>,
}

impl<'t, 'p, T> RouteMatch<'t, 'p, T> {
    /// The route's value.
    pub fn value(&self) -> &'t T {
        &self.route.value
    }

    /// The route's index, in the order the routes were added.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The route's pattern.
    pub fn pattern(&self) -> &'t str {
        &self.route.pattern
    }

    /// A captured path parameter, as it appears in the path.
    pub fn param(&self, name: &str) -> Option<&'p str> {
        self.params.get(name)
    }

    /// The captured parameters, owned, e.g. to insert into the request extensions.
    pub fn path_params(&self) -> PathParams {
        self.params.iter().collect()
    }
}

impl<T> fmt::Debug for RouteMatch<'_, '_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteMatch")
            .field("index", &self.index)
            .field("pattern", &self.route.pattern)
            .field("params", &self.params)
            .finish()
    }
}

/// Builds a [`RouteTable`]; conflicts are found by [`build`](RouteTableBuilder::build).
#[must_use]
pub struct RouteTableBuilder<T> {
    routes: Vec<Route<T>>,
}

impl<T> fmt::Debug for RouteTableBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteTableBuilder")
            .field("routes", &self.routes.len())
            .finish()
    }
}

impl<T> RouteTableBuilder<T> {
    /// Adds a route for `methods` (an empty list is an error at build time).
    pub fn route<M>(mut self, methods: M, pattern: impl Into<String>, value: T) -> Self
    where
        M: IntoIterator<Item = Method>,
    {
        let mut list: Vec<Method> = Vec::new();
        for method in methods {
            if !list.contains(&method) {
                list.push(method);
            }
        }
        self.routes.push(Route {
            pattern: pattern.into(),
            methods: Some(list),
            value,
        });
        self
    }

    /// Adds a route for every method.
    pub fn any_method(mut self, pattern: impl Into<String>, value: T) -> Self {
        self.routes.push(Route {
            pattern: pattern.into(),
            methods: None,
            value,
        });
        self
    }

    /// Builds the table.
    ///
    /// # Errors
    ///
    /// [`RouteTableError`] naming the route (by index and pattern): an invalid pattern, an
    /// empty method list, or two routes that could both serve one request (the same
    /// pattern with a shared method, or patterns matchit cannot tell apart such as
    /// `/a/{id}` and `/a/{name}`).
    pub fn build(self) -> Result<RouteTable<T>, RouteTableError> {
        let routes = self.routes;
        let mut named: Vec<Method> = Vec::new();
        for (index, route) in routes.iter().enumerate() {
            match &route.methods {
                Some(methods) if methods.is_empty() => {
                    return Err(RouteTableError::NoMethods {
                        index,
                        pattern: route.pattern.clone(),
                    });
                }
                Some(methods) => {
                    for method in methods {
                        if !named.contains(method) {
                            named.push(method.clone());
                        }
                    }
                }
                None => {}
            }
            // Each pattern must be valid on its own.
            if let Err(error) = matchit::Router::new().insert(route.pattern.as_str(), ()) {
                return Err(RouteTableError::InvalidPattern {
                    index,
                    pattern: route.pattern.clone(),
                    reason: error.to_string(),
                });
            }
        }
        let mut any_method = matchit::Router::new();
        let mut by_method: Vec<(Method, matchit::Router<usize>)> = named
            .iter()
            .map(|m| (m.clone(), matchit::Router::new()))
            .collect();
        // Routers per method keep, for each pattern, the route that inserted it.
        let mut owners: Vec<Vec<(String, usize)>> = vec![Vec::new(); by_method.len() + 1];
        for (index, route) in routes.iter().enumerate() {
            let targets: Vec<usize> = match &route.methods {
                None => (0..=by_method.len()).collect(),
                Some(methods) => methods
                    .iter()
                    .map(|m| by_method.iter().position(|(n, _)| n == m).expect("named"))
                    .collect(),
            };
            for target in targets {
                let router = if target == by_method.len() {
                    &mut any_method
                } else {
                    &mut by_method[target].1
                };
                if let Err(error) = router.insert(route.pattern.as_str(), index) {
                    let other = match &error {
                        matchit::InsertError::Conflict { with } => owners[target]
                            .iter()
                            .find(|(p, _)| p == with)
                            .map(|(_, i)| *i),
                        _ => None,
                    };
                    let other = other
                        .or_else(|| {
                            owners[target]
                                .iter()
                                .find(|(p, _)| patterns_conflict(p, &route.pattern))
                                .map(|(_, i)| *i)
                        })
                        .unwrap_or(index);
                    let methods = shared_methods(&routes[other].methods, &route.methods);
                    return Err(RouteTableError::Conflict {
                        index,
                        pattern: route.pattern.clone(),
                        other,
                        other_pattern: routes[other].pattern.clone(),
                        methods,
                    });
                }
                owners[target].push((route.pattern.clone(), index));
            }
        }
        Ok(RouteTable {
            routes,
            by_method,
            any_method,
        })
    }
}

fn patterns_conflict(a: &str, b: &str) -> bool {
    let mut probe = matchit::Router::new();
    probe.insert(a, ()).is_ok() && probe.insert(b, ()).is_err()
}

fn shared_methods(a: &Option<Vec<Method>>, b: &Option<Vec<Method>>) -> String {
    match (a, b) {
        (None, None) => "all methods".to_owned(),
        (None, Some(m)) | (Some(m), None) => method_list(m),
        (Some(a), Some(b)) => {
            let common: Vec<Method> = a.iter().filter(|m| b.contains(m)).cloned().collect();
            method_list(&common)
        }
    }
}

fn method_list(methods: &[Method]) -> String {
    methods
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A route table that cannot be built. Indices count routes in the order they were added,
/// from 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteTableError {
    /// A pattern matchit does not accept.
    #[error("route {index} (path {pattern:?}): invalid path pattern: {reason}")]
    InvalidPattern {
        /// The route.
        index: usize,
        /// Its pattern.
        pattern: String,
        /// What is wrong.
        reason: String,
    },
    /// A route with an empty method list.
    #[error("route {index} (path {pattern:?}): the method list is empty")]
    NoMethods {
        /// The route.
        index: usize,
        /// Its pattern.
        pattern: String,
    },
    /// Two routes could both serve one request.
    #[error(
        "route {index} (path {pattern:?}) conflicts with route {other} (path {other_pattern:?}): both handle {methods}"
    )]
    Conflict {
        /// The route added later.
        index: usize,
        /// Its pattern.
        pattern: String,
        /// The route it conflicts with.
        other: usize,
        /// That route's pattern.
        other_pattern: String,
        /// The methods both handle, comma-separated (or "all methods").
        methods: String,
    },
}

impl<P: PolicyEvaluator> PolicyEvaluator for RouteTable<P> {
    type Future = RouteTableFuture<P::Future>;

    fn evaluate(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Self::Future {
        let path = req.uri().path();
        match self.at(req.method(), path) {
            Some(matched) => {
                let head = req.with_route_params(&matched.params);
                RouteTableFuture {
                    state: TableState::Matched {
                        fut: matched.route.value.evaluate(ctx, &head),
                    },
                }
            }
            None => RouteTableFuture {
                state: TableState::Unmatched {
                    fut: std::future::ready(unmatched()),
                },
            },
        }
    }

    fn decide_now(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Option<Decision> {
        match self.at(req.method(), req.uri().path()) {
            Some(matched) => {
                let head = req.with_route_params(&matched.params);
                matched.route.value.decide_now(ctx, &head)
            }
            None => Some(unmatched()),
        }
    }
}

fn unmatched() -> Decision {
    Decision::deny("no route allows this request")
}

pin_project_lite::pin_project! {
    /// Response future of a [`RouteTable`] used as a policy.
    pub struct RouteTableFuture<F> {
        #[pin]
        state: TableState<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = TableStateProj]
    enum TableState<F> {
        Matched { #[pin] fut: F },
        Unmatched { fut: Ready<Decision> },
    }
}

impl<F: std::future::Future<Output = Decision>> std::future::Future for RouteTableFuture<F> {
    type Output = Decision;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Decision> {
        match self.project().state.project() {
            TableStateProj::Matched { fut } => fut.poll(cx),
            TableStateProj::Unmatched { fut } => std::pin::Pin::new(fut).poll(cx),
        }
    }
}

impl<F> fmt::Debug for RouteTableFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteTableFuture").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authorize::{AllowAll, Authenticated, path_param, roles_any, subject};
    use crate::context::CredentialKind;

    fn table() -> RouteTable<&'static str> {
        RouteTable::builder()
            .route([Method::GET], "/users/me", "me")
            .any_method("/users/{id}", "user")
            .route([Method::DELETE], "/users/{id}/sessions/{*rest}", "sessions")
            .route([Method::GET], "/files/{*path}", "files")
            .route([Method::GET], "/files/readme", "readme")
            .build()
            .unwrap()
    }

    #[test]
    fn most_specific_match_per_method() {
        let t = table();
        let at = |m: Method, p: &str| t.at(&m, p).map(|r| *r.value());
        assert_eq!(at(Method::GET, "/users/me"), Some("me"));
        assert_eq!(at(Method::GET, "/users/42"), Some("user"));
        // `/users/me` is GET-only: DELETE falls back to the parameter route.
        assert_eq!(at(Method::DELETE, "/users/me"), Some("user"));
        // A method no route names uses the all-method routes.
        assert_eq!(
            at(Method::from_bytes(b"PURGE").unwrap(), "/users/me"),
            Some("user")
        );
        assert_eq!(at(Method::GET, "/users/1/sessions/a/b"), None);
        assert_eq!(
            at(Method::DELETE, "/users/1/sessions/a/b"),
            Some("sessions")
        );
        assert_eq!(at(Method::GET, "/files/readme"), Some("readme"));
        assert_eq!(at(Method::GET, "/files/a/b"), Some("files"));
        assert_eq!(at(Method::POST, "/files/a"), None);
        let m = t.at(&Method::DELETE, "/users/7/sessions/x/y").unwrap();
        assert_eq!(m.param("id"), Some("7"));
        assert_eq!(m.param("rest"), Some("x/y"));
        assert_eq!(m.pattern(), "/users/{id}/sessions/{*rest}");
        assert_eq!(m.path_params().get("rest"), Some("x/y"));
    }

    #[test]
    fn conflicts_are_named() {
        let err = RouteTable::builder()
            .any_method("/a/{id}", ())
            .route([Method::GET], "/a/{name}", ())
            .build()
            .unwrap_err();
        assert_eq!(
            err,
            RouteTableError::Conflict {
                index: 1,
                pattern: "/a/{name}".into(),
                other: 0,
                other_pattern: "/a/{id}".into(),
                methods: "GET".into(),
            }
        );
        let err = RouteTable::builder()
            .route([Method::GET, Method::PUT], "/a", ())
            .route([Method::POST, Method::PUT], "/a", ())
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("both handle PUT"), "{err}");
        // Disjoint methods on conflicting patterns never meet.
        RouteTable::builder()
            .route([Method::GET], "/a/{id}", ())
            .route([Method::POST], "/a/{name}", ())
            .build()
            .unwrap();
        let err = RouteTable::builder()
            .any_method("/a/{*rest}/b", ())
            .build()
            .unwrap_err();
        assert!(matches!(
            err,
            RouteTableError::InvalidPattern { index: 0, .. }
        ));
        let err = RouteTable::builder()
            .route([], "/a", ())
            .build()
            .unwrap_err();
        assert!(matches!(err, RouteTableError::NoMethods { .. }));
    }

    #[test]
    fn as_a_policy_default_deny_and_params() {
        let table: RouteTable = RouteTable::builder()
            .route([Method::GET], "/public", AllowAll.boxed())
            .route(
                [Method::GET, Method::PUT],
                "/users/{user_id}",
                path_param("user_id").equals(subject()).boxed(),
            )
            .route(
                [Method::DELETE],
                "/users/{user_id}",
                roles_any(["admin"]).boxed(),
            )
            .any_method("/me", Authenticated.boxed())
            .build()
            .unwrap();
        let alice = AuthContext::builder(CredentialKind::Jwt)
            .subject("alice")
            .build();
        let decide = |m: &str, p: &str| {
            let req = http::Request::builder().method(m).uri(p).body(()).unwrap();
            table
                .decide_now(Some(&alice), &RequestHead::of(&req))
                .unwrap()
        };
        assert!(decide("GET", "/public").is_allow());
        assert!(decide("POST", "/public").is_deny());
        assert!(decide("GET", "/users/alice").is_allow());
        assert!(decide("GET", "/users/bob").is_deny());
        assert!(decide("DELETE", "/users/alice").is_deny());
        assert!(decide("GET", "/nowhere").is_deny());
    }
}
