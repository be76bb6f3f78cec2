use saga_runtime::inbox;
use shared_events::{Envelope, ProductUpserted};

use super::{OrdersService, ServiceError};
use crate::repo::{CatalogProduct, CatalogRepository, OrderRepository};

impl<O: OrderRepository, C: CatalogRepository> OrdersService<O, C> {
    /// Keeps the catalog replica current: prices for new orders come from here.
    pub async fn on_product_upserted(
        &self,
        event: &Envelope,
        product: &ProductUpserted,
    ) -> Result<(), ServiceError> {
        let Some(txn) = inbox::begin_once(&self.db, event).await? else {
            return Ok(());
        };
        self.catalog
            .upsert(
                &txn,
                &CatalogProduct {
                    product_id: product.product_id,
                    sku: product.sku.clone(),
                    name: product.name.clone(),
                    price_cents: product.price_cents,
                    source_time: event.time,
                },
            )
            .await?;
        txn.commit().await?;
        tracing::info!(product_id = %product.product_id, price_cents = product.price_cents, "catalog replica updated");
        Ok(())
    }
}
