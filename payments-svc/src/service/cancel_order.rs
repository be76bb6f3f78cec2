use saga_runtime::inbox;
use shared_events::{Envelope, OrderCancelled};

use super::{PaymentsService, ServiceError};
use crate::domain::Payment;
use crate::repo::{AccountRepository, PaymentRepository};

impl<A: AccountRepository, P: PaymentRepository> PaymentsService<A, P> {
    /// On `OrderCancelled` (the saga passed its deadline): refund the charge if there was one;
    /// if the order was never charged, record that it is cancelled so a late `OrderCreated`
    /// cannot take money.
    pub async fn cancel_order(
        &self,
        event: &Envelope,
        cancelled: &OrderCancelled,
    ) -> Result<(), ServiceError> {
        let saga_id = event.sagaid.unwrap_or(cancelled.order_id);
        let Some(txn) = inbox::begin_once(&self.db, event).await? else {
            return Ok(());
        };
        match self
            .payments
            .find_by_order_for_update(&txn, cancelled.order_id)
            .await?
        {
            Some(payment) => {
                let reason = format!("order cancelled: {}", cancelled.reason);
                self.refund_in(&txn, payment, &reason).await?;
            }
            None => {
                let tombstone = Payment::cancelled_before_charge(
                    cancelled.order_id,
                    saga_id,
                    uuid::Uuid::nil(),
                    &cancelled.reason,
                );
                self.payments.insert(&txn, &tombstone).await?;
                tracing::info!(order_id = %cancelled.order_id, "order cancelled before any charge; a late charge will be refused");
            }
        }
        txn.commit().await?;
        self.outbox_signal.notify();
        Ok(())
    }
}
