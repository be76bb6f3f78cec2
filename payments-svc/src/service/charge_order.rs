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
    let mut account = accounts::find_for_update(tx, order.customer_id).await?;
    let outcome = domain::charge(
        account.as_mut(),
        order.order_id,
        saga_id,
        order.customer_id,
        order.total_cents,
    );
    // The payment row goes in first. UNIQUE (order_id) tells a first charge from a repeated
    // or cancelled one without a read before every charge; the account's new balance is
    // written only once the payment is known to be the order's first.
    if !payments::insert_first(tx, outcome.payment()).await? {
        return already_decided(tx, order).await;
    }
    let next = match &outcome {
        ChargeOutcome::Charged(payment) => {
            if let Some(account) = &account {
                accounts::update_balance(tx, account).await?;
            }
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

/// The order has a payment already. A payment is final: never charge an order twice,
/// whatever event asks.
async fn already_decided(tx: &Tx, order: &OrderCreated) -> Result<Reaction, ServiceError> {
    let existing = payments::find_by_order_for_update(tx, order.order_id).await?;
    let status = existing.map(|payment| payment.status);
    tracing::warn!(order_id = %order.order_id, ?status, "order already has a payment; not charged");
    if status == Some(PaymentStatus::Cancelled) {
        // A late OrderCreated for a cancelled order: refuse it, and say so.
        return Ok(Reaction::publish(SagaEvent::PaymentFailed(PaymentFailed {
            order_id: order.order_id,
            customer_id: order.customer_id,
            reason: "the order was cancelled before it was charged".to_owned(),
        })));
    }
    Ok(Reaction::none())
}
