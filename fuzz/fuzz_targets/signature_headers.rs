//! A signature rule as a manifest writes it, then a request against it: header names,
//! prefixes, hex and base64 signatures, replay-window timestamps, bearer tokens. See
//! `eventpipe_ingress::fuzzing::signature_headers`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| eventpipe_ingress::fuzzing::signature_headers(data));
