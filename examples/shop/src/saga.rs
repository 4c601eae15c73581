//! The order saga's rules, free of I/O: what each service decides for an order, and
//! how an order moves from one status to the next. Every step expects the status its
//! predecessor left; a step that already happened answers as it did (a redelivery),
//! and one whose predecessor has not happened yet waits (the event is retried).

use serde_json::Value;

/// Where an order stands; the step that left it there is the last of its history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Paid,
    PaymentFailed,
    Reserved,
    Rejected,
    Refunded,
    Completed,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Paid => "Paid",
            Status::PaymentFailed => "PaymentFailed",
            Status::Reserved => "Reserved",
            Status::Rejected => "Rejected",
            Status::Refunded => "Refunded",
            Status::Completed => "Completed",
            Status::Cancelled => "Cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Status::Paid,
            Status::PaymentFailed,
            Status::Reserved,
            Status::Rejected,
            Status::Refunded,
            Status::Completed,
            Status::Cancelled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// The saga's services, each one endpoint of the shop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Payment: charges an OrderPlaced.
    Charge,
    /// Inventory: reserves the items of a paid order.
    Reserve,
    /// Payment's compensation: refunds an order whose items could not be reserved.
    Refund,
    /// Orders: closes an order on the saga's last event.
    Settle,
}

/// An order as the events carry it.
#[derive(Clone, Debug, PartialEq)]
pub struct Order {
    pub id: String,
    pub sku: String,
    pub quantity: u64,
    pub amount: f64,
}

/// The most a card is charged for; more is declined.
pub const CREDIT_LIMIT: f64 = 1000.0;

/// What the inventory holds. Stock is not counted down: the example is about the
/// saga, not about stock keeping.
pub const STOCK: [(&str, u64); 3] = [("widget", 100), ("gizmo", 20), ("gadget", 0)];

impl Order {
    /// The order in an event's data: at its top (OrderPlaced and the services'
    /// replies) or under `data` (an outcome event wraps the event it is about).
    pub fn from_event(data: &Value) -> Result<Self, String> {
        let order = match data.get("orderId") {
            Some(_) => data,
            None => &data["data"],
        };
        let id = order["orderId"].as_str().filter(|s| !s.is_empty());
        let sku = order["sku"].as_str().filter(|s| !s.is_empty());
        match (
            id,
            sku,
            order["quantity"].as_u64(),
            order["amount"].as_f64(),
        ) {
            (Some(id), Some(sku), Some(quantity), Some(amount)) if quantity > 0 => Ok(Self {
                id: id.to_string(),
                sku: sku.to_string(),
                quantity,
                amount,
            }),
            _ => Err("an order needs orderId, sku, quantity (> 0) and amount".into()),
        }
    }

    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "orderId": self.id, "sku": self.sku, "quantity": self.quantity, "amount": self.amount,
        })
    }

    fn in_stock(&self) -> bool {
        STOCK
            .iter()
            .any(|(sku, n)| *sku == self.sku && *n >= self.quantity)
    }
}

/// A step's outcome: the status it leaves and the event it records and answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    pub event: &'static str,
    /// Whether the step failed: the event is then the saga's failure, sent on by the
    /// pipeline's failure destination rather than as a reply.
    pub failed: bool,
}

const fn ok(status: Status, event: &'static str) -> Outcome {
    Outcome {
        status,
        event,
        failed: false,
    }
}

const fn failed(status: Status, event: &'static str) -> Outcome {
    Outcome {
        status,
        event,
        failed: true,
    }
}

/// What a service does with an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Record the result (the order moves from `from`) and answer with it.
    Advance {
        from: Option<Status>,
        result: Outcome,
    },
    /// The step happened already: answer as it did, change nothing.
    Repeat(Outcome),
    /// The step's predecessor has not happened yet: try again later.
    NotYet(String),
}

/// What `step` does for `order` (its event of type `event_type`) when the order's
/// status is `current` and its history `history`.
pub fn decide(
    step: Step,
    event_type: &str,
    order: &Order,
    current: Option<Status>,
    history: &[String],
) -> Action {
    let (expects, result) = match rule(step, event_type, order) {
        Ok(rule) => rule,
        Err(e) => return Action::NotYet(e),
    };
    if current == expects {
        return Action::Advance {
            from: current,
            result,
        };
    }
    match outcomes(step, event_type)
        .into_iter()
        .find(|r| history.iter().any(|h| h == r.event))
    {
        Some(done) => Action::Repeat(done),
        None => Action::NotYet(format!(
            "order {} is {}, not yet {} (its event arrived before its predecessor's)",
            order.id,
            current.map_or("unknown", Status::as_str),
            expects.map_or("new", Status::as_str),
        )),
    }
}

