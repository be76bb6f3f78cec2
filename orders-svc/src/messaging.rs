//! What orders-svc does with the events it consumes. The consumer loop and the unit of work
//! are `saga_runtime`'s; this file only routes each event type to its use case.

use std::sync::Arc;

use saga_runtime::consumer::{EventHandler, HandlerError};
use saga_runtime::unit_of_work::{Reaction, Tx};
use shared_events::{Envelope, SagaEvent, topics};

use crate::service::{self, InFlight};

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

    async fn handle(&self, tx: &Tx, event: &Envelope) -> Result<Reaction, HandlerError> {
        let finishing = match &event.event {
            SagaEvent::InventoryReserved(e) => service::on_inventory_reserved(tx, e.order_id).await,
            SagaEvent::PaymentFailed(e) => {
                service::on_payment_failed(tx, e.order_id, &e.reason).await
            }
            SagaEvent::PaymentRefunded(e) => {
                service::on_payment_refunded(tx, e.order_id, &e.reason).await
            }
            SagaEvent::ProductUpserted(e) => service::on_product_upserted(tx, e, event.time).await,
            // Steps that other services act on; orders-svc waits for their outcome. It takes
            // the two that reach its topics anyway, in a transaction that does nothing but
            // record them (inbox and saga view), so that its saga view has every step.
            SagaEvent::PaymentSucceeded(_)
            | SagaEvent::InventoryReservationFailed(_)
            | SagaEvent::OrderCreated(_)
            | SagaEvent::OrderConfirmed(_)
            | SagaEvent::OrderFailed(_)
            | SagaEvent::OrderCancelled(_) => Ok(Reaction::none()),
        };
        let reaction = finishing.map_err(HandlerError::new)?;
        // Only a saga's end is announced from here (`OrderConfirmed` or `OrderFailed`). The
        // count moves before the commit; if that fails, the next recount corrects it.
        if !reaction.is_empty() {
            self.in_flight.finished(1);
        }
        Ok(reaction)
    }
}
