use uuid::Uuid;

use super::{InventoryService, ServiceError};
use crate::domain::Product;
use crate::repo::{ProductRepository, ReservationRepository};

impl<P: ProductRepository, R: ReservationRepository> InventoryService<P, R> {
    pub async fn get_product(&self, id: Uuid) -> Result<Product, ServiceError> {
        self.products
            .find(&self.db, id)
            .await?
            .ok_or(ServiceError::NotFound("product"))
    }
}