/// The status `step` expects and the result it comes to.
fn rule(step: Step, event_type: &str, order: &Order) -> Result<(Option<Status>, Outcome), String> {
    Ok(match step {
        Step::Charge if order.amount <= CREDIT_LIMIT => {
            (None, ok(Status::Paid, "PaymentCompleted"))
        }
        Step::Charge => (None, failed(Status::PaymentFailed, "PaymentFailed")),
        Step::Reserve if order.in_stock() => (
            Some(Status::Paid),
            ok(Status::Reserved, "InventoryReserved"),
        ),
        Step::Reserve => (
            Some(Status::Paid),
            failed(Status::Rejected, "InventoryRejected"),
        ),
        Step::Refund => (
            Some(Status::Rejected),
            ok(Status::Refunded, "PaymentRefunded"),
        ),
        Step::Settle => match event_type {
            "InventoryReserved" => (
                Some(Status::Reserved),
                ok(Status::Completed, "OrderCompleted"),
            ),
            "PaymentFailed" => (
                Some(Status::PaymentFailed),
                ok(Status::Cancelled, "OrderCancelled"),
            ),
            "PaymentRefunded" => (
                Some(Status::Refunded),
                ok(Status::Cancelled, "OrderCancelled"),
            ),
            other => return Err(format!("no order is settled by {other:?}")),
        },
    })
}

/// Every result `step` can come to, to recognise one already recorded.
fn outcomes(step: Step, event_type: &str) -> Vec<Outcome> {
    match step {
        Step::Charge => vec![
            ok(Status::Paid, "PaymentCompleted"),
            failed(Status::PaymentFailed, "PaymentFailed"),
        ],
        Step::Reserve => vec![
            ok(Status::Reserved, "InventoryReserved"),
            failed(Status::Rejected, "InventoryRejected"),
        ],
        Step::Refund => vec![ok(Status::Refunded, "PaymentRefunded")],
        Step::Settle => match event_type {
            "InventoryReserved" => vec![ok(Status::Completed, "OrderCompleted")],
            _ => vec![ok(Status::Cancelled, "OrderCancelled")],
        },
    }
}

