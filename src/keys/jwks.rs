//! JWKS documents (RFC 7517 §5): reading the `keys` array and turning its members into a
//! [`KeySet`] under one tolerant rule set, shared by JWKS files, JWKS URLs and OIDC discovery.
//!
//! A key the library cannot use is skipped with a reason; a set with no usable key is an
//! error. A single key given on its own ([`VerifyingKey::from_jwk_value`]) stays strict.

use std::fmt;

use serde_json::Value;

use super::{KeySet, VerifyingKey};

/// Why a JWKS document is not a JWKS at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DocumentError {
    /// Not JSON; the parser's message.
    NotJson(String),
    /// JSON, but not an object with a `keys` array; what is wrong.
    NotAJwks(&'static str),
}

/// The members of the `keys` array of the JWKS document `body`.
pub(crate) fn keys_array(body: &[u8]) -> Result<Vec<Value>, DocumentError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| DocumentError::NotJson(e.to_string()))?;
    match value {
        Value::Object(mut doc) => match doc.remove("keys") {
            Some(Value::Array(keys)) => Ok(keys),
            _ => Err(DocumentError::NotAJwks("not a JWKS: no \"keys\" array")),
        },
        _ => Err(DocumentError::NotAJwks(
            "not a JWKS: the document is not a JSON object",
        )),
    }
}

/// Whether symmetric (`oct`) keys may be taken from the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Symmetric {
    /// A local file the operator wrote: an HMAC secret in it is deliberate.
    Allow,
    /// A published set (URL, discovery, fetcher): a public JWKS never carries HMAC secrets,
    /// and trusting one would let whoever controls the document mint tokens.
    Skip,
}

/// A key left out of a set, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Skipped {
    /// Its position in the `keys` array.
    pub(crate) index: usize,
    /// Its `kid`, when it has one.
    pub(crate) kid: Option<String>,
    /// Why it cannot be used.
    pub(crate) reason: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kid {
            Some(kid) => write!(f, "key #{} (kid {kid:?}): {}", self.index, self.reason),
            None => write!(f, "key #{}: {}", self.index, self.reason),
        }
    }
}

/// The usable keys of a set and the skipped ones.
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    pub(crate) keys: KeySet,
    pub(crate) skipped: Vec<Skipped>,
}

/// The skipped keys as one line, `"; "`-separated.
pub(crate) fn report(skipped: &[Skipped]) -> String {
    skipped
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Parses the members of a JWKS `keys` array tolerantly: keys that cannot be used are
/// skipped, each with its reason.
///
/// Skipped: `use` other than `sig`, `key_ops` without `verify`, an unknown `kty`, an
/// unsupported curve, RSA under [`MIN_RSA_BITS`](super::MIN_RSA_BITS), malformed parameters,
/// private key parts, an `alg` that is not a supported signature algorithm or does not fit
/// the key, a key without `kid` beside keys with one, and `oct` keys under
/// [`Symmetric::Skip`].
///
/// # Errors
///
/// The report of every skipped key (or a note that the array is empty) when no key is
/// usable.
pub(crate) fn parse_keys(keys: &[Value], symmetric: Symmetric) -> Result<Parsed, String> {
    let any_kid = keys.iter().any(|k| kid_of(k).is_some());
    let mut usable = Vec::with_capacity(keys.len());
    let mut skipped = Vec::new();
    for (index, jwk) in keys.iter().enumerate() {
        let kid = kid_of(jwk);
        match parse_key(jwk, kid.is_some(), any_kid, symmetric) {
            Ok(key) => usable.push(key),
            Err(reason) => skipped.push(Skipped {
                index,
                kid: kid.map(str::to_owned),
                reason,
            }),
        }
    }
    if usable.is_empty() {
        return Err(if skipped.is_empty() {
            "the \"keys\" array is empty".to_owned()
        } else {
            report(&skipped)
        });
    }
    Ok(Parsed {
        keys: KeySet::new(usable),
        skipped,
    })
}

/// Logs one warning per skipped key of the set read from `source`, naming its `kid` and the
/// reason.
pub(crate) fn warn_skipped(source: &str, skipped: &[Skipped]) {
    for key in skipped {
        tracing::warn!(
            source = %source,
            index = key.index,
            kid = key.kid.as_deref().unwrap_or("<none>"),
            reason = %key.reason,
            "JWKS key skipped"
        );
    }
}

fn kid_of(jwk: &Value) -> Option<&str> {
    jwk.get("kid").and_then(Value::as_str)
}

fn parse_key(
    jwk: &Value,
    has_kid: bool,
    any_kid: bool,
    symmetric: Symmetric,
) -> Result<VerifyingKey, String> {
    if !jwk.is_object() {
        return Err("not a JSON object".to_owned());
    }
    match jwk.get("kty").and_then(Value::as_str) {
        None => return Err("no \"kty\"".to_owned()),
        Some("oct") if symmetric == Symmetric::Skip => {
            return Err("symmetric (oct) key: a public JWKS never carries HMAC secrets".to_owned());
        }
        Some("RSA" | "EC" | "OKP" | "oct") => {}
        Some(other) => return Err(format!("unsupported kty {other:?}")),
    }
    if let Some(use_) = jwk.get("use")
        && use_.as_str() != Some("sig")
    {
        return Err(format!(
            "\"use\" is {use_}, not \"sig\" (not a signature key)"
        ));
    }
    if !has_kid && any_kid {
        return Err("no \"kid\" while the other keys have one".to_owned());
    }
    VerifyingKey::from_jwk_value(jwk).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn documents_must_hold_a_keys_array() {
        assert_eq!(keys_array(br#"{"keys":[]}"#), Ok(vec![]));
        assert!(matches!(keys_array(b"{"), Err(DocumentError::NotJson(_))));
        assert!(matches!(
            keys_array(b"[]"),
            Err(DocumentError::NotAJwks(text)) if text.contains("not a JSON object")
        ));
        assert!(matches!(
            keys_array(br#"{"keys":{}}"#),
            Err(DocumentError::NotAJwks(text)) if text.contains("\"keys\" array")
        ));
    }

    #[test]
    fn symmetric_keys_depend_on_the_origin() {
        let oct = json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC0"});
        let parsed = parse_keys(std::slice::from_ref(&oct), Symmetric::Allow).unwrap();
        assert_eq!(parsed.keys.keys()[0].kid(), Some("h"));
        let report = parse_keys(&[oct], Symmetric::Skip).unwrap_err();
        assert!(report.contains("key #0 (kid \"h\"): symmetric"), "{report}");
        assert_eq!(
            parse_keys(&[], Symmetric::Allow).unwrap_err(),
            "the \"keys\" array is empty"
        );
    }
}
