use saga_runtime::unit_of_work::{Reaction, Tx};
use shared_events::OrderCancelled;
use uuid::Uuid;

use super::ServiceError;
use crate::domain::{Reservation, ReservationStatus};
use crate::repo::{products, reservations};

/// On `OrderCancelled` (the saga passed its deadline): give back the stock held for the
/// order; if nothing was reserved yet, record that the order is cancelled so a late
/// `PaymentSucceeded` is answered with a failure (and so a refund), never a reservation.
pub async fn release_order(
    tx: &Tx,
    saga_id: Uuid,
    cancelled: &OrderCancelled,
) -> Result<Reaction, ServiceError> {
    match reservations::find_for_update(tx, cancelled.order_id).await? {
        Some(mut reservation) => {
            let give_back = reservation.release();
            for &(product_id, quantity) in &give_back {
                if !products::release(tx, product_id, quantity).await? {
                    return Err(ServiceError::StockRace(product_id));
                }
            }
            if !give_back.is_empty() {
                reservation.reason = Some(format!("released: {}", cancelled.reason));
                reservations::update_status(tx, &reservation).await?;
                // Counted before the commit: a rolled-back release that is applied again
                // counts twice, which a rate of compensations can bear.
                saga_runtime::metrics::COMPENSATIONS
                    .add_with(1, &[("type", "ReservationReleased".to_owned())]);
                tracing::info!(order_id = %cancelled.order_id, "reservation released for a cancelled order");
            }
        }
        None => {
            let tombstone = Reservation {
                order_id: cancelled.order_id,
                saga_id,
                customer_id: None,
                status: ReservationStatus::Cancelled,
                lines: Vec::new(),
                reason: Some(cancelled.reason.clone()),
            };
            reservations::insert(tx, &tombstone).await?;
            tracing::info!(order_id = %cancelled.order_id, "order cancelled before any reservation; a late one will be refused");
        }
    }
    Ok(Reaction::none())
}
