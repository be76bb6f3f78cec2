use uuid::Uuid;

use super::{PaymentsService, ServiceError};
use crate::domain::Account;
use crate::repo::{AccountRepository, PaymentRepository};

impl<A: AccountRepository, P: PaymentRepository> PaymentsService<A, P> {
    /// Opens a customer's account with an opening balance. One account per customer.
    pub async fn create_account(
        &self,
        customer_id: Uuid,
        balance_cents: i64,
    ) -> Result<Account, ServiceError> {
        let account = Account::open(customer_id, balance_cents)?;
        if !self.accounts.create(&self.db, &account).await? {
            return Err(ServiceError::AccountExists(customer_id));
        }
        tracing::info!(%customer_id, balance_cents, "account opened");
        Ok(account)
    }
}
