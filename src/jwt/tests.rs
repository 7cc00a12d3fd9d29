//! The verification rules, one by one, on tokens minted with [`SigningKey`] (or by hand where
//! the token must be malformed in ways no signer produces) and a fixed [`Clock`].

use super::*;
use crate::authenticate::JwtAuthenticator;
use crate::keys::{SigningKey, StaticKeys};
use crate::reject::RejectionKind;
use jsonwebtoken::EncodingKey;
use serde_json::json;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

const ISS: &str = "https://idp.example.test";
const AUD: &str = "api://orders";
/// "Now" for every test: 2023-11-14T22:13:20Z.
const NOW: u64 = 1_700_000_000;
const SECRET: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

fn at(secs: u64) -> Clock {
    Clock::from_fn(move || UNIX_EPOCH + Duration::from_secs(secs))
}

fn validation() -> Validation {
    Validation::new(ISS).audiences([AUD]).clock(at(NOW))
}

fn signer() -> SigningKey {
    SigningKey::hmac(Algorithm::HS256, SECRET).unwrap()
}

/// The default claims with `overrides` merged in; a `null` override removes the claim.
fn claims(overrides: Value) -> Value {
    let mut base = json!({
        "iss": ISS,
        "aud": AUD,
        "sub": "user-123",
        "iat": NOW,
        "exp": NOW + 3600,
    });
    let (Value::Object(map), Value::Object(over)) = (&mut base, overrides) else {
        panic!("claims are objects");
    };
    for (name, value) in over {
        if value.is_null() {
            map.remove(&name);
        } else {
            map.insert(name, value);
        }
    }
    base
}

fn mint(overrides: Value) -> String {
    signer().sign(&claims(overrides)).unwrap()
}

fn mint_with_header(header: Value, overrides: Value) -> String {
    let Value::Object(header) = header else {
        panic!("header is an object")
    };
    signer()
        .sign_with_header(header, &claims(overrides))
        .unwrap()
}

/// HS256 over exactly these header and claims texts, for JSON no serializer would write.
fn mint_raw(header_json: &str, claims_json: &str) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header_json),
        URL_SAFE_NO_PAD.encode(claims_json)
    );
    sign_input(&input, SECRET)
}

/// Appends an HS256 signature of `input` (the JWS signing input, taken as is) keyed by `secret`.
fn sign_input(input: &str, secret: &[u8]) -> String {
    let key = EncodingKey::from_secret(secret);
    let signer =
        (crate::crypto::provider().signer_factory)(&jsonwebtoken::Algorithm::HS256, &key).unwrap();
    let signature = signer.try_sign(input.as_bytes()).unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn default_claims_json() -> String {
    claims(json!({})).to_string()
}

fn verify(v: &Validation, token: &str) -> Result<AuthContext, VerifyError> {
    verify_with_key(v, token, signer().verifying_key())
}

/// `"ok"` or the error's `Debug` text, so tables can name the expected outcome.
fn outcome(result: Result<AuthContext, VerifyError>) -> String {
    match result {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("{e:?}"),
    }
}

fn check_table(v: &Validation, cases: &[(&str, String, &str)]) {
    for (name, token, expected) in cases {
        assert_eq!(outcome(verify(v, token)), *expected, "case {name}");
    }
}

#[test]
fn a_plain_token_verifies_and_maps_its_claims() {
    let ctx = verify(&validation(), &mint(json!({}))).unwrap();
    assert_eq!(ctx.subject(), Some("user-123"));
    assert_eq!(ctx.issuer(), Some(ISS));
    assert_eq!(ctx.credential_kind(), crate::CredentialKind::Jwt);
    assert_eq!(
        ctx.expires_at(),
        Some(UNIX_EPOCH + Duration::from_secs(NOW + 3600))
    );
    assert_eq!(ctx.key_id(), None);
    assert!(ctx.roles().is_empty());
    assert!(ctx.scopes().is_empty());
    assert_eq!(ctx.tenant(), None);
}

#[test]
fn exp_with_and_without_leeway() {
    let strict = validation().leeway(Duration::ZERO);
    let lenient = validation().leeway(Duration::from_secs(30));
    let t = |exp: Value| mint(json!({ "exp": exp }));
    // Valid while now < exp + leeway (RFC 7519 §4.1.4).
    let cases: &[(&Validation, &str, Value, &str)] = &[
        (&strict, "one second left", json!(NOW + 1), "ok"),
        (&strict, "at exp", json!(NOW), "Expired"),
        (&strict, "half a second left", json!(NOW as f64 + 0.5), "ok"),
        (
            &strict,
            "half a second ago",
            json!(NOW as f64 - 0.5),
            "Expired",
        ),
        (&strict, "long ago", json!(1_000_000_000), "Expired"),
        (&strict, "negative", json!(-1), "Expired"),
        (&lenient, "29 s ago", json!(NOW - 29), "ok"),
        (&lenient, "29.5 s ago", json!(NOW as f64 - 29.5), "ok"),
        (&lenient, "exactly leeway ago", json!(NOW - 30), "Expired"),
        (&lenient, "31 s ago", json!(NOW - 31), "Expired"),
        (&lenient, "far future", json!(1.0e300), "ok"),
    ];
    for (v, name, exp, expected) in cases {
        assert_eq!(outcome(verify(v, &t(exp.clone()))), *expected, "{name}");
    }
    // The default leeway is 30 s.
    assert_eq!(DEFAULT_LEEWAY, Duration::from_secs(30));
    assert!(verify(&validation(), &t(json!(NOW - 29))).is_ok());
    assert!(verify(&validation(), &t(json!(NOW - 30))).is_err());
}

#[test]
fn nbf_with_and_without_leeway() {
    let strict = validation().leeway(Duration::ZERO);
    let lenient = validation().leeway(Duration::from_secs(30));
    let t = |nbf: Value| mint(json!({ "nbf": nbf }));
    // Valid once now + leeway >= nbf (RFC 7519 §4.1.5).
    let cases: &[(&Validation, &str, Value, &str)] = &[
        (&strict, "at nbf", json!(NOW), "ok"),
        (&strict, "past", json!(NOW - 1), "ok"),
        (&strict, "one second early", json!(NOW + 1), "NotYetValid"),
        (
            &strict,
            "half a second early",
            json!(NOW as f64 + 0.5),
            "NotYetValid",
        ),
        (&lenient, "exactly leeway early", json!(NOW + 30), "ok"),
        (&lenient, "29 s early", json!(NOW + 29), "ok"),
        (
            &lenient,
            "30.5 s early",
            json!(NOW as f64 + 30.5),
            "NotYetValid",
        ),
        (&lenient, "31 s early", json!(NOW + 31), "NotYetValid"),
    ];
    for (v, name, nbf, expected) in cases {
        assert_eq!(outcome(verify(v, &t(nbf.clone()))), *expected, "{name}");
    }
}

#[test]
fn the_clock_is_asked_on_every_verification() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let now = Arc::new(AtomicU64::new(NOW));
    let seen = Arc::clone(&now);
    let v = validation()
        .leeway(Duration::ZERO)
        .clock(Clock::from_fn(move || {
            UNIX_EPOCH + Duration::from_secs(seen.load(Ordering::SeqCst))
        }));
    let token = mint(json!({ "nbf": NOW + 10, "exp": NOW + 20 }));
    assert_eq!(outcome(verify(&v, &token)), "NotYetValid");
    now.store(NOW + 10, Ordering::SeqCst);
    assert_eq!(outcome(verify(&v, &token)), "ok");
    now.store(NOW + 20, Ordering::SeqCst);
    assert_eq!(outcome(verify(&v, &token)), "Expired");
}

