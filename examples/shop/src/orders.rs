//! The orders table: each order's status and the saga's history, changed only from
//! the status a step expects (a conditional update), so two deliveries of one event
//! cannot both advance it.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::saga::{Order, Status};

/// An order as stored: nothing yet, or its status and history.
#[derive(Debug, Default)]
pub struct Stored {
    pub status: Option<Status>,
    pub history: Vec<String>,
}

/// A step's change: from the status it expects to the one it leaves, the events it
/// records, and the trace the order's saga runs in.
pub struct Change<'a> {
    pub order: &'a Order,
    pub from: Option<Status>,
    pub to: Status,
    pub events: &'a [&'a str],
    pub trace_id: Option<&'a str>,
}

#[derive(Clone)]
pub struct Orders {
    pub ddb: Client,
    pub table: String,
}

impl Orders {
    pub async fn get(&self, id: &str) -> anyhow::Result<Stored> {
        let out = (self.ddb.get_item())
            .table_name(&self.table)
            .key("orderId", AttributeValue::S(id.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("read order {id}: {}", DisplayErrorContext(&e)))?;
        let Some(item) = out.item else {
            return Ok(Stored::default());
        };
        let status = item.get("status").and_then(|v| v.as_s().ok());
        let history = item.get("history").and_then(|v| v.as_l().ok());
        Ok(Stored {
            status: status.and_then(|s| Status::parse(s)),
            history: (history.into_iter().flatten())
                .filter_map(|v| v.as_s().ok().cloned())
                .collect(),
        })
    }

    /// Applies the change; false when the order is no longer where the step found it.
    pub async fn advance(&self, c: Change<'_>) -> anyhow::Result<bool> {
        let mut update = String::from(
            "SET #status = :to, history = list_append(if_not_exists(history, :none), :events), \
             sku = :sku, quantity = :quantity, amount = :amount, updatedAt = :now",
        );
        let mut values = HashMap::from([
            (":to".into(), s(c.to.as_str())),
            (":none".into(), AttributeValue::L(vec![])),
            (
                ":events".into(),
                AttributeValue::L(c.events.iter().map(|e| s(e)).collect()),
            ),
            (":sku".into(), s(&c.order.sku)),
            (
                ":quantity".into(),
                AttributeValue::N(c.order.quantity.to_string()),
            ),
            (
                ":amount".into(),
                AttributeValue::N(c.order.amount.to_string()),
            ),
            (":now".into(), s(&chrono::Utc::now().to_rfc3339())),
        ]);
        if let Some(trace) = c.trace_id {
            update.push_str(", traceId = if_not_exists(traceId, :trace)");
            values.insert(":trace".into(), s(trace));
        }
        let condition = match c.from {
            None => "attribute_not_exists(orderId)",
            Some(from) => {
                values.insert(":from".into(), s(from.as_str()));
                "#status = :from"
            }
        };
        let result = (self.ddb.update_item())
            .table_name(&self.table)
            .key("orderId", s(&c.order.id))
            .update_expression(update)
            .condition_expression(condition)
            .expression_attribute_names("#status", "status")
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => anyhow::bail!("update order {}: {}", c.order.id, DisplayErrorContext(&e)),
        }
    }
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}
