//! A route table: (methods, path pattern) → policy, with matchit (axum's router).

use std::fmt;
use std::future::Ready;

use http::{HeaderValue, Method};

use super::{BoxPolicy, Decision, Denial, PathParams, PolicyEvaluator};
use crate::context::AuthContext;
use crate::credential::RequestHead;
use crate::reject::Rejection;

/// Maps (method, path pattern) to a value (a policy, or anything a host routes by); see
/// [`RouteTable::builder`].
///
/// Patterns use matchit (axum) syntax: `/static`, `/{param}`, `/{*rest}`. A request is routed
/// in two steps, and never falls through to a broader route:
///
/// 1. **Path.** The most specific pattern matching the path is chosen, whatever the method:
///    static segments beat parameters, parameters beat catch-alls. A prefix pattern
///    `/p/{*rest}` also matches the bare prefix `/p` and `/p/` (unless another route names
///    that path itself), so `/api/admin` is covered by `/api/admin/{*rest}`, not by a broader
///    `/api/{*rest}`.
/// 2. **Method.** Among the routes with that pattern (one per method list), the one listing the
///    method, else for `HEAD` the one listing `GET`, else the all-method route. If none takes
///    it, the outcome is [`Lookup::MethodNotAllowed`] with the methods to list in `Allow`:
///    the request is not handed to a broader route or a catch-all.
///
/// [`RouteTable::lookup`] returns the three outcomes; [`RouteTable::at`] only the match. As a
/// [`PolicyEvaluator`], a method-not-allowed request is denied with 405 and `Allow` (gRPC 12
/// UNIMPLEMENTED), an unmatched request is denied (default deny), and the matched route's
/// policy sees the captured path parameters
/// ([`RequestHead::path_param`](crate::credential::RequestHead::path_param)). For the bare
/// prefix (`/p`, `/p/` on `/p/{*rest}`) the catch-all parameter is absent.
///
/// [`RouteTable::shadowed`] reports, once the table is built, where a more specific route takes
/// requests that a broader one also matches and is less protected (a public `/api/health`
/// under an admin-only `/api/{*rest}`): a host logs or refuses those at load.
///
/// The table matches the path it is given, byte for byte: route on a canonical path
/// ([`crate::path`]), and forward that same path.
///
/// ```
/// use http::{Method, Request};
/// use tower_gatekeeper::{AuthContext, CredentialKind, PolicyEvaluator, RejectionKind};
/// use tower_gatekeeper::authorize::{
///     AllowAll, Decision, RouteTable, any_of, path_param, roles_any, subject,
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
///     table.decide_now(Some(&alice), &RequestHead::of(&req)).unwrap()
/// };
/// assert!(decide(Method::PUT, "/users/alice").is_allow());
/// assert!(decide(Method::HEAD, "/users/alice").is_allow()); // HEAD wherever GET
/// assert!(decide(Method::PUT, "/users/bob").is_deny());
/// assert!(decide(Method::GET, "/nowhere").is_deny()); // no route: default deny
/// // A known path with another method: 405 with `Allow`.
/// let rejection = decide(Method::DELETE, "/users/alice").into_rejection(true).unwrap();
/// assert_eq!(rejection.kind(), RejectionKind::MethodNotAllowed);
/// assert_eq!(rejection.allow().unwrap(), "GET, HEAD, PUT");
/// ```
pub struct RouteTable<T = BoxPolicy> {
    routes: Vec<Route<T>>,
    /// Routes that share a pattern shape (patterns equal but for parameter names).
    groups: Vec<Group>,
    /// Path → group, for every pattern and the bare prefixes of catch-all patterns.
    router: matchit::Router<Entry>,
}

struct Route<T> {
    pattern: String,
    methods: Option<Vec<Method>>,
    value: T,
    /// The route's own pattern (and bare prefixes), when its parameter names differ from the
    /// pattern its group was inserted with.
    own: Option<matchit::Router<()>>,
}

struct Group {
    /// The route whose pattern the router holds for this group.
    first: usize,
    /// (method, route) for routes with a method list.
    by_method: Vec<(Method, usize)>,
    /// The route taking every method, if any.
    any: Option<usize>,
    /// The methods for `Allow`: every listed method, and `HEAD` with `GET`.
    allowed: Vec<Method>,
    allow: HeaderValue,
}

#[derive(Clone, Copy)]
struct Entry {
    group: usize,
}

impl<T> RouteTable<T> {
    /// Starts an empty table.
    pub fn builder() -> RouteTableBuilder<T> {
        RouteTableBuilder { routes: Vec::new() }
    }

