use uuid::Uuid;

use super::account::Account;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Charged => "CHARGED",
            PaymentStatus::Declined => "DECLINED",
            PaymentStatus::Refunded => "REFUNDED",
            PaymentStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            PaymentStatus::Charged,
            PaymentStatus::Declined,
            PaymentStatus::Refunded,
            PaymentStatus::Cancelled,
        ]
        .into_iter()
        .find(|status| status.as_str() == value)
    }
}

/// The one payment an order has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub id: Uuid,
    pub order_id: Uuid,
    pub saga_id: Uuid,
    pub customer_id: Uuid,
    pub amount_cents: i64,
    pub status: PaymentStatus,
    pub reason: Option<String>,
}

/// What charging an order did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// The account was debited; the caller stores the account and the payment.
    Charged(Payment),
    /// Nothing was debited; the caller stores the payment so the decision is final.
    Declined(Payment),
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
        customer_id,
        amount_cents,
        status,
        reason,
    };
    let Some(account) = account else {
        return ChargeOutcome::Declined(payment(
            PaymentStatus::Declined,
            Some(format!("no account for customer {customer_id}")),
        ));
    };
    match account.debit(amount_cents) {
        Ok(()) => ChargeOutcome::Charged(payment(PaymentStatus::Charged, None)),
        Err(declined) => {
            ChargeOutcome::Declined(payment(PaymentStatus::Declined, Some(declined.to_string())))
        }
    }
}

impl Payment {
    /// The record of an order that was cancelled, or compensated, before it was ever charged:
    /// it moves no money and blocks any later charge.
    pub fn cancelled_before_charge(
        order_id: Uuid,
        saga_id: Uuid,
        customer_id: Uuid,
        reason: &str,
    ) -> Payment {
        Payment {
            id: Uuid::now_v7(),
            order_id,
            saga_id,
            customer_id,
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
            ChargeOutcome::Declined(payment) => {
                assert_eq!(payment.status, PaymentStatus::Declined);
                assert!(
                    payment
                        .reason
                        .unwrap_or_default()
                        .contains("insufficient funds")
                );
            }
            ChargeOutcome::Charged(_) => panic!("an uncovered charge must be declined"),
        }
        assert_eq!(acc.balance_cents, 100);
    }

    #[test]
    fn a_charge_without_an_account_is_declined() {
        let outcome = charge(None, Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), 1);
        assert!(matches!(outcome, ChargeOutcome::Declined(_)));
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

        let ChargeOutcome::Declined(mut declined) =
            charge(None, Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), 5)
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
