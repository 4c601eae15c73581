//! What the three kinds declare alike: group and version, namespace scope, the
//! `eventpipe` category, a `PartialEq` kind type and a last column, `Age`.

/// Declares a kind by its spec struct. `#[kube(...)]` comes first and gives what is
/// the kind's own (kind, status, short name, doc and the columns before `Age`), each
/// argument followed by a comma. The spec's attributes and docs follow it.
///
/// rustfmt leaves macro input alone: keep the struct formatted as rustfmt would.
macro_rules! kind {
    (#[kube($($kube:tt)*)] $(#[$attr:meta])* pub struct $spec:ident $fields:tt) => {
        #[derive(
            kube::CustomResource,
            kube::KubeSchema,
            Clone,
            Debug,
            PartialEq,
            serde::Serialize,
            serde::Deserialize,
        )]
        #[kube(
            group = "eventpipe.dev",
            version = "v1alpha1",
            namespaced,
            category = "eventpipe",
            derive = "PartialEq",
            $($kube)*
            printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
        )]
        #[serde(rename_all = "camelCase")]
        // kube's `printcolumn(...)` repeats keys by design.
        #[allow(clippy::duplicated_attributes)]
        $(#[$attr])*
        pub struct $spec $fields
    };
}
