use chrono::{DateTime, Utc};
use saga_runtime::unit_of_work::{Reaction, Tx};
use shared_events::ProductUpserted;

use super::ServiceError;
use crate::repo::{CatalogProduct, catalog};

/// Keeps the catalog replica current: prices for new orders come from here. `produced_at` is
/// when inventory-svc produced this version, so an older one arriving late is ignored.
pub async fn on_product_upserted(
    tx: &Tx,
    product: &ProductUpserted,
    produced_at: DateTime<Utc>,
) -> Result<Reaction, ServiceError> {
    catalog::upsert(
        tx,
        &CatalogProduct {
            product_id: product.product_id,
            sku: product.sku.clone(),
            name: product.name.clone(),
            price_cents: product.price_cents,
            category: product.category.clone(),
            attributes: if product.attributes.is_object() {
                product.attributes.clone()
            } else {
                serde_json::json!({})
            },
            source_time: produced_at,
        },
    )
    .await?;
    tracing::debug!(product_id = %product.product_id, price_cents = product.price_cents, "catalog replica updated");
    Ok(Reaction::none())
}
