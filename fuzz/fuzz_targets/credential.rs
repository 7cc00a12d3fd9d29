//! Credential extraction and the authenticate layer's request checks on arbitrary header maps.
#![no_main]

use http::{HeaderName, HeaderValue, Request};
use libfuzzer_sys::fuzz_target;
use tower_gatekeeper::credential::{RequestHead, bearer_token};

fuzz_target!(|data: &[u8]| {
    // Records separated by 0xFF: `name 0x00 value`; names default to `authorization`.
    let mut request = Request::new(());
    for record in data.split(|b| *b == 0xFF).take(32) {
        let (name, value) = match record.iter().position(|b| *b == 0) {
            Some(i) => (&record[..i], &record[i + 1..]),
            None => (&b"authorization"[..], record),
        };
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        else {
            continue;
        };
        request.headers_mut().append(name, value);
    }
    let head = RequestHead::of(&request);
    for limit in [0, 64, 16 * 1024] {
        match bearer_token(&head, limit) {
            Ok(Some(token)) => {
                assert!(token.len() <= limit);
                assert!(!token.is_empty());
                assert!(token.bytes().all(|b| b.is_ascii_graphic()));
            }
            Ok(None) => {}
            Err(rejection) => {
                // Rejections never echo client input.
                assert!(!rejection.description().contains('\n'));
            }
        }
    }
});
