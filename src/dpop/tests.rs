//! Tests of the DPoP wrapper with a stand-in authenticator: introspection-like contexts,
//! ready and pending inner outcomes, rendering.

use std::future::Ready;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::*;
use crate::CredentialKind;
use crate::keys::SigningKey;
use crate::reject::{DefaultRejection, Protocol, RejectionResponse};

/// Answers every request with a fixed context (as an introspection result would).
#[derive(Clone)]
struct Fixed(AuthContext);

impl Authenticator for Fixed {
    type Future = Ready<Result<AuthContext, Rejection>>;

    fn authenticate(&self, head: &RequestHead<'_>) -> Result<Self::Future, Rejection> {
        crate::credential::bearer_token(head, 1024)?.ok_or_else(Rejection::missing_credential)?;
        Ok(std::future::ready(Ok(self.0.clone())))
    }
}

fn proof_key() -> (SigningKey, Map<String, Value>) {
    let pem = include_bytes!("../../tests/fixtures/keys/ed-1.key.pem");
    let key = SigningKey::from_pem(Algorithm::EdDSA, pem).unwrap();
    let jwks: Value =
        serde_json::from_str(include_str!("../../tests/fixtures/keys/jwks.json")).unwrap();
    let mut jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == "ed-1")
        .unwrap()
        .as_object()
        .unwrap()
        .clone();
    jwk.retain(|k, _| ["kty", "crv", "x"].contains(&k.as_str()));
    (key, jwk)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn proof(key: &SigningKey, jwk: &Map<String, Value>, token: &str, jti: &str) -> String {
    let mut header = Map::new();
    header.insert("typ".into(), "dpop+jwt".into());
    header.insert("jwk".into(), Value::Object(jwk.clone()));
    key.sign_with_header(
        header,
        &json!({"jti": jti, "htm": "GET", "htu": "https://api.test/a", "iat": now(),
                "ath": access_token_hash(token)}),
    )
    .unwrap()
}

fn introspected(cnf: Value) -> AuthContext {
    AuthContext::builder(CredentialKind::Introspected)
        .subject("svc")
        .issuer("introspection")
        .claim("cnf", cnf)
        .build()
}

fn request(auth: &str, proof: Option<&str>, peer: Option<&PeerCertificate>) -> http::Request<()> {
    let mut req = http::Request::get("https://api.test/a")
        .header("authorization", auth)
        .body(())
        .unwrap();
    if let Some(p) = proof {
        req.headers_mut().insert("dpop", p.parse().unwrap());
    }
    if let Some(peer) = peer {
        req.extensions_mut().insert(peer.clone());
    }
    req
}

async fn run<A: Authenticator>(
    auth: &A,
    req: &http::Request<()>,
) -> Result<AuthContext, Rejection> {
    match auth.start(&RequestHead::of(req))? {
        Started::Ready(ctx) => Ok(ctx),
        Started::Pending(fut) => fut.await,
    }
}

#[tokio::test]
async fn introspected_tokens_honour_cnf_jkt() {
    let (key, jwk) = proof_key();
    let jkt = jwk_thumbprint(&jwk).unwrap();
    let auth = DpopAuthenticator::new(Fixed(introspected(json!({"jkt": jkt}))), DpopConfig::new());
    let good = proof(&key, &jwk, "opaque", "j1");
    let ctx = run(&auth, &request("DPoP opaque", Some(&good), None))
        .await
        .unwrap();
    assert_eq!(ctx.subject(), Some("svc"));
    // As Bearer: refused.
    let err = run(&auth, &request("Bearer opaque", None, None))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), crate::RejectionKind::InvalidToken);
    // Replayed: refused; the inner outcome was ready, so was the refusal.
    let err = run(&auth, &request("DPoP opaque", Some(&good), None))
        .await
        .unwrap_err();
    assert_eq!(err.description(), "the DPoP proof was already used");
}

#[tokio::test]
async fn introspected_tokens_honour_cnf_x5t() {
    let cert = PeerCertificate::from_der(&b"a certificate"[..]);
    let other = PeerCertificate::from_der(&b"another certificate"[..]);
    let ctx = introspected(json!({"x5t#S256": cert.sha256_thumbprint()}));
    let auth = DpopAuthenticator::new(Fixed(ctx), DpopConfig::new());
    assert!(
        run(&auth, &request("Bearer t", None, Some(&cert)))
            .await
            .is_ok()
    );
    for peer in [Some(&other), None] {
        let err = run(&auth, &request("Bearer t", None, peer))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), crate::RejectionKind::InvalidToken);
    }
    // A cnf of the wrong shape is refused, never ignored.
    let auth = DpopAuthenticator::new(Fixed(introspected(json!("jkt"))), DpopConfig::new());
    assert!(run(&auth, &request("Bearer t", None, None)).await.is_err());
}

#[test]
fn challenges_render_beside_bearer() {
    let (key, jwk) = proof_key();
    let auth = DpopAuthenticator::new(
        Fixed(introspected(json!({"jkt": "other"}))),
        DpopConfig::new()
            .algorithms([Algorithm::ES256, Algorithm::EdDSA])
            .unwrap()
            .max_age(Duration::from_secs(30)),
    );
    let stale = {
        let mut header = Map::new();
        header.insert("typ".into(), "dpop+jwt".into());
        header.insert("jwk".into(), Value::Object(jwk));
        key.sign_with_header(
            header,
            &json!({"jti": "x", "htm": "GET", "htu": "https://api.test/a", "iat": now() - 31,
                    "ath": access_token_hash("t")}),
        )
        .unwrap()
    };
    let req = request("DPoP t", Some(&stale), None);
    let Err(rejection) = auth.start(&RequestHead::of(&req)) else {
        panic!("a stale proof is refused before the token is looked at");
    };
    let response = DefaultRejection::new("api").response(&rejection, Protocol::Http);
    let challenges: Vec<_> = response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        challenges,
        [
            r#"Bearer realm="api""#,
            r#"DPoP realm="api", algs="ES256 EdDSA", error="invalid_dpop_proof", error_description="the DPoP proof is too old""#
        ]
    );
    let body: Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(body["error"], "invalid_dpop_proof");
    // gRPC: UNAUTHENTICATED.
    let response = DefaultRejection::new("api").response(&rejection, Protocol::Grpc);
    assert_eq!(response.headers()["grpc-status"], "16");
}

#[test]
fn configuration_is_checked() {
    assert!(DpopConfig::new().algorithms([Algorithm::HS256]).is_err());
    assert!(DpopConfig::new().algorithms([]).is_err());
    for bad in [
        "api.test",
        "https://api.test/x",
        "ftp://api.test",
        "https://u@api.test",
        "https://",
    ] {
        assert!(DpopConfig::new().public_origin(bad).is_err(), "{bad}");
    }
    let ok = DpopConfig::new()
        .public_origin("HTTPS://Api.Test:443/")
        .unwrap();
    assert_eq!(
        ok.public_origin,
        Some(("https".to_owned(), "api.test".to_owned()))
    );
    assert_eq!("required".parse::<DpopMode>().unwrap(), DpopMode::Required);
    assert!("on".parse::<DpopMode>().is_err());
}
