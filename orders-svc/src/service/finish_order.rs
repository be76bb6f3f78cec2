//! Saga step 5: the events that end an order's saga. Each moves the order to a terminal
//! status and answers with the saga's last event, `OrderConfirmed` or `OrderFailed`.

use saga_runtime::unit_of_work::{Reaction, Tx};
use shared_events::{FailedStatus, OrderConfirmed, OrderFailed, SagaEvent};
use uuid::Uuid;

use super::ServiceError;
use crate::domain::{Order, TransitionError};
use crate::repo::orders;

/// `InventoryReserved`: paid and reserved, so the order is `CONFIRMED`.
pub async fn on_inventory_reserved(tx: &Tx, order_id: Uuid) -> Result<Reaction, ServiceError> {
    finish_order(tx, order_id, |order| {
        order.confirm()?;
        Ok(SagaEvent::OrderConfirmed(OrderConfirmed {
            order_id: order.id,
            total_cents: order.total_cents,
        }))
    })
    .await
}

/// `PaymentFailed`: nothing was charged, so the order is `FAILED_PAYMENT` at once.
pub async fn on_payment_failed(
    tx: &Tx,
    order_id: Uuid,
    reason: &str,
) -> Result<Reaction, ServiceError> {
    finish_order(tx, order_id, |order| {
        order.fail_payment(reason)?;
        Ok(order_failed(order, FailedStatus::FailedPayment, reason))
    })
    .await
}

/// `PaymentRefunded`: the compensation for a failed reservation has committed, so the order
/// can now say `FAILED_INVENTORY` with the money already back.
pub async fn on_payment_refunded(
    tx: &Tx,
    order_id: Uuid,
    reason: &str,
) -> Result<Reaction, ServiceError> {
    finish_order(tx, order_id, |order| {
        order.fail_inventory(reason)?;
        Ok(order_failed(order, FailedStatus::FailedInventory, reason))
    })
    .await
}

/// Applies `transition` to the locked order and publishes the event it returns. An event
/// that does not apply (unknown order, order already terminal) is noted and ignored: retrying
/// cannot fix it, and it must not block the partition.
async fn finish_order(
    tx: &Tx,
    order_id: Uuid,
    transition: impl FnOnce(&mut Order) -> Result<SagaEvent, TransitionError>,
) -> Result<Reaction, ServiceError> {
    let Some(mut order) = orders::find_for_update(tx, order_id).await? else {
        tracing::error!(%order_id, "event for an unknown order ignored");
        return Ok(Reaction::none());
    };
    let last = match transition(&mut order) {
        Ok(last) => last,
        Err(rejected) => {
            tracing::warn!(error = %rejected, "event does not apply to the order's status; ignored");
            return Ok(Reaction::none());
        }
    };
    orders::update_status(tx, &order).await?;
    tracing::debug!(order_id = %order.id, saga_id = %order.saga_id, status = %order.status, "order finished");
    Ok(Reaction::publish(last))
}

fn order_failed(order: &Order, status: FailedStatus, reason: &str) -> SagaEvent {
    SagaEvent::OrderFailed(OrderFailed {
        order_id: order.id,
        status,
        reason: reason.to_owned(),
    })
}
