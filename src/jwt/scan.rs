//! One pass over a JSON object (a JWS header or a JWT's claims) that checks what the rules
//! need without building a `serde_json` tree of the whole object:
//!
//! - the text is one JSON object and nothing else;
//! - no object, at any depth, has two members of the same name (compared after unescaping,
//!   so `"\u0061lg"` is `alg`);
//! - the members named by the caller are kept as [`Value`]s (checked the same way inside);
//!   every other member is read over, keys borrowed from the text, values not kept;
//! - the heap a `serde_json` tree of the whole object would hold is estimated on the way
//!   (the formula of [`crate::context::member_bytes`]), so a context that keeps only the text
//!   can still be weighed as if it were parsed.

use std::borrow::Cow;
use std::fmt;
use std::mem;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::context::{member_bytes, value_bytes};

/// The members of one object a scan kept, in the order of the names it was given.
pub(crate) struct Scanned<const N: usize> {
    pub(crate) values: [Option<Value>; N],
    /// The estimated heap of a `serde_json` tree of the whole object.
    pub(crate) tree_bytes: usize,
}

/// Scans `json` (see the module docs), keeping the members named in `names`.
pub(crate) fn scan_object<const N: usize>(json: &str, names: &[&str; N]) -> Result<Scanned<N>, ()> {
    let mut de = serde_json::Deserializer::from_str(json);
    let scanned = (&mut de)
        .deserialize_map(TopVisitor { names })
        .map_err(|_| ())?;
    de.end().map_err(|_| ())?;
    Ok(scanned)
}

/// The top-level members of the already scanned object `json` that a dotted `path` may
/// select (the member named by the whole path and the one named by its first segment), as
/// [`claim_at_path`](crate::context::claim_at_path) reads them; other members are read over.
/// Anything unreadable gives an empty map (the text was scanned before, so it never is).
pub(crate) fn members_for_paths(json: &str, paths: &[&str]) -> serde_json::Map<String, Value> {
    let wanted = |key: &str| {
        paths
            .iter()
            .any(|p| *p == key || p.split('.').next() == Some(key))
    };
    let mut de = serde_json::Deserializer::from_str(json);
    (&mut de)
        .deserialize_map(PathVisitor { wanted })
        .unwrap_or_default()
}

/// The first members kept in place before a key set spills into a sorted vector.
const INLINE_KEYS: usize = 16;

/// The member names of one object seen so far, to refuse duplicates: compared pairwise while
/// few (no allocation for up to [`INLINE_KEYS`] names), sorted once at the end when many.
struct KeySet<'de> {
    inline: [Cow<'de, str>; INLINE_KEYS],
    len: usize,
    spilled: Vec<Cow<'de, str>>,
}

impl<'de> KeySet<'de> {
    fn new() -> Self {
        KeySet {
            inline: Default::default(),
            len: 0,
            spilled: Vec::new(),
        }
    }

    /// Adds `key`; `false` when it was already there (the large case is checked in
    /// [`finish`](Self::finish)).
    fn insert(&mut self, key: Cow<'de, str>) -> bool {
        if !self.spilled.is_empty() {
            self.spilled.push(key);
            return true;
        }
        if self.inline[..self.len].contains(&key) {
            return false;
        }
        if self.len < INLINE_KEYS {
            self.inline[self.len] = key;
            self.len += 1;
        } else {
            self.spilled = Vec::with_capacity(4 * INLINE_KEYS);
            self.spilled.extend(self.inline.iter_mut().map(mem::take));
            self.spilled.push(key);
        }
        true
    }

    /// Whether all names were distinct.
    fn finish(mut self) -> bool {
        self.spilled.sort_unstable();
        !self.spilled.windows(2).any(|w| w[0] == w[1])
    }
}

fn duplicate<E: de::Error>() -> E {
    E::custom("duplicate member name")
}

/// A member name, borrowed from the text when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(KeySeed)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// Reads over any JSON value, refusing duplicate member names inside it; gives the heap a
/// `serde_json` tree of it would hold ([`value_bytes`]).
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<usize, D::Error> {
        deserializer.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, _: bool) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_i64<E>(self, _: i64) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_u64<E>(self, _: u64) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_f64<E>(self, _: f64) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_str<E>(self, v: &str) -> Result<usize, E> {
        Ok(v.len())
    }
    fn visit_unit<E>(self) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_none<E>(self) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut bytes = 0;
        while let Some(item) = seq.next_element_seed(Skip)? {
            bytes += size_of::<Value>() + item;
        }
        Ok(bytes)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<usize, A::Error> {
        let mut keys = KeySet::new();
        let mut bytes = 0;
        while let Some(key) = access.next_key_seed(KeySeed)? {
            bytes += member_bytes(key.len(), access.next_value_seed(Skip)?);
            if !keys.insert(key) {
                return Err(duplicate());
            }
        }
        if !keys.finish() {
            return Err(duplicate());
        }
        Ok(bytes)
    }
}

