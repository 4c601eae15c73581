//! Events and deliveries for the processors' unit tests.

use cloudevents::Event;
use eventpipe_core::envelope::{NewEvent, build};

use super::Delivery;

/// One plain event per id.
pub fn events(ids: &[&str]) -> Vec<Event> {
    (ids.iter())
        .map(|id| {
            build(NewEvent {
                id: id.to_string(),
                source: "/s".into(),
                event_type: "t".into(),
                ..Default::default()
            })
        })
        .collect()
}

/// A delivery of each event, with no trace, group or completion.
pub fn deliveries(events: &[Event]) -> Vec<Delivery<'_>> {
    (events.iter())
        .map(|event| Delivery {
            event,
            trace: vec![],
            group: None,
            completion: None,
        })
        .collect()
}
