//! The shop's own tables, created when missing (the outbox table is the stream
//! binding's: `eventpipe dev` or the operator creates it).

use std::time::Duration;

use anyhow::Context;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};

/// The tables the services use.
#[derive(Clone, Debug)]
pub struct Tables {
    /// Orders and their saga history, keyed by `orderId`.
    pub orders: String,
    /// Customers, keyed by `customerId`.
    pub customers: String,
    /// The outbox: one item per event to publish, keyed by `id`.
    pub outbox: String,
}

impl Default for Tables {
    fn default() -> Self {
        Self {
            orders: "shop-orders".into(),
            customers: "shop-customers".into(),
            outbox: "shop-outbox".into(),
        }
    }
}

/// Creates the orders and customers tables unless they exist, and waits for them.
pub async fn ensure(ddb: &Client, tables: &Tables) -> anyhow::Result<()> {
    for (name, key) in [
        (&tables.orders, "orderId"),
        (&tables.customers, "customerId"),
    ] {
        ensure_table(ddb, name, key)
            .await
            .with_context(|| format!("table {name}"))?;
    }
    Ok(())
}

async fn ensure_table(ddb: &Client, name: &str, key: &str) -> anyhow::Result<()> {
    if ddb.describe_table().table_name(name).send().await.is_err() {
        let created = ddb
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(key)
                    .attribute_type(ScalarAttributeType::S)
                    .build()?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(key)
                    .key_type(KeyType::Hash)
                    .build()?,
            )
            .send()
            .await;
        // Another replica may have created it meanwhile; the wait below tells.
        if let Err(e) = created {
            eprintln!(
                "shop: creating table {name}: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(&e)
            );
        }
    }
    for _ in 0..60 {
        let table = ddb.describe_table().table_name(name).send().await?;
        if table.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("not active after 30 s")
}
