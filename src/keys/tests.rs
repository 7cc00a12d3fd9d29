//! Key loading from the committed fixtures (minted by another JOSE implementation), the
//! algorithm binding table, [`KeySet::select`] and [`SigningKey`] round trips.

use super::*;
use crate::jwt::{self, Validation};
use serde_json::{Value, json};

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/keys/",
            $name
        ))
    };
}

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keys")
        .join(name)
}

const TOKENS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/tokens.json"
));

/// A fixture token by name.
fn fixture_token(name: &str) -> String {
    let doc: Value = serde_json::from_str(TOKENS).unwrap();
    doc["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no fixture token {name}"))["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn algs(list: &[Algorithm]) -> AlgorithmSet {
    list.iter().copied().collect()
}

fn invalid_text(result: Result<VerifyingKey, KeyError>) -> String {
    match result {
        Ok(key) => panic!("expected an invalid key, got {key:?}"),
        Err(KeyError::InvalidKey(text)) => text,
        Err(other) => panic!("expected InvalidKey, got {other:?}"),
    }
}

/// Whether `key` verifies the signature of a (fixture) token, by the token's own `alg`.
fn verifies(key: &VerifyingKey, token: &str) -> bool {
    use base64::Engine as _;
    let (input, signature) = token.rsplit_once('.').unwrap();
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(input.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    let alg: Algorithm = header["alg"].as_str().unwrap().parse().unwrap();
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .unwrap();
    key.verify(alg, input.as_bytes(), &signature)
}

#[test]
fn public_pems_of_every_kind_load() {
    let rsa = KeyType::Rsa { bits: 2048 };
    let cases: &[(&str, &[u8], KeyType, AlgorithmSet, &str)] = &[
        (
            "rsa-1 SPKI",
            fixture!("rsa-1.pub.pem"),
            rsa,
            AlgorithmSet::RSA,
            "rs256_valid",
        ),
        (
            "rsa-1 PKCS#1",
            fixture!("rsa-1.pkcs1.pub.pem"),
            rsa,
            AlgorithmSet::RSA,
            "ps512_valid",
        ),
        (
            "rsa-2 SPKI",
            fixture!("rsa-2.pub.pem"),
            rsa,
            AlgorithmSet::RSA,
            "rs256_kid_rsa2_valid",
        ),
        (
            "rsa-2 PKCS#1",
            fixture!("rsa-2.pkcs1.pub.pem"),
            rsa,
            AlgorithmSet::RSA,
            "rs256_kid_rsa2_valid",
        ),
        (
            "EC P-256",
            fixture!("ec256-1.pub.pem"),
            KeyType::EcP256,
            algs(&[Algorithm::ES256]),
            "es256_valid",
        ),
        (
            "EC P-384",
            fixture!("ec384-1.pub.pem"),
            KeyType::EcP384,
            algs(&[Algorithm::ES384]),
            "es384_valid",
        ),
        (
            "Ed25519",
            fixture!("ed-1.pub.pem"),
            KeyType::Ed25519,
            algs(&[Algorithm::EdDSA]),
            "eddsa_valid",
        ),
    ];
    for (name, pem, key_type, algorithms, token) in cases {
        let key = VerifyingKey::from_pem(pem).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(key.key_type(), *key_type, "{name}");
        assert_eq!(key.algorithms(), *algorithms, "{name}");
        assert_eq!(key.kid(), None, "{name}");
        // The key is the right one: it verifies the independently minted fixture token.
        assert!(
            verifies(&key, &fixture_token(token)),
            "{name} verifies {token}"
        );
        assert!(
            !verifies(&key, &fixture_token("tampered_payload")),
            "{name}"
        );
    }
    // The two encodings of one RSA key verify the same tokens; rsa-2 does not verify rsa-1's.
    let rsa2 = VerifyingKey::from_pem(fixture!("rsa-2.pub.pem")).unwrap();
    assert!(!verifies(&rsa2, &fixture_token("rs256_valid")));
    let pkcs1 = VerifyingKey::from_pem(fixture!("rsa-1.pkcs1.pub.pem")).unwrap();
    assert!(verifies(&pkcs1, &fixture_token("rs256_valid")));
    // A file source says the same.
    let keys = StaticKeys::from_pem_file(fixture_path("ec256-1.pub.pem")).unwrap();
    assert_eq!(keys.algorithms(), Some(algs(&[Algorithm::ES256])));
}

#[test]
fn private_key_pems_are_refused() {
    for (name, pem) in [
        ("rsa-1", &fixture!("rsa-1.key.pem")[..]),
        ("rsa-2", fixture!("rsa-2.key.pem")),
        ("rsa-weak", fixture!("rsa-weak.key.pem")),
        ("ec256-1", fixture!("ec256-1.key.pem")),
        ("ec384-1", fixture!("ec384-1.key.pem")),
        ("ed-1", fixture!("ed-1.key.pem")),
    ] {
        let text = invalid_text(VerifyingKey::from_pem(pem));
        assert!(text.contains("PRIVATE KEY"), "{name}: {text}");
        assert!(text.contains("public key"), "{name}: {text}");
    }
    // Other private labels are refused by their label alone, whatever the body.
    for label in [
        "RSA PRIVATE KEY",
        "EC PRIVATE KEY",
        "ENCRYPTED PRIVATE KEY",
        "OPENSSH PRIVATE KEY",
    ] {
        let pem = format!("-----BEGIN {label}-----\nAAAA\n-----END {label}-----\n");
        let text = invalid_text(VerifyingKey::from_pem(pem.as_bytes()));
        assert!(text.contains(label), "{text}");
    }
    assert!(StaticKeys::from_pem_file(fixture_path("rsa-1.key.pem")).is_err());
}

#[test]
fn weak_rsa_and_junk_pems_are_refused() {
    let text = invalid_text(VerifyingKey::from_pem(fixture!("rsa-weak.pub.pem")));
    assert!(text.contains("1024 bits"), "{text}");
    assert!(text.contains("2048"), "{text}");

    let cases: &[(&str, &[u8], &str)] = &[
        ("not PEM", b"hello", "no PEM block"),
        (
            "not UTF-8",
            b"\xff\xfe-----BEGIN PUBLIC KEY-----",
            "not text",
        ),
        ("empty", b"", "no PEM block"),
        (
            "unsupported label",
            b"-----BEGIN DH PARAMETERS-----\nAAAA\n-----END DH PARAMETERS-----\n",
            "unsupported PEM block",
        ),
        (
            "garbage body",
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            "unsupported key",
        ),
    ];
    for (name, pem, expected) in cases {
        let text = invalid_text(VerifyingKey::from_pem(pem));
        assert!(text.contains(expected), "{name}: {text}");
    }
}

#[test]
fn hmac_secrets_bind_by_length() {
    let cases: &[(usize, Option<&[Algorithm]>)] = &[
        (0, None),
        (16, None),
        (31, None),
        (32, Some(&[Algorithm::HS256])),
        (47, Some(&[Algorithm::HS256])),
        (48, Some(&[Algorithm::HS256, Algorithm::HS384])),
        (63, Some(&[Algorithm::HS256, Algorithm::HS384])),
        (
            64,
            Some(&[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]),
        ),
        (
            200,
            Some(&[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]),
        ),
    ];
    for (len, expected) in cases {
        let result = VerifyingKey::hmac(&vec![b'k'; *len]);
        match expected {
            None => {
                let text = invalid_text(result);
                assert!(text.contains(&format!("{len} bytes")), "{text}");
            }
            Some(list) => {
                let key = result.unwrap();
                assert_eq!(key.key_type(), KeyType::Hmac);
                assert_eq!(key.algorithms(), algs(list), "{len} bytes");
            }
        }
    }
}

#[test]
fn hmac_secret_files() {
    let keys = StaticKeys::from_hmac_secret_file(fixture_path("hmac.secret")).unwrap();
    assert_eq!(keys.algorithms(), Some(AlgorithmSet::HMAC));
    let key = &keys.key_set().keys()[0];
    for token in ["hs256_valid", "hs384_valid", "hs512_valid"] {
        assert!(verifies(key, &fixture_token(token)), "{token}");
    }
    assert_eq!(key.kid(), None);

    match StaticKeys::from_hmac_secret_file(fixture_path("hmac-short.secret")) {
        Err(KeyError::InvalidKey(text)) => assert!(text.contains("16 bytes"), "{text}"),
        other => panic!("a 16-byte secret must be refused: {other:?}"),
    }
    match StaticKeys::from_hmac_secret_file(fixture_path("no-such.secret")) {
        Err(KeyError::Io { path, .. }) => assert!(path.ends_with("no-such.secret")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn hmac_secret_file_trailing_line_breaks_are_not_part_of_the_secret() {
    let secret = std::fs::read(fixture_path("hmac.secret")).unwrap();
    let dir = std::env::temp_dir().join(format!("tower-gatekeeper-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = fixture_token("hs512_valid");
    for (name, suffix, verifies_token) in [
        ("lf", &b"\n"[..], true),
        ("crlf", b"\r\n", true),
        ("two", b"\n\n", true),
        ("space", b" ", false),
        ("tab", b"\t", false),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, [&secret[..], suffix].concat()).unwrap();
        let keys = StaticKeys::from_hmac_secret_file(&path).unwrap();
        assert_eq!(
            verifies(&keys.key_set().keys()[0], &token),
            verifies_token,
            "{name}"
        );
    }
    // A file of line breaks only is an empty (too short) secret.
    let path = dir.join("empty");
    std::fs::write(&path, b"\r\n\n").unwrap();
    assert!(StaticKeys::from_hmac_secret_file(&path).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn jwks_fixtures_load_with_their_bindings() {
    let keys = StaticKeys::from_jwks_file(fixture_path("jwks.json")).unwrap();
    let loaded: Vec<_> = keys
        .key_set()
        .keys()
        .iter()
        .map(|k| (k.kid().unwrap().to_owned(), k.key_type(), k.algorithms()))
        .collect();
    assert_eq!(
        loaded,
        [
            (
                "rsa-1".to_owned(),
                KeyType::Rsa { bits: 2048 },
                algs(&[Algorithm::RS256])
            ),
            (
                "ec256-1".to_owned(),
                KeyType::EcP256,
                algs(&[Algorithm::ES256])
            ),
            (
                "ec384-1".to_owned(),
                KeyType::EcP384,
                algs(&[Algorithm::ES384])
            ),
            (
                "ed-1".to_owned(),
                KeyType::Ed25519,
                algs(&[Algorithm::EdDSA])
            ),
        ]
    );
    let set = keys.key_set();
    for (token, kid) in [
        ("rs256_valid", "rsa-1"),
        ("es256_valid", "ec256-1"),
        ("es384_valid", "ec384-1"),
        ("eddsa_valid", "ed-1"),
    ] {
        let key = set.keys().iter().find(|k| k.kid() == Some(kid)).unwrap();
        assert!(verifies(key, &fixture_token(token)), "{token}");
    }
    // The JWK's alg binds: rsa-1 from jwks.json may not verify a correct PS256 signature.
    let rsa1 = &set.keys()[0];
    assert!(!verifies(rsa1, &fixture_token("ps256_on_rs256_bound_key")));

    let noalg = StaticKeys::from_jwks_file(fixture_path("jwks-rsa-noalg.json")).unwrap();
    let kids: Vec<_> = noalg
        .key_set()
        .keys()
        .iter()
        .map(|k| k.kid().unwrap())
        .collect();
    assert_eq!(kids, ["rsa-1", "rsa-2"]);
    for key in noalg.key_set().keys() {
        assert_eq!(key.algorithms(), AlgorithmSet::RSA);
        assert_eq!(key.key_type(), KeyType::Rsa { bits: 2048 });
    }
    assert!(verifies(
        &noalg.key_set().keys()[0],
        &fixture_token("ps256_valid")
    ));
    assert!(verifies(
        &noalg.key_set().keys()[1],
        &fixture_token("rs256_kid_rsa2_valid")
    ));

    let single = std::fs::read_to_string(fixture_path("rsa-1.jwk.json")).unwrap();
    let key = VerifyingKey::from_jwk_str(&single).unwrap();
    assert_eq!(key.kid(), Some("rsa-1"));
    assert_eq!(key.algorithms(), AlgorithmSet::RSA);
    assert!(verifies(&key, &fixture_token("rs512_valid")));

    assert!(matches!(
        StaticKeys::from_jwks_file(fixture_path("missing.json")),
        Err(KeyError::Io { .. })
    ));
}

fn rsa1_jwk() -> Value {
    serde_json::from_slice(fixture!("rsa-1.jwk.json")).unwrap()
}

fn ec256_jwk() -> Value {
    let jwks: Value = serde_json::from_slice(fixture!("jwks.json")).unwrap();
    let mut jwk = jwks["keys"][1].clone();
    jwk.as_object_mut().unwrap().remove("alg");
    jwk
}

fn ed_jwk() -> Value {
    let jwks: Value = serde_json::from_slice(fixture!("jwks.json")).unwrap();
    let mut jwk = jwks["keys"][3].clone();
    jwk.as_object_mut().unwrap().remove("alg");
    jwk
}

fn oct_jwk(len: usize) -> Value {
    use base64::Engine as _;
    json!({ "kty": "oct", "k": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(vec![3u8; len]) })
}

fn with(mut jwk: Value, member: &str, value: Value) -> Value {
    jwk.as_object_mut()
        .unwrap()
        .insert(member.to_owned(), value);
    jwk
}

#[test]
fn jwk_use_and_key_ops() {
    let cases = [
        ("use sig", with(rsa1_jwk(), "use", json!("sig")), true),
        (
            "no use",
            {
                let mut j = rsa1_jwk();
                j.as_object_mut().unwrap().remove("use");
                j
            },
            true,
        ),
        ("use enc", with(rsa1_jwk(), "use", json!("enc")), false),
        ("use other", with(rsa1_jwk(), "use", json!("tls")), false),
        (
            "key_ops verify",
            with(rsa1_jwk(), "key_ops", json!(["verify"])),
            true,
        ),
        (
            "key_ops sign+verify",
            with(rsa1_jwk(), "key_ops", json!(["sign", "verify"])),
            true,
        ),
        (
            "key_ops sign",
            with(rsa1_jwk(), "key_ops", json!(["sign"])),
            false,
        ),
        (
            "key_ops encrypt",
            with(rsa1_jwk(), "key_ops", json!(["encrypt", "wrapKey"])),
            false,
        ),
        (
            "key_ops empty",
            with(rsa1_jwk(), "key_ops", json!([])),
            false,
        ),
        ("oct use enc", with(oct_jwk(32), "use", json!("enc")), false),
        (
            "ec key_ops deriveKey",
            with(ec256_jwk(), "key_ops", json!(["deriveKey"])),
            false,
        ),
    ];
    for (name, jwk, ok) in cases {
        assert_eq!(VerifyingKey::from_jwk_value(&jwk).is_ok(), ok, "{name}");
    }
}

#[test]
fn jwk_types_and_algs_must_fit() {
    let cases: Vec<(&str, Value, Option<AlgorithmSet>)> = vec![
        ("RSA no alg", rsa1_jwk(), Some(AlgorithmSet::RSA)),
        (
            "RSA PS384",
            with(rsa1_jwk(), "alg", json!("PS384")),
            Some(algs(&[Algorithm::PS384])),
        ),
        ("RSA ES256", with(rsa1_jwk(), "alg", json!("ES256")), None),
        ("RSA HS256", with(rsa1_jwk(), "alg", json!("HS256")), None),
        (
            "RSA RSA-OAEP",
            with(rsa1_jwk(), "alg", json!("RSA-OAEP")),
            None,
        ),
        ("RSA none", with(rsa1_jwk(), "alg", json!("none")), None),
        (
            "RSA unknown alg",
            with(rsa1_jwk(), "alg", json!("XS256")),
            None,
        ),
        ("P-256 no alg", ec256_jwk(), Some(algs(&[Algorithm::ES256]))),
        (
            "P-256 ES384",
            with(ec256_jwk(), "alg", json!("ES384")),
            None,
        ),
        (
            "P-256 RS256",
            with(ec256_jwk(), "alg", json!("RS256")),
            None,
        ),
        (
            "P-256 named P-384",
            with(ec256_jwk(), "crv", json!("P-384")),
            None,
        ),
        (
            "P-256 point named P-521",
            with(ec256_jwk(), "crv", json!("P-521")),
            None,
        ),
        (
            "EC secp256k1",
            with(ec256_jwk(), "crv", json!("secp256k1")),
            None,
        ),
        (
            "EC Ed25519 curve",
            with(ec256_jwk(), "crv", json!("Ed25519")),
            None,
        ),
        ("EC short x", with(ec256_jwk(), "x", json!("AAAA")), None),
        ("Ed25519 no alg", ed_jwk(), Some(algs(&[Algorithm::EdDSA]))),
        ("Ed25519 ES256", with(ed_jwk(), "alg", json!("ES256")), None),
        ("OKP X25519", with(ed_jwk(), "crv", json!("X25519")), None),
        ("OKP Ed448", with(ed_jwk(), "crv", json!("Ed448")), None),
        ("OKP short x", with(ed_jwk(), "x", json!("AAAA")), None),
        ("oct 32", oct_jwk(32), Some(algs(&[Algorithm::HS256]))),
        ("oct 64", oct_jwk(64), Some(AlgorithmSet::HMAC)),
        (
            "oct 64 HS384",
            with(oct_jwk(64), "alg", json!("HS384")),
            Some(algs(&[Algorithm::HS384])),
        ),
        (
            "oct 32 HS512",
            with(oct_jwk(32), "alg", json!("HS512")),
            None,
        ),
        ("oct 31", oct_jwk(31), None),
        ("oct RS256", with(oct_jwk(64), "alg", json!("RS256")), None),
        ("unknown kty", json!({ "kty": "XYZ", "x": "AAAA" }), None),
        ("no kty", json!({ "n": "AAAA", "e": "AQAB" }), None),
        ("RSA without n", json!({ "kty": "RSA", "e": "AQAB" }), None),
        (
            "RSA n not base64url",
            with(rsa1_jwk(), "n", json!("not base64!")),
            None,
        ),
        (
            "RSA even exponent",
            with(rsa1_jwk(), "e", json!("AQAA")),
            None,
        ),
        ("RSA exponent 1", with(rsa1_jwk(), "e", json!("AQ")), None),
        (
            "RSA 1024 bits",
            with(
                rsa1_jwk(),
                "n",
                json!(&rsa1_jwk()["n"].as_str().unwrap()[..171]),
            ),
            None,
        ),
        ("not an object", json!(["kty", "RSA"]), None),
    ];
    for (name, jwk, expected) in cases {
        match (VerifyingKey::from_jwk_value(&jwk), expected) {
            (Ok(key), Some(algorithms)) => assert_eq!(key.algorithms(), algorithms, "{name}"),
            (Err(KeyError::InvalidKey(_)), None) => {}
            (result, expected) => panic!("{name}: got {result:?}, expected {expected:?}"),
        }
    }
    assert!(VerifyingKey::from_jwk_str("{not json").is_err());
}

#[test]
fn jwks_documents_skip_unusable_keys_and_need_one_usable() {
    let good = rsa1_jwk();
    let enc = with(rsa1_jwk(), "use", json!("enc"));
    let weak = json!({"kty": "RSA", "kid": "weak", "n": "AQAB".repeat(40), "e": "AQAB"});
    let mut no_kid = ec256_jwk();
    no_kid.as_object_mut().unwrap().remove("kid");
    let cases = [
        ("one good key", json!({ "keys": [good.clone()] }), Ok(1)),
        (
            "good beside unusable",
            json!({ "keys": [enc.clone(), good.clone(), weak.clone(), no_kid] }),
            Ok(1),
        ),
        (
            "symmetric keys of a local set",
            json!({ "keys": [oct_jwk(32)] }),
            Ok(1),
        ),
        (
            "only unusable",
            json!({ "keys": [enc, weak] }),
            Err("no usable key: key #0 (kid \"rsa-1\"): \"use\" is \"enc\""),
        ),
        (
            "empty",
            json!({ "keys": [] }),
            Err("\"keys\" array is empty"),
        ),
        (
            "no keys member",
            json!({ "kids": [good.clone()] }),
            Err("\"keys\""),
        ),
        (
            "keys not an array",
            json!({ "keys": good }),
            Err("\"keys\""),
        ),
    ];
    for (name, doc, expected) in cases {
        match (KeySet::from_jwks_str(&doc.to_string()), expected) {
            (Ok(set), Ok(count)) => assert_eq!(set.keys().len(), count, "{name}"),
            (Err(KeyError::InvalidKey(text)), Err(expected)) => {
                assert!(text.contains(expected), "{name}: {text}")
            }
            (result, _) => panic!("{name}: {result:?}"),
        }
    }
    let text = KeySet::from_jwks_str(
        &json!({"keys": [{"kty": "RSA", "kid": "weak", "n": "AQAB".repeat(40), "e": "AQAB"}]})
            .to_string(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        text.contains("kid \"weak\"") && text.contains("2048"),
        "{text}"
    );
    assert!(KeySet::from_jwks_str("[]").is_err());
    assert!(KeySet::from_jwks_str("").is_err());
}

#[test]
fn algorithm_binding_table() {
    let cases = [
        (KeyType::Rsa { bits: 2048 }, AlgorithmSet::RSA),
        (KeyType::Rsa { bits: 4096 }, AlgorithmSet::RSA),
        (KeyType::EcP256, algs(&[Algorithm::ES256])),
        (KeyType::EcP384, algs(&[Algorithm::ES384])),
        (KeyType::Ed25519, algs(&[Algorithm::EdDSA])),
        (KeyType::Hmac, AlgorithmSet::HMAC),
    ];
    for (key_type, expected) in cases {
        assert_eq!(key_type.algorithms(), expected, "{key_type:?}");
    }
    assert_eq!(
        AlgorithmSet::RSA,
        algs(&[
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ])
    );
    // A key never verifies an algorithm outside its set, even with a valid signature.
    let ec = VerifyingKey::from_pem(fixture!("ec256-1.pub.pem")).unwrap();
    for alg in Algorithm::ALL {
        if alg != Algorithm::ES256 {
            assert!(!ec.verify(alg, b"m", &[0u8; 64]), "{alg}");
        }
    }
}

#[test]
fn restricting_algorithms() {
    let rsa = VerifyingKey::from_pem(fixture!("rsa-1.pub.pem")).unwrap();
    let narrowed = rsa
        .clone()
        .restrict_algorithms(algs(&[Algorithm::RS256, Algorithm::ES256]))
        .unwrap();
    assert_eq!(narrowed.algorithms(), algs(&[Algorithm::RS256]));
    assert!(!verifies(&narrowed, &fixture_token("ps256_valid")));
    assert!(verifies(&narrowed, &fixture_token("rs256_valid")));
    // The original is untouched (keys are shared, narrowing copies).
    assert_eq!(rsa.algorithms(), AlgorithmSet::RSA);
    assert!(rsa.clone().restrict_algorithms(AlgorithmSet::HMAC).is_err());

    let set = KeySet::new([
        rsa.clone(),
        VerifyingKey::from_pem(fixture!("ed-1.pub.pem")).unwrap(),
    ]);
    assert_eq!(set.algorithms(), AlgorithmSet::RSA.with(Algorithm::EdDSA));
    let only_ed = set
        .clone()
        .restrict_algorithms(Algorithm::EdDSA.into())
        .unwrap();
    assert_eq!(only_ed.keys().len(), 1);
    assert_eq!(only_ed.keys()[0].key_type(), KeyType::Ed25519);
    assert!(set.restrict_algorithms(Algorithm::ES384.into()).is_err());
}

fn hs(kid: Option<&str>, len: usize) -> VerifyingKey {
    let key = VerifyingKey::hmac(&vec![b'k'; len]).unwrap();
    match kid {
        Some(kid) => key.with_kid(kid),
        None => key,
    }
}

/// The index of the key `select` picked, or the error.
fn pick(set: &KeySet, kid: Option<&str>, alg: Algorithm) -> String {
    match set.select(&KeyQuery::new(Some("https://idp.example.test"), kid, alg)) {
        Ok(key) => {
            let index = set
                .keys()
                .iter()
                .position(|k| std::ptr::eq(k, key))
                .unwrap();
            format!("key {index}")
        }
        Err(e) => format!("{e:?}"),
    }
}

#[test]
fn select_rules() {
    use Algorithm::{ES256, EdDSA, HS256, HS384, HS512, RS256};
    let rsa = || VerifyingKey::from_pem(fixture!("rsa-1.pub.pem")).unwrap();
    let ec = || VerifyingKey::from_pem(fixture!("ec256-1.pub.pem")).unwrap();
    let mixed = KeySet::new([hs(Some("a"), 32), hs(Some("b"), 64), hs(None, 32)]);
    let named_narrow = KeySet::new([hs(Some("a"), 32), hs(None, 64)]);
    let two_anonymous = KeySet::new([hs(Some("a"), 32), hs(None, 32), hs(None, 48)]);
    let rotated = KeySet::new([rsa().with_kid("k"), ec().with_kid("k")]);
    let same_kid_twice = KeySet::new([hs(Some("k"), 32), hs(Some("k"), 64)]);
    let single = KeySet::new([hs(Some("a"), 32)]);
    let empty = KeySet::default();
    let cases: &[(&str, &KeySet, Option<&str>, Algorithm, &str)] = &[
        ("kid match", &mixed, Some("a"), HS256, "key 0"),
        ("kid match, other key", &mixed, Some("b"), HS512, "key 1"),
        ("kid match, weaker alg", &mixed, Some("b"), HS256, "key 1"),
        (
            "kid present, alg not bound",
            &mixed,
            Some("a"),
            HS512,
            "AlgorithmMismatch",
        ),
        (
            "kid present, asymmetric alg",
            &mixed,
            Some("a"),
            ES256,
            "AlgorithmMismatch",
        ),
        (
            "kid mismatch falls back to the kid-less key",
            &mixed,
            Some("zz"),
            HS256,
            "key 2",
        ),
        (
            "kid mismatch, kid-less key not bound",
            &mixed,
            Some("zz"),
            HS512,
            "UnknownKid",
        ),
        ("no kid, one candidate", &mixed, None, HS512, "key 1"),
        (
            "no kid, several candidates",
            &mixed,
            None,
            HS256,
            "AmbiguousKey",
        ),
        ("no kid, no candidate", &mixed, None, RS256, "NoMatchingKey"),
        (
            "a named key that does not fit never falls back to a kid-less one",
            &named_narrow,
            Some("a"),
            HS512,
            "AlgorithmMismatch",
        ),
        (
            "kid mismatch, two kid-less candidates",
            &two_anonymous,
            Some("zz"),
            HS256,
            "AmbiguousKey",
        ),
        (
            "kid mismatch, one kid-less candidate",
            &two_anonymous,
            Some("zz"),
            HS384,
            "key 2",
        ),
        (
            "one kid, two key types: RSA",
            &rotated,
            Some("k"),
            RS256,
            "key 0",
        ),
        (
            "one kid, two key types: EC",
            &rotated,
            Some("k"),
            ES256,
            "key 1",
        ),
        (
            "one kid, two key types: neither",
            &rotated,
            Some("k"),
            EdDSA,
            "AlgorithmMismatch",
        ),
        (
            "kid mismatch, no kid-less key",
            &rotated,
            Some("x"),
            RS256,
            "UnknownKid",
        ),
        ("no kid, RSA only candidate", &rotated, None, RS256, "key 0"),
        (
            "one kid twice, both fit",
            &same_kid_twice,
            Some("k"),
            HS256,
            "AmbiguousKey",
        ),
        (
            "one kid twice, one fits",
            &same_kid_twice,
            Some("k"),
            HS512,
            "key 1",
        ),
        (
            "single named key, token without kid",
            &single,
            None,
            HS256,
            "key 0",
        ),
        ("empty set", &empty, Some("a"), HS256, "UnknownKid"),
        ("empty set, no kid", &empty, None, HS256, "NoMatchingKey"),
    ];
    for (name, set, kid, alg, expected) in cases {
        assert_eq!(pick(set, *kid, *alg), *expected, "{name}");
    }
}

#[test]
fn static_keys_answer_at_once_with_the_selected_key() {
    let keys = StaticKeys::from_jwks_file(fixture_path("jwks.json")).unwrap();
    let key = keys
        .key(&KeyQuery::new(None, Some("ec384-1"), Algorithm::ES384))
        .into_inner()
        .unwrap();
    assert_eq!(key.kid(), Some("ec384-1"));
    assert!(matches!(
        keys.key(&KeyQuery::new(None, Some("ec384-1"), Algorithm::ES256))
            .into_inner(),
        Err(KeyError::AlgorithmMismatch)
    ));
    assert!(matches!(
        keys.key(&KeyQuery::new(None, None, Algorithm::RS256))
            .into_inner(),
        Ok(k) if k.kid() == Some("rsa-1")
    ));
    assert_eq!(
        keys.algorithms(),
        Some(algs(&[
            Algorithm::RS256,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA
        ]))
    );
}

/// Verification at a fixed instant (2025-06-15), so no test depends on the wall clock.
fn round_trip_validation() -> Validation {
    let now = std::time::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    Validation::new("https://idp.example.test")
        .audiences(["api://orders"])
        .clock(jwt::Clock::from_fn(move || now))
}

fn round_trip_claims() -> Value {
    json!({
        "iss": "https://idp.example.test",
        "aud": "api://orders",
        "sub": "user-123",
        "exp": 4_102_444_800u64,
    })
}

#[test]
fn signing_key_round_trips_with_the_fixture_keys() {
    use Algorithm::*;
    let rsa_pub = || VerifyingKey::from_pem(fixture!("rsa-1.pub.pem")).unwrap();
    let cases: Vec<(Algorithm, &[u8], VerifyingKey)> = vec![
        (RS256, fixture!("rsa-1.key.pem"), rsa_pub()),
        (RS384, fixture!("rsa-1.key.pem"), rsa_pub()),
        (RS512, fixture!("rsa-1.key.pem"), rsa_pub()),
        (PS256, fixture!("rsa-1.key.pem"), rsa_pub()),
        (PS384, fixture!("rsa-1.key.pem"), rsa_pub()),
        (PS512, fixture!("rsa-1.key.pem"), rsa_pub()),
        (
            RS256,
            fixture!("rsa-2.key.pem"),
            VerifyingKey::from_pem(fixture!("rsa-2.pkcs1.pub.pem")).unwrap(),
        ),
        (
            ES256,
            fixture!("ec256-1.key.pem"),
            VerifyingKey::from_pem(fixture!("ec256-1.pub.pem")).unwrap(),
        ),
        (
            ES384,
            fixture!("ec384-1.key.pem"),
            VerifyingKey::from_pem(fixture!("ec384-1.pub.pem")).unwrap(),
        ),
        (
            EdDSA,
            fixture!("ed-1.key.pem"),
            VerifyingKey::from_pem(fixture!("ed-1.pub.pem")).unwrap(),
        ),
    ];
    let validation = round_trip_validation();
    for (alg, pem, public) in cases {
        let signer = SigningKey::from_pem(alg, pem)
            .unwrap_or_else(|e| panic!("{alg}: {e}"))
            .with_kid("k1");
        assert_eq!(signer.algorithm(), alg);
        assert_eq!(signer.kid(), Some("k1"));
        assert_eq!(signer.verifying_key().algorithms(), AlgorithmSet::from(alg));
        let token = signer.sign(&round_trip_claims()).unwrap();
        // The signer's own public half verifies it...
        let ctx = jwt::verify_with_key(&validation, &token, signer.verifying_key())
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(ctx.subject(), Some("user-123"));
        assert_eq!(ctx.key_id(), Some("k1"));
        // ...and so does the fixture's public key, loaded independently.
        assert!(
            jwt::verify_with_key(&validation, &token, &public).is_ok(),
            "{alg}"
        );
        assert!(verifies(&public, &token), "{alg}");
        // A different RSA key does not.
        if let KeyType::Rsa { .. } = public.key_type() {
            let other: &[u8] = if pem == &fixture!("rsa-1.key.pem")[..] {
                fixture!("rsa-2.pub.pem")
            } else {
                fixture!("rsa-1.pub.pem")
            };
            assert!(
                !verifies(&VerifyingKey::from_pem(other).unwrap(), &token),
                "{alg}"
            );
        }
    }
}

#[test]
fn signing_key_hmac_round_trips() {
    let secret = std::fs::read(fixture_path("hmac.secret")).unwrap();
    let validation = round_trip_validation();
    let public = VerifyingKey::hmac(&secret).unwrap();
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let signer = SigningKey::hmac(alg, &secret).unwrap();
        assert_eq!(signer.kid(), None);
        let token = signer.sign(&round_trip_claims()).unwrap();
        assert!(
            jwt::verify_with_key(&validation, &token, signer.verifying_key()).is_ok(),
            "{alg}"
        );
        assert!(
            jwt::verify_with_key(&validation, &token, &public).is_ok(),
            "{alg}"
        );
        let wrong = VerifyingKey::hmac(&[b'x'; 64]).unwrap();
        assert!(
            jwt::verify_with_key(&validation, &token, &wrong).is_err(),
            "{alg}"
        );
    }
    // The fixture's PyJWT HMAC tokens verify against the same secret.
    assert!(verifies(&public, &fixture_token("hs384_valid")));
}

#[test]
fn signing_key_refuses_what_it_cannot_sign() {
    use Algorithm::*;
    let cases: &[(&str, Result<SigningKey, KeyError>)] = &[
        (
            "EC key for RS256",
            SigningKey::from_pem(RS256, fixture!("ec256-1.key.pem")),
        ),
        (
            "RSA key for ES256",
            SigningKey::from_pem(ES256, fixture!("rsa-1.key.pem")),
        ),
        (
            "P-256 key for ES384",
            SigningKey::from_pem(ES384, fixture!("ec256-1.key.pem")),
        ),
        (
            "P-384 key for ES256",
            SigningKey::from_pem(ES256, fixture!("ec384-1.key.pem")),
        ),
        (
            "Ed25519 key for ES256",
            SigningKey::from_pem(ES256, fixture!("ed-1.key.pem")),
        ),
        (
            "RSA key for EdDSA",
            SigningKey::from_pem(EdDSA, fixture!("rsa-1.key.pem")),
        ),
        (
            "public key",
            SigningKey::from_pem(RS256, fixture!("rsa-1.pub.pem")),
        ),
        (
            "weak RSA",
            SigningKey::from_pem(RS256, fixture!("rsa-weak.key.pem")),
        ),
        (
            "HS256 from PEM",
            SigningKey::from_pem(HS256, fixture!("rsa-1.key.pem")),
        ),
        ("RS256 as HMAC", SigningKey::hmac(RS256, &[1u8; 64])),
        ("short HS256 secret", SigningKey::hmac(HS256, &[1u8; 31])),
        ("HS512 with 48 bytes", SigningKey::hmac(HS512, &[1u8; 48])),
    ];
    for (name, result) in cases {
        assert!(result.is_err(), "{name}: {result:?}");
    }
}

#[test]
fn generated_ed25519_keys_differ_and_round_trip() {
    let a = SigningKey::generate_ed25519().unwrap();
    let b = SigningKey::generate_ed25519().unwrap();
    let token = a.sign(&round_trip_claims()).unwrap();
    let validation = round_trip_validation();
    assert!(jwt::verify_with_key(&validation, &token, a.verifying_key()).is_ok());
    assert!(matches!(
        jwt::verify_with_key(&validation, &token, b.verifying_key()),
        Err(jwt::VerifyError::BadSignature)
    ));
}

#[test]
fn debug_output_holds_no_key_material() {
    let secret = std::fs::read(fixture_path("hmac.secret")).unwrap();
    let secret_text = std::str::from_utf8(&secret).unwrap();
    let verifying = format!("{:?}", VerifyingKey::hmac(&secret).unwrap().with_kid("k"));
    let signing = format!("{:?}", SigningKey::hmac(Algorithm::HS512, &secret).unwrap());
    let set = format!(
        "{:?}",
        StaticKeys::from_hmac_secret_file(fixture_path("hmac.secret")).unwrap()
    );
    for text in [verifying, signing, set] {
        assert!(!text.contains(secret_text), "{text}");
        assert!(!text.contains(&secret_text[..16]), "{text}");
    }
}

#[test]
fn ec_curves_other_than_p256_and_p384_are_refused_by_oid() {
    // Same point lengths as P-256 and P-384, other curves: secp256k1, brainpoolP384r1.
    let secp256k1 = "-----BEGIN PUBLIC KEY-----
MFYwEAYHKoZIzj0CAQYFK4EEAAoDQgAELi0hUbVtVK0va+/54TbEYsjnSzVD5uO/
xR7aEuk+KtbsfHzIAuqxqDH5d2mqbphSpae5z2eUg2ZvWwzcX3mMXg==
-----END PUBLIC KEY-----
";
    let brainpool = "-----BEGIN PUBLIC KEY-----
MHowFAYHKoZIzj0CAQYJKyQDAwIIAQELA2IABHSB2IC5Rz+y7tKGCrOJPGwYnsGK
0s/s7FwuWzIb/kck5d4mT+zXBOXsEkdhWH43LBJ1VZIJ7AyB4XpiP+eNnYmOvdGo
CuCzRMBmyeVSK+jxX2vCdNX2TWzDud2Q5CxOdg==
-----END PUBLIC KEY-----
";
    for pem in [secp256k1, brainpool] {
        let err = VerifyingKey::from_pem(pem.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("unsupported EC curve"), "{err}");
    }
}

/// An EC point off its curve (the invalid-curve family of attacks) fails when the key is
/// loaded, naming the problem, instead of failing every token later; with either backend.
#[test]
fn ec_points_off_their_curve_are_refused_at_load() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let good = ec256_jwk();
    assert!(VerifyingKey::from_jwk_value(&good).is_ok());
    let mut y = b64.decode(good["y"].as_str().unwrap()).unwrap();
    y[31] ^= 1;
    let zeros = b64.encode([0u8; 32]);
    for bad in [
        with(good.clone(), "y", json!(b64.encode(&y))),
        with(with(good.clone(), "x", json!(zeros)), "y", json!(zeros)),
    ] {
        let err = invalid_text(VerifyingKey::from_jwk_value(&bad));
        assert!(err.contains("not a point on its curve"), "{err}");
    }
}

#[test]
fn jwk_with_private_parts_is_refused() {
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "kid": "leaked",
        "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
        "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM",
        "d": "870MB6gfuTJ4HtUnUvYMyJpr5eUZNP4Bk43bVdj3eAE",
    });
    let err = VerifyingKey::from_jwk_value(&jwk).unwrap_err();
    assert!(err.to_string().contains("private key material"), "{err}");
    let mut public = jwk.clone();
    public.as_object_mut().unwrap().remove("d");
    assert!(VerifyingKey::from_jwk_value(&public).is_ok());
}

/// RFC 7515 Appendix A.4: ES512 (ECDSA P-521 SHA-512) over `{"alg":"ES512"}` and `Payload`,
/// verified with the appendix's public key, with whichever backend is compiled in.
#[test]
fn es512_rfc7515_appendix_a4() {
    const X: &str =
        "AekpBQ8ST8a8VcfVOTNl353vSrDCLLJXmPk06wTjxrrjcBpXp5EOnYG_NjFZ6OvLFV1jSfS9tsz4qUxcWceqwQGk";
    const Y: &str =
        "ADSmRA43Z1DSNx_RvcLI87cdL07l6jQyyBXMoxVg_l2Th-x3S1WDhjDly79ajL4Kkd0AZMaZmh9ubmf63e3kyMj2";
    const JWS: &str = "eyJhbGciOiJFUzUxMiJ9.UGF5bG9hZA.AdwMgeerwtHoh-l192l60hp9wAHZFVJbLfD_UxMi70cwnZOYaRI1bKPWROc-mZZqwqT2SI-KGDKB34XO0aw_7XdtAG8GaSwFKdCAPZgoXD2YBJZCPEX3xKpRwcdOO8KpEHwJjyqOgzDO7iKvU8vcnwNrmxYbSW9ERBXukOXolLzeO_Jn";
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwk = json!({"kty": "EC", "crv": "P-521", "x": X, "y": Y});
    let key = VerifyingKey::from_jwk_value(&jwk).unwrap();
    assert_eq!(key.key_type(), KeyType::EcP521);
    assert_eq!(key.algorithms(), algs(&[Algorithm::ES512]));
    let (input, sig) = JWS.rsplit_once('.').unwrap();
    let sig = b64.decode(sig).unwrap();
    assert_eq!(sig.len(), 132, "two 66-byte halves");
    assert!(key.verify(Algorithm::ES512, input.as_bytes(), &sig));

    // Another message, a flipped bit, a truncated or DER-shaped signature: refused.
    assert!(!key.verify(Algorithm::ES512, b"eyJhbGciOiJFUzUxMiJ9.UGF5bG9hZB", &sig));
    for i in [0, 65, 66, 131] {
        let mut bad = sig.clone();
        bad[i] ^= 1;
        assert!(!key.verify(Algorithm::ES512, input.as_bytes(), &bad), "{i}");
    }
    assert!(!key.verify(Algorithm::ES512, input.as_bytes(), &sig[..128]));
    assert!(!key.verify(Algorithm::ES512, input.as_bytes(), &[0; 132]));
    // The P-521 key verifies ES512 only; ES512 is bound to P-521 keys only.
    for alg in [Algorithm::ES256, Algorithm::ES384, Algorithm::HS512] {
        assert!(!key.verify(alg, input.as_bytes(), &sig), "{alg}");
    }
    for alg in ["ES256", "ES384", "RS512", "HS512"] {
        let err = invalid_text(VerifyingKey::from_jwk_value(&with(
            jwk.clone(),
            "alg",
            json!(alg),
        )));
        assert!(err.contains("fits this"), "{alg}: {err}");
    }
    let bound = VerifyingKey::from_jwk_value(&with(jwk.clone(), "alg", json!("ES512"))).unwrap();
    assert!(bound.verify(Algorithm::ES512, input.as_bytes(), &sig));
    let p256 = VerifyingKey::from_jwk_value(&ec256_jwk()).unwrap();
    assert!(!p256.algorithms().contains(Algorithm::ES512));
    assert!(!p256.verify(Algorithm::ES512, input.as_bytes(), &sig));
    let err = invalid_text(VerifyingKey::from_jwk_value(&with(
        ec256_jwk(),
        "alg",
        json!("ES512"),
    )));
    assert!(err.contains("fits this"), "{err}");

    // Off the curve: refused at load.
    let mut y = b64.decode(Y).unwrap();
    y[65] ^= 1;
    let err = invalid_text(VerifyingKey::from_jwk_value(&with(
        jwk.clone(),
        "y",
        json!(b64.encode(&y)),
    )));
    assert!(err.contains("not a point on its curve"), "{err}");
    // Coordinates of the wrong size for P-521.
    let err = invalid_text(VerifyingKey::from_jwk_value(&with(
        jwk,
        "x",
        json!(b64.encode([1u8; 65])),
    )));
    assert!(err.contains("wrong length"), "{err}");
}

/// A P-521 public key in PEM (SPKI) loads as an ES512 key, and the OID decides the curve.
#[test]
fn es512_keys_from_pem() {
    let key = VerifyingKey::from_pem(fixture!("ec521-1.pub.pem")).unwrap();
    assert_eq!(key.key_type(), KeyType::EcP521);
    assert_eq!(key.algorithms(), algs(&[Algorithm::ES512]));
    let set = StaticKeys::from_jwks_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/keys/jwks-es512.json"
    ))
    .unwrap();
    assert_eq!(set.key_set().keys().len(), 1);
    assert_eq!(
        set.key_set().keys()[0].algorithms(),
        algs(&[Algorithm::ES512])
    );
    // Signing stays with the algorithms jsonwebtoken signs.
    let err = SigningKey::from_pem(Algorithm::ES512, fixture!("ec521-1.key.pem")).unwrap_err();
    assert!(err.to_string().contains("ES512"), "{err}");
}
