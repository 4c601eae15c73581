//! The shop's services against moto, as a worker delivers to them: a repeated event
//! changes nothing and is answered as before, an event before its predecessor waits,
//! a repeated sign-up writes no second outbox item, and what is not an event or an
//! outbox item is refused with why.

// Set-up steps unwrap: a failure fails the test (clippy's allow-unwrap-in-tests
// covers #[test] functions only, not the helpers of an integration test).
#![allow(clippy::unwrap_used)]

use eventpipe_example_shop::{Shop, Tables};
use eventpipe_testkit::Moto;
use serde_json::{Value, json};

struct Running {
    url: String,
    moto: Moto,
}

async fn start() -> Running {
    let moto = Moto::start();
    let ddb = moto.dynamodb();
    // The outbox table is the stream binding's: created here as eventpipe dev would.
    create_outbox_table(&ddb).await;
    let shop = Shop::new(ddb, Tables::default()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(shop.serve(listener, std::future::pending()));
    Running { url, moto }
}

async fn create_outbox_table(ddb: &aws_sdk_dynamodb::Client) {
    use aws_sdk_dynamodb::types::*;
    ddb.create_table()
        .table_name("shop-outbox")
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

/// Delivers a binary-mode CloudEvent to `path`: the status, the reply's `ce-id` and
/// `ce-type`, and the body.
async fn deliver(
    r: &Running,
    path: &str,
    id: &str,
    ty: &str,
    data: &Value,
) -> (u16, Option<String>, Option<String>, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", r.url))
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-type", ty)
        .header("ce-source", "/test")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .body(data.to_string())
        .send()
        .await
        .unwrap();
    let header = |n: &str| {
        response
            .headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (status, id, ty) = (
        response.status().as_u16(),
        header("ce-id"),
        header("ce-type"),
    );
    let bytes = response.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, id, ty, body)
}

async fn order(r: &Running, id: &str) -> Value {
    let out = r
        .moto
        .dynamodb()
        .get_item()
        .table_name("shop-orders")
        .key(
            "orderId",
            aws_sdk_dynamodb::types::AttributeValue::S(id.into()),
        )
        .send()
        .await
        .unwrap();
    let item = out.item.unwrap_or_default();
    json!({
        "status": item.get("status").and_then(|v| v.as_s().ok()),
        "history": item.get("history").and_then(|v| v.as_l().ok()).map(|l| l.iter().map(|v| v.as_s().unwrap().clone()).collect::<Vec<_>>()),
        "traceId": item.get("traceId").and_then(|v| v.as_s().ok()),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_saga_event_changes_nothing_and_is_answered_as_before() {
    let r = start().await;
    let placed = json!({"type": "OrderPlaced", "orderId": "o-1", "sku": "widget", "quantity": 1, "amount": 10});
    for _ in 0..2 {
        let (status, id, ty, _) =
            deliver(&r, "/payments/charge", "e-1", "OrderPlaced", &placed).await;
        assert_eq!(status, 200);
        assert_eq!(id.as_deref(), Some("o-1.PaymentCompleted"));
        assert_eq!(ty.as_deref(), Some("PaymentCompleted"));
    }
    let o = order(&r, "o-1").await;
    assert_eq!(o["status"], "Paid");
    assert_eq!(o["history"], json!(["OrderPlaced", "PaymentCompleted"]));
    assert_eq!(o["traceId"], "0af7651916cd43dd8448eb211c80319c");

    // The order is not reserved yet: settling it waits (409, retried), changing nothing.
    let (status, _, _, body) =
        deliver(&r, "/orders/settle", "e-2", "InventoryReserved", &placed).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("order o-1 is Paid, not yet Reserved"),
        "{body}"
    );
    assert_eq!(order(&r, "o-1").await["status"], "Paid");

    // A declined card is the step's failure (422, with why), also when repeated.
    let big = json!({"orderId": "o-2", "sku": "widget", "quantity": 1, "amount": 5000});
    for _ in 0..2 {
        let (status, id, _, body) =
            deliver(&r, "/payments/charge", "e-3", "OrderPlaced", &big).await;
        assert_eq!((status, id), (422, None));
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with("PaymentFailed: card declined"),
            "{body}"
        );
    }
    assert_eq!(
        order(&r, "o-2").await["history"],
        json!(["OrderPlaced", "PaymentFailed"])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn what_is_not_an_order_or_an_event_is_refused_with_why() {
    let r = start().await;
    let (status, _, _, body) = deliver(
        &r,
        "/payments/charge",
        "e-1",
        "OrderPlaced",
        &json!({"orderId": "o-1"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("an order needs orderId, sku"),
        "{body}"
    );
    let response = reqwest::Client::new()
        .post(format!("{}/payments/charge", r.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("ce-id and ce-type are required"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_customer_and_its_outbox_item_are_written_together_once() {
    let r = start().await;
    let ada = json!({"customerId": "c-1", "name": "Ada", "email": "ada@example.com"});
    let (status, _, _, first) =
        deliver(&r, "/customers/register", "e-1", "CustomerSignedUp", &ada).await;
    assert_eq!(status, 200, "{first}");
    let outbox_id = first["outbox"].as_str().unwrap().to_string();
    let (status, _, _, again) =
        deliver(&r, "/customers/register", "e-2", "CustomerSignedUp", &ada).await;
    assert_eq!((status, &again["already"]), (200, &json!(true)), "{again}");
    let items = r
        .moto
        .dynamodb()
        .scan()
        .table_name("shop-outbox")
        .send()
        .await
        .unwrap();
    let items = items.items.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"].as_s().unwrap(), &outbox_id);
    assert_eq!(items[0]["type"].as_s().unwrap(), "CustomerRegistered");

    let bad = json!({"customerId": "c-2", "name": "Bob", "email": "nope"});
    let (status, _, _, body) =
        deliver(&r, "/customers/register", "e-3", "CustomerSignedUp", &bad).await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("an email address"),
        "{body}"
    );

    // The relay answers an outbox item with its event, and refuses what is not one.
    let item = json!({"id": outbox_id, "type": "CustomerRegistered", "source": "/shop/customers", "subject": "c-1", "data": ada});
    let (status, id, ty, body) = deliver(
        &r,
        "/outbox/relay",
        "rec-1",
        "eventpipe.dynamodb.INSERT",
        &item,
    )
    .await;
    assert_eq!(
        (status, id.as_deref(), ty.as_deref()),
        (200, Some(outbox_id.as_str()), Some("CustomerRegistered"))
    );
    assert_eq!(body, ada);
    let (status, _, _, body) = deliver(
        &r,
        "/outbox/relay",
        "rec-2",
        "eventpipe.dynamodb.INSERT",
        &json!({"id": "x"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("needs id, type, source and data"),
        "{body}"
    );
}
