use saga_runtime::unit_of_work::{Reaction, Tx};
use shared_events::OrderCancelled;
use uuid::Uuid;

use super::ServiceError;
use super::refund_order::refund;
use crate::domain::Payment;
use crate::repo::payments;

/// On `OrderCancelled` (the saga passed its deadline): refund the charge if there was one;
/// if the order was never charged, record that it is cancelled so a late `OrderCreated`
/// cannot take money.
pub async fn cancel_order(
    tx: &Tx,
    saga_id: Uuid,
    cancelled: &OrderCancelled,
) -> Result<Reaction, ServiceError> {
    match payments::find_by_order_for_update(tx, cancelled.order_id).await? {
        Some(payment) => {
            let reason = format!("order cancelled: {}", cancelled.reason);
            refund(tx, payment, &reason).await
        }
        None => {
            let tombstone =
                Payment::cancelled_before_charge(cancelled.order_id, saga_id, &cancelled.reason);
            payments::insert(tx, &tombstone).await?;
            tracing::info!(order_id = %cancelled.order_id, "order cancelled before any charge; a late charge will be refused");
            Ok(Reaction::none())
        }
    }
}
