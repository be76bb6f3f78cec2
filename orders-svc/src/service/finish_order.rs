//! Saga step 5: the events that end an order's saga. Each moves the order to a terminal
//! status and answers with the saga's last event, `OrderConfirmed` or `OrderFailed`.

use std::collections::HashMap;

use saga_runtime::unit_of_work::{Reaction, Tx};
use shared_events::{FailedStatus, OrderConfirmed, OrderFailed, SagaEvent};
use uuid::Uuid;

use super::{InFlight, ServiceError};
use crate::domain::OrderStatus;
use crate::repo::orders;

/// How a saga's outcome ends its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish<'a> {
    /// `InventoryReserved`: paid and reserved, so the order is `CONFIRMED`.
    Confirmed { order_id: Uuid },
    /// `PaymentFailed` (nothing was charged: `FAILED_PAYMENT` at once) or `PaymentRefunded`
    /// (the compensation for a failed reservation has committed, so the order can say
    /// `FAILED_INVENTORY` with the money already back).
    Failed {
        order_id: Uuid,
        status: FailedStatus,
        reason: &'a str,
    },
}

impl<'a> Finish<'a> {
    /// The finish `event` brings, if it is a saga outcome.
    pub fn of(event: &'a SagaEvent) -> Option<Self> {
        Some(match event {
            SagaEvent::InventoryReserved(reserved) => Self::Confirmed {
                order_id: reserved.order_id,
            },
            SagaEvent::PaymentFailed(failed) => Self::Failed {
                order_id: failed.order_id,
                status: FailedStatus::FailedPayment,
                reason: &failed.reason,
            },
            SagaEvent::PaymentRefunded(refunded) => Self::Failed {
                order_id: refunded.order_id,
                status: FailedStatus::FailedInventory,
                reason: &refunded.reason,
            },
            _ => return None,
        })
    }

    pub fn order_id(&self) -> Uuid {
        match *self {
            Self::Confirmed { order_id } | Self::Failed { order_id, .. } => order_id,
        }
    }

    /// The order's terminal status.
    pub fn to(&self) -> OrderStatus {
        match self {
            Self::Confirmed { .. } => OrderStatus::Confirmed,
            Self::Failed {
                status: FailedStatus::FailedPayment,
                ..
            } => OrderStatus::FailedPayment,
            Self::Failed {
                status: FailedStatus::FailedInventory,
                ..
            } => OrderStatus::FailedInventory,
        }
    }

    pub fn reason(&self) -> Option<&'a str> {
        match *self {
            Self::Confirmed { .. } => None,
            Self::Failed { reason, .. } => Some(reason),
        }
    }

    /// The saga's last event, for an order of `total_cents`.
    fn announce(&self, total_cents: i64) -> SagaEvent {
        match *self {
            Self::Confirmed { order_id } => SagaEvent::OrderConfirmed(OrderConfirmed {
                order_id,
                total_cents,
            }),
            Self::Failed {
                order_id,
                status,
                reason,
            } => SagaEvent::OrderFailed(OrderFailed {
                order_id,
                status,
                reason: reason.to_owned(),
            }),
        }
    }
}

/// Moves the order to its terminal status and publishes the saga's last event. This runs once
/// per saga under load, so the transition is one compare-and-set statement instead of a
/// locked read of the order and its lines and an update. An event that does not apply
/// (unknown order, order already terminal) is noted and ignored: retrying cannot fix it, and
/// it must not block the partition.
pub async fn finish_order(
    tx: &Tx,
    in_flight: &InFlight,
    finish: Finish<'_>,
) -> Result<Reaction, ServiceError> {
    let order_id = finish.order_id();
    let to = finish.to();
    if let Some(finished) = orders::finish(tx, order_id, to, finish.reason()).await? {
        return Ok(finished_now(in_flight, finish, finished));
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

/// Finishes several orders at once, as [`finish_order`] would one after the other, in one
/// statement: one reaction per finish, in order.
///
/// Only for open orders, each named once. If one is not (an unknown order, one finished
/// already, one named twice), this fails with [`ServiceError::NotAllOpen`] and the runtime
/// applies the events one by one, where [`finish_order`] decides each case.
pub async fn finish_orders(
    tx: &Tx,
    in_flight: &InFlight,
    finishes: &[Finish<'_>],
) -> Result<Vec<Reaction>, ServiceError> {
    if finishes.is_empty() {
        return Ok(Vec::new());
    }
    let moves: Vec<(Uuid, OrderStatus, Option<&str>)> = finishes
        .iter()
        .map(|finish| (finish.order_id(), finish.to(), finish.reason()))
        .collect();
    let mut finished: HashMap<Uuid, orders::Finished> =
        orders::finish_all(tx, &moves).await?.into_iter().collect();
    if finished.len() != finishes.len() {
        return Err(ServiceError::NotAllOpen);
    }
    finishes
        .iter()
        .map(|finish| {
            let done = finished
                .remove(&finish.order_id())
                .ok_or(ServiceError::NotAllOpen)?;
            Ok(finished_now(in_flight, *finish, done))
        })
        .collect()
}

/// What follows once `finish` moved its order: the saga's duration is recorded, its place
/// freed, and its last event published.
fn finished_now(in_flight: &InFlight, finish: Finish<'_>, finished: orders::Finished) -> Reaction {
    let to = finish.to();
    tracing::debug!(order_id = %finish.order_id(), status = %to, "order finished");
    super::observe_saga_duration(to, finished.age);
    // The place moves before the commit; if that fails, the next recount corrects it.
    in_flight.saga_finished(finished.age);
    Reaction::publish(finish.announce(finished.total_cents))
}
