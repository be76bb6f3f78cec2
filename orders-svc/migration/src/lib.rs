//! orders-svc's migrations, oldest first. The service runs them at start-up.

pub use sea_orm_migration::prelude::*;

mod m20261128_000001_create_outbox_and_inbox;
mod m20261128_000002_create_orders_and_catalog;
mod m20261128_000003_create_parked_events;
mod m20261128_000004_index_pending_orders;
mod m20261129_000005_create_saga_view;
mod m20261129_000006_replicate_product_attributes;
mod m20261203_000007_share_the_admission_bound;

#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261128_000001_create_outbox_and_inbox::Migration),
            Box::new(m20261128_000002_create_orders_and_catalog::Migration),
            Box::new(m20261128_000003_create_parked_events::Migration),
            Box::new(m20261128_000004_index_pending_orders::Migration),
            Box::new(saga_schema::IndexInboxByAge),
            Box::new(saga_schema::StoreOutboxPayloadAsWritten),
            Box::new(m20261129_000005_create_saga_view::Migration),
            Box::new(saga_schema::CreateIdempotencyKeys),
            Box::new(m20261129_000006_replicate_product_attributes::Migration),
            Box::new(m20261203_000007_share_the_admission_bound::Migration),
        ]
    }
}
