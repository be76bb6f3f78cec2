//! What payments-svc does with the events it consumes. The relay and consumer loop themselves
//! are `saga_runtime`'s; this file only routes each event type to its use case.

use std::sync::Arc;

use saga_runtime::consumer::{EventHandler, HandlerError};
use shared_events::{Envelope, SagaEvent, topics};

use crate::repo::{AccountRepository, PaymentRepository};
use crate::service::PaymentsService;

/// The topics payments-svc consumes.
pub const TOPICS: [&str; 2] = [topics::ORDERS_EVENTS, topics::INVENTORY_EVENTS];

pub struct PaymentsEventHandler<A, P> {
    pub service: Arc<PaymentsService<A, P>>,
}

impl<A: AccountRepository, P: PaymentRepository> EventHandler for PaymentsEventHandler<A, P> {
    async fn handle(&self, event: Envelope) -> Result<(), HandlerError> {
        let outcome = match &event.event {
            SagaEvent::OrderCreated(order) => self.service.charge_order(&event, order).await,
            SagaEvent::OrderCancelled(cancelled) => {
                self.service.cancel_order(&event, cancelled).await
            }
            SagaEvent::InventoryReservationFailed(failure) => {
                self.service.refund_order(&event, failure).await
            }
            // Outcomes that other services act on.
            SagaEvent::InventoryReserved(_)
            | SagaEvent::OrderConfirmed(_)
            | SagaEvent::OrderFailed(_) => Ok(()),
            SagaEvent::PaymentSucceeded(_)
            | SagaEvent::PaymentFailed(_)
            | SagaEvent::PaymentRefunded(_)
            | SagaEvent::ProductUpserted(_) => Ok(()),
        };
        outcome.map_err(HandlerError::new)
    }
}
