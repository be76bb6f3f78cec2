//! What orders-svc does with the events it consumes. The relay and consumer loop themselves
//! are `saga_runtime`'s; this file only routes each event type to its use case.

use std::sync::Arc;

use saga_runtime::consumer::{EventHandler, HandlerError};
use shared_events::{Envelope, SagaEvent, topics};

use crate::repo::{CatalogRepository, OrderRepository};
use crate::service::OrdersService;

/// The topics orders-svc consumes.
pub const TOPICS: [&str; 3] = [
    topics::PAYMENTS_EVENTS,
    topics::INVENTORY_EVENTS,
    topics::INVENTORY_CATALOG,
];

pub struct OrdersEventHandler<O, C> {
    pub service: Arc<OrdersService<O, C>>,
}

impl<O: OrderRepository, C: CatalogRepository> EventHandler for OrdersEventHandler<O, C> {
    async fn handle(&self, event: Envelope) -> Result<(), HandlerError> {
        let service = &self.service;
        let outcome = match &event.event {
            SagaEvent::InventoryReserved(e) => {
                service.on_inventory_reserved(&event, e.order_id).await
            }
            SagaEvent::PaymentFailed(e) => {
                service
                    .on_payment_failed(&event, e.order_id, &e.reason)
                    .await
            }
            SagaEvent::PaymentRefunded(e) => {
                service
                    .on_payment_refunded(&event, e.order_id, &e.reason)
                    .await
            }
            SagaEvent::ProductUpserted(e) => service.on_product_upserted(&event, e).await,
            // Steps that other services act on; orders-svc waits for their outcome.
            SagaEvent::PaymentSucceeded(_) | SagaEvent::InventoryReservationFailed(_) => Ok(()),
            SagaEvent::OrderCreated(_)
            | SagaEvent::OrderConfirmed(_)
            | SagaEvent::OrderFailed(_)
            | SagaEvent::OrderCancelled(_) => Ok(()),
        };
        outcome.map_err(HandlerError::new)
    }
}
