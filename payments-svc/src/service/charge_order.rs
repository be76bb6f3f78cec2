use std::collections::{BTreeSet, HashMap};

use saga_runtime::unit_of_work::{Reaction, Tx};
use shared_events::{OrderCreated, PaymentFailed, PaymentSucceeded, SagaEvent};
use uuid::Uuid;

use super::ServiceError;
use crate::domain::{self, Account, ChargeOutcome, Payment, PaymentStatus};
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
    if let (ChargeOutcome::Charged(_), Some(account)) = (&outcome, &account) {
        accounts::update_balance(tx, account).await?;
    }
    Ok(Reaction::publish(answer(order, &outcome)))
}

/// Saga step 2 for several orders at once, as [`charge_order`] would one after the other
/// (a customer's later order sees the balance the earlier one left), in three statements for
/// all: lock the accounts, insert the payments, store the balances.
///
/// Only for orders without a payment yet. If one has one (a repeated or cancelled order),
/// this fails with [`ServiceError::DecidedBefore`] and the runtime charges them one by one,
/// where [`charge_order`] decides that case.
pub async fn charge_orders(
    tx: &Tx,
    orders: &[(Uuid, &OrderCreated)],
) -> Result<Vec<Reaction>, ServiceError> {
    let mut customer_ids: Vec<Uuid> = orders.iter().map(|(_, order)| order.customer_id).collect();
    customer_ids.sort_unstable();
    customer_ids.dedup();
    let mut accounts: HashMap<Uuid, Account> = accounts::find_all_for_update(tx, &customer_ids)
        .await?
        .into_iter()
        .map(|account| (account.customer_id, account))
        .collect();
    let outcomes: Vec<ChargeOutcome> = orders
        .iter()
        .map(|(saga_id, order)| {
            domain::charge(
                accounts.get_mut(&order.customer_id),
                order.order_id,
                *saga_id,
                order.customer_id,
                order.total_cents,
            )
        })
        .collect();
    let payments: Vec<&Payment> = outcomes.iter().map(ChargeOutcome::payment).collect();
    if payments::insert_all_first(tx, &payments).await? != payments.len() {
        return Err(ServiceError::DecidedBefore);
    }
    // Only the accounts a charge debited have a new balance to store.
    let debited: BTreeSet<Uuid> = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            ChargeOutcome::Charged(payment) => payment.customer_id,
            ChargeOutcome::Declined { .. } => None,
        })
        .collect();
    let charged: Vec<Account> = debited
        .iter()
        .filter_map(|customer_id| accounts.remove(customer_id))
        .collect();
    accounts::update_balances(tx, &charged).await?;
    Ok(orders
        .iter()
        .zip(&outcomes)
        .map(|((_, order), outcome)| Reaction::publish(answer(order, outcome)))
        .collect())
}

/// The event that announces `outcome`, the first payment decision on `order`.
fn answer(order: &OrderCreated, outcome: &ChargeOutcome) -> SagaEvent {
    match outcome {
        ChargeOutcome::Charged(payment) => {
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
    }
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
