//! The `accounts` table: one prepaid balance per customer.

use sea_orm::sea_query::LockType;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect,
    TryInsertResult,
};
use uuid::Uuid;

use super::entity::account;
use crate::domain::Account;

/// Inserts a new account; returns false, changing nothing, if the customer has one.
pub async fn create<C: ConnectionTrait>(db: &C, account: &Account) -> Result<bool, DbErr> {
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

pub async fn find<C: ConnectionTrait>(db: &C, customer_id: Uuid) -> Result<Option<Account>, DbErr> {
    Ok(account::Entity::find_by_id(customer_id)
        .one(db)
        .await?
        .map(to_domain))
}

/// Loads the account and locks it until the transaction ends: concurrent charges to one
/// customer queue here, so each sees the balance the previous one left.
pub async fn find_for_update<C: ConnectionTrait>(
    db: &C,
    customer_id: Uuid,
) -> Result<Option<Account>, DbErr> {
    Ok(account::Entity::find_by_id(customer_id)
        .lock(LockType::Update)
        .one(db)
        .await?
        .map(to_domain))
}

pub async fn update_balance<C: ConnectionTrait>(db: &C, account: &Account) -> Result<(), DbErr> {
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

fn to_domain(model: account::Model) -> Account {
    Account {
        customer_id: model.customer_id,
        balance_cents: model.balance_cents,
    }
}
