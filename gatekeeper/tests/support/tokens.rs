//! The library's committed fixture tokens (`tests/fixtures/tokens.json` of the workspace root)
//! and an admin token signed with a fixture key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{Value, json};
use tower_gatekeeper::Algorithm;
use tower_gatekeeper::keys::SigningKey;

use super::FIXTURES;

pub(crate) fn fixtures() -> PathBuf {
    Path::new(FIXTURES).to_path_buf()
}

/// The fixture token called `name` in `tokens.json`.
pub(crate) fn token(name: &str) -> String {
    static TOKENS: OnceLock<HashMap<String, String>> = OnceLock::new();
    let tokens = TOKENS.get_or_init(|| {
        let text = std::fs::read_to_string(fixtures().join("tokens.json")).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        doc["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["name"].as_str().unwrap().to_owned(),
                    t["token"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    });
    tokens
        .get(name)
        .unwrap_or_else(|| panic!("no fixture token {name}"))
        .clone()
}

/// A token for the fixture RSA key with roles ["admin"] (the fixtures only have clerks).
pub(crate) fn admin_token() -> String {
    let pem = std::fs::read(fixtures().join("keys/rsa-1.key.pem")).unwrap();
    let key = SigningKey::from_pem(Algorithm::RS256, &pem)
        .unwrap()
        .with_kid("rsa-1");
    key.sign(&json!({
        "iss": "https://idp.example.test", "aud": "api://orders", "sub": "admin-1",
        "roles": ["admin"], "scope": "orders:read", "exp": 4102444800u64,
    }))
    .unwrap()
}
