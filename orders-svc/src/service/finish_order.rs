//! Saga step 5: the events that end an order's saga. Each moves the order to a terminal
//! status and answers with the saga's last event, `OrderConfirmed` or `OrderFailed`.

use saga_runtime::unit_of_work::{Reaction, Tx};
use shared_events::{FailedStatus, OrderConfirmed, OrderFailed, SagaEvent};
use uuid::Uuid;

use super::{InFlight, ServiceError};
use crate::domain::OrderStatus;
use crate::repo::orders;

/// `InventoryReserved`: paid and reserved, so the order is `CONFIRMED`.
pub async fn on_inventory_reserved(
    tx: &Tx,
    in_flight: &InFlight,
    order_id: Uuid,
) -> Result<Reaction, ServiceError> {
    finish_order(
        tx,
        in_flight,
        order_id,
        OrderStatus::Confirmed,
        None,
        |total_cents| {
            SagaEvent::OrderConfirmed(OrderConfirmed {
                order_id,
                total_cents,
            })
        },
    )
    .await
}

/// `PaymentFailed`: nothing was charged, so the order is `FAILED_PAYMENT` at once.
pub async fn on_payment_failed(
    tx: &Tx,
    in_flight: &InFlight,
    order_id: Uuid,
    reason: &str,
) -> Result<Reaction, ServiceError> {
    finish_order(
        tx,
        in_flight,
        order_id,
        OrderStatus::FailedPayment,
        Some(reason),
        |_| order_failed(order_id, FailedStatus::FailedPayment, reason),
    )
    .await
}

/// `PaymentRefunded`: the compensation for a failed reservation has committed, so the order
/// can now say `FAILED_INVENTORY` with the money already back.
pub async fn on_payment_refunded(
    tx: &Tx,
    in_flight: &InFlight,
    order_id: Uuid,
    reason: &str,
) -> Result<Reaction, ServiceError> {
    finish_order(
        tx,
        in_flight,
        order_id,
        OrderStatus::FailedInventory,
        Some(reason),
        |_| order_failed(order_id, FailedStatus::FailedInventory, reason),
    )
    .await
}

/// Moves the order to `to` and publishes what `announce` makes of its total. This runs once
/// per saga under load, so the transition is one compare-and-set statement instead of a
/// locked read of the order and its lines and an update. An event that does not apply
/// (unknown order, order already terminal) is noted and ignored: retrying cannot fix it, and
/// it must not block the partition.
async fn finish_order(
    tx: &Tx,
    in_flight: &InFlight,
    order_id: Uuid,
    to: OrderStatus,
    reason: Option<&str>,
    announce: impl FnOnce(i64) -> SagaEvent,
) -> Result<Reaction, ServiceError> {
    if let Some(finished) = orders::finish(tx, order_id, to, reason).await? {
        tracing::debug!(%order_id, status = %to, "order finished");
        super::observe_saga_duration(to, finished.age);
        // The place moves before the commit; if that fails, the next recount corrects it.
        in_flight.saga_finished(finished.age);
        return Ok(Reaction::publish(announce(finished.total_cents)));
    }
    match orders::status(tx, order_id).await? {
        None => tracing::error!(%order_id, "event for an unknown order ignored"),
        Some(from) => match from.check_finish(order_id, to) {
            Err(rejected) => {
                tracing::warn!(error = %rejected, "event does not apply to the order's status; ignored")
            }
            // Open now, so it was not a moment ago: another transaction moved it and rolled
            // back. Failing makes the consumer apply the event again.
            Ok(()) => return Err(ServiceError::Raced(order_id)),
        },
    }
    Ok(Reaction::none())
}

fn order_failed(order_id: Uuid, status: FailedStatus, reason: &str) -> SagaEvent {
    SagaEvent::OrderFailed(OrderFailed {
        order_id,
        status,
        reason: reason.to_owned(),
    })
}
