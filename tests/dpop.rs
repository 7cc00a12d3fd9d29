//! DPoP proofs (RFC 9449) and certificate-bound tokens (RFC 8705 §3) through
//! `AuthenticateLayer(DpopAuthenticator(CachedAuthenticator(JwtAuthenticator)))`, served on
//! loopback HTTP by a test server that inserts the client's [`PeerCertificate`] into each
//! request, as a TLS-terminating server does.
//!
//! The tokens and proofs are the committed fixtures of `tests/fixtures/dpop/cases.json`,
//! minted by PyJWT (an independent JOSE implementation, `generate_dpop.py`); every verifier
//! uses a fixed clock at the proofs' `iat`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tower::{Service, ServiceBuilder};
use tower_gatekeeper::authenticate::{CacheConfig, CachedAuthenticator};
use tower_gatekeeper::credential::PeerCertificate;
use tower_gatekeeper::dpop::{DpopAuthenticator, DpopConfig, DpopMode, NonceSource};
use tower_gatekeeper::jwt::{Clock, Validation};
use tower_gatekeeper::keys::StaticKeys;
use tower_gatekeeper::{AuthContext, AuthenticateLayer, JwtAuthenticator};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn doc() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("dpop/cases.json")).unwrap()).unwrap()
}

fn clock(now: u64) -> Clock {
    Clock::from_fn(move || UNIX_EPOCH + Duration::from_secs(now))
}

fn jwt(now: u64) -> JwtAuthenticator<StaticKeys> {
    JwtAuthenticator::new(
        StaticKeys::from_jwks_file(dir().join("keys/jwks.json")).unwrap(),
        Validation::new("https://idp.example.test")
            .audiences(["api://orders"])
            .clock(clock(now)),
    )
    .unwrap()
}

/// Serves the DPoP stack with `config` on loopback; every request gets `peer` as its
/// client certificate. Answers 200 with the subject.
async fn serve(config: DpopConfig, peer: Option<PeerCertificate>) -> SocketAddr {
    let now = doc()["now"].as_u64().unwrap();
    let cached = CachedAuthenticator::new(jwt(now), CacheConfig::default()).unwrap();
    let auth = DpopAuthenticator::new(cached, config.clock(clock(now)));
    let stack = ServiceBuilder::new()
        .layer(AuthenticateLayer::new(auth))
        .service_fn(|req: Request<Incoming>| async move {
            let ctx = req.extensions().get::<AuthContext>().unwrap();
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                ctx.subject().unwrap().to_owned(),
            ))))
        });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let stack = stack.clone();
            let peer = peer.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    // What a TLS-terminating server does with the handshake's leaf.
                    if let Some(peer) = &peer {
                        req.extensions_mut().insert(peer.clone());
                    }
                    let mut stack = stack.clone();
                    async move { stack.call(req).await }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn origin_config() -> DpopConfig {
    DpopConfig::new()
        .public_origin("https://api.example.test")
        .unwrap()
}

struct Answer {
    status: u16,
    challenges: Vec<String>,
    error: String,
    description: String,
    nonce: Option<String>,
}

async fn send(addr: SocketAddr, method: &str, auth: &str, proofs: &[&str]) -> Answer {
    let mut req = reqwest::Client::new()
        .request(method.parse().unwrap(), format!("http://{addr}/orders/1"))
        .header("authorization", auth);
    for p in proofs {
        req = req.header("dpop", *p);
    }
    let response = req.send().await.unwrap();
    let status = response.status().as_u16();
    let challenges = response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let nonce = response
        .headers()
        .get("dpop-nonce")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.bytes().await.unwrap();
    let json = serde_json::from_slice::<Value>(&body).unwrap_or_default();
    let error = json["error"].as_str().unwrap_or_default().to_owned();
    let description = json["error_description"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Answer {
        status,
        challenges,
        error,
        description,
        nonce,
    }
}

fn case<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name}"))
}

