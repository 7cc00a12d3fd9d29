//! One canonical request path: what the route decision sees is what the upstream gets.
//!
//! A gateway that authorizes one path while the service behind it serves another is an
//! authentication bypass: `/admin%2Fusers`, `/public/..%2Fadmin`, `/admin;x`, `//admin` and
//! `/public\..\admin` are each "not `/admin`" to a route table and `/admin` to some upstream
//! (servlet containers strip `;` parameters, many servers merge slashes, decode `%2F` or treat
//! `\` as `/`). [`canonicalize`] takes a request path as it came off the wire and returns
//! either a [`PathError`] (answer 400, reach no route) or the one canonical spelling that the
//! route table must match **and** the upstream must receive.
//!
//! The layers of this crate ([`RouteTable`](crate::authorize::RouteTable),
//! [`AuthorizeLayer`](crate::AuthorizeLayer), attribute rules on
//! [`path`](crate::authorize::path) and path parameters) match the path they are given,
//! byte for byte. A server that routes with them without canonicalising first, and forwards
//! or serves a path its backend normalises differently, is exposed to path confusion:
//! canonicalise first, route on the result, and forward the result.
//!
//! # The canonical form
//!
//! | in the request | canonical path | by default |
//! |---|---|---|
//! | unreserved characters, encoded (`%41`, `%7e`, `%2E`) | decoded (`A`, `~`, `.`) | accepted |
//! | `!$&'()*+,=:@`, encoded (`%3A`, `%40`) | decoded (`:`, `@`): a segment means the same with either spelling, so the route table cannot be walked around by encoding them | accepted |
//! | other encoded bytes (`%3B`, `%25`, `%3F`, `%C3%A9`) | kept encoded, hex in upper case | accepted |
//! | characters not allowed raw in a URI path (space, `"`, `<`, `>`, `[`, `]`, `^`, `` ` ``, `{`, `|`, `}`) | percent-encoded | accepted |
//! | a segment `.` or `..`, in any spelling (`%2e`, `.%2E`) | kept | refused: [`PathForm::DotSegment`] |
//! | `%2F` (encoded `/`), any case | kept as `%2F` | refused: [`PathForm::EncodedSlash`] |
//! | `%5C` (encoded `\`), any case | kept as `%5C` | refused: [`PathForm::EncodedBackslash`] |
//! | a raw `\` | kept | refused: [`PathForm::Backslash`] |
//! | a control character, raw or encoded (`%00`–`%1F`, `%7F`) | encoded | refused: [`PathForm::ControlCharacter`] |
//! | `;` in a segment (matrix parameters, `;jsessionid=`) | kept | refused: [`PathForm::MatrixParameter`] |
//! | an empty segment (`//`, or `/;x/`) other than a trailing `/` | kept | refused: [`PathForm::EmptySegment`] |
//! | raw bytes above 0x7F (UTF-8 sent unencoded) | percent-encoded | refused: [`PathForm::NonAscii`] |
//! | `%` not followed by two hex digits | — | always refused: [`PathError::MalformedEncoding`] |
//! | a path not starting with `/` | — | always refused: [`PathError::NotAbsolute`] |
//!
//! Each refused form can be allowed on its own with [`PathPolicy::allow`]; the canonical path
//! then keeps it exactly as listed, so what is forwarded is byte for byte what the route
//! table matched. [`CanonicalPath::forms`] says which allowed forms a path used, so a host
//! that allows a form for some routes only can canonicalise with the union of the routes'
//! policies and then check the matched route's own policy ([`PathPolicy::check`]).
//!
//! Allowing a form moves the risk to the upstream: with [`PathForm::MatrixParameter`]
//! allowed, `/admin;x` does not match a route `/admin`, and a servlet upstream that strips the
//! parameter serves `/admin`. Allow a form only on routes whose upstream serves nothing more
//! protected than the route itself.
//!
//! The canonical path is ASCII, a fixed point (canonicalising it again gives it back), and
//! percent-decoding it and encoding it again (any characters, any hex case) canonicalises to
//! the same path. A path that is already canonical is returned borrowed, without allocating.
//!
//! # Example
//!
//! Canonicalise, route on the result, forward the result:
//!
//! ```
//! use http::Method;
//! use tower_gatekeeper::authorize::{Lookup, RouteTable};
//! use tower_gatekeeper::path::{self, PathError, PathForm, PathPolicy};
//!
//! let table = RouteTable::builder()
//!     .route([Method::GET], "/files/{*rest}", "clerk")
//!     .route([Method::GET], "/files/private/{*rest}", "admin")
//!     .build()
//!     .unwrap();
//! let policy = PathPolicy::strict();
//! let route = |raw: &str| -> Result<(String, &str), PathError> {
//!     let canonical = path::canonicalize(raw, policy)?;
//!     let route = match table.lookup(&Method::GET, canonical.as_str()) {
//!         Lookup::Found(found) => *found.value(),
//!         _ => "none",
//!     };
//!     Ok((canonical.as_str().to_owned(), route))
//! };
//!
//! // Unreserved characters are decoded: the route table and the upstream see `private`.
//! assert_eq!(route("/files/%70rivate/salaries")?, ("/files/private/salaries".into(), "admin"));
//! // Spellings an upstream could read as `/files/private/...` never reach a route.
//! for walk_around in [
//!     "/files/public/..%2Fprivate/salaries",
//!     "/files/public/%2E%2E/private/salaries",
//!     "/files//private/salaries",
//!     "/files/private;x/salaries",
//!     "/files/public\\..\\private\\salaries",
//! ] {
//!     assert!(route(walk_around).is_err(), "{walk_around}");
//! }
//! assert_eq!(route("/files/a%2fb").unwrap_err(), PathError::Refused(PathForm::EncodedSlash));
//! // A route that needs encoded slashes allows them, and gets them as `%2F`.
//! let relaxed = PathPolicy::strict().allow(PathForm::EncodedSlash);
//! let canonical = path::canonicalize("/files/a%2fb", relaxed)?;
//! assert_eq!(canonical.as_str(), "/files/a%2Fb");
//! assert!(canonical.forms().contains(PathForm::EncodedSlash));
//! # Ok::<(), PathError>(())
//! ```

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// A path form refused by default that a [`PathPolicy`] can allow; see the
/// [module docs](self) for each form's canonical spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PathForm {
    /// A segment `.` or `..`, in any spelling (`%2e`, `.%2E`), also before a `;` parameter.
    DotSegment,
    /// `%2F`, an encoded `/` inside a segment.
    EncodedSlash,
    /// `%5C`, an encoded `\`.
    EncodedBackslash,
    /// A raw `\`.
    Backslash,
    /// A control character (0x00–0x1F, 0x7F), raw or encoded.
    ControlCharacter,
    /// A raw `;` in a segment (matrix parameters).
    MatrixParameter,
    /// An empty segment (`//`), or a segment that is only parameters (`/;x`); a trailing `/`
    /// is not one.
    EmptySegment,
    /// A raw byte above 0x7F (UTF-8 sent without percent-encoding).
    NonAscii,
}

