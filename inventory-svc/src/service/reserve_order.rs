use saga_runtime::unit_of_work::{Reaction, Tx};
use shared_events::{InventoryReservationFailed, InventoryReserved, PaymentSucceeded, SagaEvent};
use uuid::Uuid;

use super::ServiceError;
use crate::domain::{Reservation, ReservationStatus, plan_reservation};
use crate::repo::{products, reservations};

/// Saga step 3, on `PaymentSucceeded`: reserve every line, all or nothing, and answer
/// `InventoryReserved`; or reserve nothing and answer `InventoryReservationFailed`, which
/// makes payments-svc refund.
pub async fn reserve_order(
    tx: &Tx,
    saga_id: Uuid,
    paid: &PaymentSucceeded,
) -> Result<Reaction, ServiceError> {
    let product_ids: Vec<Uuid> = paid.items.iter().map(|line| line.product_id).collect();
    let available = products::lock_available(tx, &product_ids).await?;
    let decision = |status, reason| Reservation {
        order_id: paid.order_id,
        saga_id,
        customer_id: Some(paid.customer_id),
        status,
        lines: paid.items.clone(),
        reason,
    };
    let plan = plan_reservation(&paid.items, &available);
    let (reservation, next) = match &plan {
        Ok(_) => {
            let reserved = SagaEvent::InventoryReserved(InventoryReserved {
                order_id: paid.order_id,
            });
            (decision(ReservationStatus::Reserved, None), reserved)
        }
        Err(shortage) => {
            let failed = SagaEvent::InventoryReservationFailed(InventoryReservationFailed {
                order_id: paid.order_id,
                product_id: Some(shortage.product_id),
                reason: shortage.to_string(),
            });
            let rejected = decision(ReservationStatus::Rejected, Some(shortage.to_string()));
            (rejected, failed)
        }
    };
    // The decision goes in first. The primary key on order_id tells a first decision from a
    // repeated or cancelled one without a read before every reservation; stock moves only
    // once the decision is known to be the order's first.
    if !reservations::insert_first(tx, &reservation).await? {
        return already_decided(tx, paid).await;
    }
    if let Ok(plan) = plan {
        for (product_id, quantity) in plan {
            if !products::reserve(tx, product_id, quantity).await? {
                // Cannot happen while the rows are locked; failing rolls back, which keeps
                // the reservation all-or-nothing.
                return Err(ServiceError::StockRace(product_id));
            }
        }
    }
    tracing::debug!(order_id = %paid.order_id, status = %reservation.status, reason = ?reservation.reason, "reservation decided");
    Ok(Reaction::publish(next))
}

/// The order has a reservation decision already; it is final.
async fn already_decided(tx: &Tx, paid: &PaymentSucceeded) -> Result<Reaction, ServiceError> {
    let existing = reservations::find_for_update(tx, paid.order_id).await?;
    let status = existing.map(|reservation| reservation.status);
    tracing::warn!(order_id = %paid.order_id, ?status, "order already has a reservation decision");
    if status == Some(ReservationStatus::Cancelled) {
        // A payment that arrives after the cancellation becomes a compensation: the failure
        // makes payments-svc refund it. No product is at fault.
        return Ok(Reaction::publish(SagaEvent::InventoryReservationFailed(
            InventoryReservationFailed {
                order_id: paid.order_id,
                product_id: None,
                reason: "the order was cancelled before stock was reserved".to_owned(),
            },
        )));
    }
    Ok(Reaction::none())
}
