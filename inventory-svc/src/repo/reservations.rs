//! The `reservations` table: the one reservation decision each order has.
use sea_orm::sea_query::{LockType, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect,
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
