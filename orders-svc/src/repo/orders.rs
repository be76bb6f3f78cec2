//! The `orders` and `order_items` tables: each order with its lines.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QueryResult, Statement,
};
use std::time::Duration;

use uuid::Uuid;

use super::entity::{order, order_item};
use crate::domain::{Order, OrderLine, OrderStatus};

/// Inserts the order and its lines in one statement: one round trip per order placed, the
/// hottest write of the service.
pub async fn insert<C: ConnectionTrait>(db: &C, order: &Order) -> Result<(), DbErr> {
    let mut line_nos = Vec::with_capacity(order.lines.len());
    let mut product_ids = Vec::with_capacity(order.lines.len());
    let mut quantities = Vec::with_capacity(order.lines.len());
    let mut unit_prices = Vec::with_capacity(order.lines.len());
    for (line, line_no) in order.lines.iter().zip(1i32..) {
        let quantity = i32::try_from(line.quantity).map_err(|_| {
            DbErr::Custom(format!(
                "order_id={} quantity {} does not fit the quantity column",
                order.id, line.quantity
            ))
        })?;
        line_nos.push(line_no);
        product_ids.push(line.product_id);
        quantities.push(quantity);
        unit_prices.push(line.unit_price_cents);
    }
    let status: &'static str = order.status.into();
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "WITH placed AS ( \
             INSERT INTO orders (id, saga_id, customer_id, status, total_cents, failure_reason) \
             VALUES ($1, $2, $3, $4, $5, $6)) \
         INSERT INTO order_items (order_id, line_no, product_id, quantity, unit_price_cents) \
         SELECT $1, line.* \
         FROM unnest($7::int4[], $8::uuid[], $9::int4[], $10::int8[]) AS line",
        [
            order.id.into(),
            order.saga_id.into(),
            order.customer_id.into(),
            status.into(),
            order.total_cents.into(),
            order.failure_reason.clone().into(),
            line_nos.into(),
            product_ids.into(),
            quantities.into(),
            unit_prices.into(),
        ],
    ))
    .await?;
    Ok(())
}

pub async fn find<C: ConnectionTrait>(db: &C, id: Uuid) -> Result<Option<Order>, DbErr> {
    let Some(model) = order::Entity::find_by_id(id).one(db).await? else {
        return Ok(None);
    };
    load_lines(db, model).await.map(Some)
}

/// A saga outcome's compare-and-set, in one statement: moves order `id` from
/// [`OrderStatus::OPEN`] to `to` with `reason`, and returns its total. `None` means the order
/// was not open, or does not exist; [`status`] tells which. The row lock the update takes
/// holds until the transaction ends, as a `SELECT … FOR UPDATE` would.
pub async fn finish<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
    to: OrderStatus,
    reason: Option<&str>,
) -> Result<Option<Finished>, DbErr> {
    let to: &'static str = to.into();
    let open: &'static str = OrderStatus::OPEN.into();
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE orders SET status = $2, failure_reason = $3, updated_at = now() \
             WHERE id = $1 AND status = $4 \
             RETURNING total_cents, EXTRACT(EPOCH FROM now() - created_at)::float8 AS age_seconds",
            [
                id.into(),
                to.into(),
                reason.map(str::to_owned).into(),
                open.into(),
            ],
        ))
        .await?;
    row.as_ref().map(finished_of).transpose()
}

fn finished_of(row: &QueryResult) -> Result<Finished, DbErr> {
    Ok(Finished {
        total_cents: row.try_get("", "total_cents")?,
        age: Duration::try_from_secs_f64(row.try_get("", "age_seconds")?).unwrap_or_default(),
    })
}

/// [`finish`] for several orders in one statement: moves each `(id, to, reason)` whose order
/// is open, and returns what it reports of each it moved, by order ID. Name each order once:
/// PostgreSQL moves a row at most once per statement.
pub async fn finish_all<C: ConnectionTrait>(
    db: &C,
    moves: &[(Uuid, OrderStatus, Option<&str>)],
) -> Result<Vec<(Uuid, Finished)>, DbErr> {
    let open: &'static str = OrderStatus::OPEN.into();
    let mut ids = Vec::with_capacity(moves.len());
    let mut statuses = Vec::with_capacity(moves.len());
    let mut has_reasons = Vec::with_capacity(moves.len());
    let mut reasons = Vec::with_capacity(moves.len());
    for (id, to, reason) in moves {
        let to: &'static str = (*to).into();
        ids.push(*id);
        statuses.push(to.to_owned());
        has_reasons.push(reason.is_some());
        reasons.push(reason.unwrap_or_default().to_owned());
    }
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE orders SET status = given.status, \
                 failure_reason = CASE WHEN given.has_reason THEN given.reason END, updated_at = now() \
             FROM unnest($1::uuid[], $2::text[], $3::bool[], $4::text[]) \
                 AS given (id, status, has_reason, reason) \
             WHERE orders.id = given.id AND orders.status = $5 \
             RETURNING orders.id, orders.total_cents, \
                 EXTRACT(EPOCH FROM now() - orders.created_at)::float8 AS age_seconds",
            [
                ids.into(),
                statuses.into(),
                has_reasons.into(),
                reasons.into(),
                open.into(),
            ],
        ))
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("", "id")?, finished_of(row)?)))
        .collect()
}

/// What [`finish`] reports of the order it finished.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Finished {
    pub total_cents: i64,
    /// How long the saga took, by the database's clock: from the order's placement to now.
    pub age: Duration,
}

/// The order's status, if it exists.
pub async fn status<C: ConnectionTrait>(db: &C, id: Uuid) -> Result<Option<OrderStatus>, DbErr> {
    let Some(model) = order::Entity::find_by_id(id).one(db).await? else {
        return Ok(None);
    };
    parse_status(&model).map(Some)
}

/// Locks up to `limit` orders still `PENDING_PAYMENT` that were created more than
/// `deadline` ago by the database's clock, skipping rows another transaction holds.
pub async fn lock_expired<C: ConnectionTrait>(
    db: &C,
    deadline: Duration,
    limit: u64,
) -> Result<Vec<(Uuid, Duration)>, DbErr> {
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT id, EXTRACT(EPOCH FROM now() - created_at)::float8 AS age_seconds FROM orders \
             WHERE status = 'PENDING_PAYMENT' AND created_at < now() - make_interval(secs => $1) \
             ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            [deadline.as_secs_f64().into(), limit.into()],
        ))
        .await?;
    rows.iter()
        .map(|row| {
            let age: f64 = row.try_get("", "age_seconds")?;
            Ok((
                row.try_get("", "id")?,
                Duration::try_from_secs_f64(age).unwrap_or_default(),
            ))
        })
        .collect()
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
    let status = parse_status(&model)?;
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

fn parse_status(model: &order::Model) -> Result<OrderStatus, DbErr> {
    model.status.parse().map_err(|_| {
        DbErr::Custom(format!(
            "order_id={} has unknown status {:?}",
            model.id, model.status
        ))
    })
}