    /// Routes `method` and `path`: the matched route, a method-not-allowed outcome, or
    /// nothing; see the [type docs](RouteTable) for the rules.
    ///
    /// ```
    /// use http::Method;
    /// use tower_gatekeeper::authorize::{Lookup, RouteTable};
    ///
    /// let table = RouteTable::builder()
    ///     .any_method("/api/{*rest}", "api")
    ///     .route([Method::GET], "/api/admin/{*rest}", "admin")
    ///     .build()
    ///     .unwrap();
    /// for path in ["/api/admin", "/api/admin/", "/api/admin/users"] {
    ///     let Lookup::Found(found) = table.lookup(&Method::GET, path) else { panic!() };
    ///     assert_eq!(*found.value(), "admin", "{path}");
    /// }
    /// let Lookup::MethodNotAllowed(refused) = table.lookup(&Method::DELETE, "/api/admin") else {
    ///     panic!()
    /// };
    /// assert_eq!(refused.allow(), "GET, HEAD");
    /// assert!(matches!(table.lookup(&Method::GET, "/other"), Lookup::NotFound));
    /// ```
    pub fn lookup<'t, 'p>(&'t self, method: &Method, path: &'p str) -> Lookup<'t, 'p, T> {
        let Ok(matched) = self.router.at(path) else {
            return Lookup::NotFound;
        };
        let group = &self.groups[matched.value.group];
        let Some(index) = group.route_for(method) else {
            return Lookup::MethodNotAllowed(MethodNotAllowed { group });
        };
        let route = &self.routes[index];
        let params = match &route.own {
            None => matched.params,
            Some(own) => match own.at(path) {
                Ok(own) => own.params,
                // The group's patterns have the same shape: the route's own pattern matches
                // what the group's did.
                Err(_) => matched.params,
            },
        };
        Lookup::Found(RouteMatch {
            index,
            route,
            params,
        })
    }

    /// The route for `method` and `path`, with its captured parameters: [`lookup`]'s
    /// [`Lookup::Found`], `None` otherwise (no route, or the method is not allowed there).
    ///
    /// [`lookup`]: RouteTable::lookup
    pub fn at<'t, 'p>(&'t self, method: &Method, path: &'p str) -> Option<RouteMatch<'t, 'p, T>> {
        match self.lookup(method, path) {
            Lookup::Found(found) => Some(found),
            Lookup::MethodNotAllowed(_) | Lookup::NotFound => None,
        }
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

    /// Where a route takes requests that a broader route also matches (for methods both
    /// take), and `less_protected(winner, broader)` says the winner protects less: the
    /// broader route's policy never sees those requests. Call it once the table is built and
    /// log or refuse what it reports; the order follows the routes' indices.
    ///
    /// Which value protects less is the host's call (`RouteTable<usize>` indexes its own
    /// route descriptions); `|_, _| true` lists every overlap.
    ///
    /// ```
    /// use http::Method;
    /// use tower_gatekeeper::authorize::RouteTable;
    ///
    /// // Values are protection levels: 0 public, 1 authenticated, 2 admin.
    /// let table = RouteTable::builder()
    ///     .route([Method::GET], "/api/{*rest}", 2)
    ///     .route([Method::GET], "/api/health", 0)
    ///     .route([Method::GET, Method::POST], "/api/admin/{*rest}", 2)
    ///     .route([Method::GET], "/api/admin", 1)
    ///     .route([Method::POST], "/api/reports", 0) // GET on the broader route only
    ///     .build()
    ///     .unwrap();
    /// let report = table.shadowed(|winner, broader| winner < broader);
    /// let lines: Vec<String> = report.iter().map(ToString::to_string).collect();
    /// assert_eq!(lines, [
    ///     "route 1 (\"/api/health\") takes GET /api/health from route 0 (\"/api/{*rest}\")",
    ///     "route 3 (\"/api/admin\") takes GET /api/admin from route 0 (\"/api/{*rest}\")",
    ///     "route 3 (\"/api/admin\") takes GET /api/admin from route 2 (\"/api/admin/{*rest}\")",
    /// ]);
    /// ```
    pub fn shadowed<F>(&self, mut less_protected: F) -> Vec<Shadowed>
    where
        F: FnMut(&T, &T) -> bool,
    {
        let shapes: Vec<Vec<Segment>> = self
            .groups
            .iter()
            .map(|g| parse_segments(&self.routes[g.first].pattern))
            .collect();
        let mut found = Vec::new();
        for (broad, broad_group) in self.groups.iter().enumerate() {
            for (winner, winner_group) in self.groups.iter().enumerate() {
                if winner == broad {
                    continue;
                }
                let Some(witness) = unify(&shapes[winner], &shapes[broad]) else {
                    continue;
                };
                // The witness must reach the winner in this table and match the broader
                // pattern on its own.
                let reaches_winner = self
                    .router
                    .at(&witness)
                    .is_ok_and(|m| m.value.group == winner);
                if !reaches_winner || !matches_alone(&self.routes[broad_group.first], &witness) {
                    continue;
                }
                let example = witness.replace(PLACEHOLDER, "x");
                for b in broad_group.routes() {
                    for w in winner_group.routes() {
                        let (b_route, w_route) = (&self.routes[b], &self.routes[w]);
                        let Some(methods) = shared(&w_route.methods, &b_route.methods) else {
                            continue;
                        };
                        if less_protected(&w_route.value, &b_route.value) {
                            found.push(Shadowed {
                                route: b,
                                pattern: b_route.pattern.clone(),
                                by: w,
                                by_pattern: w_route.pattern.clone(),
                                methods,
                                example: example.clone(),
                            });
                        }
                    }
                }
            }
        }
        found.sort_by_key(|s| (s.route, s.by));
        found
    }
}

impl Group {
    fn route_for(&self, method: &Method) -> Option<usize> {
        let listed = |m: &Method| self.by_method.iter().find(|(n, _)| n == m).map(|(_, i)| *i);
        listed(method)
            .or_else(|| {
                if *method == Method::HEAD {
                    listed(&Method::GET)
                } else {
                    None
                }
            })
            .or(self.any)
    }