/// Why each refused fixture is refused: the rule of RFC 9449 §4.3 it breaks, and only that.
const REASONS: &[(&str, &str)] = &[
    ("wrong-htm", "htm does not match"),
    ("htu-with-query", "htu has a query or fragment"),
    ("htu-with-fragment", "htu has a query or fragment"),
    ("htu-other-host", "htu does not match"),
    ("htu-other-path", "htu does not match"),
    ("htu-other-scheme", "htu does not match"),
    ("stale-iat", "too old"),
    ("future-iat", "in the future"),
    ("wrong-ath", "ath does not match"),
    ("no-ath", "ath does not match"),
    ("no-jti", "lacks a required claim"),
    ("no-iat", "lacks a required claim"),
    ("typ-jwt", "typ is not dpop+jwt"),
    ("jwk-with-private-d", "contains a private key"),
    ("hs256", "algorithm is not accepted"),
    ("alg-none", "algorithm is not accepted"),
    ("bad-signature", "signature is invalid"),
    ("signed-by-other-key", "signature is invalid"),
    ("thumbprint-mismatch", "bound to another DPoP key"),
    ("unbound-token-with-proof", "not DPoP-bound"),
    ("nonce-missing", "nonce is required"),
    ("nonce-expired", "invalid or expired"),
    ("nonce-wrong", "invalid or expired"),
];