impl PathForm {
    /// Every form, in declaration order.
    pub const ALL: [PathForm; 8] = [
        PathForm::DotSegment,
        PathForm::EncodedSlash,
        PathForm::EncodedBackslash,
        PathForm::Backslash,
        PathForm::ControlCharacter,
        PathForm::MatrixParameter,
        PathForm::EmptySegment,
        PathForm::NonAscii,
    ];

    /// The form's configuration name: `dot_segments`, `encoded_slash`, `encoded_backslash`,
    /// `backslash`, `control_characters`, `matrix_parameters`, `empty_segments`, `non_ascii`.
    /// [`FromStr`] reads the same names.
    pub const fn name(self) -> &'static str {
        match self {
            PathForm::DotSegment => "dot_segments",
            PathForm::EncodedSlash => "encoded_slash",
            PathForm::EncodedBackslash => "encoded_backslash",
            PathForm::Backslash => "backslash",
            PathForm::ControlCharacter => "control_characters",
            PathForm::MatrixParameter => "matrix_parameters",
            PathForm::EmptySegment => "empty_segments",
            PathForm::NonAscii => "non_ascii",
        }
    }

    /// A fixed, client-safe sentence saying why a path with this form is refused.
    pub const fn description(self) -> &'static str {
        match self {
            PathForm::DotSegment => "the request path has a dot segment",
            PathForm::EncodedSlash => "the request path has an encoded slash",
            PathForm::EncodedBackslash => "the request path has an encoded backslash",
            PathForm::Backslash => "the request path has a backslash",
            PathForm::ControlCharacter => "the request path has a control character",
            PathForm::MatrixParameter => "the request path has a ';' parameter",
            PathForm::EmptySegment => "the request path has an empty segment",
            PathForm::NonAscii => "the request path has unencoded non-ASCII bytes",
        }
    }

    const fn bit(self) -> u16 {
        1 << self as u16
    }
}