    fn routes(&self) -> impl Iterator<Item = usize> + '_ {
        let mut all: Vec<usize> = self.by_method.iter().map(|(_, i)| *i).collect();
        all.extend(self.any);
        all.sort_unstable();
        all.dedup();
        all.into_iter()
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

/// The outcome of [`RouteTable::lookup`].
#[derive(Debug)]
pub enum Lookup<'t, 'p, T> {
    /// A route takes the request.
    Found(RouteMatch<'t, 'p, T>),
    /// Routes match the path, but none takes the method: answer 405 with
    /// [`allow`](MethodNotAllowed::allow) as the `Allow` header (gRPC: 12 UNIMPLEMENTED).
    MethodNotAllowed(MethodNotAllowed<'t>),
    /// No route matches the path.
    NotFound,
}

/// A path some routes match, with a method none of them takes; see [`Lookup`].
#[derive(Clone, Copy)]
pub struct MethodNotAllowed<'t> {
    group: &'t Group,
}

impl<'t> MethodNotAllowed<'t> {
    /// The methods the path's routes take (`HEAD` included with `GET`), in route order.
    pub fn methods(&self) -> &'t [Method] {
        &self.group.allowed
    }

    /// The `Allow` header value: the [`methods`](MethodNotAllowed::methods), comma-separated.
    pub fn allow(&self) -> &'t HeaderValue {
        &self.group.allow
    }

    /// The rejection to answer with: 405 and `Allow` for HTTP, 12 UNIMPLEMENTED for gRPC.
    pub fn rejection(&self) -> Rejection {
        Rejection::method_not_allowed(self.group.allow.clone())
    }
}

impl fmt::Debug for MethodNotAllowed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MethodNotAllowed")
            .field("allow", &self.group.allow)
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

/// A route that takes requests a broader route also matches; see [`RouteTable::shadowed`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Shadowed {
    /// The broader route, whose policy those requests never reach (index in added order).
    pub route: usize,
    /// Its pattern.
    pub pattern: String,
    /// The route that takes them.
    pub by: usize,
    /// Its pattern.
    pub by_pattern: String,
    /// The methods both take; `None` when both take every method.
    pub methods: Option<Vec<Method>>,
    /// A path both match that goes to `by` (parameters filled with `x`).
    pub example: String,
}

