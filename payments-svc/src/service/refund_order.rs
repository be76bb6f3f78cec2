use saga_runtime::unit_of_work::{Reaction, Tx};
use shared_events::{InventoryReservationFailed, PaymentRefunded, SagaEvent};
use uuid::Uuid;

use super::ServiceError;
use crate::domain::{Payment, RefundOutcome};
use crate::repo::{accounts, payments};

/// Saga step 4, the compensation, on `InventoryReservationFailed`: give the charge back and
/// answer `PaymentRefunded`. Idempotent: a refunded payment is never refunded again. A
/// compensation that arrives before the charge it compensates creates no money: it records
/// the order as cancelled, so the late charge is refused instead.
pub async fn refund_order(
    tx: &Tx,
    saga_id: Uuid,
    failure: &InventoryReservationFailed,
) -> Result<Reaction, ServiceError> {
    match payments::find_by_order_for_update(tx, failure.order_id).await? {
        Some(payment) => refund(tx, payment, &failure.reason).await,
        None => {
            let reason = format!("compensated before it was charged: {}", failure.reason);
            let tombstone = Payment::cancelled_before_charge(failure.order_id, saga_id, &reason);
            payments::insert(tx, &tombstone).await?;
            tracing::warn!(order_id = %failure.order_id, "refund arrived before the charge; the charge will be refused");
            Ok(Reaction::none())
        }
    }
}

/// Refunds `payment` if it was charged, crediting the account, and answers `PaymentRefunded`;
/// does nothing for any other status.
pub(super) async fn refund(
    tx: &Tx,
    mut payment: Payment,
    reason: &str,
) -> Result<Reaction, ServiceError> {
    let amount_cents = match payment.refund(reason) {
        RefundOutcome::Refund { amount_cents } => amount_cents,
        outcome => {
            tracing::debug!(order_id = %payment.order_id, ?outcome, "nothing to refund");
            return Ok(Reaction::none());
        }
    };
    let customer_id = payment
        .customer_id
        .ok_or(ServiceError::ChargedWithoutCustomer(payment.id))?;
    let mut account = accounts::find_for_update(tx, customer_id)
        .await?
        .ok_or(ServiceError::NotFound("account of a charged payment"))?;
    account.credit(amount_cents)?;
    accounts::update_balance(tx, &account).await?;
    payments::update_status(tx, &payment).await?;
    tracing::debug!(order_id = %payment.order_id, amount_cents, "payment refunded");
    Ok(Reaction::publish(SagaEvent::PaymentRefunded(
        PaymentRefunded {
            order_id: payment.order_id,
            customer_id,
            payment_id: payment.id,
            amount_cents,
            reason: reason.to_owned(),
        },
    )))
}
