use uuid::Uuid;

use super::{OrdersService, ServiceError};
use crate::domain::Order;
use crate::repo::{CatalogProduct, CatalogRepository, OrderRepository};

impl<O: OrderRepository, C: CatalogRepository> OrdersService<O, C> {
    pub async fn get_order(&self, id: Uuid) -> Result<Order, ServiceError> {
        self.orders
            .find(&self.db, id)
            .await?
            .ok_or(ServiceError::NotFound("order"))
    }

    pub async fn get_catalog_product(
        &self,
        product_id: Uuid,
    ) -> Result<CatalogProduct, ServiceError> {
        self.catalog
            .find(&self.db, product_id)
            .await?
            .ok_or(ServiceError::NotFound("product"))
    }
}
