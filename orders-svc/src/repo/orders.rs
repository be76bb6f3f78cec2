//! The `orders` and `order_items` tables: each order with its lines.

use sea_orm::sea_query::LockType;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement,
};
use uuid::Uuid;

use super::entity::{order, order_item};
use crate::domain::{Order, OrderLine, OrderStatus};

pub async fn insert<C: ConnectionTrait>(db: &C, order: &Order) -> Result<(), DbErr> {
    order::Entity::insert(order::ActiveModel {
        id: Set(order.id),
        saga_id: Set(order.saga_id),
        customer_id: Set(order.customer_id),
        status: Set(order.status.to_string()),
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
        .map(|(line, line_no)| {
            let quantity = i32::try_from(line.quantity).map_err(|_| {
                DbErr::Custom(format!(
                    "order_id={} quantity {} does not fit the quantity column",
                    order.id, line.quantity
                ))
            })?;
            Ok(order_item::ActiveModel {
                order_id: Set(order.id),
                line_no: Set(line_no),
                product_id: Set(line.product_id),
                quantity: Set(quantity),
                unit_price_cents: Set(line.unit_price_cents),
            })
        })
        .collect::<Result<Vec<_>, DbErr>>()?;
    order_item::Entity::insert_many(items)
        .exec_without_returning(db)
        .await?;
    Ok(())
}

pub async fn find<C: ConnectionTrait>(db: &C, id: Uuid) -> Result<Option<Order>, DbErr> {
    let Some(model) = order::Entity::find_by_id(id).one(db).await? else {
        return Ok(None);
    };
    load_lines(db, model).await.map(Some)
}

/// Loads the order and locks its row until the transaction ends, so concurrent events of
/// one saga apply one after the other.
pub async fn find_for_update<C: ConnectionTrait>(db: &C, id: Uuid) -> Result<Option<Order>, DbErr> {
    let Some(model) = order::Entity::find_by_id(id)
        .lock(LockType::Update)
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    load_lines(db, model).await.map(Some)
}

/// Locks up to `limit` orders still `PENDING_PAYMENT` that were created more than
/// `deadline` ago by the database's clock, skipping rows another transaction holds.
pub async fn lock_expired<C: ConnectionTrait>(
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

/// How many orders are still `PENDING_PAYMENT`, i.e. have a saga in flight. An index-only
/// scan of the partial index `orders_pending_by_age`.
pub async fn count_pending<C: ConnectionTrait>(db: &C) -> Result<u64, DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM orders WHERE status = 'PENDING_PAYMENT'",
        ))
        .await?;
    let n: i64 = row.map_or(Ok(0), |row| row.try_get("", "n"))?;
    Ok(u64::try_from(n).unwrap_or_default())
}

/// Writes the order's status and failure reason.
pub async fn update_status<C: ConnectionTrait>(db: &C, order: &Order) -> Result<(), DbErr> {
    order::Entity::update_many()
        .set(order::ActiveModel {
            status: Set(order.status.to_string()),
            failure_reason: Set(order.failure_reason.clone()),
            updated_at: Set(chrono::Utc::now().fixed_offset()),
            ..Default::default()
        })
        .filter(order::Column::Id.eq(order.id))
        .exec(db)
        .await?;
    Ok(())
}

async fn load_lines<C: ConnectionTrait>(db: &C, model: order::Model) -> Result<Order, DbErr> {
    let items = order_item::Entity::find()
        .filter(order_item::Column::OrderId.eq(model.id))
        .order_by_asc(order_item::Column::LineNo)
        .all(db)
        .await?;
    let status: OrderStatus = model.status.parse().map_err(|_| {
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
            .map(|item| {
                let quantity = u32::try_from(item.quantity).map_err(|_| {
                    DbErr::Custom(format!(
                        "order_id={} line {} has quantity {}",
                        model.id, item.line_no, item.quantity
                    ))
                })?;
                Ok(OrderLine {
                    product_id: item.product_id,
                    quantity,
                    unit_price_cents: item.unit_price_cents,
                })
            })
            .collect::<Result<_, DbErr>>()?,
        failure_reason: model.failure_reason,
    })
}
