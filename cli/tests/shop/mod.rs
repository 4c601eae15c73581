//! The example shop's services beside an example that `eventpipe demo` runs: served
//! in the test's process on a port of their own, the example copied with that port
//! in place of the one its container processors name.

use std::path::PathBuf;

use eventpipe_example_shop::{Shop, Tables};
use eventpipe_testkit::Moto;

/// The port the examples' container processors name.
const EXAMPLE_PORT: &str = "port: 8090";

pub struct Running {
    pub runtime: tokio::runtime::Runtime,
    pub port: u16,
}

/// The shop against `moto`, on a free loopback port, until the test ends.
pub fn start(moto: &Moto) -> Running {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let port = runtime.block_on(async {
        let shop = Shop::new(moto.dynamodb(), Tables::default()).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(shop.serve(listener, std::future::pending()));
        port
    });
    Running { runtime, port }
}

/// `examples/<name>.yaml` and its scenario, copied into `dir` with the services on
/// `port`, each manifest line changed by `edit` too: the manifest's path.
pub fn example(
    dir: &tempfile::TempDir,
    name: &str,
    port: u16,
    edit: impl Fn(String) -> String,
) -> PathBuf {
    let examples = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"));
    let yaml = std::fs::read_to_string(examples.join(format!("{name}.yaml"))).unwrap();
    assert!(
        yaml.contains(EXAMPLE_PORT),
        "{name}.yaml names no {EXAMPLE_PORT}"
    );
    let yaml = edit(yaml.replace(EXAMPLE_PORT, &format!("port: {port}")));
    let manifest = dir.path().join(format!("{name}.yaml"));
    std::fs::write(&manifest, yaml).unwrap();
    let scenario = format!("{name}.demo.json");
    std::fs::copy(examples.join(&scenario), dir.path().join(&scenario)).unwrap();
    manifest
}

/// Every item of `table`, as plain JSON.
pub fn scan(running: &Running, moto: &Moto, table: &str) -> Vec<serde_json::Value> {
    let out = running
        .runtime
        .block_on(moto.dynamodb().scan().table_name(table).send())
        .unwrap();
    let items = out.items.unwrap_or_default().into_iter();
    items.map(eventpipe_core::item::to_json).collect()
}