impl fmt::Display for PathForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a [`PathForm`]'s [`name`](PathForm::name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown path form {0:?}: expected one of dot_segments, encoded_slash, encoded_backslash, backslash, control_characters, matrix_parameters, empty_segments, non_ascii"
)]
pub struct UnknownPathForm(pub String);

impl FromStr for PathForm {
    type Err = UnknownPathForm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PathForm::ALL
            .into_iter()
            .find(|form| form.name() == s)
            .ok_or_else(|| UnknownPathForm(s.to_owned()))
    }
}

/// A set of [`PathForm`]s.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PathForms(u16);

impl PathForms {
    /// No form.
    pub const EMPTY: PathForms = PathForms(0);

    /// This set with `form` added.
    #[must_use]
    pub const fn with(self, form: PathForm) -> Self {
        PathForms(self.0 | form.bit())
    }

    /// Whether `form` is in the set.
    pub const fn contains(self, form: PathForm) -> bool {
        self.0 & form.bit() != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The forms of both sets.
    #[must_use]
    pub const fn union(self, other: PathForms) -> Self {
        PathForms(self.0 | other.0)
    }

    /// The forms in the set, in [`PathForm::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = PathForm> {
        PathForm::ALL.into_iter().filter(move |f| self.contains(*f))
    }
}

impl FromIterator<PathForm> for PathForms {
    fn from_iter<I: IntoIterator<Item = PathForm>>(iter: I) -> Self {
        iter.into_iter().fold(PathForms::EMPTY, PathForms::with)
    }
}

impl fmt::Debug for PathForms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// Which refused [`PathForm`]s a path may use. The default, [`PathPolicy::strict`], allows
/// none.
///
/// ```
/// use tower_gatekeeper::path::{PathForm, PathPolicy};
///
/// let policy = PathPolicy::strict()
///     .allow(PathForm::EncodedSlash)
///     .allow("matrix_parameters".parse().unwrap());
/// assert!(policy.allows(PathForm::MatrixParameter));
/// assert!(!policy.allows(PathForm::DotSegment));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PathPolicy {
    allowed: PathForms,
}

impl PathPolicy {
    /// Refuses every [`PathForm`].
    pub const fn strict() -> Self {
        PathPolicy {
            allowed: PathForms::EMPTY,
        }
    }

    /// Allows the forms in `forms`, and only them.
    pub const fn allowing(forms: PathForms) -> Self {
        PathPolicy { allowed: forms }
    }

    /// This policy, also allowing `form`.
    #[must_use]
    pub const fn allow(self, form: PathForm) -> Self {
        PathPolicy {
            allowed: self.allowed.with(form),
        }
    }

    /// Whether `form` is allowed.
    pub const fn allows(self, form: PathForm) -> bool {
        self.allowed.contains(form)
    }

    /// The allowed forms.
    pub const fn allowed(self) -> PathForms {
        self.allowed
    }

    /// A policy allowing what either allows: canonicalise with the union of several routes'
    /// policies, then [`check`](PathPolicy::check) the matched route's own.
    #[must_use]
    pub const fn union(self, other: PathPolicy) -> Self {
        PathPolicy {
            allowed: self.allowed.union(other.allowed),
        }
    }

    /// Whether a path that used `forms` (see [`CanonicalPath::forms`]) is acceptable here.
    ///
    /// # Errors
    ///
    /// [`PathError::Refused`] with the first form (in [`PathForm::ALL`] order) this policy
    /// does not allow.
    pub fn check(self, forms: PathForms) -> Result<(), PathError> {
        match forms.iter().find(|form| !self.allows(*form)) {
            Some(form) => Err(PathError::Refused(form)),
            None => Ok(()),
        }
    }

    /// [`canonicalize`] under this policy.
    ///
    /// # Errors
    ///
    /// See [`canonicalize`].
    pub fn canonicalize(self, path: &str) -> Result<CanonicalPath<'_>, PathError> {
        canonicalize(path, self)
    }
}

