//! The control protocol's decoders on arbitrary lines.
//!
//! Property: a decoded request (response) re-encodes with serde_json to a line that
//! decodes to an equal request (response).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvs_ctl::protocol::{parse_request, parse_response};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = parse_request(data) {
        let line = serde_json::to_vec(&req).expect("a request encodes");
        let again = parse_request(&line).expect("a re-encoded request decodes");
        assert_eq!(again, req, "re-encoded request decodes differently");
    }
    if let Ok(resp) = parse_response(data) {
        let line = serde_json::to_vec(&resp).expect("a response encodes");
        let again = parse_response(&line).expect("a re-encoded response decodes");
        assert_eq!(again, resp, "re-encoded response decodes differently");
    }
});
