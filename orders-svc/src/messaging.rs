//! What orders-svc does with the events it consumes. The consumer loop and the unit of work
//! are `saga_runtime`'s; this file only routes each event type to its use case.

use std::sync::Arc;

use saga_runtime::consumer::{EventHandler, HandlerError};
use saga_runtime::unit_of_work::{Reaction, Tx};
use shared_events::{Envelope, SagaEvent, topics};

use crate::service::{self, Finish, InFlight};

/// The topics orders-svc consumes.
pub const TOPICS: [&str; 3] = [
    topics::PAYMENTS_EVENTS,
    topics::INVENTORY_EVENTS,
    topics::INVENTORY_CATALOG,
];

#[derive(Debug, Clone)]
pub struct OrdersEventHandler {
    /// Told when an order finishes, to free its place (`service::admission`).
    in_flight: Arc<InFlight>,
}

impl OrdersEventHandler {
    pub fn new(in_flight: Arc<InFlight>) -> Self {
        Self { in_flight }
    }
}

/// A handler with an admission count of its own, which nothing bounds: for tests.
impl Default for OrdersEventHandler {
    fn default() -> Self {
        Self::new(InFlight::new(u64::MAX))
    }
}

impl EventHandler for OrdersEventHandler {
    /// The events `handle` reacts to; the others on these topics pass without a transaction.
    fn accepts(&self, event: &Envelope) -> bool {
        matches!(
            event.event,
            SagaEvent::InventoryReserved(_)
                | SagaEvent::PaymentFailed(_)
                | SagaEvent::PaymentRefunded(_)
                | SagaEvent::ProductUpserted(_)
                // Nothing to do, but the saga view records them (see `handle`).
                | SagaEvent::PaymentSucceeded(_)
                | SagaEvent::InventoryReservationFailed(_)
        )
    }

    /// The two steps orders-svc takes only for its saga view: each is soon followed by the
    /// event it acts on (`InventoryReserved`, `PaymentRefunded`), and shares its transaction.
    fn only_records(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "PaymentSucceeded" | "InventoryReservationFailed"
        )
    }

    async fn handle(&self, tx: &Tx, event: &Envelope) -> Result<Reaction, HandlerError> {
        if let Some(finish) = Finish::of(&event.event) {
            return service::finish_order(tx, &self.in_flight, finish)
                .await
                .map_err(HandlerError::new);
        }
        let noted = match &event.event {
            SagaEvent::ProductUpserted(e) => service::on_product_upserted(tx, e, event.time).await,
            // Steps that other services act on; orders-svc waits for their outcome. It takes
            // the two that reach its topics anyway, in a transaction that does nothing but
            // record them (inbox and saga view), so that its saga view has every step.
            SagaEvent::PaymentSucceeded(_)
            | SagaEvent::InventoryReservationFailed(_)
            | SagaEvent::OrderCreated(_)
            | SagaEvent::OrderConfirmed(_)
            | SagaEvent::OrderFailed(_)
            | SagaEvent::OrderCancelled(_)
            // Finishes, handled above.
            | SagaEvent::InventoryReserved(_)
            | SagaEvent::PaymentFailed(_)
            | SagaEvent::PaymentRefunded(_) => Ok(Reaction::none()),
        };
        noted.map_err(HandlerError::new)
    }

    /// Saga outcomes, and the steps only recorded between them: under load a batch holds
    /// many, and their orders finish in one statement.
    fn handles_together(&self, event: &Envelope) -> bool {
        Finish::of(&event.event).is_some() || self.only_records(event.event_type())
    }

    async fn handle_together(
        &self,
        tx: &Tx,
        events: &[&Envelope],
    ) -> Result<Vec<Reaction>, HandlerError> {
        let finishes: Vec<Finish<'_>> = events
            .iter()
            .filter_map(|event| Finish::of(&event.event))
            .collect();
        let mut reactions = service::finish_orders(tx, &self.in_flight, &finishes)
            .await
            .map_err(HandlerError::new)?
            .into_iter();
        // The steps only recorded have nothing to publish; each finish has its reaction.
        Ok(events
            .iter()
            .map(|event| match Finish::of(&event.event) {
                Some(_) => reactions.next().unwrap_or_default(),
                None => Reaction::none(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `only_records` names event types by their header's text: every name it takes must be
    /// a real event type, and one the handler accepts.
    #[test]
    fn only_the_saga_view_steps_wait_to_share_a_transaction() {
        let handler = OrdersEventHandler::default();
        let mut waiting = Vec::new();
        for event in shared_events::events::examples() {
            let event_type = event.event_type();
            if handler.only_records(event_type) {
                assert!(
                    handler.accepts(&Envelope::new("test", Some(uuid::Uuid::nil()), event)),
                    "{event_type} waits but is not accepted"
                );
                waiting.push(event_type);
            }
        }
        waiting.sort_unstable();
        assert_eq!(waiting, ["InventoryReservationFailed", "PaymentSucceeded"]);
    }
}