/// Why a path was refused. Every variant is a 400: no route is chosen for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path does not start with `/` (it is empty, `*`, or not in origin form).
    #[error("the request path does not start with '/'")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("the request path has a malformed percent-encoding")]
    MalformedEncoding,
    /// A form the policy does not allow.
    #[error("{}", .0.description())]
    Refused(PathForm),
}

impl PathError {
    /// A fixed, client-safe sentence for the 400 response.
    pub const fn description(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "the request path does not start with '/'",
            PathError::MalformedEncoding => "the request path has a malformed percent-encoding",
            PathError::Refused(form) => form.description(),
        }
    }

    /// The refused form, for [`PathError::Refused`].
    pub const fn form(self) -> Option<PathForm> {
        match self {
            PathError::Refused(form) => Some(form),
            _ => None,
        }
    }
}

/// A canonical path, borrowed from the input when it was already canonical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath<'a> {
    path: Cow<'a, str>,
    forms: PathForms,
}

impl<'a> CanonicalPath<'a> {
    /// The path to route on and to forward.
    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// The path, borrowed when the input was already canonical.
    pub fn into_cow(self) -> Cow<'a, str> {
        self.path
    }

    /// Whether the input was already canonical (nothing was rewritten, nothing allocated):
    /// the request can be forwarded with its request-target as it is.
    pub fn is_unchanged(&self) -> bool {
        matches!(self.path, Cow::Borrowed(_))
    }

    /// The allowed forms this path used (empty under [`PathPolicy::strict`]).
    pub fn forms(&self) -> PathForms {
        self.forms
    }
}

impl AsRef<str> for CanonicalPath<'_> {
    fn as_ref(&self) -> &str {
        &self.path
    }
}

impl fmt::Display for CanonicalPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)
    }
}

/// Canonicalises `path`, the path of a request-target as received (percent-encoded, without
/// the query), under `policy`; see the [module docs](self) for the rules.
///
/// # Errors
///
/// [`PathError`]: the request must be refused with 400 before any route is chosen.
///
/// ```
/// use tower_gatekeeper::path::{PathError, PathForm, PathPolicy, canonicalize};
///
/// let strict = PathPolicy::strict();
/// let same = canonicalize("/orders/42", strict).unwrap();
/// assert!(same.is_unchanged()); // borrowed: nothing allocated
/// assert_eq!(canonicalize("/%6Frders/a%3ab%3B", strict).unwrap().as_str(), "/orders/a:b%3B");
/// assert_eq!(canonicalize("/a/%2e%2E/b", strict), Err(PathError::Refused(PathForm::DotSegment)));
/// assert_eq!(canonicalize("/a/%zz", strict), Err(PathError::MalformedEncoding));
/// ```
pub fn canonicalize(path: &str, policy: PathPolicy) -> Result<CanonicalPath<'_>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut w = Writer {
        input: bytes,
        out: None,
        forms: PathForms::EMPTY,
        policy,
    };
    // The current segment starts at `seg_start` in the output; `name_end` is where its first
    // raw `;` is, if any.
    let mut seg_start = 1;
    let mut name_end: Option<usize> = None;
    let mut i = 1;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'/' => {
                w.end_segment(seg_start, name_end, w.len(i), false)?;
                w.keep(i);
                seg_start = w.len(i + 1);
                name_end = None;
                i += 1;
            }
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex_value),
                    bytes.get(i + 2).copied().and_then(hex_value),
                ) else {
                    return Err(PathError::MalformedEncoding);
                };
                let value = (hi << 4) | lo;
                match value {
                    v if is_segment_char(v) => w.push_raw(i, v),
                    _ => {
                        match value {
                            b'/' => w.note(PathForm::EncodedSlash)?,
                            b'\\' => w.note(PathForm::EncodedBackslash)?,
                            v if is_control(v) => w.note(PathForm::ControlCharacter)?,
                            _ => {}
                        }
                        if bytes[i + 1].is_ascii_lowercase() || bytes[i + 2].is_ascii_lowercase() {
                            w.push_encoded(i, value);
                        } else {
                            w.keep_run(i, 3);
                        }
                    }
                }
                i += 3;
            }
            b';' => {
                w.note(PathForm::MatrixParameter)?;
                if name_end.is_none() {
                    name_end = Some(w.len(i));
                }
                w.keep(i);
                i += 1;
            }
            b'\\' => {
                w.note(PathForm::Backslash)?;
                w.keep(i);
                i += 1;
            }
            v if is_control(v) => {
                w.note(PathForm::ControlCharacter)?;
                w.push_encoded(i, v);
                i += 1;
            }
            v if v >= 0x80 => {
                w.note(PathForm::NonAscii)?;
                w.push_encoded(i, v);
                i += 1;
            }
            v if is_segment_char(v) => {
                w.keep(i);
                i += 1;
            }
            // Printable ASCII a path may not hold raw (space, `"`, `<`, `>`, `[`, `]`, ...).
            v => {
                w.push_encoded(i, v);
                i += 1;
            }
        }
    }
    w.end_segment(seg_start, name_end, w.len(bytes.len()), true)?;
    let path = match w.out {
        None => Cow::Borrowed(path),
        Some(out) => Cow::Owned(out),
    };
    Ok(CanonicalPath {
        path,
        forms: w.forms,
    })
}

