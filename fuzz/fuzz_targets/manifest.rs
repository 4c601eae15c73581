//! Manifest text as `eventpipe dev`, `demo` and `validate` load it: multi-document
//! YAML, validated against the CRD schemas, references resolved. An error is an
//! error, never a panic, and every resolved pipeline reads back from its own
//! `to_yaml` unchanged.
#![no_main]

use eventpipe_crds::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let manifest = match Manifest::from_yaml("fuzz.yaml", text) {
        Ok(m) => m,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let Ok(pipelines) = manifest.resolved().map_err(|e| e.to_string()) else {
        return;
    };
    for pipeline in pipelines {
        let yaml = pipeline.to_yaml();
        let again = Manifest::from_yaml("again.yaml", &yaml)
            .and_then(|m| m.pipeline(&pipeline.name()))
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(again, pipeline, "to_yaml reads back unchanged");
    }
});
