use std::time::Duration;

use saga_runtime::outbox;
use sea_orm::TransactionTrait;
use shared_events::{Envelope, OrderCancelled, SagaEvent};

use super::{OrdersService, SOURCE, ServiceError};
use crate::repo::{CatalogRepository, OrderRepository};

/// Orders cancelled per transaction; the job loops while it finds full batches.
pub const CANCEL_BATCH: u64 = 100;

impl<O: OrderRepository, C: CatalogRepository> OrdersService<O, C> {
    /// Cancels orders still `PENDING_PAYMENT` after `deadline` (by the database's clock) and
    /// announces `OrderCancelled` for each, so payments-svc refunds and inventory-svc releases
    /// whatever they did. Returns how many it cancelled.
    pub async fn cancel_expired_orders(&self, deadline: Duration) -> Result<usize, ServiceError> {
        let txn = self.db.begin().await?;
        let expired = self
            .orders
            .lock_expired(&txn, deadline, CANCEL_BATCH)
            .await?;
        let reason = format!("the saga did not finish within {deadline:?}");
        let mut cancelled = 0;
        for order_id in expired {
            let Some(mut order) = self.orders.find(&txn, order_id).await? else {
                continue;
            };
            if order.cancel(&reason).is_err() {
                continue;
            }
            self.orders.update_status(&txn, &order).await?;
            let event = SagaEvent::OrderCancelled(OrderCancelled {
                order_id,
                reason: reason.clone(),
            });
            outbox::enqueue(&txn, &Envelope::new(SOURCE, Some(order.saga_id), event)).await?;
            tracing::warn!(%order_id, saga_id = %order.saga_id, "order cancelled: saga deadline passed");
            cancelled += 1;
        }
        txn.commit().await?;
        if cancelled > 0 {
            self.outbox_signal.notify();
        }
        Ok(cancelled)
    }
}
