//! Multi-tenant issuers: per-tenant remote key sources created on first use, bounded in
//! number, the tenant of `iss` bound to the tenant claim, Entra ID's v1/v2 issuers and
//! header `nonce`s. Paused tokio time with a scripted fetcher per tenant; counts, never
//! durations.
#![cfg(feature = "remote")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tower_gatekeeper::authenticate::Authenticator;
use tower_gatekeeper::explain::{StepStatus, explain};
use tower_gatekeeper::jwt::{Validation, VerifyError};
use tower_gatekeeper::keys::{
    FetchError, FetchFuture, JwksDocument, JwksFetcher, SigningKey, TenantIssuer, TenantJwks,
};
use tower_gatekeeper::{Algorithm, JwtAuthenticator, RejectionKind};

const AUD: &str = "api://orders";
const TEMPLATE: &str = "https://login.example.com/{tenant}/v2.0";
const V2: &str = "https://login.microsoftonline.com/{tenant}/v2.0";
const V1: &str = "https://sts.windows.net/{tenant}/";

fn iss(template: &str, tenant: &str) -> String {
    template.replace("{tenant}", tenant)
}

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn jwk(kid: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join("keys/jwks.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap()
        .clone()
}

fn signer(kid: &str) -> SigningKey {
    let (alg, file) = match kid {
        "rsa-1" => (Algorithm::RS256, "rsa-1.key.pem"),
        "ec256-1" => (Algorithm::ES256, "ec256-1.key.pem"),
        "ed-1" => (Algorithm::EdDSA, "ed-1.key.pem"),
        other => panic!("no signer {other}"),
    };
    let pem = std::fs::read(fixtures().join("keys").join(file)).unwrap();
    SigningKey::from_pem(alg, &pem).unwrap().with_kid(kid)
}

fn token(signer: &SigningKey, iss: &str, tid: &str) -> String {
    signer
        .sign(&json!({"iss": iss, "aud": AUD, "sub": "user-1", "exp": 4102444800u64, "tid": tid}))
        .unwrap()
}

/// Serves each tenant the JWKS of the kid it was given; counts fetches per tenant.
#[derive(Debug, Default)]
struct Idp {
    kids: Mutex<HashMap<String, String>>,
    fetches: Mutex<HashMap<String, usize>>,
    total: AtomicUsize,
}

impl Idp {
    fn with(tenants: &[(&str, &str)]) -> Arc<Self> {
        let idp = Arc::new(Idp::default());
        for (tenant, kid) in tenants {
            idp.kids
                .lock()
                .unwrap()
                .insert((*tenant).into(), (*kid).into());
        }
        idp
    }
    fn fetches(&self, tenant: &str) -> usize {
        self.fetches
            .lock()
            .unwrap()
            .get(tenant)
            .copied()
            .unwrap_or(0)
    }
    fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
struct TenantFetcher {
    idp: Arc<Idp>,
    tenant: String,
}

impl JwksFetcher for TenantFetcher {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            self.idp.total.fetch_add(1, Ordering::SeqCst);
            *self
                .idp
                .fetches
                .lock()
                .unwrap()
                .entry(self.tenant.clone())
                .or_default() += 1;
            // Tenants the IdP does not know get the default key, like a real multi-tenant
            // IdP that serves one key set for every tenant.
            let kid = self
                .idp
                .kids
                .lock()
                .unwrap()
                .get(&self.tenant)
                .cloned()
                .unwrap_or_else(|| "ed-1".into());
            if kid == "down" {
                return Err(FetchError::Other("scripted outage".into()));
            }
            Ok(JwksDocument::new(vec![jwk(&kid)]).max_age(Some(Duration::from_secs(3600))))
        })
    }
    fn describe(&self) -> String {
        format!("scripted tenant {}", self.tenant)
    }
}

fn keys(issuer: &TenantIssuer, idp: &Arc<Idp>, max: usize) -> TenantJwks {
    let idp = Arc::clone(idp);
    TenantJwks::with_fetchers(issuer.clone(), move |tenant| {
        Arc::new(TenantFetcher {
            idp: Arc::clone(&idp),
            tenant: tenant.to_owned(),
        })
    })
    .max_tenants(max)
    .configure(|b| b.unknown_kid_interval(Duration::from_secs(10)))
    .build()
    .unwrap()
}

fn auth(issuer: &TenantIssuer, keys: TenantJwks) -> JwtAuthenticator<TenantJwks> {
    JwtAuthenticator::new(
        keys,
        Validation::for_tenants(issuer.clone()).audiences([AUD]),
    )
    .unwrap()
}

