//! Property tests of the path canonicaliser (`tower_gatekeeper::path`): for any input and
//! any policy, either the path is refused, or the canonical path
//!
//! 1. is a fixed point (canonicalising it again returns it unchanged, borrowed);
//! 2. holds no form the policy refuses (dot or empty segments, controls, `\`, `%2F`, `%5C`,
//!    `;`), is ASCII, and encodes exactly what must be encoded, in upper-case hex;
//! 3. routes the same once decoded and encoded again, segment by segment, with any choice
//!    of which characters to encode and any hex case (what an upstream that decodes and
//!    re-serialises the path sees);
//! 4. does not depend on the policy when the strict policy already accepts the input.
//!
//! `PROPTEST_CASES` raises the case count.

use http::Method;
use proptest::prelude::*;
use tower_gatekeeper::authorize::{Lookup, RouteTable};
use tower_gatekeeper::path::{PathError, PathForm, PathForms, PathPolicy, canonicalize};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 2048,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Pieces that exercise every rule, and arbitrary characters besides.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec![
            "/", "/", "/", ".", "..", "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "\\", ";",
            "%3b", "%3B", "%3a", ":", "@", "%40", "=", "%3D", "+", "%2B", "%00", "%0a", "%1F",
            "%7f", "\t", "\u{7f}", "%", "%4", "%zz", "%g1", "a", "admin", "api", "files",
            "private", "%61", "%41", "%7E", "~", "-", "_", "é", "%C3%A9", "%c3%a9", "{", "}",
            " ", "?", "#", "%25", "%252F", "[", "|", "\"", "%3F", "%20", "x",
        ])
        .prop_map(str::to_owned),
        1 => any::<char>().prop_map(|c| c.to_string()),
    ]
}

fn raw_path() -> impl Strategy<Value = String> {
    (
        prop::bool::weighted(0.95),
        prop::collection::vec(piece(), 0..14),
    )
        .prop_map(|(slash, pieces)| {
            let mut path = if slash { "/".to_owned() } else { String::new() };
            path.extend(pieces);
            path
        })
}

fn policy() -> impl Strategy<Value = PathPolicy> {
    prop::collection::vec(any::<bool>(), PathForm::ALL.len()).prop_map(|bits| {
        let forms: PathForms = PathForm::ALL
            .into_iter()
            .zip(bits)
            .filter(|(_, on)| *on)
            .map(|(form, _)| form)
            .collect();
        PathPolicy::allowing(forms)
    })
}

/// A table with static, parameter and catch-all routes, including reserved characters in
/// static text (`:`, `@`, `+`), whose decisions the properties compare.
fn table() -> &'static RouteTable<&'static str> {
    static TABLE: std::sync::OnceLock<RouteTable<&'static str>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        RouteTable::builder()
            .any_method("/{*rest}", "public")
            .route([Method::GET], "/api/{*rest}", "api")
            .route([Method::GET], "/api/admin/{*rest}", "admin")
            .route([Method::GET], "/api/items:batchGet", "batch")
            .route([Method::GET], "/users/{id}", "user")
            .route([Method::GET], "/users/a@b+c", "special")
            .route([Method::GET], "/files/{*rest}", "files")
            .route([Method::GET], "/files/private/{*rest}", "private")
            .route([Method::GET], "/a/{x}/b", "axb")
            .build()
            .unwrap()
    })
}