impl fmt::Display for Shadowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let methods = self
            .methods
            .as_deref()
            .map_or_else(|| "every method on".to_owned(), method_list);
        write!(
            f,
            "route {} ({:?}) takes {methods} {} from route {} ({:?})",
            self.by, self.by_pattern, self.example, self.route, self.pattern
        )
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
    /// Adds a route for `methods` (an empty list is an error at build time). A route listing
    /// `GET` also takes `HEAD`, unless another route with the same pattern lists `HEAD`.
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
            own: None,
        });
        self
    }

    /// Adds a route for every method.
    pub fn any_method(mut self, pattern: impl Into<String>, value: T) -> Self {
        self.routes.push(Route {
            pattern: pattern.into(),
            methods: None,
            value,
            own: None,
        });
        self
    }

    /// Builds the table.
    ///
    /// # Errors
    ///
    /// [`RouteTableError`] naming the route (by index and pattern): an invalid pattern, an
    /// empty method list, two routes with one pattern (or patterns equal but for parameter
    /// names, such as `/a/{id}` and `/a/{name}`) that share a method or of which one takes
    /// every method, or two patterns matchit cannot tell apart otherwise.
    pub fn build(self) -> Result<RouteTable<T>, RouteTableError> {
        let mut routes = self.routes;
        for (index, route) in routes.iter().enumerate() {
            if route.methods.as_ref().is_some_and(Vec::is_empty) {
                return Err(RouteTableError::NoMethods {
                    index,
                    pattern: route.pattern.clone(),
                });
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
        let mut router = matchit::Router::new();
        let mut groups: Vec<Group> = Vec::new();
        // Group of each route.
        let mut group_of: Vec<usize> = Vec::with_capacity(routes.len());
        // The shape of each group's pattern.
        let mut shapes: Vec<String> = Vec::new();
        for (index, route) in routes.iter().enumerate() {
            let shape = shape(&route.pattern);
            let existing = shapes.iter().position(|s| *s == shape);
            let group = match existing {
                Some(group) => group,
                None => {
                    if let Err(error) = router.insert(
                        route.pattern.as_str(),
                        Entry {
                            group: groups.len(),
                        },
                    ) {
                        let other = match &error {
                            matchit::InsertError::Conflict { with } => {
                                groups.iter().map(|g| g.first).find(|first| {
                                    routes[*first].pattern == *with
                                        || patterns_conflict(&routes[*first].pattern, with)
                                })
                            }
                            _ => None,
                        }
                        .or_else(|| {
                            groups.iter().map(|g| g.first).find(|first| {
                                patterns_conflict(&routes[*first].pattern, &route.pattern)
                            })
                        })
                        .unwrap_or(index);
                        return Err(RouteTableError::Ambiguous {
                            index,
                            pattern: route.pattern.clone(),
                            other,
                            other_pattern: routes[other].pattern.clone(),
                        });
                    }
                    shapes.push(shape);
                    groups.push(Group {
                        first: index,
                        by_method: Vec::new(),
                        any: None,
                        allowed: Vec::new(),
                        allow: HeaderValue::from_static(""),
                    });
                    groups.len() - 1
                }
            };
            let g = &mut groups[group];
            let conflict = |other: usize| RouteTableError::Conflict {
                index,
                pattern: route.pattern.clone(),
                other,
                other_pattern: routes[other].pattern.clone(),
                methods: shared(&routes[other].methods, &route.methods)
                    .flatten()
                    .map_or_else(|| "all methods".to_owned(), |m| method_list(&m)),
            };
            match &route.methods {
                None => {
                    if let Some(other) = g.any.or(g.by_method.first().map(|(_, i)| *i)) {
                        return Err(conflict(other));
                    }
                    g.any = Some(index);
                }
                Some(methods) => {
                    if let Some(other) = g.any {
                        return Err(conflict(other));
                    }
                    for method in methods {
                        if let Some((_, other)) = g.by_method.iter().find(|(m, _)| m == method) {
                            return Err(conflict(*other));
                        }
                        g.by_method.push((method.clone(), index));
                    }
                }
            }
            group_of.push(group);
        }
        // The bare prefixes of catch-all patterns, where no route names them itself.
        for (group, g) in groups.iter().enumerate() {
            for bare in bare_prefixes(&routes[g.first].pattern) {
                // A conflict means another pattern already covers that path: it wins.
                let _ = router.insert(bare, Entry { group });
            }
        }
        for g in &mut groups {
            let mut allowed: Vec<Method> = Vec::new();
            for (method, _) in &g.by_method {
                if !allowed.contains(method) {
                    allowed.push(method.clone());
                }
                if *method == Method::GET && !allowed.contains(&Method::HEAD) {
                    allowed.push(Method::HEAD);
                }
            }
            g.allow = HeaderValue::from_str(&method_list(&allowed))
                .unwrap_or_else(|_| HeaderValue::from_static(""));
            g.allowed = allowed;
        }
        // Routes whose parameter names differ from their group's pattern capture with their
        // own pattern.
        let firsts: Vec<String> = groups
            .iter()
            .map(|g| routes[g.first].pattern.clone())
            .collect();
        for (index, route) in routes.iter_mut().enumerate() {
            let group_pattern = &firsts[group_of[index]];
            if param_names(group_pattern) != param_names(&route.pattern) {
                let mut own = matchit::Router::new();
                let _ = own.insert(route.pattern.as_str(), ());
                for bare in bare_prefixes(&route.pattern) {
                    let _ = own.insert(bare, ());
                }
                route.own = Some(own);
            }
        }
        Ok(RouteTable {
            routes,
            groups,
            router,
        })
    }
}

/// A segment of a pattern, for [`RouteTable::shadowed`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Literal text (escapes resolved).
    Static(String),
    /// `prefix{name}suffix`.
    Param { prefix: String, suffix: String },
    /// `prefix{*name}`: the rest of the path.
    CatchAll { prefix: String },
}

/// Stands for a parameter's value in a witness path.
const PLACEHOLDER: char = '\u{1}';

fn parse_segments(pattern: &str) -> Vec<Segment> {
    let body = pattern.strip_prefix('/').unwrap_or(pattern);
    body.split('/').map(parse_segment).collect()
}

fn parse_segment(text: &str) -> Segment {
    let mut literal = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' | '}' if chars.peek() == Some(&c) => {
                chars.next();
                literal.push(c);
            }
            '{' => {
                let catch_all = chars.peek() == Some(&'*');
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                }
                if catch_all {
                    return Segment::CatchAll { prefix: literal };
                }
                let suffix: String = chars.collect();
                return Segment::Param {
                    prefix: literal,
                    suffix: suffix.replace("{{", "{").replace("}}", "}"),
                };
            }
            c => literal.push(c),
        }
    }
    Segment::Static(literal)
}

