//! Customer registration, the outbox's writer: the customer and the outbox item that
//! announces it are written in one DynamoDB transaction, so there is never one
//! without the other. Registering a customer again changes nothing.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use serde_json::{Value, json};

use crate::cloudevent::Incoming;
use crate::outbox::{self, NewItem};
use crate::tables::Tables;

/// A customer as a sign-up event carries it.
#[derive(Debug, PartialEq)]
pub struct Customer {
    pub id: String,
    pub name: String,
    pub email: String,
}

impl Customer {
    pub fn from_event(data: &Value) -> Result<Self, String> {
        let text = |k: &str| {
            data[k]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        match (text("customerId"), text("name"), text("email")) {
            (Some(id), Some(name), Some(email)) if email.contains('@') => {
                Ok(Self { id, name, email })
            }
            _ => Err("a customer needs customerId, name and an email address".into()),
        }
    }

    fn to_json(&self) -> Value {
        json!({"customerId": self.id, "name": self.name, "email": self.email})
    }
}

/// What a registration did.
#[derive(Debug, PartialEq)]
pub enum Registered {
    /// The customer and its outbox item (this id) were written.
    New(String),
    /// The customer was registered before: nothing written.
    Already,
}

pub async fn register(
    ddb: &Client,
    tables: &Tables,
    customer: &Customer,
    cause: &Incoming,
) -> anyhow::Result<Registered> {
    // Looked up first, so a repeated sign-up does not even try the transaction (the
    // transaction's conditions still settle a race between two).
    if exists(ddb, &tables.customers, &customer.id).await? {
        return Ok(Registered::Already);
    }
    let now = chrono::Utc::now().to_rfc3339();
    let mut record = customer.to_json();
    record["registeredAt"] = json!(now);
    let id = uuid::Uuid::now_v7().to_string();
    let item = outbox::item(
        NewItem {
            id: id.clone(),
            event_type: "CustomerRegistered",
            source: "/shop/customers",
            subject: &customer.id,
            data: customer.to_json(),
            now,
        },
        cause,
    );
    let written = (ddb.transact_write_items())
        .transact_items(put(&tables.customers, &record, "customerId")?)
        .transact_items(put(&tables.outbox, &item, "id")?)
        .send()
        .await;
    match written {
        Ok(_) => Ok(Registered::New(id)),
        // Cancelled: the customer exists (its outbox item was written with it), or
        // the transaction clashed with another; a retry tells which.
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_transaction_canceled_exception()) =>
        {
            match exists(ddb, &tables.customers, &customer.id).await? {
                true => Ok(Registered::Already),
                false => anyhow::bail!("register {}: transaction cancelled", customer.id),
            }
        }
        Err(e) => anyhow::bail!("register {}: {}", customer.id, DisplayErrorContext(&e)),
    }
}

/// A put of `doc` that only creates (the item must not exist yet).
fn put(table: &str, doc: &Value, key: &str) -> anyhow::Result<TransactWriteItem> {
    let item: HashMap<String, AttributeValue> = serde_dynamo::to_item(doc)?;
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression(format!("attribute_not_exists({key})"))
        .build()?;
    Ok(TransactWriteItem::builder().put(put).build())
}

async fn exists(ddb: &Client, table: &str, id: &str) -> anyhow::Result<bool> {
    let out = (ddb.get_item())
        .table_name(table)
        .key("customerId", AttributeValue::S(id.into()))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("read customer {id}: {}", DisplayErrorContext(&e)))?;
    Ok(out.item.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_customer_needs_an_id_a_name_and_an_email_address() {
        let ok = json!({"customerId": "c-1", "name": "Ada", "email": "ada@example.com"});
        assert_eq!(
            Customer::from_event(&ok).unwrap(),
            Customer {
                id: "c-1".into(),
                name: "Ada".into(),
                email: "ada@example.com".into()
            }
        );
        for bad in [
            json!({"name": "Ada", "email": "ada@example.com"}),
            json!({"customerId": "c-1", "name": "Ada", "email": "nope"}),
            json!({"customerId": "c-1", "name": "", "email": "ada@example.com"}),
        ] {
            let err = Customer::from_event(&bad).unwrap_err();
            assert!(
                err.contains("customerId, name and an email address"),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_put_only_creates() {
        let put = put("t", &json!({"id": "x", "n": 1}), "id").unwrap();
        let p = put.put().unwrap();
        assert_eq!(p.condition_expression(), Some("attribute_not_exists(id)"));
        assert_eq!(p.item()["n"], AttributeValue::N("1".into()));
    }
}