/// Every fixture case, through a stack with a warm token cache: after the first valid proof
/// the bound token is a cache hit, and each bad proof is still refused.
#[tokio::test]
async fn every_fixture_proof_gets_its_expected_answer() {
    let doc = doc();
    let plain = serve(origin_config(), None).await;
    let secret = std::fs::read(dir().join("dpop/nonce.secret")).unwrap();
    let now = doc["now"].as_u64().unwrap();
    let nonces = NonceSource::new(&secret).unwrap().clock(clock(now));
    let with_nonces = serve(origin_config().nonces(nonces), None).await;
    let mut checked = 0;
    for case in doc["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let expect = case["expect"].as_str().unwrap();
        let (expect, addr) = match expect.strip_suffix(":nonce") {
            Some(e) => (e, with_nonces),
            None => (expect, plain),
        };
        let auth = format!("DPoP {}", case["token"].as_str().unwrap());
        let answer = send(
            addr,
            case["method"].as_str().unwrap(),
            &auth,
            &[case["proof"].as_str().unwrap()],
        )
        .await;
        match expect {
            "ok" => assert_eq!(answer.status, 200, "{name}: {:?}", answer.challenges),
            error => {
                let reason = REASONS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .unwrap_or_else(|| panic!("no reason listed for {name}"))
                    .1;
                assert!(
                    answer.description.contains(reason),
                    "{name}: {}",
                    answer.description
                );
                assert_eq!(answer.status, 401, "{name}");
                assert_eq!(answer.error, error, "{name}");
                let dpop = answer
                    .challenges
                    .iter()
                    .find(|c| c.starts_with("DPoP "))
                    .unwrap_or_else(|| panic!("{name}: no DPoP challenge"));
                assert!(
                    dpop.contains(r#"algs="RS256 PS256 ES256 ES384 EdDSA""#),
                    "{dpop}"
                );
                assert!(
                    dpop.contains(&format!("error=\"{error}\"")),
                    "{name}: {dpop}"
                );
                assert!(
                    answer.challenges.iter().any(|c| c.starts_with("Bearer ")),
                    "{name}: Bearer is allowed, so its challenge is there too"
                );
                if error == "use_dpop_nonce" {
                    assert!(answer.nonce.is_some(), "{name}: a fresh nonce");
                }
            }
        }
        checked += 1;
    }
    assert_eq!(checked, doc["cases"].as_array().unwrap().len());
}

#[tokio::test]
async fn a_replayed_proof_is_refused() {
    let doc = doc();
    let addr = serve(origin_config(), None).await;
    let c = case(&doc, "valid-eddsa");
    let auth = format!("DPoP {}", c["token"].as_str().unwrap());
    let proof = c["proof"].as_str().unwrap();
    assert_eq!(send(addr, "GET", &auth, &[proof]).await.status, 200);
    let again = send(addr, "GET", &auth, &[proof]).await;
    assert_eq!(
        (again.status, again.error.as_str()),
        (401, "invalid_dpop_proof")
    );
}

#[tokio::test]
async fn two_proofs_or_none_are_refused() {
    let doc = doc();
    let addr = serve(origin_config(), None).await;
    let c = case(&doc, "valid-es256");
    let auth = format!("DPoP {}", c["token"].as_str().unwrap());
    let proof = c["proof"].as_str().unwrap();
    let two = send(addr, "GET", &auth, &[proof, proof]).await;
    assert_eq!(
        (two.status, two.error.as_str()),
        (401, "invalid_dpop_proof")
    );
    let none = send(addr, "GET", &auth, &[]).await;
    assert_eq!(
        (none.status, none.error.as_str()),
        (401, "invalid_dpop_proof")
    );
}

#[tokio::test]
async fn bound_tokens_are_never_accepted_as_bearer() {
    let doc = doc();
    for mode in [DpopMode::Off, DpopMode::Allowed, DpopMode::Required] {
        let addr = serve(origin_config().mode(mode), None).await;
        let bound = doc["tokens"]["bound-es256"].as_str().unwrap();
        let answer = send(addr, "GET", &format!("Bearer {bound}"), &[]).await;
        assert_eq!(
            (answer.status, answer.error.as_str()),
            (401, "invalid_token"),
            "{mode:?}"
        );
        let unbound = doc["tokens"]["unbound"].as_str().unwrap();
        let answer = send(addr, "GET", &format!("Bearer {unbound}"), &[]).await;
        let expected = if mode == DpopMode::Required { 401 } else { 200 };
        assert_eq!(answer.status, expected, "{mode:?}");
        if mode == DpopMode::Required {
            assert!(
                answer.challenges.iter().all(|c| !c.starts_with("Bearer")),
                "no Bearer challenge where Bearer is refused: {:?}",
                answer.challenges
            );
        }
    }
}

#[tokio::test]
async fn off_refuses_the_dpop_scheme() {
    let doc = doc();
    let addr = serve(origin_config().mode(DpopMode::Off), None).await;
    let c = case(&doc, "valid-rs256");
    let answer = send(
        addr,
        "GET",
        &format!("DPoP {}", c["token"].as_str().unwrap()),
        &[c["proof"].as_str().unwrap()],
    )
    .await;
    assert_eq!(answer.status, 401);
    assert!(answer.challenges.iter().all(|c| !c.starts_with("DPoP")));
}

#[tokio::test]
async fn per_issuer_mode_applies_to_that_issuer() {
    let doc = doc();
    let config = origin_config().issuer_mode("https://idp.example.test", DpopMode::Required);
    let addr = serve(config, None).await;
    let unbound = doc["tokens"]["unbound"].as_str().unwrap();
    let answer = send(addr, "GET", &format!("Bearer {unbound}"), &[]).await;
    assert_eq!(
        (answer.status, answer.error.as_str()),
        (401, "invalid_token")
    );
}

#[tokio::test]
async fn certificate_bound_tokens_need_their_certificate() {
    let doc = doc();
    let token = doc["tokens"]["cert-bound"].as_str().unwrap();
    let bearer = format!("Bearer {token}");
    let right =
        PeerCertificate::from_der(std::fs::read(dir().join("dpop/client.cert.der")).unwrap());
    assert_eq!(
        right.sha256_thumbprint(),
        doc["cert_thumbprint"].as_str().unwrap()
    );
    let wrong =
        PeerCertificate::from_der(std::fs::read(dir().join("dpop/other.cert.der")).unwrap());

    let ok = serve(origin_config(), Some(right)).await;
    assert_eq!(send(ok, "GET", &bearer, &[]).await.status, 200);
    for peer in [Some(wrong), None] {
        let addr = serve(origin_config(), peer).await;
        let answer = send(addr, "GET", &bearer, &[]).await;
        assert_eq!(
            (answer.status, answer.error.as_str()),
            (401, "invalid_token")
        );
        assert!(
            answer
                .challenges
                .iter()
                .any(|c| c.contains("invalid_token"))
        );
    }
    // A token without cnf is unaffected by the certificate.
    let unbound = doc["tokens"]["unbound"].as_str().unwrap();
    let addr = serve(origin_config(), None).await;
    assert_eq!(
        send(addr, "GET", &format!("Bearer {unbound}"), &[])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn without_public_origin_the_request_host_is_the_origin() {
    let doc = doc();
    // The fixtures' htu is https://api.example.test/orders/1: with the request's own origin
    // (http://127.0.0.1:port) it does not match.
    let addr = serve(DpopConfig::new(), None).await;
    let c = case(&doc, "valid-ps256");
    let answer = send(
        addr,
        "GET",
        &format!("DPoP {}", c["token"].as_str().unwrap()),
        &[c["proof"].as_str().unwrap()],
    )
    .await;
    assert_eq!(
        (answer.status, answer.error.as_str()),
        (401, "invalid_dpop_proof")
    );
}