/// The output, borrowed from the input while the two are equal.
struct Writer<'a> {
    input: &'a [u8],
    /// `None` while the output equals the input read so far.
    out: Option<String>,
    forms: PathForms,
    policy: PathPolicy,
}

impl Writer<'_> {
    /// The output length once the input up to `read` is processed (only meaningful while
    /// borrowed, or at the current position).
    fn len(&self, read: usize) -> usize {
        self.out.as_ref().map_or(read, String::len)
    }

    fn note(&mut self, form: PathForm) -> Result<(), PathError> {
        if self.policy.allows(form) {
            self.forms = self.forms.with(form);
            Ok(())
        } else {
            Err(PathError::Refused(form))
        }
    }

    /// Copies the ASCII input byte at `at` unchanged.
    fn keep(&mut self, at: usize) {
        if let Some(out) = &mut self.out {
            out.push(char::from(self.input[at]));
        }
    }

    /// Copies `n` ASCII input bytes from `at` unchanged.
    fn keep_run(&mut self, at: usize, n: usize) {
        if let Some(out) = &mut self.out {
            out.extend(self.input[at..at + n].iter().copied().map(char::from));
        }
    }

    /// The output from here on differs from the input read up to `at`.
    fn owned(&mut self, at: usize) -> &mut String {
        let input = self.input;
        self.out.get_or_insert_with(|| {
            let mut out = String::with_capacity(input.len() + 8);
            // The input up to `at` was copied unchanged, so it is ASCII.
            out.extend(input[..at].iter().copied().map(char::from));
            out
        })
    }

    /// Writes the ASCII byte `value` in place of the input at `at`.
    fn push_raw(&mut self, at: usize, value: u8) {
        self.owned(at).push(char::from(value));
    }

    /// Writes `%XX` (upper-case hex) for `value` in place of the input at `at`.
    fn push_encoded(&mut self, at: usize, value: u8) {
        let out = self.owned(at);
        out.push('%');
        out.push(char::from(HEX[usize::from(value >> 4)]));
        out.push(char::from(HEX[usize::from(value & 0xF)]));
    }

    fn output(&self) -> &[u8] {
        match &self.out {
            Some(out) => out.as_bytes(),
            None => self.input,
        }
    }

    /// Checks the output segment `start..end`; `name_end` is where its parameters start.
    fn end_segment(
        &mut self,
        start: usize,
        name_end: Option<usize>,
        end: usize,
        last: bool,
    ) -> Result<(), PathError> {
        let name = &self.output()[start..name_end.unwrap_or(end)];
        let dot = name == b"." || name == b"..";
        let empty = (end == start && !last) || (name.is_empty() && name_end.is_some());
        if dot {
            self.note(PathForm::DotSegment)?;
        }
        if empty {
            self.note(PathForm::EmptySegment)?;
        }
        Ok(())
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Characters a segment holds raw in the canonical form: unreserved, and the sub-delimiters,
/// `:` and `@` except `;` (RFC 3986 `pchar`).
const fn is_segment_char(b: u8) -> bool {
    matches!(b,
        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~'
        | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'='
        | b':' | b'@')
}

const fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7F
}

#[cfg(test)]
mod tests;