fn decision(path: &str) -> String {
    match table().lookup(&Method::GET, path) {
        Lookup::Found(found) => format!("{} {:?}", found.value(), found.path_params()),
        Lookup::MethodNotAllowed(refused) => format!("405 {:?}", refused.allow()),
        Lookup::NotFound => "404".to_owned(),
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_segment_char(b: u8) -> bool {
    is_unreserved(b) || b"!$&'()*+,=:@".contains(&b)
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => unreachable!("canonical paths hold valid escapes"),
    }
}

fn decode(piece: &str) -> Vec<u8> {
    let bytes = piece.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(hex(bytes[i + 1]) << 4 | hex(bytes[i + 2]));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Decodes each piece between the delimiters (`/`, `;`, and a raw `\`) and encodes it again:
/// bytes that may stay raw are encoded when `choices` says so, the others always; hex case
/// per choice.
fn reencode(canonical: &str, choices: &[bool]) -> String {
    let mut choice = choices.iter().copied().cycle();
    let mut out = String::new();
    let mut piece = String::new();
    let flush = |piece: &mut String, out: &mut String, choice: &mut dyn Iterator<Item = bool>| {
        for b in decode(piece) {
            if !is_segment_char(b) || choice.next().unwrap_or(false) {
                let text = format!("%{b:02X}");
                if choice.next().unwrap_or(false) {
                    out.push_str(&text.to_ascii_lowercase());
                } else {
                    out.push_str(&text);
                }
            } else {
                out.push(char::from(b));
            }
        }
        piece.clear();
    };
    for c in canonical.chars() {
        if matches!(c, '/' | ';' | '\\') {
            flush(&mut piece, &mut out, &mut choice);
            out.push(c);
        } else {
            piece.push(c);
        }
    }
    flush(&mut piece, &mut out, &mut choice);
    out
}

/// The canonical path's form rules, checked on the output itself.
fn assert_no_refused_forms(path: &str, policy: PathPolicy) {
    assert!(path.is_ascii() && path.starts_with('/'), "{path:?}");
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let escape = &path[i + 1..i + 3];
            assert!(
                escape
                    .bytes()
                    .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(&h)),
                "{path:?}: escape {escape:?} not upper-case hex"
            );
            let value = decode(&path[i..i + 3])[0];
            assert!(
                !is_segment_char(value),
                "{path:?}: needless escape %{escape}"
            );
            if value == b'/' {
                assert!(policy.allows(PathForm::EncodedSlash), "{path:?}");
            }
            if value == b'\\' {
                assert!(policy.allows(PathForm::EncodedBackslash), "{path:?}");
            }
            if value < 0x20 || value == 0x7F {
                assert!(policy.allows(PathForm::ControlCharacter), "{path:?}");
            }
            i += 3;
            continue;
        }
        assert!(b > 0x20 && b < 0x7F, "{path:?}: raw byte {b:#x}");
        if b == b'\\' {
            assert!(policy.allows(PathForm::Backslash), "{path:?}");
        } else if b == b';' {
            assert!(policy.allows(PathForm::MatrixParameter), "{path:?}");
        } else {
            assert!(
                is_segment_char(b) || b == b'/',
                "{path:?}: raw {:?}",
                char::from(b)
            );
        }
        i += 1;
    }
    let segments: Vec<&str> = path[1..].split('/').collect();
    for (k, segment) in segments.iter().enumerate() {
        let name = segment.split(';').next().unwrap_or_default();
        if name == "." || name == ".." {
            assert!(policy.allows(PathForm::DotSegment), "{path:?}");
        }
        if (segment.is_empty() && k + 1 < segments.len())
            || (name.is_empty() && segment.contains(';'))
        {
            assert!(policy.allows(PathForm::EmptySegment), "{path:?}");
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn refused_or_canonical(raw in raw_path(), policy in policy(), choices in prop::collection::vec(any::<bool>(), 1..64)) {
        let canonical = match canonicalize(&raw, policy) {
            Err(PathError::Refused(form)) => {
                prop_assert!(!policy.allows(form), "{raw:?}: refused an allowed {form}");
                return Ok(());
            }
            Err(_) => return Ok(()),
            Ok(canonical) => canonical,
        };
        let path = canonical.as_str();
        prop_assert_eq!(canonical.is_unchanged(), path == raw);
        prop_assert_eq!(policy.check(canonical.forms()), Ok(()));

        // 1. A fixed point, returned borrowed.
        let again = canonicalize(path, policy).unwrap();
        prop_assert_eq!(again.as_str(), path);
        prop_assert!(again.is_unchanged());

        // 2. Nothing the policy refuses, nothing needlessly encoded.
        assert_no_refused_forms(path, policy);

        // 3. Decoded and encoded again in any spelling: the same path, the same route.
        let respelled = reencode(path, &choices);
        let back = canonicalize(&respelled, policy)
            .unwrap_or_else(|e| panic!("{path:?} respelled {respelled:?}: {e}"));
        prop_assert_eq!(back.as_str(), path, "respelled {:?}", respelled);
        prop_assert_eq!(decision(back.as_str()), decision(path));

        // 4. What the strict policy accepts, every policy canonicalises alike.
        if let Ok(strict) = canonicalize(&raw, PathPolicy::strict()) {
            prop_assert_eq!(strict.as_str(), path);
            prop_assert!(canonical.forms().is_empty());
        }
    }
}

#[test]
fn reencode_respells() {
    let path = "/api/items:batchGet/a@b/%C3%A9";
    assert_eq!(
        reencode(path, &[true]),
        "/%61%70%69/%69%74%65%6d%73%3a%62%61%74%63%68%47%65%74/%61%40%62/%c3%a9"
    );
    assert_eq!(reencode(path, &[false]), path);
    assert_eq!(
        canonicalize(&reencode(path, &[true]), PathPolicy::strict())
            .unwrap()
            .as_str(),
        path
    );
}
