//! What payments-svc does with the events it consumes. The consumer loop and the unit of work
//! are `saga_runtime`'s; this file only routes each event type to its use case.

use saga_runtime::consumer::{self, EventHandler, HandlerError};
use saga_runtime::unit_of_work::{Reaction, Tx};
use shared_events::{Envelope, SagaEvent, topics};

use crate::service;

/// The topics payments-svc consumes.
pub const TOPICS: [&str; 2] = [topics::ORDERS_EVENTS, topics::INVENTORY_EVENTS];

#[derive(Debug, Clone, Copy, Default)]
pub struct PaymentsEventHandler;

impl EventHandler for PaymentsEventHandler {
    /// The events `handle` reacts to; the others on these topics pass without a transaction.
    fn accepts(&self, event: &Envelope) -> bool {
        matches!(
            event.event,
            SagaEvent::OrderCreated(_)
                | SagaEvent::OrderCancelled(_)
                | SagaEvent::InventoryReservationFailed(_)
        )
    }

    async fn handle(&self, tx: &Tx, event: &Envelope) -> Result<Reaction, HandlerError> {
        let saga_id = || event.saga_id().map_err(HandlerError::new);
        let outcome = match &event.event {
            SagaEvent::OrderCreated(order) => service::charge_order(tx, saga_id()?, order).await,
            SagaEvent::OrderCancelled(cancelled) => {
                service::cancel_order(tx, saga_id()?, cancelled).await
            }
            SagaEvent::InventoryReservationFailed(failure) => {
                service::refund_order(tx, saga_id()?, failure).await
            }
            // Outcomes that other services act on.
            SagaEvent::InventoryReserved(_)
            | SagaEvent::OrderConfirmed(_)
            | SagaEvent::OrderFailed(_)
            | SagaEvent::PaymentSucceeded(_)
            | SagaEvent::PaymentFailed(_)
            | SagaEvent::PaymentRefunded(_)
            | SagaEvent::ProductUpserted(_) => Ok(Reaction::none()),
        };
        outcome.map_err(HandlerError::new)
    }

    /// Charges: under load a batch holds many `OrderCreated`, charged in three statements.
    fn handles_together(&self, event: &Envelope) -> bool {
        matches!(event.event, SagaEvent::OrderCreated(_))
    }

    async fn handle_together(
        &self,
        tx: &Tx,
        events: &[&Envelope],
    ) -> Result<Vec<Reaction>, HandlerError> {
        let orders = consumer::payloads_together(events, |event| match event {
            SagaEvent::OrderCreated(order) => Some(order),
            _ => None,
        })?;
        service::charge_orders(tx, &orders)
            .await
            .map_err(HandlerError::new)
    }
}
