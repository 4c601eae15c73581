//! `shop`: the example shop's services on one HTTP listener.

use std::net::SocketAddr;

use clap::Parser;
use eventpipe_example_shop::{Shop, Tables};

#[derive(Parser)]
#[command(about = "The example shop's services (orders saga, customer outbox)")]
struct Args {
    /// Where the services listen: the port the examples' container processors name.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    #[arg(long, default_value = "shop-orders")]
    orders_table: String,
    #[arg(long, default_value = "shop-customers")]
    customers_table: String,
    /// The outbox: the table of the stream binding in examples/outbox.yaml.
    #[arg(long, default_value = "shop-outbox")]
    outbox_table: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = aws_config().await;
    let tables = Tables {
        orders: args.orders_table,
        customers: args.customers_table,
        outbox: args.outbox_table,
    };
    let shop = Shop::new(aws_sdk_dynamodb::Client::new(&config), tables).await?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("shop listening on http://{}", listener.local_addr()?);
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    shop.serve(listener, stop).await?;
    Ok(())
}

/// The SDK's defaults; against an emulator (`AWS_ENDPOINT_URL`, as `eventpipe dev`
/// prints it) any credentials and region do, so placeholders stand in for missing ones.
async fn aws_config() -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if std::env::var_os("AWS_ENDPOINT_URL").is_some() {
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            let placeholder = aws_sdk_dynamodb::config::Credentials::new(
                "testing", "testing", None, None, "emulator",
            );
            loader = loader.credentials_provider(placeholder);
        }
        if std::env::var_os("AWS_REGION").is_none() {
            loader = loader.region(aws_config::Region::new("us-east-1"));
        }
    }
    loader.load().await
}
