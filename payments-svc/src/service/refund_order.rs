use saga_runtime::inbox;
use saga_runtime::outbox;
use sea_orm::DatabaseTransaction;
use shared_events::{Envelope, InventoryReservationFailed, PaymentRefunded, SagaEvent};

use super::{PaymentsService, SOURCE, ServiceError};
use crate::domain::{Payment, RefundOutcome};
use crate::repo::{AccountRepository, PaymentRepository};

impl<A: AccountRepository, P: PaymentRepository> PaymentsService<A, P> {
    /// Saga step 4, the compensation, on `InventoryReservationFailed`: give the charge back
    /// and announce `PaymentRefunded`. Idempotent: a refunded payment is never refunded again.
    /// A compensation that arrives before the charge it compensates creates no money: it
    /// records the order as cancelled, so the late charge is refused instead.
    pub async fn refund_order(
        &self,
        event: &Envelope,
        failure: &InventoryReservationFailed,
    ) -> Result<(), ServiceError> {
        let saga_id = event.sagaid.unwrap_or(failure.order_id);
        let Some(txn) = inbox::begin_once(&self.db, event).await? else {
            return Ok(());
        };
        match self
            .payments
            .find_by_order_for_update(&txn, failure.order_id)
            .await?
        {
            Some(payment) => self.refund_in(&txn, payment, &failure.reason).await?,
            None => {
                let reason = format!("compensated before it was charged: {}", failure.reason);
                let tombstone = Payment::cancelled_before_charge(
                    failure.order_id,
                    saga_id,
                    uuid::Uuid::nil(),
                    &reason,
                );
                self.payments.insert(&txn, &tombstone).await?;
                tracing::warn!(order_id = %failure.order_id, "refund arrived before the charge; the charge will be refused");
            }
        }
        txn.commit().await?;
        self.outbox_signal.notify();
        Ok(())
    }

    /// Refunds `payment` inside `txn` if it was charged, crediting the account and writing
    /// `PaymentRefunded` to the outbox; does nothing for any other status.
    pub(super) async fn refund_in(
        &self,
        txn: &DatabaseTransaction,
        mut payment: Payment,
        reason: &str,
    ) -> Result<(), ServiceError> {
        let amount_cents = match payment.refund(reason) {
            RefundOutcome::Refund { amount_cents } => amount_cents,
            outcome => {
                tracing::info!(order_id = %payment.order_id, ?outcome, "nothing to refund");
                return Ok(());
            }
        };
        let mut account = self
            .accounts
            .find_for_update(txn, payment.customer_id)
            .await?
            .ok_or(ServiceError::NotFound("account of a charged payment"))?;
        account.credit(amount_cents)?;
        self.accounts.update_balance(txn, &account).await?;
        self.payments.update_status(txn, &payment).await?;
        let refunded = SagaEvent::PaymentRefunded(PaymentRefunded {
            order_id: payment.order_id,
            customer_id: payment.customer_id,
            payment_id: payment.id,
            amount_cents,
            reason: reason.to_owned(),
        });
        outbox::enqueue(txn, &Envelope::new(SOURCE, Some(payment.saga_id), refunded)).await?;
        tracing::info!(order_id = %payment.order_id, amount_cents, "payment refunded");
        Ok(())
    }
}
