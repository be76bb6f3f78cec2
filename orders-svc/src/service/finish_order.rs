//! Saga step 5: the events that end an order's saga. Each is applied once (inbox), moves the
//! order to a terminal status and announces it (`OrderConfirmed` or `OrderFailed`).

use saga_runtime::inbox;
use saga_runtime::outbox;
use shared_events::{Envelope, OrderConfirmed, OrderFailed, SagaEvent};
use uuid::Uuid;

use super::{OrdersService, SOURCE, ServiceError};
use crate::domain::{Order, OrderStatus, TransitionError};
use crate::repo::{CatalogRepository, OrderRepository};

impl<O: OrderRepository, C: CatalogRepository> OrdersService<O, C> {
    /// `InventoryReserved`: paid and reserved, so the order is `CONFIRMED`.
    pub async fn on_inventory_reserved(
        &self,
        event: &Envelope,
        order_id: Uuid,
    ) -> Result<(), ServiceError> {
        self.finish_order(event, order_id, Order::confirm).await
    }

    /// `PaymentFailed`: nothing was charged, so the order is `FAILED_PAYMENT` at once.
    pub async fn on_payment_failed(
        &self,
        event: &Envelope,
        order_id: Uuid,
        reason: &str,
    ) -> Result<(), ServiceError> {
        self.finish_order(event, order_id, |order| order.fail_payment(reason))
            .await
    }

    /// `PaymentRefunded`: the compensation for a failed reservation has committed, so the
    /// order can now say `FAILED_INVENTORY` with the money already back.
    pub async fn on_payment_refunded(
        &self,
        event: &Envelope,
        order_id: Uuid,
        reason: &str,
    ) -> Result<(), ServiceError> {
        self.finish_order(event, order_id, |order| order.fail_inventory(reason))
            .await
    }

    async fn finish_order(
        &self,
        event: &Envelope,
        order_id: Uuid,
        transition: impl FnOnce(&mut Order) -> Result<(), TransitionError>,
    ) -> Result<(), ServiceError> {
        let Some(txn) = inbox::begin_once(&self.db, event).await? else {
            return Ok(());
        };
        let Some(mut order) = self.orders.find_for_update(&txn, order_id).await? else {
            // Not ours to fix by retrying: record it as seen so it does not block the partition.
            tracing::error!(%order_id, "event for an unknown order ignored");
            txn.commit().await?;
            return Ok(());
        };
        if let Err(rejected) = transition(&mut order) {
            tracing::warn!(error = %rejected, "event does not apply to the order's status; ignored");
            txn.commit().await?;
            return Ok(());
        }
        self.orders.update_status(&txn, &order).await?;
        outbox::enqueue(&txn, &terminal_event(&order)).await?;
        txn.commit().await?;
        self.outbox_signal.notify();
        tracing::info!(order_id = %order.id, saga_id = %order.saga_id, status = %order.status, "order finished");
        Ok(())
    }
}

fn terminal_event(order: &Order) -> Envelope {
    let event = match order.status {
        OrderStatus::Confirmed => SagaEvent::OrderConfirmed(OrderConfirmed {
            order_id: order.id,
            total_cents: order.total_cents,
        }),
        status => SagaEvent::OrderFailed(OrderFailed {
            order_id: order.id,
            status: status.as_str().to_owned(),
            reason: order.failure_reason.clone().unwrap_or_default(),
        }),
    };
    Envelope::new(SOURCE, Some(order.saga_id), event)
}
