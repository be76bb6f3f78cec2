//! What inventory-svc does with the events it consumes. The relay and consumer loop themselves
//! are `saga_runtime`'s; this file only routes each event type to its use case.

use std::sync::Arc;

use saga_runtime::consumer::{EventHandler, HandlerError};
use shared_events::{Envelope, SagaEvent, topics};

use crate::repo::{ProductRepository, ReservationRepository};
use crate::service::InventoryService;

/// The topics inventory-svc consumes.
pub const TOPICS: [&str; 2] = [topics::PAYMENTS_EVENTS, topics::ORDERS_EVENTS];

pub struct InventoryEventHandler<P, R> {
    pub service: Arc<InventoryService<P, R>>,
}

impl<P: ProductRepository, R: ReservationRepository> EventHandler for InventoryEventHandler<P, R> {
    async fn handle(&self, event: Envelope) -> Result<(), HandlerError> {
        let outcome = match &event.event {
            SagaEvent::PaymentSucceeded(paid) => self.service.reserve_order(&event, paid).await,
            SagaEvent::OrderCancelled(cancelled) => {
                self.service.release_order(&event, cancelled).await
            }
            // A declined or refunded payment needs nothing from inventory.
            SagaEvent::PaymentFailed(_) | SagaEvent::PaymentRefunded(_) => Ok(()),
            SagaEvent::OrderCreated(_)
            | SagaEvent::OrderConfirmed(_)
            | SagaEvent::OrderFailed(_)
            | SagaEvent::InventoryReserved(_)
            | SagaEvent::InventoryReservationFailed(_)
            | SagaEvent::ProductUpserted(_) => Ok(()),
        };
        outcome.map_err(HandlerError::new)
    }
}
