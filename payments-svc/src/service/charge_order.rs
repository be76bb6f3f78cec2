use saga_runtime::inbox;
use saga_runtime::outbox;
use shared_events::{Envelope, OrderCreated, PaymentFailed, PaymentSucceeded, SagaEvent};

use super::{PaymentsService, SOURCE, ServiceError};
use crate::domain::{self, ChargeOutcome, PaymentStatus};
use crate::repo::{AccountRepository, PaymentRepository};

impl<A: AccountRepository, P: PaymentRepository> PaymentsService<A, P> {
    /// Saga step 2, on `OrderCreated`: debit the customer if the balance covers the total and
    /// announce `PaymentSucceeded`; otherwise record the decline and announce `PaymentFailed`.
    pub async fn charge_order(
        &self,
        event: &Envelope,
        order: &OrderCreated,
    ) -> Result<(), ServiceError> {
        let saga_id = event.sagaid.unwrap_or(order.order_id);
        let Some(txn) = inbox::begin_once(&self.db, event).await? else {
            return Ok(());
        };
        if let Some(existing) = self
            .payments
            .find_by_order_for_update(&txn, order.order_id)
            .await?
        {
            // A payment is final: never charge an order twice, whatever event asks.
            tracing::warn!(order_id = %order.order_id, status = existing.status.as_str(), "order already has a payment; not charged");
            if existing.status == PaymentStatus::Cancelled {
                // A late OrderCreated for a cancelled order: refuse it, and say so.
                let refused = SagaEvent::PaymentFailed(PaymentFailed {
                    order_id: order.order_id,
                    customer_id: order.customer_id,
                    reason: "the order was cancelled before it was charged".to_owned(),
                });
                outbox::enqueue(&txn, &Envelope::new(SOURCE, Some(saga_id), refused)).await?;
            }
            txn.commit().await?;
            self.outbox_signal.notify();
            return Ok(());
        }
        let mut account = self
            .accounts
            .find_for_update(&txn, order.customer_id)
            .await?;
        let outcome = domain::charge(
            account.as_mut(),
            order.order_id,
            saga_id,
            order.customer_id,
            order.total_cents,
        );
        let next = match &outcome {
            ChargeOutcome::Charged(payment) => {
                if let Some(account) = &account {
                    self.accounts.update_balance(&txn, account).await?;
                }
                self.payments.insert(&txn, payment).await?;
                SagaEvent::PaymentSucceeded(PaymentSucceeded {
                    order_id: order.order_id,
                    customer_id: order.customer_id,
                    payment_id: payment.id,
                    amount_cents: payment.amount_cents,
                    items: order.items.clone(),
                })
            }
            ChargeOutcome::Declined(payment) => {
                self.payments.insert(&txn, payment).await?;
                SagaEvent::PaymentFailed(PaymentFailed {
                    order_id: order.order_id,
                    customer_id: order.customer_id,
                    reason: payment.reason.clone().unwrap_or_default(),
                })
            }
        };
        outbox::enqueue(&txn, &Envelope::new(SOURCE, Some(saga_id), next)).await?;
        txn.commit().await?;
        self.outbox_signal.notify();
        match outcome {
            ChargeOutcome::Charged(p) => {
                tracing::info!(order_id = %p.order_id, amount_cents = p.amount_cents, "order charged")
            }
            ChargeOutcome::Declined(p) => {
                tracing::info!(order_id = %p.order_id, reason = ?p.reason, "charge declined")
            }
        }
        Ok(())
    }
}
