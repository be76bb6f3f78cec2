use saga_runtime::inbox;
use shared_events::{Envelope, OrderCancelled};

use super::{InventoryService, ServiceError};
use crate::domain::{Reservation, ReservationStatus};
use crate::repo::{ProductRepository, ReservationRepository};

impl<P: ProductRepository, R: ReservationRepository> InventoryService<P, R> {
    /// On `OrderCancelled` (the saga passed its deadline): give back the stock held for the
    /// order; if nothing was reserved yet, record that the order is cancelled so a late
    /// `PaymentSucceeded` is answered with a failure (and so a refund), never a reservation.
    pub async fn release_order(
        &self,
        event: &Envelope,
        cancelled: &OrderCancelled,
    ) -> Result<(), ServiceError> {
        let saga_id = event.sagaid.unwrap_or(cancelled.order_id);
        let Some(txn) = inbox::begin_once(&self.db, event).await? else {
            return Ok(());
        };
        match self
            .reservations
            .find_for_update(&txn, cancelled.order_id)
            .await?
        {
            Some(mut reservation) => {
                let give_back = reservation.release();
                for &(product_id, quantity) in &give_back {
                    if !self.products.release(&txn, product_id, quantity).await? {
                        return Err(ServiceError::StockRace(product_id));
                    }
                }
                if !give_back.is_empty() {
                    reservation.reason = Some(format!("released: {}", cancelled.reason));
                    self.reservations.update_status(&txn, &reservation).await?;
                    tracing::info!(order_id = %cancelled.order_id, "reservation released for a cancelled order");
                }
            }
            None => {
                let tombstone = Reservation {
                    order_id: cancelled.order_id,
                    saga_id,
                    status: ReservationStatus::Cancelled,
                    lines: Vec::new(),
                    reason: Some(cancelled.reason.clone()),
                };
                self.reservations.insert(&txn, &tombstone).await?;
                tracing::info!(order_id = %cancelled.order_id, "order cancelled before any reservation; a late one will be refused");
            }
        }
        txn.commit().await?;
        Ok(())
    }
}
