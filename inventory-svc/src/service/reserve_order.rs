use std::collections::{BTreeMap, HashMap};

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
    let (reservation, next, plan) = decide(saga_id, paid, &available);
    // The decision goes in first. The primary key on order_id tells a first decision from a
    // repeated or cancelled one without a read before every reservation; stock moves only
    // once the decision is known to be the order's first.
    if !reservations::insert_first(tx, &reservation).await? {
        return already_decided(tx, paid).await;
    }
    if let Some(plan) = plan {
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

/// Saga step 3 for several orders at once, as [`reserve_order`] would one after the other (a
/// later order sees the stock the earlier ones left), in three statements for all: lock the
/// products, insert the decisions, move the stock.
///
/// Only for orders without a decision yet. If one has one (a repeated or cancelled order),
/// this fails with [`ServiceError::DecidedBefore`] and the runtime reserves them one by one,
/// where [`reserve_order`] decides that case.
pub async fn reserve_orders(
    tx: &Tx,
    orders: &[(Uuid, &PaymentSucceeded)],
) -> Result<Vec<Reaction>, ServiceError> {
    let mut product_ids: Vec<Uuid> = orders
        .iter()
        .flat_map(|(_, paid)| paid.items.iter().map(|line| line.product_id))
        .collect();
    product_ids.sort_unstable();
    product_ids.dedup();
    let mut available = products::lock_available(tx, &product_ids).await?;
    let mut decisions = Vec::with_capacity(orders.len());
    let mut reactions = Vec::with_capacity(orders.len());
    let mut taken: BTreeMap<Uuid, i64> = BTreeMap::new();
    for (saga_id, paid) in orders {
        let (reservation, next, plan) = decide(*saga_id, paid, &available);
        for (product_id, quantity) in plan.unwrap_or_default() {
            *taken.entry(product_id).or_default() += quantity;
            if let Some(left) = available.get_mut(&product_id) {
                *left -= quantity;
            }
        }
        tracing::debug!(order_id = %paid.order_id, status = %reservation.status, reason = ?reservation.reason, "reservation decided");
        decisions.push(reservation);
        reactions.push(Reaction::publish(next));
    }
    if reservations::insert_all_first(tx, &decisions).await? != decisions.len() {
        return Err(ServiceError::DecidedBefore);
    }
    let taken: Vec<(Uuid, i64)> = taken.into_iter().collect();
    if products::reserve_all(tx, &taken).await? != taken.len() {
        // Cannot happen while the rows are locked; failing rolls every reservation back.
        return Err(ServiceError::StockRace(
            taken.first().map(|(id, _)| *id).unwrap_or_default(),
        ));
    }
    Ok(reactions)
}

/// The decision on `paid` against `available` stock, the event that announces it, and the
/// quantities to take per product if it reserves.
fn decide(
    saga_id: Uuid,
    paid: &PaymentSucceeded,
    available: &HashMap<Uuid, i64>,
) -> (Reservation, SagaEvent, Option<Vec<(Uuid, i64)>>) {
    let decision = |status, reason| Reservation {
        order_id: paid.order_id,
        saga_id,
        customer_id: Some(paid.customer_id),
        status,
        lines: paid.items.clone(),
        reason,
    };
    match plan_reservation(&paid.items, available) {
        Ok(plan) => {
            let reserved = SagaEvent::InventoryReserved(InventoryReserved {
                order_id: paid.order_id,
            });
            (
                decision(ReservationStatus::Reserved, None),
                reserved,
                Some(plan),
            )
        }
        Err(shortage) => {
            let failed = SagaEvent::InventoryReservationFailed(InventoryReservationFailed {
                order_id: paid.order_id,
                product_id: Some(shortage.product_id),
                reason: shortage.to_string(),
            });
            let rejected = decision(ReservationStatus::Rejected, Some(shortage.to_string()));
            (rejected, failed, None)
        }
    }
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
