use saga_runtime::unit_of_work::{Reaction, Tx};
use shared_events::{OrderCreated, PaymentFailed, PaymentSucceeded, SagaEvent};
use uuid::Uuid;

use super::ServiceError;
use crate::domain::{self, ChargeOutcome, PaymentStatus};
use crate::repo::{accounts, payments};

/// Saga step 2, on `OrderCreated`: debit the customer if the balance covers the total and
/// answer `PaymentSucceeded`; otherwise record the decline and answer `PaymentFailed`.
pub async fn charge_order(
    tx: &Tx,
    saga_id: Uuid,
    order: &OrderCreated,
) -> Result<Reaction, ServiceError> {
    if let Some(existing) = payments::find_by_order_for_update(tx, order.order_id).await? {
        // A payment is final: never charge an order twice, whatever event asks.
        tracing::warn!(order_id = %order.order_id, status = %existing.status, "order already has a payment; not charged");
        if existing.status == PaymentStatus::Cancelled {
            // A late OrderCreated for a cancelled order: refuse it, and say so.
            return Ok(Reaction::publish(SagaEvent::PaymentFailed(PaymentFailed {
                order_id: order.order_id,
                customer_id: order.customer_id,
                reason: "the order was cancelled before it was charged".to_owned(),
            })));
        }
        return Ok(Reaction::none());
    }
    let mut account = accounts::find_for_update(tx, order.customer_id).await?;
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
                accounts::update_balance(tx, account).await?;
            }
            payments::insert(tx, payment).await?;
            tracing::debug!(order_id = %payment.order_id, amount_cents = payment.amount_cents, "order charged");
            SagaEvent::PaymentSucceeded(PaymentSucceeded {
                order_id: order.order_id,
                customer_id: order.customer_id,
                payment_id: payment.id,
                amount_cents: payment.amount_cents,
                items: order.items.clone(),
            })
        }
        ChargeOutcome::Declined { payment, reason } => {
            payments::insert(tx, payment).await?;
            tracing::debug!(order_id = %payment.order_id, reason, "charge declined");
            SagaEvent::PaymentFailed(PaymentFailed {
                order_id: order.order_id,
                customer_id: order.customer_id,
                reason: reason.clone(),
            })
        }
    };
    Ok(Reaction::publish(next))
}
