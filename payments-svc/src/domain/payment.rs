use strum::{Display, EnumString, IntoStaticStr};
use uuid::Uuid;

use super::account::Account;

/// A payment's status; its text (`CHARGED`, …) is what the database stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Display, EnumString, IntoStaticStr)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    /// Money was taken from the account.
    Charged,
    /// Nothing was taken; recorded so the order can never be charged later.
    Declined,
    /// Money was taken and has been given back (the saga's compensation).
    Refunded,
    /// Nothing was taken: the order was cancelled or compensated before it was charged. The
    /// row makes any later charge for the order impossible.
    Cancelled,
}

/// The one payment an order has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub id: Uuid,
    pub order_id: Uuid,
    pub saga_id: Uuid,
    /// The customer charged, or asked to be. A tombstone (`Cancelled`) written for an order
    /// that was never charged has none: the event that cancelled it did not name one.
    pub customer_id: Option<Uuid>,
    pub amount_cents: i64,
    pub status: PaymentStatus,
    pub reason: Option<String>,
}

/// What charging an order did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// The account was debited; the caller stores the account and the payment.
    Charged(Payment),
    /// Nothing was debited, for `reason`; the caller stores the payment so the decision is
    /// final.
    Declined { payment: Payment, reason: String },
}

impl ChargeOutcome {
    /// The payment to record, whichever the outcome.
    pub fn payment(&self) -> &Payment {
        match self {
            ChargeOutcome::Charged(payment) | ChargeOutcome::Declined { payment, .. } => payment,
        }
    }
}

/// Charges `amount_cents` for `order_id` to `account`, if there is one and it has the funds.
pub fn charge(
    account: Option<&mut Account>,
    order_id: Uuid,
    saga_id: Uuid,
    customer_id: Uuid,
    amount_cents: i64,
) -> ChargeOutcome {
    let payment = |status, reason: Option<String>| Payment {
        id: Uuid::now_v7(),
        order_id,
        saga_id,
        customer_id: Some(customer_id),
        amount_cents,
        status,
        reason,
    };
    let declined = |reason: String| ChargeOutcome::Declined {
        payment: payment(PaymentStatus::Declined, Some(reason.clone())),
        reason,
    };
    let Some(account) = account else {
        return declined(format!("no account for customer {customer_id}"));
    };
    match account.debit(amount_cents) {
        Ok(()) => ChargeOutcome::Charged(payment(PaymentStatus::Charged, None)),
        Err(refused) => declined(refused.to_string()),
    }
}

impl Payment {
    /// The record of an order that was cancelled, or compensated, before it was ever charged:
    /// it moves no money and blocks any later charge.
    pub fn cancelled_before_charge(order_id: Uuid, saga_id: Uuid, reason: &str) -> Payment {
        Payment {
            id: Uuid::now_v7(),
            order_id,
            saga_id,
            customer_id: None,
            amount_cents: 0,
            status: PaymentStatus::Cancelled,
            reason: Some(reason.to_owned()),
        }
    }
}

/// What a refund request means for a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundOutcome {
    /// The payment was charged and is now refunded: credit the account with this amount.
    Refund { amount_cents: i64 },
    /// Refunded before: the compensation is idempotent, so nothing more happens.
    AlreadyRefunded,
    /// Never charged, so there is nothing to give back.
    NothingCharged,
}

