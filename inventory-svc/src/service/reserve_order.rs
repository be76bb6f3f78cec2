use saga_runtime::inbox;
use saga_runtime::outbox;
use shared_events::{
    Envelope, InventoryReservationFailed, InventoryReserved, PaymentSucceeded, SagaEvent,
};
use uuid::Uuid;

use super::{InventoryService, SOURCE, ServiceError};
use crate::domain::{Reservation, ReservationStatus, plan_reservation};
use crate::repo::{ProductRepository, ReservationRepository};

impl<P: ProductRepository, R: ReservationRepository> InventoryService<P, R> {
    /// Saga step 3, on `PaymentSucceeded`: reserve every line, all or nothing, and announce
    /// `InventoryReserved`; or reserve nothing and announce `InventoryReservationFailed`,
    /// which makes payments-svc refund.
    pub async fn reserve_order(
        &self,
        event: &Envelope,
        paid: &PaymentSucceeded,
    ) -> Result<(), ServiceError> {
        let saga_id = event.sagaid.unwrap_or(paid.order_id);
        let Some(txn) = inbox::begin_once(&self.db, event).await? else {
            return Ok(());
        };
        if let Some(existing) = self
            .reservations
            .find_for_update(&txn, paid.order_id)
            .await?
        {
            tracing::warn!(order_id = %paid.order_id, status = existing.status.as_str(), "order already has a reservation decision");
            if existing.status == ReservationStatus::Cancelled {
                // A payment that arrives after the cancellation becomes a compensation: the
                // failure makes payments-svc refund it.
                let refused = SagaEvent::InventoryReservationFailed(InventoryReservationFailed {
                    order_id: paid.order_id,
                    product_id: paid
                        .items
                        .first()
                        .map(|line| line.product_id)
                        .unwrap_or_default(),
                    reason: "the order was cancelled before stock was reserved".to_owned(),
                });
                outbox::enqueue(&txn, &Envelope::new(SOURCE, Some(saga_id), refused)).await?;
            }
            txn.commit().await?;
            self.outbox_signal.notify();
            return Ok(());
        }
        let product_ids: Vec<Uuid> = paid.items.iter().map(|line| line.product_id).collect();
        let available = self.products.lock_available(&txn, &product_ids).await?;
        let (reservation, next) = match plan_reservation(&paid.items, &available) {
            Ok(plan) => {
                for (product_id, quantity) in plan {
                    if !self.products.reserve(&txn, product_id, quantity).await? {
                        // Cannot happen while the rows are locked; rolling back keeps all-or-nothing.
                        return Err(ServiceError::StockRace(product_id));
                    }
                }
                let reserved = SagaEvent::InventoryReserved(InventoryReserved {
                    order_id: paid.order_id,
                });
                (
                    self.reservation(paid, saga_id, ReservationStatus::Reserved, None),
                    reserved,
                )
            }
            Err(shortage) => {
                let failed = SagaEvent::InventoryReservationFailed(InventoryReservationFailed {
                    order_id: paid.order_id,
                    product_id: shortage.product_id,
                    reason: shortage.to_string(),
                });
                (
                    self.reservation(
                        paid,
                        saga_id,
                        ReservationStatus::Rejected,
                        Some(shortage.to_string()),
                    ),
                    failed,
                )
            }
        };
        self.reservations.insert(&txn, &reservation).await?;
        outbox::enqueue(&txn, &Envelope::new(SOURCE, Some(saga_id), next)).await?;
        txn.commit().await?;
        self.outbox_signal.notify();
        tracing::info!(order_id = %paid.order_id, status = reservation.status.as_str(), reason = ?reservation.reason, "reservation decided");
        Ok(())
    }

    fn reservation(
        &self,
        paid: &PaymentSucceeded,
        saga_id: Uuid,
        status: ReservationStatus,
        reason: Option<String>,
    ) -> Reservation {
        Reservation {
            order_id: paid.order_id,
            saga_id,
            status,
            lines: paid.items.clone(),
            reason,
        }
    }
}
