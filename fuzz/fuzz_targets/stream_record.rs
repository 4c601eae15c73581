//! A DynamoDB stream record (Streams JSON) decoded into its CloudEvent. See
//! `eventpipe_worker::fuzzing::stream_record`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| eventpipe_worker::fuzzing::stream_record(data));
