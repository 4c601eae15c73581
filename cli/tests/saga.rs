//! examples/orders-saga.yaml end to end against moto, with the example shop's
//! services: `eventpipe demo` sends four orders; one completes, a declined card and
//! an item out of stock end Cancelled by their compensating events.

// Set-up steps unwrap: a failure fails the test (clippy's allow-unwrap-in-tests
// covers #[test] functions only, not the helpers of an integration test).
#![allow(clippy::unwrap_used)]

mod common;
mod shop;

use std::collections::BTreeMap;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use common::eventpipe;
use eventpipe_testkit::{Moto, free_port};
use serde_json::{Value, json};

fn history(events: &[&str]) -> Value {
    json!(events)
}

#[test]
fn the_saga_completes_orders_and_compensates_the_failed_ones() {
    let moto = Moto::start();
    let shop = shop::start(&moto);
    let dir = tempfile::tempdir().unwrap();
    let manifest = shop::example(&dir, "orders-saga", shop.port, |y| y);
    let (ok, out, err) = eventpipe(&["demo", "-f", manifest.to_str().unwrap()], &moto.env());
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("sent 4 events, accepted 4"), "{out}");
    assert!(out.contains("OK: everything"), "{out}");

    // What a user checks: each order's status and what happened to it, in order.
    let orders: BTreeMap<String, Value> = shop::scan(&shop, &moto, "shop-orders")
        .into_iter()
        .map(|o| (o["orderId"].as_str().unwrap().to_string(), o))
        .collect();
    let completed = history(&[
        "OrderPlaced",
        "PaymentCompleted",
        "InventoryReserved",
        "OrderCompleted",
    ]);
    let want = [
        ("order-1001", "Completed", completed.clone()),
        (
            "order-1002",
            "Cancelled",
            history(&["OrderPlaced", "PaymentFailed", "OrderCancelled"]),
        ),
        (
            "order-1003",
            "Cancelled",
            history(&[
                "OrderPlaced",
                "PaymentCompleted",
                "InventoryRejected",
                "PaymentRefunded",
                "OrderCancelled",
            ]),
        ),
        ("order-1004", "Completed", completed),
    ];
    assert_eq!(orders.len(), want.len(), "{orders:#?}");
    for (id, status, events) in want {
        let order = &orders[id];
        assert_eq!(order["status"], status, "{order}");
        assert_eq!(order["history"], events, "{order}");
        // Its trace id, printed on its row: one trace from the webhook to the last step.
        let trace = order["traceId"].as_str().unwrap();
        assert_eq!(trace.len(), 32, "{order}");
        assert!(
            out.lines().any(|l| l.contains(id) && l.contains(trace)),
            "{out}"
        );
    }

    // The two failed steps were dead-lettered with why, each in its order's group: the
    // FIFO queues keep every order's events in one group, in order.
    let sqs = moto.sqs();
    let dead = shop.runtime.block_on(async {
        let url = sqs
            .get_queue_url()
            .queue_name("orders-dlq.fifo")
            .send()
            .await
            .unwrap();
        let received = sqs
            .receive_message()
            .queue_url(url.queue_url().unwrap())
            .max_number_of_messages(10)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap();
        received.messages.unwrap_or_default()
    });
    let mut reasons: Vec<(String, String)> = dead
        .iter()
        .map(|m| {
            let group =
                m.attributes().unwrap()[&MessageSystemAttributeName::MessageGroupId].clone();
            let error = m.message_attributes().unwrap()["eventpipe-error"]
                .string_value()
                .unwrap()
                .to_string();
            (group, error)
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(reasons[0].0, "order-1002");
    assert!(
        reasons[0].1.contains("PaymentFailed: card declined"),
        "{reasons:?}"
    );
    assert_eq!(reasons[1].0, "order-1003");
    assert!(
        reasons[1]
            .1
            .contains("InventoryRejected: 1 x gadget not in stock"),
        "{reasons:?}"
    );
}

#[test]
fn the_demo_says_when_the_services_do_not_run_or_the_outcome_is_not_as_expected() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let manifest = shop::example(&dir, "orders-saga", port, |y| y);
    let (ok, out, err) = eventpipe(&["demo", "-f", manifest.to_str().unwrap()], &moto.env());
    assert!(!ok, "{out}");
    assert!(
        err.contains(&format!(
            "nothing listens on 127.0.0.1:{port}, where order-payment, order-inventory, order-compensation, order-status deliver (container processor): start the example's services first: cargo run -p eventpipe-example-shop"
        )),
        "{err}"
    );

    let shop = shop::start(&moto);
    let manifest = shop::example(&dir, "orders-saga", shop.port, |y| y);
    let scenario = dir.path().join("orders-saga.demo.json");
    let text = std::fs::read_to_string(&scenario).unwrap();
    let wrong = text.replacen(r#""status": "Completed""#, r#""status": "Cancelled""#, 1);
    assert_ne!(wrong, text);
    std::fs::write(&scenario, wrong).unwrap();
    let (ok, out, err) = eventpipe(
        &["demo", "-f", manifest.to_str().unwrap(), "--timeout", "30s"],
        &moto.env(),
    );
    assert!(!ok, "{out}");
    assert!(err.contains("not as"), "{err}");
    // Whatever the saga got to in that time, the order named is not as expected.
    assert!(err.contains("order-1001: status is "), "{err}");
    assert!(err.contains(r#"expected "Cancelled""#), "{err}");
}
