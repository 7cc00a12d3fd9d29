use super::*;

use PathError::{MalformedEncoding, NotAbsolute, Refused};
use PathForm::*;

const STRICT: PathPolicy = PathPolicy::strict();

fn canon(path: &str, policy: PathPolicy) -> Result<String, PathError> {
    canonicalize(path, policy).map(|c| c.as_str().to_owned())
}

#[test]
fn accepted_forms() {
    // (input, canonical); `borrowed` when the input is already canonical.
    let cases: &[(&str, &str)] = &[
        ("/", "/"),
        ("/a", "/a"),
        ("/a/", "/a/"),
        ("/a/b/c.txt", "/a/b/c.txt"),
        (
            "/.well-known/openid-configuration",
            "/.well-known/openid-configuration",
        ),
        ("/a/.../b", "/a/.../b"),
        ("/a/..b/.c/b..", "/a/..b/.c/b.."),
        // Unreserved characters, encoded in any case, are decoded.
        ("/%61dmin", "/admin"),
        ("/%41%5a%30%39%2d%2E%5F%7e", "/AZ09-._~"),
        ("/a%2Eb", "/a.b"),
        // Sub-delimiters, `:` and `@` are decoded too: a segment means the same either way.
        ("/v1/items%3AbatchGet", "/v1/items:batchGet"),
        ("/users/a%40b.example", "/users/a@b.example"),
        ("/%21%24%26%27%28%29%2A%2B%2C%3D", "/!$&'()*+,="),
        ("/v1/items:batchGet", "/v1/items:batchGet"),
        // Other encoded bytes stay encoded, in upper-case hex.
        ("/a%3bb", "/a%3Bb"),
        ("/a%3Bb", "/a%3Bb"),
        ("/100%25", "/100%25"),
        ("/a%3fb%23c", "/a%3Fb%23c"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/a%20b", "/a%20b"),
        ("/%252F", "/%252F"),
        // Characters a path may not hold raw are encoded.
        ("/a b", "/a%20b"),
        ("/{\"json\"}", "/%7B%22json%22%7D"),
        ("/a|b^c`d<e>[f]", "/a%7Cb%5Ec%60d%3Ce%3E%5Bf%5D"),
    ];
    for (input, expected) in cases {
        let got = canonicalize(input, STRICT).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(got.as_str(), *expected, "{input}");
        assert_eq!(
            got.is_unchanged(),
            input == expected,
            "{input}: borrowed iff unchanged"
        );
        assert!(got.forms().is_empty(), "{input}");
    }
}

#[test]
fn refused_forms() {
    let cases: &[(&str, PathError)] = &[
        ("", NotAbsolute),
        ("*", NotAbsolute),
        ("a/b", NotAbsolute),
        ("http://h/a", NotAbsolute),
        ("%2Fa", NotAbsolute),
        // Dot segments in every spelling.
        ("/.", Refused(DotSegment)),
        ("/..", Refused(DotSegment)),
        ("/a/./b", Refused(DotSegment)),
        ("/a/../b", Refused(DotSegment)),
        ("/a/..", Refused(DotSegment)),
        ("/a/%2e/b", Refused(DotSegment)),
        ("/a/%2E%2e/b", Refused(DotSegment)),
        ("/a/.%2E/b", Refused(DotSegment)),
        ("/a/%2e./b", Refused(DotSegment)),
        // Encoded slash and backslash, any case; raw backslash.
        ("/a%2Fb", Refused(EncodedSlash)),
        ("/a%2fb", Refused(EncodedSlash)),
        ("/..%2f", Refused(EncodedSlash)),
        ("/a%5Cb", Refused(EncodedBackslash)),
        ("/a%5cb", Refused(EncodedBackslash)),
        ("/a\\b", Refused(Backslash)),
        ("/public\\..\\admin", Refused(Backslash)),
        // Controls, raw or encoded.
        ("/a%00", Refused(ControlCharacter)),
        ("/a%0d%0A", Refused(ControlCharacter)),
        ("/a%1F", Refused(ControlCharacter)),
        ("/a%7f", Refused(ControlCharacter)),
        ("/a\u{0}b", Refused(ControlCharacter)),
        ("/a\tb", Refused(ControlCharacter)),
        ("/a\u{7f}", Refused(ControlCharacter)),
        // Matrix parameters.
        ("/a;b", Refused(MatrixParameter)),
        ("/admin;jsessionid=1/x", Refused(MatrixParameter)),
        ("/..;/admin", Refused(MatrixParameter)),
        // Empty segments.
        ("//", Refused(EmptySegment)),
        ("//admin", Refused(EmptySegment)),
        ("/a//b", Refused(EmptySegment)),
        ("/a/b//", Refused(EmptySegment)),
        // Raw non-ASCII.
        ("/café", Refused(NonAscii)),
        ("/\u{1F600}", Refused(NonAscii)),
        // Malformed percent-encoding.
        ("/%", MalformedEncoding),
        ("/a%2", MalformedEncoding),
        ("/a%zz", MalformedEncoding),
        ("/a%g0", MalformedEncoding),
        ("/a%%41", MalformedEncoding),
        ("/a%2 ", MalformedEncoding),
    ];
    for (input, expected) in cases {
        assert_eq!(canonicalize(input, STRICT), Err(*expected), "{input:?}");
        // Allowing every other form does not let it through.
        if let Refused(form) = expected {
            let others: PathForms = PathForm::ALL.into_iter().filter(|f| f != form).collect();
            let got = canonicalize(input, PathPolicy::allowing(others));
            assert_eq!(
                got,
                Err(*expected),
                "{input:?} with every other form allowed"
            );
        }
    }
}

#[test]
fn allowed_forms_keep_what_was_authorized() {
    // (form allowed, input, canonical)
    let cases: &[(PathForm, &str, &str)] = &[
        (DotSegment, "/a/../b", "/a/../b"),
        (DotSegment, "/a/%2e%2E/b", "/a/../b"),
        (DotSegment, "/.", "/."),
        (EncodedSlash, "/a%2fb", "/a%2Fb"),
        (EncodedSlash, "/a%2Fb", "/a%2Fb"),
        (EncodedBackslash, "/a%5cb", "/a%5Cb"),
        (Backslash, "/a\\b", "/a\\b"),
        (ControlCharacter, "/a%0a", "/a%0A"),
        (ControlCharacter, "/a\nb", "/a%0Ab"),
        (ControlCharacter, "/%00", "/%00"),
        (MatrixParameter, "/a;b=c,d", "/a;b=c,d"),
        (MatrixParameter, "/a;b%3dc", "/a;b=c"),
        (MatrixParameter, "/a;x/b;y", "/a;x/b;y"),
        (EmptySegment, "//a", "//a"),
        (EmptySegment, "/a//b//", "/a//b//"),
        (NonAscii, "/café", "/caf%C3%A9"),
    ];
    for (form, input, expected) in cases {
        let policy = PathPolicy::strict().allow(*form);
        let got = canonicalize(input, policy).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(got.as_str(), *expected, "{input:?}");
        assert_eq!(got.forms(), PathForms::EMPTY.with(*form), "{input:?}");
        assert_eq!(policy.check(got.forms()), Ok(()));
        assert_eq!(STRICT.check(got.forms()), Err(Refused(*form)));
        assert_eq!(
            canon(expected, policy).as_deref(),
            Ok(*expected),
            "fixed point"
        );
    }
}

#[test]
fn matrix_parameters_do_not_hide_dot_or_empty_segments() {
    let matrix = PathPolicy::strict().allow(MatrixParameter);
    assert_eq!(canon("/..;/admin", matrix), Err(Refused(DotSegment)));
    assert_eq!(canon("/a/.;x", matrix), Err(Refused(DotSegment)));
    assert_eq!(canon("/%2e%2e;x/admin", matrix), Err(Refused(DotSegment)));
    assert_eq!(canon("/a/;x/b", matrix), Err(Refused(EmptySegment)));
    assert_eq!(canon("/;x", matrix), Err(Refused(EmptySegment)));
    // `%3B` is data, not a parameter: the segment is `..%3B`, not a dot segment.
    assert_eq!(canon("/..%3b/x", STRICT).as_deref(), Ok("/..%3B/x"));
    let both = matrix.allow(DotSegment).allow(EmptySegment);
    let got = canonicalize("/..;x//a;", both).unwrap();
    assert_eq!(got.as_str(), "/..;x//a;");
    assert_eq!(
        got.forms(),
        [MatrixParameter, DotSegment, EmptySegment]
            .into_iter()
            .collect()
    );
}

#[test]
fn policy_union_and_check() {
    let a = PathPolicy::strict().allow(EncodedSlash);
    let b = PathPolicy::strict().allow(MatrixParameter);
    let union = a.union(b);
    let got = canonicalize("/x%2Fy;z", union).unwrap();
    assert_eq!(union.check(got.forms()), Ok(()));
    assert_eq!(a.check(got.forms()), Err(Refused(MatrixParameter)));
    assert_eq!(b.check(got.forms()), Err(Refused(EncodedSlash)));
    assert_eq!(STRICT.check(PathForms::EMPTY), Ok(()));
}

#[test]
fn names_round_trip() {
    for form in PathForm::ALL {
        assert_eq!(form.name().parse::<PathForm>(), Ok(form));
        assert_eq!(form.to_string(), form.name());
        assert_eq!(Refused(form).description(), form.description());
    }
    let err = "dots".parse::<PathForm>().unwrap_err();
    assert!(err.to_string().contains("dot_segments"), "{err}");
    assert_eq!(
        format!("{:?}", PathForms::EMPTY.with(NonAscii).with(DotSegment)),
        "{DotSegment, NonAscii}"
    );
}

#[test]
fn borrowed_when_canonical() {
    for input in ["/", "/a/b", "/a:b@c/%C3%A9/%3B/%2F", "/x?"] {
        let policy = PathPolicy::strict().allow(EncodedSlash);
        match canonicalize(input, policy) {
            Ok(got) => assert!(got.is_unchanged() == (got.as_str() == input), "{input}"),
            Err(e) => panic!("{input}: {e}"),
        }
    }
    assert!(matches!(
        canonicalize("/a/b", STRICT).unwrap().into_cow(),
        Cow::Borrowed(_)
    ));
}