/// A path (parameters as [`PLACEHOLDER`]) that both patterns match, if one is found. A
/// catch-all also matches nothing (its bare prefix).
fn unify(a: &[Segment], b: &[Segment]) -> Option<String> {
    let mut path = String::new();
    for k in 0.. {
        match (a.get(k), b.get(k)) {
            (None, None) => break,
            (Some(Segment::CatchAll { prefix }), _) => return finish(path, prefix, &b[k..]),
            (_, Some(Segment::CatchAll { prefix })) => return finish(path, prefix, &a[k..]),
            (None, Some(_)) | (Some(_), None) => return None,
            (Some(x), Some(y)) => {
                path.push('/');
                path.push_str(&unify_segment(x, y)?);
            }
        }
    }
    Some(path)
}

/// The witness once a catch-all `prefix{*rest}` meets the `rest` of the other pattern.
fn finish(mut path: String, prefix: &str, rest: &[Segment]) -> Option<String> {
    let mut rest = rest.iter();
    if !prefix.is_empty() {
        let catch = Segment::Param {
            prefix: prefix.to_owned(),
            suffix: String::new(),
        };
        path.push('/');
        match rest.next() {
            None => return None,
            Some(Segment::CatchAll { prefix: other }) => {
                path.push_str(&longer_prefix(prefix, other)?);
                path.push(PLACEHOLDER);
            }
            Some(first) => path.push_str(&unify_segment(&catch, first)?),
        }
    }
    for segment in rest {
        path.push('/');
        match segment {
            Segment::Static(text) => path.push_str(text),
            Segment::Param { prefix, suffix } => {
                path.push_str(prefix);
                path.push(PLACEHOLDER);
                path.push_str(suffix);
            }
            Segment::CatchAll { prefix } => {
                path.push_str(prefix);
                path.push(PLACEHOLDER);
            }
        }
    }
    if path.is_empty() {
        path.push('/');
    }
    Some(path)
}

fn unify_segment(x: &Segment, y: &Segment) -> Option<String> {
    match (x, y) {
        (Segment::Static(s), Segment::Static(t)) => (s == t).then(|| s.clone()),
        (Segment::Static(s), Segment::Param { prefix, suffix })
        | (Segment::Param { prefix, suffix }, Segment::Static(s)) => (s.len()
            > prefix.len() + suffix.len()
            && s.starts_with(prefix.as_str())
            && s.ends_with(suffix.as_str()))
        .then(|| s.clone()),
        (
            Segment::Param {
                prefix: p1,
                suffix: s1,
            },
            Segment::Param {
                prefix: p2,
                suffix: s2,
            },
        ) => {
            let prefix = longer_prefix(p1, p2)?;
            let suffix = longer_suffix(s1, s2)?;
            Some(format!("{prefix}{PLACEHOLDER}{suffix}"))
        }
        (Segment::CatchAll { .. }, _) | (_, Segment::CatchAll { .. }) => None,
    }
}

fn longer_prefix(a: &str, b: &str) -> Option<String> {
    if a.starts_with(b) {
        Some(a.to_owned())
    } else if b.starts_with(a) {
        Some(b.to_owned())
    } else {
        None
    }
}

fn longer_suffix(a: &str, b: &str) -> Option<String> {
    if a.ends_with(b) {
        Some(a.to_owned())
    } else if b.ends_with(a) {
        Some(b.to_owned())
    } else {
        None
    }
}

/// Whether `route`'s pattern (or its bare prefix) matches `path` on its own.
fn matches_alone<T>(route: &Route<T>, path: &str) -> bool {
    let mut router = matchit::Router::new();
    let _ = router.insert(route.pattern.as_str(), ());
    for bare in bare_prefixes(&route.pattern) {
        let _ = router.insert(bare, ());
    }
    router.at(path).is_ok()
}

/// The methods two routes both take: `None` when they share none, `Some(None)` when both
/// take every method.
fn shared(a: &Option<Vec<Method>>, b: &Option<Vec<Method>>) -> Option<Option<Vec<Method>>> {
    match (a, b) {
        (None, None) => Some(None),
        (None, Some(m)) | (Some(m), None) => Some(Some(m.clone())),
        (Some(a), Some(b)) => {
            let common: Vec<Method> = a.iter().filter(|m| b.contains(m)).cloned().collect();
            (!common.is_empty()).then_some(Some(common))
        }
    }
}

/// The pattern with parameter names erased: patterns equal but for names have one shape.
fn shape(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push_str("{{");
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push_str("}}");
            }
            '{' => {
                let catch_all = chars.peek() == Some(&'*');
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                }
                out.push_str(if catch_all { "{*}" } else { "{}" });
            }
            c => out.push(c),
        }
    }
    out
}

/// The parameter names of a pattern, in order.
fn param_names(pattern: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let bytes = pattern.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' if bytes.get(i + 1) == Some(&b'{') => i += 2,
            b'}' if bytes.get(i + 1) == Some(&b'}') => i += 2,
            b'{' => {
                let end = pattern[i..].find('}').map_or(bytes.len(), |e| i + e);
                names.push(&pattern[i + 1..end]);
                i = end + 1;
            }
            _ => i += 1,
        }
    }
    names
}

