//! Policy decision time: the built-ins, a route table of 1,000 routes, and a Rego policy.
//!
//! ```text
//! cargo bench --bench policy --features rego -- --noplot
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Method, Request};
use tower_gatekeeper::authorize::{
    PathParams, PolicyEvaluator, RouteTable, all_of, any_of, claim_equals, path_param, roles_any,
    scopes_all, subject,
};
use tower_gatekeeper::credential::RequestHead;
use tower_gatekeeper::{AuthContext, CredentialKind};

fn caller() -> AuthContext {
    AuthContext::builder(CredentialKind::Jwt)
        .subject("user-123")
        .roles(["clerk"])
        .scopes(["orders:read", "orders:write"])
        .tenant("acme")
        .claim("tier", "gold")
        .build()
}

fn builtins(c: &mut Criterion) {
    let ctx = caller();
    let mut req = Request::builder().uri("/users/user-123").body(()).unwrap();
    req.extensions_mut()
        .insert(PathParams::from_iter([("user_id", "user-123")]));
    let head = RequestHead::of(&req);
    let mut group = c.benchmark_group("builtins");

    let roles = roles_any(["admin", "clerk"]);
    group.bench_function("roles_any allow", |b| {
        b.iter(|| black_box(roles.decide_now(Some(black_box(&ctx)), &head)))
    });
    let scopes = scopes_all(["orders:read", "orders:admin"]);
    group.bench_function("scopes_all deny", |b| {
        b.iter(|| black_box(scopes.decide_now(Some(black_box(&ctx)), &head)))
    });
    let claim = claim_equals("tier", "gold");
    group.bench_function("claim_equals allow", |b| {
        b.iter(|| black_box(claim.decide_now(Some(black_box(&ctx)), &head)))
    });
    let owner_or_admin = any_of([
        path_param("user_id").equals(subject()).boxed(),
        roles_any(["admin"]).boxed(),
    ]);
    group.bench_function("any_of(owner, admin) allow", |b| {
        b.iter(|| black_box(owner_or_admin.decide_now(Some(black_box(&ctx)), &head)))
    });
    let three = all_of([
        roles_any(["clerk"]).boxed(),
        scopes_all(["orders:read"]).boxed(),
        claim_equals("tier", "gold").boxed(),
    ]);
    group.bench_function("all_of(3 boxed) allow", |b| {
        b.iter(|| black_box(three.decide_now(Some(black_box(&ctx)), &head)))
    });
    // Through the future, as AuthorizeLayer polls it.
    group.bench_function("all_of(3 boxed) evaluate+poll", |b| {
        b.iter(|| black_box(poll_ready(three.evaluate(Some(black_box(&ctx)), &head))))
    });
    group.finish();
}

fn poll_ready<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => unreachable!("synchronous policies are ready at once"),
    }
}

fn route_table(c: &mut Criterion) {
    let ctx = caller();
    let mut builder = RouteTable::builder();
    for i in 0..1_000 {
        builder = match i % 4 {
            0 => builder.route(
                [Method::GET],
                format!("/svc{i}/items"),
                roles_any(["clerk"]).boxed(),
            ),
            1 => builder.route(
                [Method::GET, Method::PUT],
                format!("/svc{i}/users/{{user_id}}"),
                path_param("user_id").equals(subject()).boxed(),
            ),
            2 => builder.route(
                [Method::POST],
                format!("/svc{i}/orders/{{id}}/lines/{{line}}"),
                scopes_all(["orders:write"]).boxed(),
            ),
            _ => builder.any_method(
                format!("/svc{i}/files/{{*path}}"),
                roles_any(["clerk"]).boxed(),
            ),
        };
    }
    let table = builder.build().unwrap();
    assert_eq!(table.len(), 1_000);
    let mut group = c.benchmark_group("route_table_1000");
    for (name, method, path) in [
        ("static hit", Method::GET, "/svc500/items"),
        ("param hit", Method::PUT, "/svc501/users/user-123"),
        ("two params hit", Method::POST, "/svc502/orders/9/lines/3"),
        ("catch-all hit", Method::DELETE, "/svc503/files/a/b/c.txt"),
        ("miss (default deny)", Method::GET, "/svc999999/nothing"),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        let head = RequestHead::of(&req);
        group.bench_function(name, |b| {
            b.iter(|| black_box(table.decide_now(Some(black_box(&ctx)), &head)))
        });
    }
    group.finish();
}

#[cfg(feature = "rego")]
fn rego(c: &mut Criterion) {
    use tower_gatekeeper::authorize::rego::RegoPolicy;

    let ctx = caller();
    let mut req = Request::builder()
        .method(Method::GET)
        .uri("/tenants/acme/reports")
        .header("x-api-version", "2")
        .body(())
        .unwrap();
    req.extensions_mut().insert(PathParams::from_iter([
        ("tenant", "acme"),
        ("feature", "reports"),
    ]));
    let head = RequestHead::of(&req);
    let policy = RegoPolicy::builder()
        .policy(
            "bench.rego",
            r#"
            package bench
            default allow := false
            allow if {
                input.request.method == "GET"
                input.request.path_params.tenant == input.caller.tenant
                some feature in data.plans[input.caller.tenant]
                feature == input.request.path_params.feature
            }
            allow if "admin" in input.caller.roles
            "#,
        )
        .data(
            serde_json::json!({ "plans": { "acme": ["reports", "export"], "globex": ["export"] } }),
        )
        .build()
        .unwrap();
    assert!(policy.decide(Some(&ctx), &head).is_allow());
    c.bench_function("rego allow (data lookup)", |b| {
        b.iter(|| black_box(policy.decide(Some(black_box(&ctx)), &head)))
    });
}

#[cfg(not(feature = "rego"))]
fn rego(_c: &mut Criterion) {}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = builtins, route_table, rego
}
criterion_main!(benches);