/// The events a step records in the order's history: the one that started the saga
/// (first step only), then its result.
pub fn recorded(step: Step, result: &Outcome) -> Vec<&'static str> {
    match step {
        Step::Charge => vec!["OrderPlaced", result.event],
        _ => vec![result.event],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order(sku: &str, amount: f64) -> Order {
        Order::from_event(&json!({"orderId": "o-1", "sku": sku, "quantity": 2, "amount": amount}))
            .unwrap()
    }

    fn history(events: &[&str]) -> Vec<String> {
        events.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn an_order_is_read_from_the_event_or_from_the_event_an_outcome_is_about() {
        let placed = json!({"type": "OrderPlaced", "orderId": "o-1", "sku": "widget", "quantity": 2, "amount": 40});
        let outcome = json!({"eventId": "e", "eventType": "OrderPlaced", "data": placed, "error": "HTTP 422"});
        assert_eq!(Order::from_event(&placed).unwrap(), order("widget", 40.0));
        assert_eq!(Order::from_event(&outcome).unwrap(), order("widget", 40.0));
        assert_eq!(
            Order::from_event(&order("widget", 40.0).to_json()).unwrap(),
            order("widget", 40.0)
        );
        for bad in [
            json!({}),
            json!({"orderId": "o", "sku": "w", "quantity": 0, "amount": 1}),
            json!({"orderId": "", "sku": "w", "quantity": 1, "amount": 1}),
            json!([1]),
        ] {
            assert!(Order::from_event(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_happy_path_ends_completed() {
        let o = order("widget", 40.0);
        let advance =
            |step, ty, from: Option<Status>, h: &[&str]| decide(step, ty, &o, from, &history(h));
        assert_eq!(
            advance(Step::Charge, "OrderPlaced", None, &[]),
            Action::Advance {
                from: None,
                result: ok(Status::Paid, "PaymentCompleted")
            }
        );
        assert_eq!(
            advance(
                Step::Reserve,
                "PaymentCompleted",
                Some(Status::Paid),
                &["OrderPlaced", "PaymentCompleted"]
            ),
            Action::Advance {
                from: Some(Status::Paid),
                result: ok(Status::Reserved, "InventoryReserved")
            }
        );
        assert_eq!(
            advance(
                Step::Settle,
                "InventoryReserved",
                Some(Status::Reserved),
                &["OrderPlaced", "PaymentCompleted", "InventoryReserved"]
            ),
            Action::Advance {
                from: Some(Status::Reserved),
                result: ok(Status::Completed, "OrderCompleted")
            }
        );
    }

    #[test]
    fn a_declined_card_fails_the_payment_and_cancels_the_order() {
        let o = order("widget", CREDIT_LIMIT + 1.0);
        let charge = decide(Step::Charge, "OrderPlaced", &o, None, &[]);
        assert_eq!(
            charge,
            Action::Advance {
                from: None,
                result: failed(Status::PaymentFailed, "PaymentFailed")
            }
        );
        let settle = decide(
            Step::Settle,
            "PaymentFailed",
            &o,
            Some(Status::PaymentFailed),
            &history(&["OrderPlaced", "PaymentFailed"]),
        );
        assert_eq!(
            settle,
            Action::Advance {
                from: Some(Status::PaymentFailed),
                result: ok(Status::Cancelled, "OrderCancelled")
            }
        );
    }

    #[test]
    fn items_out_of_stock_are_rejected_and_the_payment_refunded() {
        for o in [
            order("gadget", 10.0),
            order("unknown", 10.0),
            Order {
                quantity: 101,
                ..order("widget", 10.0)
            },
        ] {
            let h = history(&["OrderPlaced", "PaymentCompleted"]);
            let reserve = decide(
                Step::Reserve,
                "PaymentCompleted",
                &o,
                Some(Status::Paid),
                &h,
            );
            assert_eq!(
                reserve,
                Action::Advance {
                    from: Some(Status::Paid),
                    result: failed(Status::Rejected, "InventoryRejected")
                }
            );
        }
        let o = order("gadget", 10.0);
        let h = history(&["OrderPlaced", "PaymentCompleted", "InventoryRejected"]);
        let refund = decide(
            Step::Refund,
            "InventoryRejected",
            &o,
            Some(Status::Rejected),
            &h,
        );
        assert_eq!(
            refund,
            Action::Advance {
                from: Some(Status::Rejected),
                result: ok(Status::Refunded, "PaymentRefunded")
            }
        );
        let settle = decide(
            Step::Settle,
            "PaymentRefunded",
            &o,
            Some(Status::Refunded),
            &history(&[
                "OrderPlaced",
                "PaymentCompleted",
                "InventoryRejected",
                "PaymentRefunded",
            ]),
        );
        assert_eq!(
            settle,
            Action::Advance {
                from: Some(Status::Refunded),
                result: ok(Status::Cancelled, "OrderCancelled")
            }
        );
    }

    #[test]
    fn a_step_that_happened_answers_again_as_it_did() {
        let o = order("widget", 40.0);
        let later = history(&["OrderPlaced", "PaymentCompleted", "InventoryReserved"]);
        assert_eq!(
            decide(
                Step::Charge,
                "OrderPlaced",
                &o,
                Some(Status::Reserved),
                &later
            ),
            Action::Repeat(ok(Status::Paid, "PaymentCompleted"))
        );
        assert_eq!(
            decide(
                Step::Reserve,
                "PaymentCompleted",
                &o,
                Some(Status::Reserved),
                &later
            ),
            Action::Repeat(ok(Status::Reserved, "InventoryReserved"))
        );
        let declined = history(&["OrderPlaced", "PaymentFailed", "OrderCancelled"]);
        let big = order("widget", CREDIT_LIMIT + 1.0);
        assert_eq!(
            decide(
                Step::Charge,
                "OrderPlaced",
                &big,
                Some(Status::Cancelled),
                &declined
            ),
            Action::Repeat(failed(Status::PaymentFailed, "PaymentFailed"))
        );
        assert_eq!(
            decide(
                Step::Settle,
                "PaymentFailed",
                &big,
                Some(Status::Cancelled),
                &declined
            ),
            Action::Repeat(ok(Status::Cancelled, "OrderCancelled"))
        );
    }

    #[test]
    fn an_event_before_its_predecessor_waits() {
        let o = order("widget", 40.0);
        assert!(
            matches!(decide(Step::Reserve, "PaymentCompleted", &o, None, &[]), Action::NotYet(e) if e.contains("order o-1 is unknown, not yet Paid"))
        );
        assert!(matches!(
            decide(
                Step::Settle,
                "InventoryReserved",
                &o,
                Some(Status::Paid),
                &history(&["OrderPlaced", "PaymentCompleted"])
            ),
            Action::NotYet(_)
        ));
        assert!(
            matches!(decide(Step::Settle, "Shipped", &o, Some(Status::Reserved), &[]), Action::NotYet(e) if e.contains("no order is settled by \"Shipped\""))
        );
    }

    #[test]
    fn the_first_step_records_what_started_the_saga() {
        assert_eq!(
            recorded(Step::Charge, &ok(Status::Paid, "PaymentCompleted")),
            ["OrderPlaced", "PaymentCompleted"]
        );
        assert_eq!(
            recorded(Step::Refund, &ok(Status::Refunded, "PaymentRefunded")),
            ["PaymentRefunded"]
        );
        for s in [
            "Paid",
            "PaymentFailed",
            "Reserved",
            "Rejected",
            "Refunded",
            "Completed",
            "Cancelled",
        ] {
            assert_eq!(Status::parse(s).unwrap().as_str(), s);
        }
        assert_eq!(Status::parse("nope"), None);
    }
}
