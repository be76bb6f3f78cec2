use std::future::Future;

use sea_orm::sea_query::LockType;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect,
};
use uuid::Uuid;

use super::entity::payment;
use crate::domain::{Payment, PaymentStatus};

pub trait PaymentRepository: Send + Sync + 'static {
    /// The order's payment, locked until the transaction ends.
    fn find_by_order_for_update<C: ConnectionTrait>(
        &self,
        db: &C,
        order_id: Uuid,
    ) -> impl Future<Output = Result<Option<Payment>, DbErr>> + Send;

    fn insert<C: ConnectionTrait>(
        &self,
        db: &C,
        payment: &Payment,
    ) -> impl Future<Output = Result<(), DbErr>> + Send;

    fn update_status<C: ConnectionTrait>(
        &self,
        db: &C,
        payment: &Payment,
    ) -> impl Future<Output = Result<(), DbErr>> + Send;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SeaOrmPaymentRepository;

impl PaymentRepository for SeaOrmPaymentRepository {
    async fn find_by_order_for_update<C: ConnectionTrait>(
        &self,
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

    async fn insert<C: ConnectionTrait>(&self, db: &C, payment: &Payment) -> Result<(), DbErr> {
        let now = chrono::Utc::now().fixed_offset();
        payment::Entity::insert(payment::ActiveModel {
            id: Set(payment.id),
            order_id: Set(payment.order_id),
            saga_id: Set(payment.saga_id),
            customer_id: Set(payment.customer_id),
            amount_cents: Set(payment.amount_cents),
            status: Set(payment.status.as_str().to_owned()),
            reason: Set(payment.reason.clone()),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .exec_without_returning(db)
        .await?;
        Ok(())
    }

    async fn update_status<C: ConnectionTrait>(
        &self,
        db: &C,
        payment: &Payment,
    ) -> Result<(), DbErr> {
        payment::Entity::update_many()
            .set(payment::ActiveModel {
                status: Set(payment.status.as_str().to_owned()),
                reason: Set(payment.reason.clone()),
                updated_at: Set(chrono::Utc::now().fixed_offset()),
                ..Default::default()
            })
            .filter(payment::Column::Id.eq(payment.id))
            .exec(db)
            .await?;
        Ok(())
    }
}

fn to_domain(model: payment::Model) -> Result<Payment, DbErr> {
    let status = PaymentStatus::parse(&model.status).ok_or_else(|| {
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