/// The top-level object of a scan.
struct TopVisitor<'n, const N: usize> {
    names: &'n [&'n str; N],
}

impl<'de, const N: usize> Visitor<'de> for TopVisitor<'_, N> {
    type Value = Scanned<N>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Scanned<N>, A::Error> {
        let mut values = [const { None }; N];
        let mut keys = KeySet::new();
        let mut tree_bytes = 0;
        while let Some(key) = access.next_key_seed(KeySeed)? {
            let bytes = match self.names.iter().position(|name| *name == key) {
                Some(i) => {
                    let StrictValue(value) = access.next_value()?;
                    let bytes = value_bytes(&value);
                    values[i] = Some(value);
                    bytes
                }
                None => access.next_value_seed(Skip)?,
            };
            tree_bytes += member_bytes(key.len(), bytes);
            if !keys.insert(key) {
                return Err(duplicate());
            }
        }
        if !keys.finish() {
            return Err(duplicate());
        }
        Ok(Scanned { values, tree_bytes })
    }
}

/// The top level of [`members_for_paths`].
struct PathVisitor<F> {
    wanted: F,
}

impl<'de, F: Fn(&str) -> bool> Visitor<'de> for PathVisitor<F> {
    type Value = serde_json::Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut members = serde_json::Map::new();
        while let Some(key) = access.next_key_seed(KeySeed)? {
            if (self.wanted)(&key) {
                members.insert(key.into_owned(), access.next_value::<Value>()?);
            } else {
                access.next_value::<de::IgnoredAny>()?;
            }
        }
        Ok(members)
    }
}

/// A JSON value whose objects have no duplicate member names, at any depth.
pub(crate) struct StrictValue(pub(crate) Value);

impl<'de> serde::Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = serde_json::Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let StrictValue(value) = access.next_value()?;
            if map.insert(key, value).is_some() {
                return Err(duplicate());
            }
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NAMES: [&str; 2] = ["a", "b"];

    #[test]
    fn keeps_named_members_and_estimates_the_tree() {
        let json = r#"{"a":"x","z":{"k":[1,"yy",{"n":null}]},"b":[true]}"#;
        let scanned = scan_object(json, &NAMES).unwrap();
        assert_eq!(scanned.values, [Some(json!("x")), Some(json!([true]))]);
        let map: serde_json::Map<String, Value> = serde_json::from_str(json).unwrap();
        let expected: usize = map
            .iter()
            .map(|(k, v)| member_bytes(k.len(), value_bytes(v)))
            .sum();
        assert_eq!(scanned.tree_bytes, expected);
    }

    #[test]
    fn refuses_duplicates_at_every_depth() {
        for json in [
            r#"{"a":1,"a":2}"#,
            r#"{"a":1,"\u0061":2}"#,
            r#"{"z":1,"z":2}"#,
            r#"{"z":{"k":1,"k":2}}"#,
            r#"{"z":[{"k":1,"k":2}]}"#,
            r#"{"a":{"k":1,"k":2}}"#,
            r#"{"a":[[{"k":1,"\u006b":2}]]}"#,
        ] {
            assert!(scan_object(json, &NAMES).is_err(), "{json}");
        }
    }

    #[test]
    fn refuses_duplicates_among_many_members() {
        // More members than the key set keeps inline: the sorted check finds the pair.
        let members: Vec<String> = (0..40).map(|i| format!(r#""m{i}":{i}"#)).collect();
        let distinct = format!("{{{}}}", members.join(","));
        assert!(scan_object(&distinct, &NAMES).is_ok());
        for dup in ["m3", "m39"] {
            let json = format!(r#"{{{},"{dup}":0}}"#, members.join(","));
            assert!(scan_object(&json, &NAMES).is_err(), "{dup}");
            let nested = format!(r#"{{"z":{json}}}"#);
            assert!(scan_object(&nested, &NAMES).is_err(), "nested {dup}");
        }
    }

    #[test]
    fn refuses_what_is_not_one_object() {
        for json in ["[]", "1", r#"{"a":1} x"#, r#"{"a":1}{}"#, r#"{"a":}"#, ""] {
            assert!(scan_object(json, &NAMES).is_err(), "{json}");
        }
    }

    #[test]
    fn path_members() {
        let json = r#"{"realm_access":{"roles":["r"]},"realm_access.roles":["w"],"x":1}"#;
        let map = members_for_paths(json, &["realm_access.roles"]);
        assert_eq!(map.len(), 2);
        assert_eq!(
            crate::context::claim_at_path(&map, "realm_access.roles"),
            Some(&json!(["w"]))
        );
    }
}
