//! The examples a user applies, as the operator sees them once applied: in namespace
//! `shop`, with a uid.

use eventpipe_crds::{Manifest, Pipeline};

/// The examples' folder, `examples/` at the repository's root.
pub const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");

/// Pipeline `name` of `examples/<file>`.
pub fn example(file: &str, name: &str) -> Pipeline {
    let manifest = Manifest::load(format!("{DIR}/{file}")).unwrap();
    applied(manifest.pipeline(name).unwrap())
}

/// `p` as applied: in namespace `shop`, with a uid.
pub fn applied(mut p: Pipeline) -> Pipeline {
    p.pipeline.metadata.namespace = Some("shop".into());
    p.pipeline.metadata.uid = Some("6f1c0c4e-1111-2222-3333-444455556666".into());
    p
}
