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

/// The payment of `order_id`, if payments-svc has decided one.
pub async fn get_payment_of_order<C: ConnectionTrait>(
    db: &C,
    order_id: Uuid,
) -> Result<Option<crate::domain::Payment>, ServiceError> {
    Ok(crate::repo::payments::find_by_order(db, order_id).await?)
}