impl Payment {
    pub fn refund(&mut self, reason: &str) -> RefundOutcome {
        match self.status {
            PaymentStatus::Charged => {
                self.status = PaymentStatus::Refunded;
                self.reason = Some(reason.to_owned());
                RefundOutcome::Refund {
                    amount_cents: self.amount_cents,
                }
            }
            PaymentStatus::Refunded => RefundOutcome::AlreadyRefunded,
            PaymentStatus::Declined | PaymentStatus::Cancelled => RefundOutcome::NothingCharged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AccountError;

    #[test]
    fn statuses_read_back_what_they_write() {
        for status in [
            PaymentStatus::Charged,
            PaymentStatus::Declined,
            PaymentStatus::Refunded,
            PaymentStatus::Cancelled,
        ] {
            let text: &'static str = status.into();
            assert_eq!(text.parse::<PaymentStatus>(), Ok(status));
        }
        assert_eq!(PaymentStatus::Cancelled.to_string(), "CANCELLED");
        assert!("charged".parse::<PaymentStatus>().is_err());
    }

    #[test]
    fn a_tombstone_moves_no_money_and_names_no_customer() {
        let mut tombstone =
            Payment::cancelled_before_charge(Uuid::now_v7(), Uuid::now_v7(), "late");
        assert_eq!(tombstone.customer_id, None);
        assert_eq!(tombstone.amount_cents, 0);
        assert_eq!(tombstone.refund("again"), RefundOutcome::NothingCharged);
    }

    fn account(balance_cents: i64) -> Account {
        Account {
            customer_id: Uuid::now_v7(),
            balance_cents,
        }
    }

    #[test]
    fn a_covered_charge_debits_the_account() {
        let mut acc = account(1000);
        let customer = acc.customer_id;
        let outcome = charge(
            Some(&mut acc),
            Uuid::now_v7(),
            Uuid::now_v7(),
            customer,
            400,
        );
        assert!(
            matches!(outcome, ChargeOutcome::Charged(ref p) if p.status == PaymentStatus::Charged)
        );
        assert_eq!(acc.balance_cents, 600);
    }

    #[test]
    fn an_uncovered_charge_is_declined_and_takes_nothing() {
        let mut acc = account(100);
        let customer = acc.customer_id;
        let outcome = charge(
            Some(&mut acc),
            Uuid::now_v7(),
            Uuid::now_v7(),
            customer,
            101,
        );
        match outcome {
            ChargeOutcome::Declined { payment, reason } => {
                assert_eq!(payment.status, PaymentStatus::Declined);
                assert!(reason.contains("insufficient funds"), "{reason}");
                assert_eq!(payment.reason, Some(reason));
            }
            ChargeOutcome::Charged(_) => panic!("an uncovered charge must be declined"),
        }
        assert_eq!(acc.balance_cents, 100);
    }

    #[test]
    fn a_charge_without_an_account_is_declined() {
        let outcome = charge(None, Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), 1);
        assert!(matches!(outcome, ChargeOutcome::Declined { .. }));
    }

    #[test]
    fn refunding_is_idempotent_and_never_refunds_a_declined_payment() {
        let mut acc = account(500);
        let customer = acc.customer_id;
        let ChargeOutcome::Charged(mut payment) = charge(
            Some(&mut acc),
            Uuid::now_v7(),
            Uuid::now_v7(),
            customer,
            500,
        ) else {
            panic!("a covered charge must succeed");
        };
        assert_eq!(
            payment.refund("out of stock"),
            RefundOutcome::Refund { amount_cents: 500 }
        );
        assert_eq!(
            payment.refund("out of stock"),
            RefundOutcome::AlreadyRefunded
        );
        assert_eq!(payment.status, PaymentStatus::Refunded);

        let ChargeOutcome::Declined {
            payment: mut declined,
            ..
        } = charge(None, Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), 5)
        else {
            panic!("no account must decline");
        };
        assert_eq!(
            declined.refund("out of stock"),
            RefundOutcome::NothingCharged
        );
    }

    #[test]
    fn accounts_reject_negative_amounts_and_balances() {
        assert_eq!(
            Account::open(Uuid::now_v7(), -1),
            Err(AccountError::NegativeBalance)
        );
        let mut acc = account(10);
        assert_eq!(acc.debit(-5), Err(AccountError::NegativeAmount));
        assert_eq!(acc.credit(-5), Err(AccountError::NegativeAmount));
        assert_eq!(account(i64::MAX).credit(1), Err(AccountError::Overflow));
    }
}
