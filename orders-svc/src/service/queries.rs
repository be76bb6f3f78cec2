use sea_orm::ConnectionTrait;
use uuid::Uuid;

use super::ServiceError;
use crate::domain::Order;
use crate::repo::{CatalogProduct, catalog, orders};

pub async fn get_order<C: ConnectionTrait>(db: &C, id: Uuid) -> Result<Order, ServiceError> {
    orders::find(db, id)
        .await?
        .ok_or(ServiceError::NotFound("order"))
}

pub async fn get_catalog_product<C: ConnectionTrait>(
    db: &C,
    product_id: Uuid,
) -> Result<CatalogProduct, ServiceError> {
    catalog::find(db, product_id)
        .await?
        .ok_or(ServiceError::NotFound("product"))
}

/// A saga as `GET /sagas/{saga_id}` shows it: its order and its timeline from the saga view.
#[derive(Debug, Clone)]
pub struct SagaDetail {
    pub summary: crate::repo::sagas::SagaSummary,
    pub timeline: shared_events::Timeline,
}

pub async fn get_saga<C: ConnectionTrait>(
    db: &C,
    saga_id: Uuid,
) -> Result<SagaDetail, ServiceError> {
    let summary = crate::repo::sagas::by_saga(db, saga_id)
        .await?
        .ok_or(ServiceError::NotFound("saga"))?;
    let timeline = saga_runtime::saga_view::timeline(db, saga_id).await?;
    Ok(SagaDetail { summary, timeline })
}

/// The replica's attributes of each of `product_ids` (a product it does not hold has none).
pub async fn product_attributes<C: ConnectionTrait>(
    db: &C,
    product_ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, serde_json::Value>, ServiceError> {
    Ok(crate::repo::catalog::attributes(db, product_ids).await?)
}
