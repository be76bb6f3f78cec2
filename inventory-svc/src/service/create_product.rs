use saga_runtime::outbox;
use sea_orm::TransactionTrait;
use shared_events::{Envelope, ProductUpserted, SagaEvent};

use super::{InventoryService, SOURCE, ServiceError};
use crate::domain::{NewProduct, Product};
use crate::repo::{ProductRepository, ReservationRepository};

impl<P: ProductRepository, R: ReservationRepository> InventoryService<P, R> {
    /// Adds a product to the catalog and announces it on `inventory.catalog`, in one
    /// transaction, so orders-svc's replica can never miss a product that exists.
    pub async fn create_product(&self, request: NewProduct) -> Result<Product, ServiceError> {
        let product = request.validate()?;
        let txn = self.db.begin().await?;
        if !self.products.insert(&txn, &product).await? {
            return Err(ServiceError::SkuTaken(product.sku));
        }
        let upserted = SagaEvent::ProductUpserted(ProductUpserted {
            product_id: product.id,
            sku: product.sku.clone(),
            name: product.name.clone(),
            price_cents: product.price_cents,
        });
        outbox::enqueue(&txn, &Envelope::new(SOURCE, None, upserted)).await?;
        txn.commit().await?;
        self.outbox_signal.notify();
        tracing::info!(product_id = %product.id, sku = %product.sku, available = product.available, "product created");
        Ok(product)
    }
}