/// Whether `rejection` is for `error` (by its fixed client-safe description).
fn is(rejection: &tower_gatekeeper::Rejection, error: VerifyError) -> bool {
    rejection.description() == error.description()
}

#[tokio::test(start_paused = true)]
async fn allowed_tenants_verify_with_their_own_keys_only() {
    let issuer = TenantIssuer::listed([TEMPLATE], "tid", ["t-a", "t-b"]).unwrap();
    let idp = Idp::with(&[("t-a", "rsa-1"), ("t-b", "ec256-1")]);
    let keys = keys(&issuer, &idp, 10);
    let auth = auth(&issuer, keys.clone());

    let a = auth
        .verify(&token(&signer("rsa-1"), &iss(TEMPLATE, "t-a"), "t-a"))
        .await
        .unwrap();
    assert_eq!(a.tenant(), Some("t-a"));
    assert_eq!(a.issuer(), Some(TEMPLATE));
    let b = auth
        .verify(&token(&signer("ec256-1"), &iss(TEMPLATE, "t-b"), "t-b"))
        .await
        .unwrap();
    assert_eq!(b.tenant(), Some("t-b"));
    assert_eq!(keys.tenant_count(), 2);
    assert_eq!((idp.fetches("t-a"), idp.fetches("t-b")), (1, 1));
    // A cache of verified tokens keeps trusting them while their tenant's key is in its set.
    assert!(auth.still_trusted(&a) && auth.still_trusted(&b));
    // Refresh now (the admin /keys/refresh): every current tenant source fetches once.
    keys.refresh_now().await.unwrap();
    assert_eq!((idp.fetches("t-a"), idp.fetches("t-b")), (2, 2));

    // t-a's token signed with t-b's key: t-a's set does not have it.
    let forged = token(&signer("ec256-1"), &iss(TEMPLATE, "t-a"), "t-a");
    let rejection = auth.verify(&forged).await.unwrap_err();
    assert_eq!(rejection.kind(), RejectionKind::InvalidToken);
    // Its own signature with the other tenant's kid in another tenant's iss fails too.
    let mut header = Map::new();
    header.insert("kid".into(), "rsa-1".into());
    let wrong_kid = signer("ec256-1")
        .sign_with_header(
            header,
            &json!({"iss": iss(TEMPLATE, "t-b"), "aud": AUD, "sub": "u", "exp": 4102444800u64, "tid": "t-b"}),
        )
        .unwrap();
    assert!(auth.verify(&wrong_kid).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn iss_and_tenant_claim_must_agree_and_disallowed_tenants_never_fetch() {
    let issuer = TenantIssuer::listed([TEMPLATE], "tid", ["t-a"]).unwrap();
    let idp = Idp::with(&[("t-a", "rsa-1")]);
    let keys = keys(&issuer, &idp, 10);
    let auth = auth(&issuer, keys.clone());
    let rsa = signer("rsa-1");

    let mismatch = auth
        .verify(&token(&rsa, &iss(TEMPLATE, "t-a"), "t-b"))
        .await
        .unwrap_err();
    assert_eq!(mismatch.kind(), RejectionKind::InvalidToken);
    assert!(is(&mismatch, VerifyError::TenantMismatch));
    let missing = rsa
        .sign(&json!({"iss": iss(TEMPLATE, "t-a"), "aud": AUD, "sub": "u", "exp": 4102444800u64}))
        .unwrap();
    assert!(is(
        &auth.verify(&missing).await.unwrap_err(),
        VerifyError::TenantMismatch
    ));

    let other = auth
        .verify(&token(&rsa, &iss(TEMPLATE, "t-x"), "t-x"))
        .await
        .unwrap_err();
    assert_eq!(other.kind(), RejectionKind::InvalidToken);
    assert!(is(&other, VerifyError::TenantNotAllowed));
    // Hostile tenant segments never match the template.
    for tenant in [
        "",
        ".",
        "..",
        "a/b",
        "a?b",
        "a#b",
        "a%2fb",
        &"x".repeat(200),
    ] {
        let rejection = auth
            .verify(&token(&rsa, &iss(TEMPLATE, tenant), tenant))
            .await
            .unwrap_err();
        assert!(is(&rejection, VerifyError::UntrustedIssuer), "{tenant:?}");
    }
    assert_eq!(idp.total(), 0, "no fetch for any refused token");
    assert_eq!(keys.tenant_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn any_tenant_creates_sources_up_to_the_bound_then_drops_the_least_recently_used() {
    let issuer = TenantIssuer::any_tenant([TEMPLATE], "tid").unwrap();
    let idp = Idp::with(&[]);
    let keys = keys(&issuer, &idp, 3);
    let auth = auth(&issuer, keys.clone());
    let ed = signer("ed-1");
    let mut contexts = Vec::new();
    for tenant in ["t1", "t2", "t3"] {
        contexts.push(
            auth.verify(&token(&ed, &iss(TEMPLATE, tenant), tenant))
                .await
                .unwrap(),
        );
    }
    assert_eq!((keys.tenant_count(), idp.total()), (3, 3));
    // t1 used again: t2 is now the least recently used.
    auth.verify(&token(&ed, &iss(TEMPLATE, "t1"), "t1"))
        .await
        .unwrap();
    assert_eq!(idp.total(), 3);
    auth.verify(&token(&ed, &iss(TEMPLATE, "t4"), "t4"))
        .await
        .unwrap();
    assert_eq!(keys.tenant_count(), 3, "the bound holds");
    assert!(keys.tenant("t2").is_none(), "the least recently used went");
    // A cached result of the dropped tenant is no longer trusted (its key set is gone).
    assert!(!auth.still_trusted(&contexts[1]) && auth.still_trusted(&contexts[0]));
    assert!(keys.tenant("t1").is_some() && keys.tenant("t4").is_some());
    assert_eq!(keys.created_count(), 4);
    // Many more tenants: never more than the bound.
    for n in 0..50 {
        let tenant = format!("flood-{n}");
        auth.verify(&token(&ed, &iss(TEMPLATE, &tenant), &tenant))
            .await
            .unwrap();
        assert!(keys.tenant_count() <= 3);
    }
    assert_eq!(keys.created_count(), 54);
}

#[tokio::test(start_paused = true)]
async fn unknown_kid_flood_for_one_tenant_costs_one_fetch_per_interval() {
    let issuer = TenantIssuer::listed([TEMPLATE], "tid", ["t-a", "t-b"]).unwrap();
    let idp = Idp::with(&[("t-a", "rsa-1"), ("t-b", "ec256-1")]);
    let keys = keys(&issuer, &idp, 10);
    let auth = auth(&issuer, keys.clone());
    let rsa = signer("rsa-1");
    auth.verify(&token(&rsa, &iss(TEMPLATE, "t-a"), "t-a"))
        .await
        .unwrap();
    assert_eq!(idp.fetches("t-a"), 1);
    for n in 0..200 {
        let mut header = Map::new();
        header.insert("kid".into(), format!("made-up-{n}").into());
        let t = rsa
            .sign_with_header(
                header,
                &json!({"iss": iss(TEMPLATE, "t-a"), "aud": AUD, "sub": "u", "exp": 4102444800u64, "tid": "t-a"}),
            )
            .unwrap();
        assert!(auth.verify(&t).await.is_err());
    }
    assert!(
        idp.fetches("t-a") <= 2,
        "one refetch per interval at most, saw {}",
        idp.fetches("t-a")
    );
    assert_eq!(idp.fetches("t-b"), 0, "another tenant is untouched");
    tokio::time::sleep(Duration::from_secs(11)).await;
    let mut header = Map::new();
    header.insert("kid".into(), "made-up-later".into());
    let t = rsa
        .sign_with_header(
            header,
            &json!({"iss": iss(TEMPLATE, "t-a"), "aud": AUD, "sub": "u", "exp": 4102444800u64, "tid": "t-a"}),
        )
        .unwrap();
    assert!(auth.verify(&t).await.is_err());
    assert!(idp.fetches("t-a") <= 3);
}

#[tokio::test(start_paused = true)]
async fn entra_v1_and_v2_issuers_share_one_tenant_source() {
    let tenant = "9188040d-6c67-4c5b-b112-36a304b66dad";
    let issuer = TenantIssuer::listed([V2, V1], "tid", [tenant]).unwrap();
    let idp = Idp::with(&[(tenant, "rsa-1")]);
    let keys = keys(&issuer, &idp, 10);
    let auth = auth(&issuer, keys.clone());
    let rsa = signer("rsa-1");
    let v2 = auth
        .verify(&token(&rsa, &iss(V2, tenant), tenant))
        .await
        .unwrap();
    let v1 = auth
        .verify(&token(&rsa, &iss(V1, tenant), tenant))
        .await
        .unwrap();
    assert_eq!(v1.tenant(), Some(tenant));
    assert_eq!(v2.tenant(), Some(tenant));
    assert_eq!((keys.tenant_count(), idp.total()), (1, 1));
    // A v1 issuer without its trailing slash is another issuer.
    let bare = format!("https://sts.windows.net/{tenant}");
    assert!(auth.verify(&token(&rsa, &bare, tenant)).await.is_err());
    assert_eq!(idp.total(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_header_nonce_is_refused_and_explain_names_it() {
    let tenant = "t-a";
    let issuer = TenantIssuer::listed([V2], "tid", [tenant]).unwrap();
    let idp = Idp::with(&[(tenant, "rsa-1")]);
    let auth = auth(&issuer, keys(&issuer, &idp, 10));
    let mut header = Map::new();
    header.insert("nonce".into(), "graph-nonce".into());
    let t = signer("rsa-1")
        .sign_with_header(
            header,
            &json!({"iss": iss(V2, tenant), "aud": AUD, "sub": "u", "exp": 4102444800u64, "tid": tenant}),
        )
        .unwrap();
    let rejection = auth.verify(&t).await.unwrap_err();
    assert!(is(&rejection, VerifyError::HeaderNonce));
    assert_eq!(idp.total(), 0);
    let report = explain(&auth, &t).await;
    let nonce = report.steps().iter().find(|s| s.name() == "nonce").unwrap();
    assert_eq!(nonce.status(), StepStatus::Failed);
    assert!(
        nonce.detail().contains("Microsoft Graph"),
        "{}",
        nonce.detail()
    );

    // explain names the tenant checks.
    let mismatch = token(&signer("rsa-1"), &iss(V2, tenant), "t-b");
    let report = explain(&auth, &mismatch).await;
    let step = report
        .steps()
        .iter()
        .find(|s| s.name() == "tenant")
        .unwrap();
    assert_eq!(step.status(), StepStatus::Failed);
    assert!(
        step.detail().contains("\"t-a\"") && step.detail().contains("tid"),
        "{}",
        step.detail()
    );
    let good = token(&signer("rsa-1"), &iss(V2, tenant), tenant);
    let report = explain(&auth, &good).await;
    assert!(report.accepted(), "{report}");
    let step = report
        .steps()
        .iter()
        .find(|s| s.name() == "tenant")
        .unwrap();
    assert!(
        step.detail().contains("in the allow-list"),
        "{}",
        step.detail()
    );
}

/// Tokens minted by PyJWT (tests/fixtures/generate_tenants.py).
#[tokio::test(start_paused = true)]
async fn pyjwt_entra_fixtures() {
    let tenant = "9188040d-6c67-4c5b-b112-36a304b66dad";
    let issuer = TenantIssuer::listed([V2, V1], "tid", [tenant]).unwrap();
    let idp = Idp::with(&[(tenant, "rsa-1")]);
    let auth = auth(&issuer, keys(&issuer, &idp, 10));
    let text = std::fs::read_to_string(fixtures().join("tenants/tokens.json")).unwrap();
    let cases: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(cases.len(), 5);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let result = auth.verify(case["token"].as_str().unwrap()).await;
        match case["expect"].as_str().unwrap() {
            "valid" => assert_eq!(result.unwrap().tenant(), Some(tenant), "{name}"),
            _ => {
                let rejection = result.expect_err(name);
                let expected = match name {
                    "tid-mismatch" => "tenant claim does not match",
                    "tenant-not-allowed" => "tenant not allowed",
                    "graph-nonce" => "nonce",
                    other => panic!("unknown case {other}"),
                };
                let error = rejection.description();
                assert!(error.contains(expected), "{name}: {error}");
            }
        }
    }
    assert_eq!(idp.fetches("72f988bf-86f1-41af-91ab-2d7cd011db47"), 0);
}

#[test]
fn templates_and_lists_are_checked() {
    assert!(TenantIssuer::listed(["https://x/"], "tid", ["a"]).is_err());
    assert!(TenantIssuer::listed(["https://x/{tenant}/{tenant}"], "tid", ["a"]).is_err());
    assert!(TenantIssuer::listed([TEMPLATE], "tid", Vec::<String>::new()).is_err());
    assert!(TenantIssuer::listed([TEMPLATE], "tid", ["a/b"]).is_err());
    assert!(TenantIssuer::listed([TEMPLATE], "", ["a"]).is_err());
    assert!(TenantIssuer::any_tenant(Vec::<String>::new(), "tid").is_err());
    let issuer = TenantIssuer::any_tenant([TEMPLATE], "tid").unwrap();
    assert!(
        TenantJwks::jwks_url(issuer.clone(), "https://x/keys")
            .build()
            .is_err()
    );
    assert!(
        TenantJwks::jwks_url(issuer.clone(), "ftp://x/{tenant}/keys")
            .build()
            .is_err()
    );
    assert!(
        TenantJwks::jwks_url(issuer.clone(), "http://x/{tenant}/keys")
            .max_tenants(0)
            .build()
            .is_err()
    );
    assert!(
        TenantJwks::jwks_url(issuer, "http://x/{tenant}/keys")
            .build()
            .is_ok()
    );
}
