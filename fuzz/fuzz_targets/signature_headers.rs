//! A signature rule as a manifest writes it, then a request against it: every scheme
//! (Stripe's and Standard Webhooks' multi-signature headers, whsec_ secrets, signed
//! string templates, sha512), header names, prefixes, hex and base64 signatures,
//! replay-window timestamps, tokens. See `eventpipe_ingress::fuzzing::signature_headers`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| eventpipe_ingress::fuzzing::signature_headers(data));