#[test]
fn exp_is_required_by_default_and_optional_on_request() {
    let token = mint(json!({ "exp": null }));
    assert_eq!(
        outcome(verify(&validation(), &token)),
        "MissingClaim(\"exp\")"
    );
    let optional = validation().require_exp(false);
    let ctx = verify(&optional, &token).unwrap();
    assert_eq!(ctx.expires_at(), None);
    // Optional does not mean ignored.
    assert_eq!(
        outcome(verify(&optional, &mint(json!({ "exp": NOW - 3600 })))),
        "Expired"
    );
    assert_eq!(
        outcome(verify(&optional, &mint(json!({ "exp": "soon" })))),
        "InvalidClaim(\"exp\")"
    );
}

#[test]
fn registered_times_must_be_numbers() {
    let v = validation();
    let cases = [
        (
            "exp string",
            json!({ "exp": (NOW + 60).to_string() }),
            "InvalidClaim(\"exp\")",
        ),
        (
            "exp null-like",
            json!({ "exp": false }),
            "InvalidClaim(\"exp\")",
        ),
        (
            "exp array",
            json!({ "exp": [NOW + 60] }),
            "InvalidClaim(\"exp\")",
        ),
        (
            "nbf string",
            json!({ "nbf": NOW.to_string() }),
            "InvalidClaim(\"nbf\")",
        ),
        ("nbf object", json!({ "nbf": {} }), "InvalidClaim(\"nbf\")"),
        (
            "iat string",
            json!({ "iat": NOW.to_string() }),
            "InvalidClaim(\"iat\")",
        ),
        ("iat float", json!({ "iat": NOW as f64 + 0.25 }), "ok"),
        (
            "iat in the future",
            json!({ "iat": NOW + 86_400 }),
            "IssuedInFuture",
        ),
        ("iat within leeway", json!({ "iat": NOW + 30 }), "ok"),
        (
            "iat just beyond leeway",
            json!({ "iat": NOW + 31 }),
            "IssuedInFuture",
        ),
        ("iat bool", json!({ "iat": true }), "InvalidClaim(\"iat\")"),
        (
            "iat array",
            json!({ "iat": [NOW] }),
            "InvalidClaim(\"iat\")",
        ),
    ];
    for (name, over, expected) in cases {
        assert_eq!(outcome(verify(&v, &mint(over))), expected, "{name}");
    }
}

#[test]
fn iss_must_match_exactly() {
    let v = validation();
    let cases = [
        ("exact", json!(ISS), "ok"),
        (
            "trailing slash",
            json!(format!("{ISS}/")),
            "UntrustedIssuer",
        ),
        ("upper case", json!(ISS.to_uppercase()), "UntrustedIssuer"),
        (
            "upper case host",
            json!("https://IDP.example.test"),
            "UntrustedIssuer",
        ),
        ("http", json!("http://idp.example.test"), "UntrustedIssuer"),
        ("leading space", json!(format!(" {ISS}")), "UntrustedIssuer"),
        ("prefix", json!("https://idp.example"), "UntrustedIssuer"),
        ("empty", json!(""), "UntrustedIssuer"),
        ("array", json!([ISS]), "InvalidClaim(\"iss\")"),
        ("number", json!(1), "InvalidClaim(\"iss\")"),
    ];
    for (name, iss, expected) in cases {
        assert_eq!(
            outcome(verify(&v, &mint(json!({ "iss": iss })))),
            expected,
            "{name}"
        );
    }
    assert_eq!(
        outcome(verify(&v, &mint(json!({ "iss": null })))),
        "UntrustedIssuer"
    );
    // A configured issuer with a trailing slash is matched exactly too.
    let slash = Validation::new(format!("{ISS}/"))
        .audiences([AUD])
        .clock(at(NOW));
    assert_eq!(outcome(verify(&slash, &mint(json!({})))), "UntrustedIssuer");
    assert!(verify(&slash, &mint(json!({ "iss": format!("{ISS}/") }))).is_ok());
}

#[test]
fn aud_string_array_missing_and_wrong_type() {
    let v = validation().audiences([AUD, "api://billing"]);
    let cases = [
        ("string", json!(AUD), "ok"),
        ("second configured", json!("api://billing"), "ok"),
        ("string mismatch", json!("api://other"), "InvalidAudience"),
        ("case differs", json!("API://orders"), "InvalidAudience"),
        ("trailing slash", json!("api://orders/"), "InvalidAudience"),
        ("array with match", json!(["api://other", AUD]), "ok"),
        (
            "array without match",
            json!(["api://other", "x"]),
            "InvalidAudience",
        ),
        ("empty array", json!([]), "InvalidAudience"),
        (
            "array with a number",
            json!([AUD, 7]),
            "InvalidClaim(\"aud\")",
        ),
        (
            "array with null",
            json!([null, AUD]),
            "InvalidClaim(\"aud\")",
        ),
        ("nested array", json!([[AUD]]), "InvalidClaim(\"aud\")"),
        ("number", json!(42), "InvalidClaim(\"aud\")"),
        ("object", json!({ "aud": AUD }), "InvalidClaim(\"aud\")"),
        ("bool", json!(true), "InvalidClaim(\"aud\")"),
    ];
    for (name, aud, expected) in cases {
        assert_eq!(
            outcome(verify(&v, &mint(json!({ "aud": aud })))),
            expected,
            "{name}"
        );
    }
    assert_eq!(
        outcome(verify(&v, &mint(json!({ "aud": null })))),
        "InvalidAudience"
    );
}

#[test]
fn any_audience_accepts_any_or_none_but_not_garbage() {
    let v = Validation::new(ISS).any_audience().clock(at(NOW));
    let cases = [
        ("missing", json!({ "aud": null }), "ok"),
        ("other string", json!({ "aud": "api://else" }), "ok"),
        ("array", json!({ "aud": ["a", "b"] }), "ok"),
        ("number", json!({ "aud": 1 }), "InvalidClaim(\"aud\")"),
        (
            "array with number",
            json!({ "aud": ["a", 1] }),
            "InvalidClaim(\"aud\")",
        ),
    ];
    for (name, over, expected) in cases {
        assert_eq!(outcome(verify(&v, &mint(over))), expected, "{name}");
    }
}

