use sea_orm::ConnectionTrait;
use uuid::Uuid;

use super::ServiceError;
use crate::domain::Product;
use crate::repo::products;

pub async fn get_product<C: ConnectionTrait>(db: &C, id: Uuid) -> Result<Product, ServiceError> {
    products::find(db, id)
        .await?
        .ok_or(ServiceError::NotFound("product"))
}
