//! What orders-svc does with the events it consumes. The consumer loop and the unit of work
//! are `saga_runtime`'s; this file only routes each event type to its use case.

use saga_runtime::consumer::{EventHandler, HandlerError};
use saga_runtime::unit_of_work::{Reaction, Tx};
use shared_events::{Envelope, SagaEvent, topics};

use crate::service;

/// The topics orders-svc consumes.
pub const TOPICS: [&str; 3] = [
    topics::PAYMENTS_EVENTS,
    topics::INVENTORY_EVENTS,
    topics::INVENTORY_CATALOG,
];

#[derive(Debug, Clone, Copy, Default)]
pub struct OrdersEventHandler;

impl EventHandler for OrdersEventHandler {
    async fn handle(&self, tx: &Tx, event: &Envelope) -> Result<Reaction, HandlerError> {
        let outcome = match &event.event {
            SagaEvent::InventoryReserved(e) => service::on_inventory_reserved(tx, e.order_id).await,
            SagaEvent::PaymentFailed(e) => {
                service::on_payment_failed(tx, e.order_id, &e.reason).await
            }
            SagaEvent::PaymentRefunded(e) => {
                service::on_payment_refunded(tx, e.order_id, &e.reason).await
            }
            SagaEvent::ProductUpserted(e) => service::on_product_upserted(tx, e, event.time).await,
            // Steps that other services act on; orders-svc waits for their outcome.
            SagaEvent::PaymentSucceeded(_)
            | SagaEvent::InventoryReservationFailed(_)
            | SagaEvent::OrderCreated(_)
            | SagaEvent::OrderConfirmed(_)
            | SagaEvent::OrderFailed(_)
            | SagaEvent::OrderCancelled(_) => Ok(Reaction::none()),
        };
        outcome.map_err(HandlerError::new)
    }
}
