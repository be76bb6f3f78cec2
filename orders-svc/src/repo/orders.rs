use std::future::Future;

use sea_orm::sea_query::LockType;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement,
};
use uuid::Uuid;

use super::entity::{order, order_item};
use crate::domain::{Order, OrderLine, OrderStatus};

/// Stores and loads [`Order`]s with their lines.
pub trait OrderRepository: Send + Sync + 'static {
    fn insert<C: ConnectionTrait>(
        &self,
        db: &C,
        order: &Order,
    ) -> impl Future<Output = Result<(), DbErr>> + Send;

    fn find<C: ConnectionTrait>(
        &self,
        db: &C,
        id: Uuid,
    ) -> impl Future<Output = Result<Option<Order>, DbErr>> + Send;

    /// Loads the order and locks its row until the transaction ends, so concurrent events of
    /// one saga apply one after the other.
    fn find_for_update<C: ConnectionTrait>(
        &self,
        db: &C,
        id: Uuid,
    ) -> impl Future<Output = Result<Option<Order>, DbErr>> + Send;

    /// Locks up to `limit` orders still `PENDING_PAYMENT` that were created more than
    /// `deadline` ago by the database's clock, skipping rows another transaction holds.
    fn lock_expired<C: ConnectionTrait>(
        &self,
        db: &C,
        deadline: std::time::Duration,
        limit: u64,
    ) -> impl Future<Output = Result<Vec<Uuid>, DbErr>> + Send;

    /// Writes the order's status and failure reason.
    fn update_status<C: ConnectionTrait>(
        &self,
        db: &C,
        order: &Order,
    ) -> impl Future<Output = Result<(), DbErr>> + Send;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SeaOrmOrderRepository;

impl OrderRepository for SeaOrmOrderRepository {
    async fn insert<C: ConnectionTrait>(&self, db: &C, order: &Order) -> Result<(), DbErr> {
        order::Entity::insert(order::ActiveModel {
            id: Set(order.id),
            saga_id: Set(order.saga_id),
            customer_id: Set(order.customer_id),
            status: Set(order.status.as_str().to_owned()),
            total_cents: Set(order.total_cents),
            failure_reason: Set(order.failure_reason.clone()),
            // The database's clock, which the saga deadline is measured against.
            created_at: NotSet,
            updated_at: NotSet,
        })
        .exec_without_returning(db)
        .await?;
        let items = order
            .lines
            .iter()
            .zip(1..)
            .map(|(line, line_no)| order_item::ActiveModel {
                order_id: Set(order.id),
                line_no: Set(line_no),
                product_id: Set(line.product_id),
                quantity: Set(i32::try_from(line.quantity).unwrap_or(i32::MAX)),
                unit_price_cents: Set(line.unit_price_cents),
            });
        order_item::Entity::insert_many(items)
            .exec_without_returning(db)
            .await?;
        Ok(())
    }

    async fn find<C: ConnectionTrait>(&self, db: &C, id: Uuid) -> Result<Option<Order>, DbErr> {
        let Some(model) = order::Entity::find_by_id(id).one(db).await? else {
            return Ok(None);
        };
        load_lines(db, model).await.map(Some)
    }

    async fn find_for_update<C: ConnectionTrait>(
        &self,
        db: &C,
        id: Uuid,
    ) -> Result<Option<Order>, DbErr> {
        let Some(model) = order::Entity::find_by_id(id)
            .lock(LockType::Update)
            .one(db)
            .await?
        else {
            return Ok(None);
        };
        load_lines(db, model).await.map(Some)
    }

    async fn lock_expired<C: ConnectionTrait>(
        &self,
        db: &C,
        deadline: std::time::Duration,
        limit: u64,
    ) -> Result<Vec<Uuid>, DbErr> {
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT id FROM orders \
                 WHERE status = 'PENDING_PAYMENT' AND created_at < now() - make_interval(secs => $1) \
                 ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED",
                [deadline.as_secs_f64().into(), limit.into()],
            ))
            .await?;
        rows.iter().map(|row| row.try_get("", "id")).collect()
    }

    async fn update_status<C: ConnectionTrait>(&self, db: &C, order: &Order) -> Result<(), DbErr> {
        order::Entity::update_many()
            .set(order::ActiveModel {
                status: Set(order.status.as_str().to_owned()),
                failure_reason: Set(order.failure_reason.clone()),
                updated_at: Set(chrono::Utc::now().fixed_offset()),
                ..Default::default()
            })
            .filter(order::Column::Id.eq(order.id))
            .exec(db)
            .await?;
        Ok(())
    }
}

async fn load_lines<C: ConnectionTrait>(db: &C, model: order::Model) -> Result<Order, DbErr> {
    let items = order_item::Entity::find()
        .filter(order_item::Column::OrderId.eq(model.id))
        .order_by_asc(order_item::Column::LineNo)
        .all(db)
        .await?;
    let status = OrderStatus::parse(&model.status).ok_or_else(|| {
        DbErr::Custom(format!(
            "order_id={} has unknown status {:?}",
            model.id, model.status
        ))
    })?;
    Ok(Order {
        id: model.id,
        saga_id: model.saga_id,
        customer_id: model.customer_id,
        status,
        total_cents: model.total_cents,
        lines: items
            .into_iter()
            .map(|item| OrderLine {
                product_id: item.product_id,
                quantity: u32::try_from(item.quantity).unwrap_or(0),
                unit_price_cents: item.unit_price_cents,
            })
            .collect(),
        failure_reason: model.failure_reason,
    })
}
