//! The path canonicaliser on arbitrary paths and policies: never a panic; either refused,
//! or a canonical path that is a fixed point, holds no form the policy refuses, and routes
//! the same once decoded and encoded again in another spelling.
#![no_main]

use std::sync::OnceLock;

use http::Method;
use libfuzzer_sys::fuzz_target;
use tower_gatekeeper::authorize::{Lookup, RouteTable};
use tower_gatekeeper::path::{PathError, PathForm, PathForms, PathPolicy, canonicalize};

fn table() -> &'static RouteTable<&'static str> {
    static TABLE: OnceLock<RouteTable<&'static str>> = OnceLock::new();
    TABLE.get_or_init(|| {
        RouteTable::builder()
            .any_method("/{*rest}", "public")
            .route([Method::GET], "/api/{*rest}", "api")
            .route([Method::GET], "/api/admin/{*rest}", "admin")
            .route([Method::GET], "/api/items:batchGet", "batch")
            .route([Method::GET], "/users/{id}", "user")
            .route([Method::GET], "/files/private/{*rest}", "private")
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

fn is_segment_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@".contains(&b)
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => panic!("invalid escape in a canonical path"),
    }
}

/// Decodes each piece between `/`, `;` and a raw `\` and encodes it again; `choice` says
/// which optional escapes to use and in which hex case.
fn respell(path: &str, seed: u64) -> String {
    let mut bits = seed;
    let mut next = move || {
        bits = bits.rotate_left(1) ^ 0x9E37_79B9_7F4A_7C15;
        bits & 1 == 1
    };
    let mut out = String::new();
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let (b, len) = if bytes[i] == b'%' {
            (hex(bytes[i + 1]) << 4 | hex(bytes[i + 2]), 3)
        } else {
            (bytes[i], 1)
        };
        if len == 1 && matches!(b, b'/' | b';' | b'\\') {
            out.push(char::from(b));
        } else if !is_segment_char(b) || next() {
            let text = format!("%{b:02X}");
            out.push_str(&if next() { text.to_ascii_lowercase() } else { text });
        } else {
            out.push(char::from(b));
        }
        i += len;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&bits, rest)) = data.split_first() else {
        return;
    };
    let policy = PathPolicy::allowing(
        PathForm::ALL
            .into_iter()
            .enumerate()
            .filter(|(k, _)| bits & (1 << k) != 0)
            .map(|(_, form)| form)
            .collect::<PathForms>(),
    );
    let raw = String::from_utf8_lossy(rest);
    let canonical = match canonicalize(&raw, policy) {
        Err(PathError::Refused(form)) => {
            assert!(!policy.allows(form));
            return;
        }
        Err(_) => return,
        Ok(canonical) => canonical,
    };
    let path = canonical.as_str();
    assert!(path.is_ascii() && path.starts_with('/'));
    assert_eq!(canonical.is_unchanged(), path == raw);
    assert_eq!(policy.check(canonical.forms()), Ok(()));

    // A fixed point.
    let again = canonicalize(path, policy).unwrap();
    assert_eq!(again.as_str(), path);
    assert!(again.is_unchanged());

    // No refused form in the output.
    if !policy.allows(PathForm::EncodedSlash) {
        assert!(!path.contains("%2F"));
    }
    if !policy.allows(PathForm::EncodedBackslash) {
        assert!(!path.contains("%5C"));
    }
    if !policy.allows(PathForm::Backslash) {
        assert!(!path.contains('\\'));
    }
    if !policy.allows(PathForm::MatrixParameter) {
        assert!(!path.contains(';'));
    }
    if !policy.allows(PathForm::ControlCharacter) {
        assert!(!path.bytes().any(|b| b < 0x20 || b == 0x7F));
        for k in (0..0x20).chain([0x7F]) {
            assert!(!path.contains(&format!("%{k:02X}")));
        }
    }
    let segments: Vec<&str> = path[1..].split('/').collect();
    for (k, segment) in segments.iter().enumerate() {
        let name = segment.split(';').next().unwrap_or_default();
        if !policy.allows(PathForm::DotSegment) {
            assert!(name != "." && name != "..");
        }
        if !policy.allows(PathForm::EmptySegment) {
            assert!(!(segment.is_empty() && k + 1 < segments.len()));
            assert!(!(name.is_empty() && segment.contains(';')));
        }
    }

    // Respelled: the same canonical path, the same route.
    let seed = data.iter().fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(*b));
    let respelled = respell(path, seed);
    let back = canonicalize(&respelled, policy).unwrap();
    assert_eq!(back.as_str(), path);
    assert_eq!(decision(back.as_str()), decision(path));

    // What the strict policy accepts, every policy canonicalises alike.
    if let Ok(strict) = canonicalize(&raw, PathPolicy::strict()) {
        assert_eq!(strict.as_str(), path);
    }
});
