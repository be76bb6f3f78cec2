use saga_runtime::unit_of_work::{Announcements, Command, Tx};
use uuid::Uuid;

use super::ServiceError;
use super::categories::check_attributes;
use super::create_product::upserted;
use crate::domain::{Product, ProductChanges};
use crate::repo::products;

/// Changes a product's name, price, category or attributes, and announces the new version on
/// `inventory.catalog` in the same transaction. Attributes are judged against the category's
/// schema with the product's attributes before the change (a `moderate` schema lets an
/// already invalid product be updated).
#[derive(Debug, Clone)]
pub struct UpdateProduct {
    pub id: Uuid,
    pub changes: ProductChanges,
}

impl Command for UpdateProduct {
    type Output = Product;
    type Error = ServiceError;

    async fn execute(self, tx: &Tx) -> Result<(Product, Announcements), ServiceError> {
        let before = products::find_for_update(tx, self.id)
            .await?
            .ok_or(ServiceError::NotFound("product"))?;
        let product = before.changed(self.changes)?;
        check_attributes(tx, &product, Some(&before.attributes)).await?;
        products::update_description(tx, &product).await?;
        tracing::info!(product_id = %product.id, "product changed");
        let upserted = upserted(&product);
        Ok((product, Announcements::outside_saga(upserted)))
    }
}
