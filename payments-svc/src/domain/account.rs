use uuid::Uuid;

/// A customer's prepaid balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    pub customer_id: Uuid,
    pub balance_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("balance_cents must not be negative")]
    NegativeBalance,
    #[error("insufficient funds: balance {balance_cents}, needed {amount_cents}")]
    InsufficientFunds {
        balance_cents: i64,
        amount_cents: i64,
    },
    #[error("amount_cents must not be negative")]
    NegativeAmount,
    #[error("the balance would overflow")]
    Overflow,
}

impl Account {
    /// Opens an account with an opening balance.
    pub fn open(customer_id: Uuid, balance_cents: i64) -> Result<Self, AccountError> {
        if balance_cents < 0 {
            return Err(AccountError::NegativeBalance);
        }
        Ok(Self {
            customer_id,
            balance_cents,
        })
    }

    /// Takes `amount_cents` if the balance covers it; otherwise changes nothing.
    pub fn debit(&mut self, amount_cents: i64) -> Result<(), AccountError> {
        if amount_cents < 0 {
            return Err(AccountError::NegativeAmount);
        }
        if self.balance_cents < amount_cents {
            return Err(AccountError::InsufficientFunds {
                balance_cents: self.balance_cents,
                amount_cents,
            });
        }
        self.balance_cents -= amount_cents;
        Ok(())
    }

    /// Gives `amount_cents` back.
    pub fn credit(&mut self, amount_cents: i64) -> Result<(), AccountError> {
        if amount_cents < 0 {
            return Err(AccountError::NegativeAmount);
        }
        self.balance_cents = self
            .balance_cents
            .checked_add(amount_cents)
            .ok_or(AccountError::Overflow)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_a_valid_balance_and_a_valid_amount() -> Result<(), AccountError> {
        let mut account = Account::open(Uuid::now_v7(), 0)?;
        account.credit(0)?;
        account.debit(0)?;
        assert_eq!(account.balance_cents, 0);
        Ok(())
    }

    #[test]
    fn a_debit_of_the_whole_balance_leaves_zero() -> Result<(), AccountError> {
        let mut account = Account::open(Uuid::now_v7(), 500)?;
        account.debit(500)?;
        assert_eq!(account.balance_cents, 0);
        assert_eq!(
            account.debit(1),
            Err(AccountError::InsufficientFunds {
                balance_cents: 0,
                amount_cents: 1
            })
        );
        Ok(())
    }
}
