use uuid::Uuid;

use super::{PaymentsService, ServiceError};
use crate::domain::Account;
use crate::repo::{AccountRepository, PaymentRepository};

impl<A: AccountRepository, P: PaymentRepository> PaymentsService<A, P> {
    pub async fn get_account(&self, customer_id: Uuid) -> Result<Account, ServiceError> {
        self.accounts
            .find(&self.db, customer_id)
            .await?
            .ok_or(ServiceError::NotFound("account"))
    }
}
