//! The shop's HTTP endpoints, each a processor of one pipeline: the saga's payment,
//! inventory, refund and order services, customer registration and the outbox relay.
//!
//! Answers follow eventpipe's delivery contract: `200` with a CloudEvent is a reply,
//! `422` a failure of the step (the pipeline's DeadLetterPolicy sends it on as its
//! failure event), `400` an event that cannot be handled, `409` "not yet" (retried)
//! and `503` a store that cannot be reached (retried).

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use crate::cloudevent::{Incoming, Reply};
use crate::customers::{self, Customer, Registered};
use crate::orders::{Change, Orders};
use crate::saga::{self, Action, Order, Step};
use crate::{Shop, outbox};

pub fn router(shop: Shop) -> Router {
    let step = |step: Step| move |s: State<Shop>, h: HeaderMap, b: Bytes| saga_step(s, step, h, b);
    Router::new()
        .route("/payments/charge", post(step(Step::Charge)))
        .route("/inventory/reserve", post(step(Step::Reserve)))
        .route("/payments/refund", post(step(Step::Refund)))
        .route("/orders/settle", post(step(Step::Settle)))
        .route("/customers/register", post(register))
        .route("/outbox/relay", post(relay))
        .with_state(shop)
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, axum::Json(json!({"error": message.to_string()}))).into_response()
}

async fn saga_step(
    State(shop): State<Shop>,
    step: Step,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let event = match Incoming::parse(&headers, &body) {
        Ok(e) => e,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let order = match Order::from_event(&event.data) {
        Ok(o) => o,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let orders = Orders {
        ddb: shop.ddb.clone(),
        table: shop.tables.orders.clone(),
    };
    let stored = match orders.get(&order.id).await {
        Ok(s) => s,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")),
    };
    match saga::decide(
        step,
        &event.event_type,
        &order,
        stored.status,
        &stored.history,
    ) {
        Action::Advance { from, result } => {
            let events = saga::recorded(step, &result);
            let change = Change {
                order: &order,
                from,
                to: result.status,
                events: &events,
                trace_id: event.trace_id(),
            };
            match orders.advance(change).await {
                Ok(true) => answer(step, &order, result),
                Ok(false) => error(
                    StatusCode::CONFLICT,
                    format!("order {} changed meanwhile", order.id),
                ),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")),
            }
        }
        Action::Repeat(result) => answer(step, &order, result),
        Action::NotYet(why) => error(StatusCode::CONFLICT, why),
    }
}

/// A step's answer: the next event, or its failure.
fn answer(step: Step, order: &Order, result: saga::Outcome) -> Response {
    if result.failed {
        let why = match step {
            Step::Charge => format!(
                "card declined: {} is over the credit limit of {}",
                order.amount,
                saga::CREDIT_LIMIT
            ),
            _ => format!("{} x {} not in stock", order.quantity, order.sku),
        };
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{}: {why}", result.event),
        );
    }
    let source = match step {
        Step::Charge | Step::Refund => "/shop/payments",
        Step::Reserve => "/shop/inventory",
        // The saga ends here: the order's status is the outcome, nothing is sent on.
        Step::Settle => {
            return (
                StatusCode::OK,
                axum::Json(json!({"status": result.status.as_str()})),
            )
                .into_response();
        }
    };
    Reply {
        id: format!("{}.{}", order.id, result.event),
        event_type: result.event.into(),
        source: source.into(),
        subject: Some(order.id.clone()),
        data: order.to_json(),
    }
    .into_response()
}

async fn register(State(shop): State<Shop>, headers: HeaderMap, body: Bytes) -> Response {
    let event = match Incoming::parse(&headers, &body) {
        Ok(e) => e,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let customer = match Customer::from_event(&event.data) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match customers::register(&shop.ddb, &shop.tables, &customer, &event).await {
        Ok(Registered::New(outbox_id)) => {
            axum::Json(json!({"registered": customer.id, "outbox": outbox_id})).into_response()
        }
        Ok(Registered::Already) => {
            axum::Json(json!({"registered": customer.id, "already": true})).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")),
    }
}

/// A new outbox item, from the outbox table's stream, answered with the event it
/// announces.
async fn relay(headers: HeaderMap, body: Bytes) -> Response {
    let event = match Incoming::parse(&headers, &body) {
        Ok(e) => e,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match outbox::published(&event.data) {
        Ok(reply) => reply.into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}
