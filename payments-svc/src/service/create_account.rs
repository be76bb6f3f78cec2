use saga_runtime::unit_of_work::{Announcements, Command, Tx};
use uuid::Uuid;

use super::ServiceError;
use crate::domain::Account;
use crate::repo::accounts;

/// Opens a customer's account with an opening balance. One account per customer.
#[derive(Debug, Clone)]
pub struct CreateAccount {
    pub customer_id: Uuid,
    pub balance_cents: i64,
}

impl Command for CreateAccount {
    type Output = Account;
    type Error = ServiceError;

    async fn execute(self, tx: &Tx) -> Result<(Account, Announcements), ServiceError> {
        let account = Account::open(self.customer_id, self.balance_cents)?;
        if !accounts::create(tx, &account).await? {
            return Err(ServiceError::AccountExists(self.customer_id));
        }
        tracing::info!(customer_id = %self.customer_id, balance_cents = self.balance_cents, "account opened");
        Ok((account, Announcements::none()))
    }
}
