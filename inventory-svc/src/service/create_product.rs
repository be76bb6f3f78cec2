use saga_runtime::unit_of_work::{Announcements, Command, Tx};
use shared_events::{ProductUpserted, SagaEvent};

use super::ServiceError;
use super::categories::check_attributes;
use crate::domain::{NewProduct, Product};
use crate::repo::products;

/// Adds a product to the catalog and announces it on `inventory.catalog` in the same
/// transaction, so orders-svc's replica can never miss a product that exists. Its attributes
/// must satisfy its category's schema, as the category applies it.
#[derive(Debug, Clone)]
pub struct CreateProduct(pub NewProduct);

impl Command for CreateProduct {
    type Output = Product;
    type Error = ServiceError;

    async fn execute(self, tx: &Tx) -> Result<(Product, Announcements), ServiceError> {
        let product = self.0.validate()?;
        check_attributes(tx, &product, None).await?;
        if !products::insert(tx, &product).await? {
            return Err(ServiceError::SkuTaken(product.sku));
        }
        tracing::info!(product_id = %product.id, sku = %product.sku, available = product.available, "product created");
        let upserted = upserted(&product);
        Ok((product, Announcements::outside_saga(upserted)))
    }
}

/// The catalog event for `product` as it now is.
pub(super) fn upserted(product: &Product) -> SagaEvent {
    SagaEvent::ProductUpserted(ProductUpserted {
        product_id: product.id,
        sku: product.sku.clone(),
        name: product.name.clone(),
        price_cents: product.price_cents,
        category: product.category.clone(),
        attributes: product.attributes.clone(),
    })
}
