//! What inventory-svc does with the events it consumes. The consumer loop and the unit of work
//! are `saga_runtime`'s; this file only routes each event type to its use case.

use saga_runtime::consumer::{self, EventHandler, HandlerError};
use saga_runtime::unit_of_work::{Reaction, Tx};
use shared_events::{Envelope, SagaEvent, topics};

use crate::service;

/// The topics inventory-svc consumes.
pub const TOPICS: [&str; 2] = [topics::PAYMENTS_EVENTS, topics::ORDERS_EVENTS];

#[derive(Debug, Clone, Copy, Default)]
pub struct InventoryEventHandler;

impl EventHandler for InventoryEventHandler {
    /// The events `handle` reacts to; the others on these topics pass without a transaction.
    fn accepts(&self, event: &Envelope) -> bool {
        matches!(
            event.event,
            SagaEvent::PaymentSucceeded(_) | SagaEvent::OrderCancelled(_)
        )
    }

    async fn handle(&self, tx: &Tx, event: &Envelope) -> Result<Reaction, HandlerError> {
        let saga_id = || event.saga_id().map_err(HandlerError::new);
        let outcome = match &event.event {
            SagaEvent::PaymentSucceeded(paid) => service::reserve_order(tx, saga_id()?, paid).await,
            SagaEvent::OrderCancelled(cancelled) => {
                service::release_order(tx, saga_id()?, cancelled).await
            }
            // A declined or refunded payment needs nothing from inventory.
            SagaEvent::PaymentFailed(_)
            | SagaEvent::PaymentRefunded(_)
            | SagaEvent::OrderCreated(_)
            | SagaEvent::OrderConfirmed(_)
            | SagaEvent::OrderFailed(_)
            | SagaEvent::InventoryReserved(_)
            | SagaEvent::InventoryReservationFailed(_)
            | SagaEvent::ProductUpserted(_) => Ok(Reaction::none()),
        };
        outcome.map_err(HandlerError::new)
    }

    /// Reservations: under load a batch holds many `PaymentSucceeded`, reserved in three
    /// statements.
    fn handles_together(&self, event: &Envelope) -> bool {
        matches!(event.event, SagaEvent::PaymentSucceeded(_))
    }

    async fn handle_together(
        &self,
        tx: &Tx,
        events: &[&Envelope],
    ) -> Result<Vec<Reaction>, HandlerError> {
        let orders = consumer::payloads_together(events, |event| match event {
            SagaEvent::PaymentSucceeded(paid) => Some(paid),
            _ => None,
        })?;
        service::reserve_orders(tx, &orders)
            .await
            .map_err(HandlerError::new)
    }
}
