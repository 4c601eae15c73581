//! Arbitrary bytes as a webhook request: signature verification, content-type and
//! JSON checks, value extraction. See `eventpipe_ingress::fuzzing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| eventpipe_ingress::fuzzing::webhook_request(data));
