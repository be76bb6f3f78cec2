//! The `reservations` table: the one reservation decision each order has.
use sea_orm::sea_query::{LockType, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter,
    QuerySelect, Statement,
};
use uuid::Uuid;

use super::entity::reservation;
use crate::domain::{Reservation, ReservationStatus};

pub async fn find_for_update<C: ConnectionTrait>(
    db: &C,
    order_id: Uuid,
) -> Result<Option<Reservation>, DbErr> {
    reservation::Entity::find_by_id(order_id)
        .lock(LockType::Update)
        .one(db)
        .await?
        .map(to_domain)
        .transpose()
}

/// The order's reservation decision, for reading.
pub async fn find<C: ConnectionTrait>(
    db: &C,
    order_id: Uuid,
) -> Result<Option<Reservation>, DbErr> {
    reservation::Entity::find_by_id(order_id)
        .one(db)
        .await?
        .map(to_domain)
        .transpose()
}

fn to_domain(row: reservation::Model) -> Result<Reservation, DbErr> {
    let order_id = row.order_id;
    let status = row.status.parse::<ReservationStatus>().map_err(|_| {
        DbErr::Custom(format!(
            "order_id={order_id} reservation has unknown status {:?}",
            row.status
        ))
    })?;
    let lines = serde_json::from_value(row.lines).map_err(|e| {
        DbErr::Custom(format!(
            "order_id={order_id} reservation lines are unreadable: {e}"
        ))
    })?;
    Ok(Reservation {
        order_id,
        saga_id: row.saga_id,
        customer_id: row.customer_id,
        status,
        lines,
        reason: row.reason,
    })
}

pub async fn update_status<C: ConnectionTrait>(
    db: &C,
    reservation: &Reservation,
) -> Result<(), DbErr> {
    reservation::Entity::update_many()
        .set(reservation::ActiveModel {
            status: Set(reservation.status.to_string()),
            reason: Set(reservation.reason.clone()),
            updated_at: Set(chrono::Utc::now().fixed_offset()),
            ..Default::default()
        })
        .filter(reservation::Column::OrderId.eq(reservation.order_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Inserts the order's reservation decision. An order that has one already fails with the
/// primary key's unique violation.
pub async fn insert<C: ConnectionTrait>(db: &C, reservation: &Reservation) -> Result<(), DbErr> {
    reservation::Entity::insert(active_model(reservation)?)
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Inserts the decision if it is the order's first; returns false, changing nothing, if the
/// order has one already. A reservation goes by this instead of reading first.
pub async fn insert_first<C: ConnectionTrait>(
    db: &C,
    reservation: &Reservation,
) -> Result<bool, DbErr> {
    let inserted = reservation::Entity::insert(active_model(reservation)?)
        .on_conflict(
            OnConflict::column(reservation::Column::OrderId)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(inserted == 1)
}

/// Inserts each of `decisions` that is its order's first, in one statement, and says how many
/// went in: fewer than given means some order has a decision already (or two are the same
/// order's), and the caller must not go on as if each were first. A missing customer or
/// reason is stored as NULL.
pub async fn insert_all_first<C: ConnectionTrait>(
    db: &C,
    decisions: &[Reservation],
) -> Result<usize, DbErr> {
    let mut order_ids = Vec::with_capacity(decisions.len());
    let mut saga_ids = Vec::with_capacity(decisions.len());
    let mut statuses = Vec::with_capacity(decisions.len());
    let mut lines = Vec::with_capacity(decisions.len());
    let mut reasons = Vec::with_capacity(decisions.len());
    let mut customer_ids = Vec::with_capacity(decisions.len());
    for reservation in decisions {
        order_ids.push(reservation.order_id);
        saga_ids.push(reservation.saga_id);
        statuses.push(reservation.status.to_string());
        lines.push(
            serde_json::to_string(&reservation.lines)
                .map_err(|e| DbErr::Custom(format!("reservation lines cannot be encoded: {e}")))?,
        );
        reasons.push(reservation.reason.clone().unwrap_or_default());
        customer_ids.push(reservation.customer_id.unwrap_or_default());
    }
    let result = db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO reservations \
                 (order_id, saga_id, status, lines, reason, customer_id, created_at, updated_at) \
             SELECT order_id, saga_id, status, lines::jsonb, NULLIF(reason, ''), \
                    NULLIF(customer_id, '00000000-0000-0000-0000-000000000000'), now(), now() \
             FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::uuid[]) \
                 AS decision (order_id, saga_id, status, lines, reason, customer_id) \
             ON CONFLICT (order_id) DO NOTHING",
            [
                order_ids.into(),
                saga_ids.into(),
                statuses.into(),
                lines.into(),
                reasons.into(),
                customer_ids.into(),
            ],
        ))
        .await?;
    Ok(usize::try_from(result.rows_affected()).unwrap_or(usize::MAX))
}

fn active_model(reservation: &Reservation) -> Result<reservation::ActiveModel, DbErr> {
    let lines = serde_json::to_value(&reservation.lines)
        .map_err(|e| DbErr::Custom(format!("reservation lines cannot be encoded: {e}")))?;
    let now = chrono::Utc::now().fixed_offset();
    Ok(reservation::ActiveModel {
        order_id: Set(reservation.order_id),
        saga_id: Set(reservation.saga_id),
        status: Set(reservation.status.to_string()),
        lines: Set(lines),
        reason: Set(reservation.reason.clone()),
        customer_id: Set(reservation.customer_id),
        created_at: Set(now),
        updated_at: Set(now),
    })
}