#[test]
fn typ_when_required() {
    let v = validation().required_typ("at+jwt");
    let with_typ = |typ: Value| mint_with_header(json!({ "typ": typ }), json!({}));
    let cases = [
        ("at+jwt", with_typ(json!("at+jwt")), "ok"),
        (
            "application/at+jwt",
            with_typ(json!("application/at+jwt")),
            "ok",
        ),
        ("upper case", with_typ(json!("AT+JWT")), "ok"),
        (
            "mixed case prefix",
            with_typ(json!("Application/At+Jwt")),
            "ok",
        ),
        ("JWT", with_typ(json!("JWT")), "WrongType"),
        (
            "application/jwt",
            with_typ(json!("application/jwt")),
            "WrongType",
        ),
        ("other prefix", with_typ(json!("text/at+jwt")), "WrongType"),
        ("trailing space", with_typ(json!("at+jwt ")), "WrongType"),
        (
            "double prefix",
            with_typ(json!("application/application/at+jwt")),
            "WrongType",
        ),
        ("empty", with_typ(json!("")), "WrongType"),
        (
            "non-ASCII at byte 12",
            with_typ(json!("applicationé/at+jwt")),
            "WrongType",
        ),
        ("number", with_typ(json!(1)), "Malformed(\"typ\")"),
        ("null", with_typ(json!(null)), "Malformed(\"typ\")"),
        (
            "missing",
            mint_raw(r#"{"alg":"HS256"}"#, &default_claims_json()),
            "WrongType",
        ),
    ];
    check_table(&v, &cases);

    // Configured with the full media type, the short form matches too.
    let full = validation().required_typ("application/at+jwt");
    assert!(verify(&full, &with_typ(json!("at+jwt"))).is_ok());

    // Not required: explicit typing (RFC 8725 §3.11) accepts only an access token's typ.
    let v = validation();
    for typ in [
        "JWT",
        "jwt",
        "application/jwt",
        "at+jwt",
        "AT+JWT",
        "application/at+jwt",
        "Application/AT+JWT",
    ] {
        assert!(verify(&v, &with_typ(json!(typ))).is_ok(), "{typ}");
    }
    assert!(verify(&v, &mint_raw(r#"{"alg":"HS256"}"#, &default_claims_json())).is_ok());
    for typ in [
        "dpop+jwt",
        "secevent+jwt",
        "application/secevent+jwt",
        "logout+jwt",
        "JOSE",
        "whatever",
        "",
        "application/",
        "jwt ",
        "at+jwt; charset=utf-8",
        "gatekeeper-ctx+jwt",
    ] {
        assert_eq!(
            outcome(verify(&v, &with_typ(json!(typ)))),
            "NotAccessTokenType",
            "{typ:?}"
        );
    }
    let err = verify(&v, &with_typ(json!("logout+jwt"))).unwrap_err();
    assert_eq!(err.description(), "token type is not an access token type");
    let rejection = err.into_rejection();
    assert_eq!(rejection.kind(), crate::RejectionKind::InvalidToken);
}

#[test]
fn crit_must_be_understood() {
    const EXT: &str = "http://example.test/ext";
    let v = validation();
    let understood = validation().understood_crit([EXT]);
    let with = |header: Value| mint_with_header(header, json!({}));
    let cases: &[(&str, &Validation, String, &str)] = &[
        (
            "unknown",
            &v,
            with(json!({ "crit": [EXT], EXT: 1 })),
            "UnsupportedCritical",
        ),
        (
            "empty",
            &v,
            with(json!({ "crit": [] })),
            "UnsupportedCritical",
        ),
        (
            "empty, even if some are understood",
            &understood,
            with(json!({ "crit": [] })),
            "UnsupportedCritical",
        ),
        (
            "understood",
            &understood,
            with(json!({ "crit": [EXT], EXT: 1 })),
            "ok",
        ),
        (
            "understood and unknown",
            &understood,
            with(json!({ "crit": [EXT, "x"], EXT: 1, "x": 1 })),
            "UnsupportedCritical",
        ),
        (
            "registered name exp",
            &v,
            with(json!({ "crit": ["exp"], "exp": 1 })),
            "UnsupportedCritical",
        ),
        (
            "string",
            &understood,
            with(json!({ "crit": EXT, EXT: 1 })),
            "UnsupportedCritical",
        ),
        (
            "object",
            &understood,
            with(json!({ "crit": { EXT: true } })),
            "UnsupportedCritical",
        ),
        (
            "null",
            &v,
            with(json!({ "crit": null })),
            "UnsupportedCritical",
        ),
        (
            "number item",
            &understood,
            with(json!({ "crit": [EXT, 1], EXT: 1 })),
            "UnsupportedCritical",
        ),
        (
            "case differs",
            &understood,
            with(json!({ "crit": [EXT.to_uppercase()] })),
            "UnsupportedCritical",
        ),
    ];
    for (name, v, token, expected) in cases {
        assert_eq!(outcome(verify(v, token)), *expected, "{name}");
    }
}

#[test]
fn b64_header_is_never_accepted() {
    // RFC 7797 changes the signing input; this verifier never implements it.
    let understood = validation().understood_crit(["b64"]);
    for header in [
        json!({ "b64": false, "crit": ["b64"] }),
        json!({ "b64": true, "crit": ["b64"] }),
        json!({ "b64": false }),
        json!({ "b64": true }),
        json!({ "b64": "false" }),
    ] {
        let token = mint_with_header(header.clone(), json!({}));
        assert_eq!(
            outcome(verify(&understood, &token)),
            "UnsupportedCritical",
            "{header}"
        );
        assert_eq!(
            outcome(verify(&validation(), &token)),
            "UnsupportedCritical",
            "{header}"
        );
    }
}

#[test]
fn duplicate_member_names_are_refused_at_any_depth() {
    let v = validation();
    let claims_ok = default_claims_json();
    let body = claims_ok.trim_end_matches('}');
    let cases = [
        (
            "header alg twice",
            mint_raw(r#"{"alg":"HS256","alg":"HS256"}"#, &claims_ok),
            "Malformed(\"header\")",
        ),
        (
            "header alg none first",
            mint_raw(r#"{"alg":"none","alg":"HS256"}"#, &claims_ok),
            "Malformed(\"header\")",
        ),
        (
            "header kid twice",
            mint_raw(r#"{"alg":"HS256","kid":"a","kid":"b"}"#, &claims_ok),
            "Malformed(\"header\")",
        ),
        (
            "header nested",
            mint_raw(
                r#"{"alg":"HS256","jwk":{"kty":"oct","kty":"RSA"}}"#,
                &claims_ok,
            ),
            "Malformed(\"header\")",
        ),
        (
            "header escaped spelling of alg",
            mint_raw(r#"{"alg":"HS256","\u0061lg":"none"}"#, &claims_ok),
            "Malformed(\"header\")",
        ),
        (
            "claims sub twice",
            mint_raw(r#"{"alg":"HS256"}"#, &format!(r#"{body},"sub":"admin"}}"#)),
            "Malformed(\"claims\")",
        ),
        (
            "claims escaped spelling of sub",
            mint_raw(
                r#"{"alg":"HS256"}"#,
                &format!(r#"{body},"s\u0075b":"admin"}}"#),
            ),
            "Malformed(\"claims\")",
        ),
        (
            "claims nested object",
            mint_raw(
                r#"{"alg":"HS256"}"#,
                &format!(r#"{body},"realm_access":{{"roles":["a"],"roles":["admin"]}}}}"#),
            ),
            "Malformed(\"claims\")",
        ),
        (
            "claims object inside an array",
            mint_raw(
                r#"{"alg":"HS256"}"#,
                &format!(r#"{body},"list":[1,{{"a":1,"a":2}}]}}"#),
            ),
            "Malformed(\"claims\")",
        ),
        (
            "claims unchecked member twice",
            mint_raw(
                r#"{"alg":"HS256"}"#,
                &format!(r#"{body},"jti":"a","jti":"b"}}"#),
            ),
            "Malformed(\"claims\")",
        ),
        (
            "claims inside a checked member",
            mint_raw(
                r#"{"alg":"HS256"}"#,
                &format!(r#"{body},"scp":[{{"a":1,"a":2}}]}}"#),
            ),
            "Malformed(\"claims\")",
        ),
        (
            "claims escaped spelling deep inside an unchecked member",
            mint_raw(
                r#"{"alg":"HS256"}"#,
                &format!(r#"{body},"x":{{"y":[[{{"k":1,"\u006b":2}}]]}}}}"#),
            ),
            "Malformed(\"claims\")",
        ),
        (
            "claims among many members",
            mint_raw(
                r#"{"alg":"HS256"}"#,
                &format!(
                    r#"{body},{},"m7":0}}"#,
                    (0..40)
                        .map(|i| format!(r#""m{i}":{i}"#))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            ),
            "Malformed(\"claims\")",
        ),
        (
            "header unchecked member twice",
            mint_raw(r#"{"alg":"HS256","x5t":"a","x5t":"b"}"#, &claims_ok),
            "Malformed(\"header\")",
        ),
        (
            "same name at different depths is fine",
            mint_raw(
                r#"{"alg":"HS256"}"#,
                &format!(r#"{body},"outer":{{"sub":"x","inner":{{"sub":"y"}}}}}}"#),
            ),
            "ok",
        ),
    ];
    check_table(&v, &cases);
}

#[test]
fn segments_must_be_canonical_unpadded_base64url() {
    let v = validation();
    let token = mint(json!({}));
    assert!(verify(&v, &token).is_ok());
    let parts: Vec<&str> = token.split('.').collect();
    let (h, p, s) = (parts[0], parts[1], parts[2]);
    let flip_last = |seg: &str| {
        // The HS256 signature is 32 bytes: 43 characters whose last one carries 4 bits of
        // data and 2 unused bits. Setting an unused bit keeps the decoded bytes of a lenient
        // decoder but makes the encoding non-canonical (RFC 4648 §3.5).
        let last = seg.as_bytes()[seg.len() - 1];
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let index = alphabet.iter().position(|c| *c == last).unwrap();
        assert_eq!(
            index & 0b11,
            0,
            "canonical encodings leave unused bits zero"
        );
        format!("{}{}", &seg[..seg.len() - 1], alphabet[index | 1] as char)
    };
    let header_json = r#"{"alg":"HS256","typ":"JWT"}"#;
    let claims_json = default_claims_json();
    let std_b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    // A header whose standard base64 has `+` or `/`, which base64url does not allow.
    let odd_header = (0..)
        .map(|i| format!(r#"{{"alg":"HS256","x":"{}"}}"#, "?".repeat(i)))
        .find(|h| std_b64.encode(h).contains(['+', '/']))
        .unwrap();
    // A token whose signature has `-` or `_`, to spell them `+` and `/`.
    let other = (0..)
        .map(|n| mint(json!({ "n": n })))
        .find(|t| t.rsplit('.').next().unwrap().contains(['-', '_']))
        .unwrap();
    let mut other_parts = other.split('.');
    let (h2, p2, s2) = (
        other_parts.next().unwrap(),
        other_parts.next().unwrap(),
        other_parts.next().unwrap(),
    );
    let cases = [
        (
            "padded header",
            format!("{h}==.{p}.{s}"),
            "Malformed(\"header\")",
        ),
        (
            "padded payload",
            format!("{h}.{p}=.{s}"),
            "Malformed(\"claims\")",
        ),
        (
            "padded signature",
            format!("{h}.{p}.{s}="),
            "Malformed(\"signature\")",
        ),
        (
            "padded header, re-signed",
            sign_input(
                &format!("{}=.{}", URL_SAFE_NO_PAD.encode("{\"alg\":\"HS256\"}"), p),
                SECRET,
            ),
            "Malformed(\"header\")",
        ),
        (
            "non-canonical signature",
            format!("{h}.{p}.{}", flip_last(s)),
            "Malformed(\"signature\")",
        ),
        (
            "whitespace in payload",
            format!("{h}.{} {}.{s}", &p[..4], &p[4..]),
            "Malformed(\"claims\")",
        ),
        (
            "standard alphabet signature",
            format!("{h2}.{p2}.{}", s2.replace('-', "+").replace('_', "/")),
            "Malformed(\"signature\")",
        ),
        (
            "empty signature",
            format!("{h}.{p}."),
            "Malformed(\"signature\")",
        ),
        (
            "two segments",
            format!("{h}.{p}"),
            "Malformed(\"a JWS has three segments\")",
        ),
        (
            "four segments",
            format!("{token}."),
            "Malformed(\"a JWS has three segments\")",
        ),
        (
            "five segments",
            format!("{token}.{s}.{s}"),
            "Malformed(\"a JWS has three segments\")",
        ),
        (
            "empty",
            String::new(),
            "Malformed(\"a JWS has three segments\")",
        ),
        ("dots only", "..".to_owned(), "Malformed(\"header\")"),
        (
            "header not JSON",
            sign_input(
                &format!("{}.{p}", URL_SAFE_NO_PAD.encode("not json")),
                SECRET,
            ),
            "Malformed(\"header\")",
        ),
        (
            "header an array",
            mint_raw("[1,2]", &claims_json),
            "Malformed(\"header\")",
        ),
        (
            "header with trailing data",
            mint_raw(&format!("{header_json} x"), &claims_json),
            "Malformed(\"header\")",
        ),
        (
            "header trailing whitespace is JSON",
            mint_raw(&format!("{header_json} \n"), &claims_json),
            "ok",
        ),
        (
            "claims an array",
            mint_raw(header_json, "[1,2,3]"),
            "Malformed(\"claims\")",
        ),
        (
            "claims a string",
            mint_raw(header_json, "\"sub\""),
            "Malformed(\"claims\")",
        ),
        (
            "claims not UTF-8",
            sign_input(
                &format!(
                    "{}.{}",
                    URL_SAFE_NO_PAD.encode(header_json),
                    URL_SAFE_NO_PAD.encode(b"{\"sub\":\"\xff\"}")
                ),
                SECRET,
            ),
            "Malformed(\"claims\")",
        ),
        (
            "header in the standard alphabet",
            sign_input(&format!("{}.{p}", std_b64.encode(&odd_header)), SECRET),
            "Malformed(\"header\")",
        ),
    ];
    check_table(&v, &cases);
}

/// A validly signed HS256 token of exactly `len` bytes (padding in a claim and a header member).
fn token_of_len(len: usize) -> String {
    for m in 0..4 {
        let header = json!({ "p": "h".repeat(m) });
        let base = mint_with_header(header.clone(), json!({ "pad": "" })).len();
        let start = (len.saturating_sub(base) * 3 / 4).saturating_sub(8);
        for n in start..start + 16 {
            let token = mint_with_header(header.clone(), json!({ "pad": "x".repeat(n) }));
            if token.len() == len {
                return token;
            }
        }
    }
    panic!("no token of {len} bytes");
}

#[test]
fn size_limit_at_the_boundary() {
    const LIMIT: usize = 16 * 1024;
    let v = validation();
    assert_eq!(v.token_limit(), LIMIT);
    let at_limit = token_of_len(LIMIT);
    assert_eq!(at_limit.len(), LIMIT);
    assert_eq!(outcome(verify(&v, &at_limit)), "ok");
    let over = token_of_len(LIMIT + 1);
    assert_eq!(outcome(verify(&v, &over)), "TooLarge");
    assert_eq!(outcome(verify(&v, &token_of_len(LIMIT - 1))), "ok");
    // Refused before any parsing.
    assert_eq!(outcome(verify(&v, &"!".repeat(LIMIT + 1))), "TooLarge");
    assert_eq!(
        outcome(verify(&v, &"!".repeat(LIMIT))),
        "Malformed(\"a JWS has three segments\")"
    );

    let small = validation().max_token_bytes(1024);
    assert_eq!(outcome(verify(&small, &token_of_len(1024))), "ok");
    assert_eq!(outcome(verify(&small, &token_of_len(1025))), "TooLarge");
}

#[tokio::test]
async fn size_limit_is_per_issuer_in_the_authenticator() {
    let keys = || StaticKeys::new([signer().verifying_key().clone()]);
    let other = "https://other.example.test";
    let auth = JwtAuthenticator::new(keys(), validation().max_token_bytes(1024))
        .unwrap()
        .with_issuer(
            keys(),
            Validation::new(other).audiences([AUD]).clock(at(NOW)),
        )
        .unwrap();
    let mut big = None;
    for n in 1000..1100 {
        let t = mint(json!({ "pad": "x".repeat(n) }));
        if t.len() > 1024 {
            big = Some(t);
            break;
        }
    }
    let big = big.unwrap();
    let rejection = auth.verify(&big).await.unwrap_err();
    assert_eq!(rejection.kind(), RejectionKind::InvalidToken);
    assert_eq!(rejection.description(), "token too large");
    let big_other = mint(json!({ "iss": other, "pad": "x".repeat(1100) }));
    assert!(auth.verify(&big_other).await.is_ok());
    assert!(auth.verify(&token_of_len(1024)).await.is_ok());
}

#[test]
fn kid_must_be_a_short_non_empty_string() {
    let v = validation();
    let named = SigningKey::hmac(Algorithm::HS256, SECRET)
        .unwrap()
        .with_kid("k".repeat(256));
    let key_256 = named.verifying_key().clone();
    let ok_256 = named.sign(&claims(json!({}))).unwrap();
    assert_eq!(outcome(verify_with_key(&v, &ok_256, &key_256)), "ok");
    let with_kid = |kid: Value| mint_with_header(json!({ "kid": kid }), json!({}));
    let cases = [
        (
            "257 bytes",
            with_kid(json!("k".repeat(257))),
            "Malformed(\"kid\")",
        ),
        (
            "huge",
            with_kid(json!("k".repeat(8000))),
            "Malformed(\"kid\")",
        ),
        ("empty", with_kid(json!("")), "Malformed(\"kid\")"),
        ("number", with_kid(json!(1)), "Malformed(\"kid\")"),
        ("null", with_kid(json!(null)), "Malformed(\"kid\")"),
        ("array", with_kid(json!(["a"])), "Malformed(\"kid\")"),
        (
            "object",
            with_kid(json!({ "kid": "a" })),
            "Malformed(\"kid\")",
        ),
        // The signer's key has no kid, so any kid the token names is left to key selection.
        ("string", with_kid(json!("any")), "ok"),
    ];
    check_table(&v, &cases);
    // A key with a kid refuses tokens naming another one.
    let other_kid = mint_with_header(json!({ "kid": "other" }), json!({}));
    let keyed = signer().with_kid("mine");
    assert_eq!(
        outcome(verify_with_key(&v, &other_kid, keyed.verifying_key())),
        "Key(UnknownKid)"
    );
    let ctx = verify_with_key(
        &v,
        &keyed.sign(&claims(json!({}))).unwrap(),
        keyed.verifying_key(),
    )
    .unwrap();
    assert_eq!(ctx.key_id(), Some("mine"));
}

#[test]
fn alg_is_exact_allowed_and_bound_to_the_key() {
    let v = validation();
    let claims_json = default_claims_json();
    let unsigned = |alg: &str| {
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}"}}"#)),
            URL_SAFE_NO_PAD.encode(&claims_json)
        )
    };
    let cases = [
        ("none unsigned", unsigned("none"), "UnsupportedAlgorithm"),
        (
            "None",
            mint_raw(r#"{"alg":"None"}"#, &claims_json),
            "UnsupportedAlgorithm",
        ),
        (
            "none signed",
            mint_raw(r#"{"alg":"none"}"#, &claims_json),
            "UnsupportedAlgorithm",
        ),
        (
            "lower case hs256",
            mint_raw(r#"{"alg":"hs256"}"#, &claims_json),
            "UnsupportedAlgorithm",
        ),
        (
            "zero width space",
            mint_raw("{\"alg\":\"HS256\\u200b\"}", &claims_json),
            "UnsupportedAlgorithm",
        ),
        (
            "missing",
            mint_raw(r#"{"typ":"JWT"}"#, &claims_json),
            "UnsupportedAlgorithm",
        ),
        (
            "number",
            mint_raw(r#"{"alg":256}"#, &claims_json),
            "UnsupportedAlgorithm",
        ),
        (
            "null",
            mint_raw(r#"{"alg":null}"#, &claims_json),
            "UnsupportedAlgorithm",
        ),
        (
            "unknown",
            mint_raw(r#"{"alg":"HS1024"}"#, &claims_json),
            "UnsupportedAlgorithm",
        ),
        (
            "exact HS256",
            mint_raw(r#"{"alg":"HS256"}"#, &claims_json),
            "ok",
        ),
    ];
    check_table(&v, &cases);

    // Not in the allow-list: refused before any key is involved.
    let es_only = validation().algorithms([Algorithm::ES256]);
    assert_eq!(
        outcome(verify(&es_only, &mint(json!({})))),
        "AlgorithmNotAllowed"
    );

    // HS384 on a 32-byte HS256 key: allowed by the issuer, not bound to the key.
    let hs384 = SigningKey::hmac(Algorithm::HS384, &[7u8; 48]).unwrap();
    let token = hs384.sign(&claims(json!({}))).unwrap();
    assert_eq!(outcome(verify(&v, &token)), "Key(AlgorithmMismatch)");
}

#[test]
fn rs_hs_confusion_is_refused() {
    // The classic attack: HS256 keyed with the bytes of the RSA public key the verifier holds.
    let pem = include_bytes!("../../tests/fixtures/keys/rsa-1.pub.pem");
    let rsa = crate::keys::VerifyingKey::from_pem(pem).unwrap();
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(default_claims_json());
    let forged = sign_input(&format!("{header}.{payload}"), pem);
    assert_eq!(
        outcome(verify_with_key(&validation(), &forged, &rsa)),
        "Key(AlgorithmMismatch)"
    );
    // Even an allow-list that names HS256 does not bind it to an RSA key.
    let v = validation().algorithms([Algorithm::HS256, Algorithm::RS256]);
    assert_eq!(
        outcome(verify_with_key(&v, &forged, &rsa)),
        "Key(AlgorithmMismatch)"
    );
}

#[test]
fn signatures_are_checked() {
    let v = validation();
    let token = mint(json!({}));
    let (input, _) = token.rsplit_once('.').unwrap();
    let cases = [
        (
            "other secret",
            sign_input(input, &[9u8; 32]),
            "BadSignature",
        ),
        (
            "tampered payload",
            format!(
                "{}.{}.{}",
                token.split('.').next().unwrap(),
                URL_SAFE_NO_PAD.encode(claims(json!({ "sub": "admin" })).to_string()),
                token.rsplit('.').next().unwrap()
            ),
            "BadSignature",
        ),
        (
            "truncated signature",
            // 40 characters: still canonical base64url, 30 bytes.
            token[..token.len() - 3].to_owned(),
            "BadSignature",
        ),
        (
            "signature of an embedded jwk is ignored",
            {
                let header =
                    json!({ "jwk": { "kty": "oct", "k": URL_SAFE_NO_PAD.encode([9u8; 32]) } });
                let Value::Object(h) = header else {
                    unreachable!()
                };
                SigningKey::hmac(Algorithm::HS256, &[9u8; 32])
                    .unwrap()
                    .sign_with_header(h, &claims(json!({})))
                    .unwrap()
            },
            "BadSignature",
        ),
    ];
    check_table(&v, &cases);
}

#[test]
fn sub_must_be_a_non_empty_string_unless_optional() {
    let v = validation();
    assert!(v.subject_required());
    assert_eq!(
        outcome(verify(&v, &mint(json!({ "sub": 123 })))),
        "InvalidClaim(\"sub\")"
    );
    for missing in [json!({ "sub": null }), json!({ "sub": "" })] {
        assert_eq!(
            outcome(verify(&v, &mint(missing.clone()))),
            "MissingClaim(\"sub\")",
            "{missing}"
        );
        assert_eq!(
            outcome(verify(&v.clone().require_sub(), &mint(missing.clone()))),
            "MissingClaim(\"sub\")"
        );
        // Configured otherwise: no subject, and none forwarded.
        let optional = v.clone().require_subject(false);
        let ctx = verify(&optional, &mint(missing)).unwrap();
        assert_eq!(ctx.subject(), None);
    }
    assert_eq!(
        outcome(verify(
            &v.clone().require_subject(false),
            &mint(json!({ "sub": 123 }))
        )),
        "InvalidClaim(\"sub\")"
    );
}

#[test]
fn identities_that_cannot_be_forwarded_exactly_are_refused() {
    use crate::context::IdentityError;
    let v = validation();
    let unrepresentable = |what: &'static str| {
        format!(
            "{:?}",
            VerifyError::Identity(IdentityError::Unrepresentable(what))
        )
    };
    let cases = [
        (
            "sub NUL",
            json!({ "sub": "alice\u{0}" }),
            unrepresentable("sub"),
        ),
        (
            "sub CRLF",
            json!({ "sub": "alice\r\nx-admin: 1" }),
            unrepresentable("sub"),
        ),
        (
            "sub LF",
            json!({ "sub": "alice\n" }),
            unrepresentable("sub"),
        ),
        ("sub tab", json!({ "sub": "a\tb" }), unrepresentable("sub")),
        (
            "sub DEL",
            json!({ "sub": "a\u{7f}" }),
            unrepresentable("sub"),
        ),
        (
            "sub non-ASCII",
            json!({ "sub": "ünïcode" }),
            unrepresentable("sub"),
        ),
        (
            "sub leading space",
            json!({ "sub": " alice" }),
            unrepresentable("sub"),
        ),
        (
            "sub trailing space",
            json!({ "sub": "alice " }),
            unrepresentable("sub"),
        ),
        (
            "sub inner space",
            json!({ "sub": "alice smith" }),
            "ok".to_owned(),
        ),
        (
            "tenant CR",
            json!({ "tenant_id": "acme\r" }),
            unrepresentable("tenant"),
        ),
        (
            "tenant C1",
            json!({ "tenant_id": "acme\u{85}" }),
            unrepresentable("tenant"),
        ),
        (
            "tenant non-ASCII",
            json!({ "tenant_id": "acmé" }),
            "ok".to_owned(),
        ),
        (
            "role LF",
            json!({ "roles": ["a", "b\nc"] }),
            unrepresentable("roles"),
        ),
        ("role comma", json!({ "roles": ["a,b"] }), "ok".to_owned()),
        (
            "scope NUL",
            json!({ "scp": ["a\u{0}"] }),
            unrepresentable("scopes"),
        ),
    ];
    for (name, over, expected) in cases {
        assert_eq!(outcome(verify(&v, &mint(over))), expected, "{name}");
    }
    let err = verify(&v, &mint(json!({ "sub": "a\r\nb" }))).unwrap_err();
    assert_eq!(err.description(), "identity cannot be forwarded exactly");
    assert_eq!(
        err.into_rejection().kind(),
        crate::RejectionKind::InvalidToken
    );
    let ctx = verify(&v, &mint(json!({ "tenant_id": "acmé" }))).unwrap();
    assert_eq!(ctx.tenant(), Some("acmé"));
    assert_eq!(ctx.issuer(), Some(ISS));
}

#[test]
fn issuers_must_be_forwardable() {
    for bad in [
        "https://idp.example.test/\u{e9}",
        " https://idp",
        "https://i\ndp",
    ] {
        let err = Validation::new(bad).audiences([AUD]).check().unwrap_err();
        assert!(err.to_string().contains("visible ASCII"), "{err}");
    }
}

#[test]
fn roles_from_claim_paths() {
    let cases: &[(&str, &str, Value, &[&str])] = &[
        (
            "array",
            "roles",
            json!({ "roles": ["clerk", "admin"] }),
            &["clerk", "admin"],
        ),
        ("string", "roles", json!({ "roles": "clerk" }), &["clerk"]),
        (
            "non-string items ignored",
            "roles",
            json!({ "roles": ["a", 1, null, {"b": "c"}, ["d"], true, "e"] }),
            &["a", "e"],
        ),
        ("number", "roles", json!({ "roles": 5 }), &[]),
        ("object", "roles", json!({ "roles": { "a": "b" } }), &[]),
        ("missing", "roles", json!({}), &[]),
        (
            "dotted",
            "realm_access.roles",
            json!({ "realm_access": { "roles": ["clerk"] }, "roles": ["top"] }),
            &["clerk"],
        ),
        (
            "dotted string",
            "realm_access.roles",
            json!({ "realm_access": { "roles": "clerk" } }),
            &["clerk"],
        ),
        (
            "dotted through a non-object",
            "realm_access.roles",
            json!({ "realm_access": ["roles"] }),
            &[],
        ),
        (
            "deep",
            "resource_access.orders.roles",
            json!({ "resource_access": { "orders": { "roles": ["r"] } } }),
            &["r"],
        ),
        (
            "top-level name containing dots",
            "https://example.test/claims.roles",
            json!({ "https://example.test/claims.roles": ["url"] }),
            &["url"],
        ),
    ];
    for (name, path, over, expected) in cases {
        let v = validation().roles_claim(*path);
        let ctx = verify(&v, &mint(over.clone())).unwrap();
        assert_eq!(ctx.roles(), *expected, "{name}");
    }
}

#[test]
fn scopes_from_scope_and_scp() {
    let cases: &[(&str, Value, &[&str])] = &[
        (
            "scope",
            json!({ "scope": "orders:read orders:write" }),
            &["orders:read", "orders:write"],
        ),
        (
            "scope extra spaces",
            json!({ "scope": " a  b " }),
            &["a", "b"],
        ),
        ("scope empty", json!({ "scope": "" }), &[]),
        ("scp string", json!({ "scp": "a b" }), &["a", "b"]),
        (
            "scp array",
            json!({ "scp": ["a", "b c", 3] }),
            &["a", "b c"],
        ),
        (
            "scope wins over scp",
            json!({ "scope": "a", "scp": ["b"] }),
            &["a"],
        ),
        (
            "scope not a string, scp used",
            json!({ "scope": ["x"], "scp": "b" }),
            &["b"],
        ),
        ("scope array only", json!({ "scope": ["x"] }), &[]),
        ("scp number", json!({ "scp": 1 }), &[]),
        ("none", json!({}), &[]),
    ];
    for (name, over, expected) in cases {
        let ctx = verify(&validation(), &mint(over.clone())).unwrap();
        assert_eq!(ctx.scopes(), *expected, "{name}");
    }
}

#[test]
fn tenant_from_string_or_number() {
    let cases: &[(&str, Validation, Value, Option<&str>)] = &[
        (
            "string",
            validation(),
            json!({ "tenant_id": "acme" }),
            Some("acme"),
        ),
        (
            "integer",
            validation(),
            json!({ "tenant_id": 42 }),
            Some("42"),
        ),
        (
            "negative",
            validation(),
            json!({ "tenant_id": -7 }),
            Some("-7"),
        ),
        ("bool", validation(), json!({ "tenant_id": true }), None),
        (
            "array",
            validation(),
            json!({ "tenant_id": ["acme"] }),
            None,
        ),
        ("missing", validation(), json!({}), None),
        (
            "dotted",
            validation().tenant_claim("org.id"),
            json!({ "org": { "id": "o-1" }, "tenant_id": "no" }),
            Some("o-1"),
        ),
        (
            "no tenant",
            validation().no_tenant(),
            json!({ "tenant_id": "acme" }),
            None,
        ),
    ];
    for (name, v, over, expected) in cases {
        let ctx = verify(v, &mint(over.clone())).unwrap();
        assert_eq!(ctx.tenant(), *expected, "{name}");
    }
}

#[test]
fn typed_claims() {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Claims {
        sub: String,
        email: String,
        exp: u64,
        #[serde(default)]
        groups: Vec<String>,
    }
    let token = mint(json!({ "email": "u@example.test", "groups": ["g1"] }));
    let ctx = verify(&validation(), &token).unwrap();
    assert_eq!(
        ctx.claims::<Claims>().unwrap(),
        Claims {
            sub: "user-123".into(),
            email: "u@example.test".into(),
            exp: NOW + 3600,
            groups: vec!["g1".into()],
        }
    );
    assert_eq!(ctx.claim("email"), Some(&json!("u@example.test")));

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Wrong {
        email: u32,
    }
    assert!(ctx.claims::<Wrong>().is_err());
}

#[test]
fn claims_are_kept_as_text_and_parsed_once_on_demand() {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Claims {
        sub: String,
        org: Value,
    }
    let org = json!({"name": "acme", "units": [{"id": 1}, {"id": 2}]});
    let token = mint(json!({ "org": org, "email": "u@example.test" }));
    let ctx = verify(&validation(), &token).unwrap();
    // Deserializing and weighing read the text; no map is built.
    assert_eq!(
        ctx.claims::<Claims>().unwrap(),
        Claims {
            sub: "user-123".into(),
            org: org.clone()
        }
    );
    assert!(ctx.claims_heap_bytes() > default_claims_json().len());
    assert!(!ctx.claims_parsed());
    // The first map access parses it; later ones (and clones) share it.
    let map = ctx.claims_map();
    assert!(ctx.claims_parsed());
    let Value::Object(expected) = claims(json!({ "org": org, "email": "u@example.test" })) else {
        unreachable!()
    };
    assert_eq!(map, &expected);
    assert!(std::ptr::eq(map, ctx.clone().claims_map()));
    assert_eq!(ctx.claim("org.name"), Some(&json!("acme")));
    assert_eq!(ctx.claim("org.units"), Some(&org["units"]));
    // The estimate is the one of the parsed map.
    let tree: usize = expected
        .iter()
        .map(|(k, v)| crate::context::member_bytes(k.len(), crate::context::value_bytes(v)))
        .sum();
    let json_len = URL_SAFE_NO_PAD
        .decode(token.split('.').nth(1).unwrap())
        .unwrap()
        .len();
    // The text as decoded: its length, rounded up to a base64 group at most.
    let text = ctx.claims_heap_bytes() - tree;
    assert!(
        (json_len..json_len + 3).contains(&text),
        "{text} for {json_len}"
    );
}

#[test]
fn roles_and_tenant_paths_outside_the_kept_members() {
    // Paths that are not kept members are found in the text: nested, dotted names first.
    let v = validation()
        .roles_claim("realm_access.roles")
        .tenant_claim("https://example.test/tenant");
    let token = mint(json!({
        "realm_access": {"roles": ["r1", 2, "r2"]},
        "realm_access.roles": ["whole-name-wins"],
        "https://example.test/tenant": "acme",
    }));
    let ctx = verify(&v, &token).unwrap();
    assert_eq!(ctx.roles(), ["whole-name-wins"]);
    assert_eq!(ctx.tenant(), Some("acme"));
    let token = mint(json!({"realm_access": {"roles": ["r1", 2, "r2"]}}));
    let ctx = verify(&v, &token).unwrap();
    assert_eq!(ctx.roles(), ["r1", "r2"]);
    assert_eq!(ctx.tenant(), None);
}

#[test]
fn a_remembered_header_answers_only_for_the_same_text() {
    let v = validation();
    let claims_ok = default_claims_json();
    let plain = mint_raw(r#"{"alg":"HS256","typ":"JWT"}"#, &claims_ok);
    let other_typ = mint_raw(r#"{"alg":"HS256","typ":"dpop+jwt"}"#, &claims_ok);
    let duplicate = mint_raw(r#"{"alg":"HS256","alg":"HS256"}"#, &claims_ok);
    let none = mint_raw(r#"{"alg":"none","typ":"JWT"}"#, &claims_ok);
    let long_kid = mint_raw(
        &format!(r#"{{"alg":"HS256","kid":"{}"}}"#, "k".repeat(300)),
        &claims_ok,
    );
    // Every order, twice: refused headers are never remembered, and the remembered one never
    // answers for another text.
    for _ in 0..2 {
        for (token, expected) in [
            (&plain, "ok"),
            (&plain, "ok"),
            (&other_typ, "NotAccessTokenType"),
            (&plain, "ok"),
            (&duplicate, "Malformed(\"header\")"),
            (&duplicate, "Malformed(\"header\")"),
            (&none, "UnsupportedAlgorithm"),
            (&long_kid, "Malformed(\"kid\")"),
            (&plain, "ok"),
        ] {
            assert_eq!(outcome(verify(&v, token)), expected);
        }
    }
    // A long header (not remembered) is checked in full every time.
    let long = mint_raw(
        &format!(r#"{{"alg":"HS256","x":"{}"}}"#, "y".repeat(600)),
        &claims_ok,
    );
    assert_eq!(outcome(verify(&v, &long)), "ok");
    assert_eq!(outcome(verify(&v, &plain)), "ok");
}

#[test]
fn errors_never_echo_token_content() {
    let token = mint_raw(
        r#"{"alg":"HS256","kid":"SECRET-KID-MARKER"}"#,
        &claims(json!({ "iss": "https://SECRET-ISS-MARKER" })).to_string(),
    );
    let err = verify(&validation(), &token).unwrap_err();
    let texts = [
        err.to_string(),
        err.description().to_owned(),
        format!("{err:?}"),
    ];
    let rejection = err.into_rejection();
    for text in texts
        .iter()
        .chain([rejection.to_string(), rejection.description().to_owned()].iter())
    {
        assert!(!text.contains("MARKER"), "{text}");
        for segment in token.split('.') {
            assert!(!text.contains(segment), "{text}");
        }
    }
    assert_eq!(rejection.kind(), RejectionKind::InvalidToken);
}

#[test]
fn rejections_by_error() {
    let cases: Vec<(VerifyError, RejectionKind, &str)> = vec![
        (
            VerifyError::Expired,
            RejectionKind::InvalidToken,
            "token expired",
        ),
        (
            VerifyError::TooLarge,
            RejectionKind::InvalidToken,
            "token too large",
        ),
        (
            VerifyError::Key(KeyError::AmbiguousKey),
            RejectionKind::InvalidToken,
            "token must name its key (kid)",
        ),
        (
            VerifyError::Key(KeyError::AlgorithmMismatch),
            RejectionKind::InvalidToken,
            "algorithm not allowed for key",
        ),
        (
            VerifyError::Key(KeyError::UnknownKid),
            RejectionKind::InvalidToken,
            "no matching key",
        ),
        (
            VerifyError::Key(KeyError::Unavailable {
                retry_after: Duration::from_secs(7),
            }),
            RejectionKind::KeysUnavailable,
            "verification keys are temporarily unavailable",
        ),
    ];
    for (err, kind, description) in cases {
        let rejection = err.into_rejection();
        assert_eq!(rejection.kind(), kind);
        assert_eq!(rejection.description(), description);
    }
    let unavailable = VerifyError::Key(KeyError::Unavailable {
        retry_after: Duration::from_secs(7),
    })
    .into_rejection();
    assert_eq!(unavailable.retry_after(), Some(Duration::from_secs(7)));
}

#[test]
fn configuration_checks() {
    let cases: &[(&str, Validation, bool)] = &[
        ("complete", Validation::new(ISS).audiences([AUD]), true),
        ("any audience", Validation::new(ISS).any_audience(), true),
        ("empty issuer", Validation::new("").audiences([AUD]), false),
        ("no audience", Validation::new(ISS), false),
        (
            "empty audience",
            Validation::new(ISS).audiences([""]),
            false,
        ),
        (
            "empty allow-list",
            Validation::new(ISS).audiences([AUD]).algorithms([]),
            false,
        ),
        (
            "empty roles path",
            Validation::new(ISS).audiences([AUD]).roles_claim(""),
            false,
        ),
        (
            "empty tenant path",
            Validation::new(ISS).audiences([AUD]).tenant_claim(""),
            false,
        ),
        (
            "tiny limit",
            Validation::new(ISS).audiences([AUD]).max_token_bytes(63),
            false,
        ),
        (
            "small limit",
            Validation::new(ISS).audiences([AUD]).max_token_bytes(64),
            true,
        ),
    ];
    for (name, v, ok) in cases {
        assert_eq!(v.check().is_ok(), *ok, "{name}");
    }
    let keys = StaticKeys::new([signer().verifying_key().clone()]);
    assert!(JwtAuthenticator::new(keys.clone(), Validation::new(ISS)).is_err());
    // An allowed algorithm no key can verify is a configuration error.
    assert!(
        JwtAuthenticator::new(
            keys.clone(),
            validation().algorithms([Algorithm::HS256, Algorithm::RS256])
        )
        .is_err()
    );
    assert!(
        JwtAuthenticator::new(keys.clone(), validation())
            .unwrap()
            .with_issuer(keys, validation())
            .is_err(),
        "an issuer configured twice"
    );
}

#[tokio::test]
async fn the_authenticator_applies_the_same_rules() {
    let keys = StaticKeys::new([signer().verifying_key().clone()]);
    let auth = JwtAuthenticator::new(keys, validation().required_typ("at+jwt")).unwrap();
    let good = mint_with_header(json!({ "typ": "at+jwt" }), json!({}));
    assert_eq!(
        auth.verify(&good).await.unwrap().subject(),
        Some("user-123")
    );
    for (name, token) in [
        ("typ", mint(json!({}))),
        (
            "untrusted issuer",
            mint_with_header(
                json!({ "typ": "at+jwt" }),
                json!({ "iss": "https://evil.test" }),
            ),
        ),
        (
            "iss array",
            mint_with_header(json!({ "typ": "at+jwt" }), json!({ "iss": [ISS] })),
        ),
        (
            "expired",
            mint_with_header(json!({ "typ": "at+jwt" }), json!({ "exp": NOW - 3600 })),
        ),
        (
            "aud",
            mint_with_header(json!({ "typ": "at+jwt" }), json!({ "aud": "x" })),
        ),
        (
            "crit",
            mint_with_header(json!({ "typ": "at+jwt", "crit": ["x"] }), json!({})),
        ),
        ("malformed", "a.b.c".to_owned()),
    ] {
        let rejection = auth.verify(&token).await.unwrap_err();
        assert_eq!(rejection.kind(), RejectionKind::InvalidToken, "{name}");
    }
}
