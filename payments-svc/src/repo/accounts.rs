use std::future::Future;

use sea_orm::sea_query::LockType;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect,
    TryInsertResult,
};
use uuid::Uuid;

use super::entity::account;
use crate::domain::Account;

pub trait AccountRepository: Send + Sync + 'static {
    /// Inserts a new account; returns false, changing nothing, if the customer has one.
    fn create<C: ConnectionTrait>(
        &self,
        db: &C,
        account: &Account,
    ) -> impl Future<Output = Result<bool, DbErr>> + Send;

    fn find<C: ConnectionTrait>(
        &self,
        db: &C,
        customer_id: Uuid,
    ) -> impl Future<Output = Result<Option<Account>, DbErr>> + Send;

    /// Loads the account and locks it until the transaction ends: concurrent charges to one
    /// customer queue here, so each sees the balance the previous one left.
    fn find_for_update<C: ConnectionTrait>(
        &self,
        db: &C,
        customer_id: Uuid,
    ) -> impl Future<Output = Result<Option<Account>, DbErr>> + Send;

    fn update_balance<C: ConnectionTrait>(
        &self,
        db: &C,
        account: &Account,
    ) -> impl Future<Output = Result<(), DbErr>> + Send;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SeaOrmAccountRepository;

impl AccountRepository for SeaOrmAccountRepository {
    async fn create<C: ConnectionTrait>(&self, db: &C, account: &Account) -> Result<bool, DbErr> {
        let now = chrono::Utc::now().fixed_offset();
        let inserted = account::Entity::insert(account::ActiveModel {
            customer_id: Set(account.customer_id),
            balance_cents: Set(account.balance_cents),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .on_conflict_do_nothing()
        .exec_without_returning(db)
        .await?;
        Ok(matches!(inserted, TryInsertResult::Inserted(1)))
    }

    async fn find<C: ConnectionTrait>(
        &self,
        db: &C,
        customer_id: Uuid,
    ) -> Result<Option<Account>, DbErr> {
        Ok(account::Entity::find_by_id(customer_id)
            .one(db)
            .await?
            .map(to_domain))
    }

    async fn find_for_update<C: ConnectionTrait>(
        &self,
        db: &C,
        customer_id: Uuid,
    ) -> Result<Option<Account>, DbErr> {
        Ok(account::Entity::find_by_id(customer_id)
            .lock(LockType::Update)
            .one(db)
            .await?
            .map(to_domain))
    }

    async fn update_balance<C: ConnectionTrait>(
        &self,
        db: &C,
        account: &Account,
    ) -> Result<(), DbErr> {
        account::Entity::update_many()
            .set(account::ActiveModel {
                balance_cents: Set(account.balance_cents),
                updated_at: Set(chrono::Utc::now().fixed_offset()),
                ..Default::default()
            })
            .filter(account::Column::CustomerId.eq(account.customer_id))
            .exec(db)
            .await?;
        Ok(())
    }
}

fn to_domain(model: account::Model) -> Account {
    Account {
        customer_id: model.customer_id,
        balance_cents: model.balance_cents,
    }
}