/// For `/p/{*rest}`: `/p` and `/p/`. Nothing for other patterns.
fn bare_prefixes(pattern: &str) -> Vec<&str> {
    let Some(start) = pattern.rfind("/{*") else {
        return Vec::new();
    };
    if !pattern.ends_with('}') || pattern[start + 3..pattern.len() - 1].contains(['{', '}', '/']) {
        return Vec::new();
    }
    let with_slash = &pattern[..=start];
    let bare = &pattern[..start];
    if bare.is_empty() {
        vec![with_slash]
    } else {
        vec![bare, with_slash]
    }
}

fn patterns_conflict(a: &str, b: &str) -> bool {
    let mut probe = matchit::Router::new();
    probe.insert(a, ()).is_ok() && probe.insert(b, ()).is_err()
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
    /// Two routes with one pattern (or patterns equal but for parameter names) could both
    /// serve one request.
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
    /// Two different patterns matchit cannot tell apart: which one a path goes to would be
    /// unclear whatever the methods.
    #[error(
        "route {index} (path {pattern:?}) overlaps route {other} (path {other_pattern:?}) ambiguously"
    )]
    Ambiguous {
        /// The route added later.
        index: usize,
        /// Its pattern.
        pattern: String,
        /// The route it overlaps.
        other: usize,
        /// That route's pattern.
        other_pattern: String,
    },
}

impl<P: PolicyEvaluator> PolicyEvaluator for RouteTable<P> {
    type Future = RouteTableFuture<P::Future>;

    fn evaluate(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Self::Future {
        let state = match self.lookup(req.method(), req.uri().path()) {
            Lookup::Found(matched) => {
                let head = req.with_route_params(&matched.params);
                TableState::Matched {
                    fut: matched.route.value.evaluate(ctx, &head),
                }
            }
            Lookup::MethodNotAllowed(refused) => TableState::Unmatched {
                fut: std::future::ready(method_not_allowed(refused)),
            },
            Lookup::NotFound => TableState::Unmatched {
                fut: std::future::ready(unmatched()),
            },
        };
        RouteTableFuture { state }
    }

    fn decide_now(&self, ctx: Option<&AuthContext>, req: &RequestHead<'_>) -> Option<Decision> {
        match self.lookup(req.method(), req.uri().path()) {
            Lookup::Found(matched) => {
                let head = req.with_route_params(&matched.params);
                matched.route.value.decide_now(ctx, &head)
            }
            Lookup::MethodNotAllowed(refused) => Some(method_not_allowed(refused)),
            Lookup::NotFound => Some(unmatched()),
        }
    }
}

fn method_not_allowed(refused: MethodNotAllowed<'_>) -> Decision {
    Decision::Deny(Denial::method_not_allowed(refused.allow().clone()))
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
    use crate::reject::RejectionKind;

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

    /// `Ok(value)`, or `Err(Some(allow))` for 405, `Err(None)` for no route.
    fn route<T: Copy>(t: &RouteTable<T>, m: Method, p: &str) -> Result<T, Option<String>> {
        match t.lookup(&m, p) {
            Lookup::Found(found) => Ok(*found.value()),
            Lookup::MethodNotAllowed(refused) => {
                let allow = refused.allow().to_str().unwrap().to_owned();
                let listed: Vec<&str> = refused.methods().iter().map(Method::as_str).collect();
                assert_eq!(allow, listed.join(", "));
                Err(Some(allow))
            }
            Lookup::NotFound => Err(None),
        }
    }

    fn allow(methods: &str) -> Result<&'static str, Option<String>> {
        Err(Some(methods.to_owned()))
    }

    #[test]
    fn most_specific_path_then_method() {
        let t = table();
        let purge = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(route(&t, Method::GET, "/users/me"), Ok("me"));
        assert_eq!(route(&t, Method::GET, "/users/42"), Ok("user"));
        assert_eq!(route(&t, purge.clone(), "/users/42"), Ok("user"));
        // `/users/me` is GET-only: other methods are 405, never the broader `/users/{id}`.
        assert_eq!(route(&t, Method::DELETE, "/users/me"), allow("GET, HEAD"));
        assert_eq!(route(&t, purge, "/users/me"), allow("GET, HEAD"));
        assert_eq!(
            route(&t, Method::GET, "/users/1/sessions/a/b"),
            allow("DELETE")
        );
        assert_eq!(
            route(&t, Method::DELETE, "/users/1/sessions/a/b"),
            Ok("sessions")
        );
        assert_eq!(route(&t, Method::GET, "/files/readme"), Ok("readme"));
        assert_eq!(route(&t, Method::GET, "/files/a/b"), Ok("files"));
        assert_eq!(route(&t, Method::POST, "/files/a"), allow("GET, HEAD"));
        assert_eq!(route(&t, Method::GET, "/elsewhere"), Err(None));
        assert!(t.at(&Method::POST, "/files/a").is_none());
        let m = t.at(&Method::DELETE, "/users/7/sessions/x/y").unwrap();
        assert_eq!(m.param("id"), Some("7"));
        assert_eq!(m.param("rest"), Some("x/y"));
        assert_eq!(m.pattern(), "/users/{id}/sessions/{*rest}");
        assert_eq!(m.index(), 2);
        assert_eq!(m.path_params().get("rest"), Some("x/y"));
    }

