//! The `payments` table: the one payment decision each order has.

use sea_orm::sea_query::{LockType, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter,
    QuerySelect, Statement,
};
use uuid::Uuid;

use super::entity::payment;
use crate::domain::{Payment, PaymentStatus};

/// The order's payment, locked until the transaction ends.
pub async fn find_by_order_for_update<C: ConnectionTrait>(
    db: &C,
    order_id: Uuid,
) -> Result<Option<Payment>, DbErr> {
    payment::Entity::find()
        .filter(payment::Column::OrderId.eq(order_id))
        .lock(LockType::Update)
        .one(db)
        .await?
        .map(to_domain)
        .transpose()
}

/// The order's payment, for reading.
pub async fn find_by_order<C: ConnectionTrait>(
    db: &C,
    order_id: Uuid,
) -> Result<Option<Payment>, DbErr> {
    payment::Entity::find()
        .filter(payment::Column::OrderId.eq(order_id))
        .one(db)
        .await?
        .map(to_domain)
        .transpose()
}

/// Inserts `payment`. An order that has one already fails with the unique violation.
pub async fn insert<C: ConnectionTrait>(db: &C, payment: &Payment) -> Result<(), DbErr> {
    payment::Entity::insert(active_model(payment))
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Inserts `payment` if it is its order's first; returns false, changing nothing, if the
/// order has one already (UNIQUE (order_id)). A charge goes by this instead of reading first.
pub async fn insert_first<C: ConnectionTrait>(db: &C, payment: &Payment) -> Result<bool, DbErr> {
    let inserted = payment::Entity::insert(active_model(payment))
        .on_conflict(
            OnConflict::column(payment::Column::OrderId)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(inserted == 1)
}

/// Inserts each of `charges` that is its order's first, in one statement, and says how many
/// went in: fewer than given means some order has a payment already (or two are the same
/// order's), and the caller must not go on as if each were first. Every charge names its
/// customer; a reason is NULL when empty.
pub async fn insert_all_first<C: ConnectionTrait>(
    db: &C,
    charges: &[&Payment],
) -> Result<usize, DbErr> {
    let mut ids = Vec::with_capacity(charges.len());
    let mut order_ids = Vec::with_capacity(charges.len());
    let mut saga_ids = Vec::with_capacity(charges.len());
    let mut customer_ids = Vec::with_capacity(charges.len());
    let mut amounts = Vec::with_capacity(charges.len());
    let mut statuses = Vec::with_capacity(charges.len());
    let mut reasons = Vec::with_capacity(charges.len());
    for payment in charges {
        ids.push(payment.id);
        order_ids.push(payment.order_id);
        saga_ids.push(payment.saga_id);
        customer_ids.push(payment.customer_id.unwrap_or_default());
        amounts.push(payment.amount_cents);
        statuses.push(payment.status.to_string());
        reasons.push(payment.reason.clone().unwrap_or_default());
    }
    let result = db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO payments \
                 (id, order_id, saga_id, customer_id, amount_cents, status, reason, created_at, updated_at) \
             SELECT id, order_id, saga_id, NULLIF(customer_id, '00000000-0000-0000-0000-000000000000'), \
                    amount_cents, status, NULLIF(reason, ''), now(), now() \
             FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::int8[], $6::text[], $7::text[]) \
                 AS charge (id, order_id, saga_id, customer_id, amount_cents, status, reason) \
             ON CONFLICT (order_id) DO NOTHING",
            [
                ids.into(),
                order_ids.into(),
                saga_ids.into(),
                customer_ids.into(),
                amounts.into(),
                statuses.into(),
                reasons.into(),
            ],
        ))
        .await?;
    Ok(usize::try_from(result.rows_affected()).unwrap_or(usize::MAX))
}

fn active_model(payment: &Payment) -> payment::ActiveModel {
    let now = chrono::Utc::now().fixed_offset();
    payment::ActiveModel {
        id: Set(payment.id),
        order_id: Set(payment.order_id),
        saga_id: Set(payment.saga_id),
        customer_id: Set(payment.customer_id),
        amount_cents: Set(payment.amount_cents),
        status: Set(payment.status.to_string()),
        reason: Set(payment.reason.clone()),
        created_at: Set(now),
        updated_at: Set(now),
    }
}

pub async fn update_status<C: ConnectionTrait>(db: &C, payment: &Payment) -> Result<(), DbErr> {
    payment::Entity::update_many()
        .set(payment::ActiveModel {
            status: Set(payment.status.to_string()),
            reason: Set(payment.reason.clone()),
            updated_at: Set(chrono::Utc::now().fixed_offset()),
            ..Default::default()
        })
        .filter(payment::Column::Id.eq(payment.id))
        .exec(db)
        .await?;
    Ok(())
}

fn to_domain(model: payment::Model) -> Result<Payment, DbErr> {
    let status: PaymentStatus = model.status.parse().map_err(|_| {
        DbErr::Custom(format!(
            "payment_id={} has unknown status {:?}",
            model.id, model.status
        ))
    })?;
    Ok(Payment {
        id: model.id,
        order_id: model.order_id,
        saga_id: model.saga_id,
        customer_id: model.customer_id,
        amount_cents: model.amount_cents,
        status,
        reason: model.reason,
    })
}
