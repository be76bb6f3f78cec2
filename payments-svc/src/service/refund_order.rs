use saga_runtime::inbox::{self, Delivery};
use saga_runtime::outbox;
use sea_orm::TransactionTrait;
use shared_events::{Envelope, InventoryReservationFailed, PaymentRefunded, SagaEvent};

use super::{PaymentsService, SOURCE, ServiceError};
use crate::domain::RefundOutcome;
use crate::repo::{AccountRepository, PaymentRepository};

impl<A: AccountRepository, P: PaymentRepository> PaymentsService<A, P> {
    /// Saga step 4, the compensation, on `InventoryReservationFailed`: give the charge back
    /// and announce `PaymentRefunded`. Idempotent: a refunded payment is never refunded again.
    pub async fn refund_order(
        &self,
        event: &Envelope,
        failure: &InventoryReservationFailed,
    ) -> Result<(), ServiceError> {
        let txn = self.db.begin().await?;
        if inbox::record(&txn, event).await? == Delivery::Duplicate {
            tracing::debug!("duplicate event ignored");
            return Ok(());
        }
        let Some(mut payment) = self
            .payments
            .find_by_order_for_update(&txn, failure.order_id)
            .await?
        else {
            tracing::error!(order_id = %failure.order_id, "refund requested for an order that was never charged; ignored");
            txn.commit().await?;
            return Ok(());
        };
        let reason = format!("refunded: {}", failure.reason);
        let amount_cents = match payment.refund(&reason) {
            RefundOutcome::Refund { amount_cents } => amount_cents,
            outcome => {
                tracing::info!(order_id = %failure.order_id, ?outcome, "nothing to refund");
                txn.commit().await?;
                return Ok(());
            }
        };
        let mut account = self
            .accounts
            .find_for_update(&txn, payment.customer_id)
            .await?
            .ok_or(ServiceError::NotFound("account of a charged payment"))?;
        account.credit(amount_cents)?;
        self.accounts.update_balance(&txn, &account).await?;
        self.payments.update_status(&txn, &payment).await?;
        let refunded = SagaEvent::PaymentRefunded(PaymentRefunded {
            order_id: payment.order_id,
            customer_id: payment.customer_id,
            payment_id: payment.id,
            amount_cents,
            reason: failure.reason.clone(),
        });
        outbox::enqueue(
            &txn,
            &Envelope::new(SOURCE, Some(payment.saga_id), refunded),
        )
        .await?;
        txn.commit().await?;
        self.outbox_signal.notify();
        tracing::info!(order_id = %payment.order_id, amount_cents, "payment refunded");
        Ok(())
    }
}
