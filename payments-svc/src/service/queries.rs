use sea_orm::ConnectionTrait;
use uuid::Uuid;

use super::ServiceError;
use crate::domain::Account;
use crate::repo::accounts;

pub async fn get_account<C: ConnectionTrait>(
    db: &C,
    customer_id: Uuid,
) -> Result<Account, ServiceError> {
    accounts::find(db, customer_id)
        .await?
        .ok_or(ServiceError::NotFound("account"))
}