    #[test]
    fn prefix_routes_cover_their_bare_prefix() {
        let t = RouteTable::builder()
            .any_method("/api/{*rest}", "api")
            .route([Method::GET], "/api/admin/{*rest}", "admin")
            .any_method("/{*rest}", "root")
            .build()
            .unwrap();
        for path in [
            "/api/admin",
            "/api/admin/",
            "/api/admin/users",
            "/api/admin/a/b/",
        ] {
            assert_eq!(route(&t, Method::GET, path), Ok("admin"), "{path}");
            assert_eq!(route(&t, Method::HEAD, path), Ok("admin"), "{path}");
            // Not handed to `/api/{*rest}` or `/{*rest}` for another method.
            assert_eq!(
                route(&t, Method::DELETE, path),
                allow("GET, HEAD"),
                "{path}"
            );
        }
        for path in ["/api", "/api/", "/api/other", "/api/administrator"] {
            assert_eq!(route(&t, Method::DELETE, path), Ok("api"), "{path}");
        }
        for path in ["/", "/x", "/apis"] {
            assert_eq!(route(&t, Method::GET, path), Ok("root"), "{path}");
        }
        // The bare prefix has no catch-all parameter.
        let m = t.at(&Method::GET, "/api/admin").unwrap();
        assert_eq!(m.param("rest"), None);
        // A route naming the bare prefix itself keeps it.
        let t = RouteTable::builder()
            .route([Method::GET], "/p/{*rest}", "prefix")
            .route([Method::POST], "/p", "bare")
            .build()
            .unwrap();
        assert_eq!(route(&t, Method::POST, "/p"), Ok("bare"));
        assert_eq!(route(&t, Method::GET, "/p"), allow("POST"));
        assert_eq!(route(&t, Method::GET, "/p/"), Ok("prefix"));
        // Parameters before the catch-all are captured on the bare prefix too.
        let t = RouteTable::builder()
            .route([Method::GET], "/t/{tenant}/{*rest}", "t")
            .build()
            .unwrap();
        let m = t.at(&Method::GET, "/t/acme").unwrap();
        assert_eq!(m.param("tenant"), Some("acme"));
        assert_eq!(route(&t, Method::GET, "/t/acme/"), Ok("t"));
        assert_eq!(route(&t, Method::GET, "/t"), Err(None));
        // A route whose pattern has the bare prefix's shape keeps it.
        let t = RouteTable::builder()
            .route([Method::GET], "/t/{x}/{*rest}", "prefix")
            .route([Method::POST], "/t/{y}", "param")
            .build()
            .unwrap();
        assert_eq!(route(&t, Method::POST, "/t/1"), Ok("param"));
        assert_eq!(route(&t, Method::GET, "/t/1"), allow("POST"));
        assert_eq!(route(&t, Method::GET, "/t/1/"), Ok("prefix"));
    }

    #[test]
    fn a_method_never_falls_through_to_a_catch_all() {
        let t = RouteTable::builder()
            .any_method("/{*rest}", "public")
            .route([Method::GET, Method::POST], "/admin", "admin")
            .route([Method::PUT], "/admin/{id}", "admin-put")
            .build()
            .unwrap();
        assert_eq!(
            route(&t, Method::DELETE, "/admin"),
            allow("GET, HEAD, POST")
        );
        assert_eq!(route(&t, Method::GET, "/admin/1"), allow("PUT"));
        assert_eq!(route(&t, Method::PUT, "/admin/1"), Ok("admin-put"));
        assert_eq!(route(&t, Method::DELETE, "/admin/1/x"), Ok("public"));
    }

    #[test]
    fn head_goes_where_get_goes() {
        let t = RouteTable::builder()
            .route([Method::GET], "/a", "get")
            .route([Method::GET], "/b", "get")
            .route([Method::HEAD], "/b", "head")
            .route([Method::POST], "/c", "post")
            .any_method("/c/{*rest}", "any")
            .build()
            .unwrap();
        assert_eq!(route(&t, Method::HEAD, "/a"), Ok("get"));
        assert_eq!(route(&t, Method::HEAD, "/b"), Ok("head"));
        assert_eq!(route(&t, Method::DELETE, "/b"), allow("GET, HEAD"));
        assert_eq!(route(&t, Method::HEAD, "/c"), allow("POST"));
        assert_eq!(route(&t, Method::HEAD, "/c/x"), Ok("any"));
    }

