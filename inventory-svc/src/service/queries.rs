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

/// The reservation decision of `order_id`, if inventory-svc has made one.
pub async fn get_reservation<C: ConnectionTrait>(
    db: &C,
    order_id: Uuid,
) -> Result<Option<crate::domain::Reservation>, ServiceError> {
    Ok(crate::repo::reservations::find(db, order_id).await?)
}

/// The products `filter` selects, newest first.
pub async fn list_products<C: ConnectionTrait>(
    db: &C,
    filter: &crate::repo::products::ProductFilter,
) -> Result<Vec<Product>, ServiceError> {
    Ok(products::list(db, filter).await?)
}