    #[test]
    fn routes_of_one_shape_keep_their_parameter_names() {
        let t = RouteTable::builder()
            .route([Method::GET], "/a/{id}", "get")
            .route([Method::POST], "/a/{name}", "post")
            .route([Method::GET], "/t/{x}/{*rest}", "tx")
            .route([Method::POST], "/t/{y}/{*tail}", "ty")
            .build()
            .unwrap();
        let m = t.at(&Method::GET, "/a/1").unwrap();
        assert_eq!(
            (*m.value(), m.param("id"), m.param("name")),
            ("get", Some("1"), None)
        );
        let m = t.at(&Method::POST, "/a/1").unwrap();
        assert_eq!(
            (*m.value(), m.param("name"), m.param("id")),
            ("post", Some("1"), None)
        );
        assert_eq!(route(&t, Method::PUT, "/a/1"), allow("GET, HEAD, POST"));
        let m = t.at(&Method::POST, "/t/7/z").unwrap();
        assert_eq!((m.param("y"), m.param("tail")), (Some("7"), Some("z")));
        let m = t.at(&Method::POST, "/t/7").unwrap();
        assert_eq!(
            (*m.value(), m.param("y"), m.param("x")),
            ("ty", Some("7"), None)
        );
        let m = t.at(&Method::GET, "/t/7/").unwrap();
        assert_eq!((*m.value(), m.param("x")), ("tx", Some("7")));
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
        let err = RouteTable::builder()
            .any_method("/a", ())
            .any_method("/a", ())
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("both handle all methods"), "{err}");
        // matchit cannot hold a parameter and a catch-all at one position, whatever the
        // methods: the path alone would not say which route a request is for.
        let err = RouteTable::builder()
            .route([Method::GET], "/a/{id}", ())
            .route([Method::POST], "/a/{*rest}", ())
            .build()
            .unwrap_err();
        assert_eq!(
            err,
            RouteTableError::Ambiguous {
                index: 1,
                pattern: "/a/{*rest}".into(),
                other: 0,
                other_pattern: "/a/{id}".into(),
            }
        );
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
    fn shadowed_routes_are_reported() {
        // Protection levels: 0 public, 1 clerk, 2 admin.
        let t = RouteTable::builder()
            .route([Method::GET], "/files/{*rest}", 1)
            .route([Method::GET], "/files/private/{*rest}", 2)
            .any_method("/api/{*rest}", 2)
            .route([Method::GET], "/api/health", 0)
            .route([Method::GET], "/users/{id}", 1)
            .route([Method::GET], "/users/me", 1)
            .route([Method::POST], "/users/{id}/avatar", 0)
            .route([Method::GET], "/users/{id}/{*rest}", 2)
            .build()
            .unwrap();
        let less = t.shadowed(|winner, broader| winner < broader);
        let lines: Vec<String> = less.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "route 3 (\"/api/health\") takes GET /api/health from route 2 (\"/api/{*rest}\")",
                // The bare prefix of `/users/{id}/{*rest}` is named by less protected routes.
                "route 4 (\"/users/{id}\") takes GET /users/x from route 7 (\"/users/{id}/{*rest}\")",
                "route 5 (\"/users/me\") takes GET /users/me from route 7 (\"/users/{id}/{*rest}\")",
            ],
        );
        assert_eq!(less[0].methods, Some(vec![Method::GET]));
        let all = t.shadowed(|_, _| true);
        let pairs: Vec<(usize, usize, &str)> = all
            .iter()
            .map(|s| (s.route, s.by, s.example.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                (0, 1, "/files/private/x"),
                (2, 3, "/api/health"),
                (4, 5, "/users/me"),
                (7, 4, "/users/x"),
                (7, 5, "/users/me"),
            ]
        );
    }

    #[test]
    fn as_a_policy_default_deny_405_and_params() {
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
            let now = table
                .decide_now(Some(&alice), &RequestHead::of(&req))
                .unwrap();
            let later = futures_lite_block(table.evaluate(Some(&alice), &RequestHead::of(&req)));
            assert_eq!(now, later);
            now
        };
        assert!(decide("GET", "/public").is_allow());
        assert!(decide("HEAD", "/public").is_allow());
        assert!(decide("GET", "/users/alice").is_allow());
        assert!(decide("GET", "/users/bob").is_deny());
        assert!(decide("DELETE", "/users/alice").is_deny());
        assert!(decide("GET", "/nowhere").is_deny());
        let Decision::Deny(denial) = decide("POST", "/public") else {
            panic!("405 is a denial")
        };
        assert_eq!(denial.allow().unwrap(), "GET, HEAD");
        // 405 with or without a caller.
        for authenticated in [true, false] {
            let rejection = denial.clone().into_rejection(authenticated);
            assert_eq!(rejection.kind(), RejectionKind::MethodNotAllowed);
            assert_eq!(rejection.allow().unwrap(), "GET, HEAD");
        }
        let Decision::Deny(denial) = decide("POST", "/users/alice") else {
            panic!()
        };
        assert_eq!(denial.allow().unwrap(), "GET, HEAD, PUT, DELETE");
    }

    /// Polls a ready future once.
    fn futures_lite_block<F: std::future::Future>(fut: F) -> F::Output {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut fut = std::pin::pin!(fut);
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(out) => out,
            std::task::Poll::Pending => panic!("a synchronous policy is ready at once"),
        }
    }
}
