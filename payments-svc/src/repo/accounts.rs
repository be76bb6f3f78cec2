//! The `accounts` table: one prepaid balance per customer.

use sea_orm::sea_query::LockType;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter,
    QuerySelect, Statement, TryInsertResult,
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

/// Loads the accounts of `customer_ids` that exist and locks them until the transaction ends,
/// in key order, so that two transactions locking several accounts queue instead of
/// deadlocking.
pub async fn find_all_for_update<C: ConnectionTrait>(
    db: &C,
    customer_ids: &[Uuid],
) -> Result<Vec<Account>, DbErr> {
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT customer_id, balance_cents FROM accounts WHERE customer_id = ANY($1) \
             ORDER BY customer_id FOR UPDATE",
            [customer_ids.to_vec().into()],
        ))
        .await?;
    rows.iter()
        .map(|row| {
            Ok(Account {
                customer_id: row.try_get("", "customer_id")?,
                balance_cents: row.try_get("", "balance_cents")?,
            })
        })
        .collect()
}

/// Stores the balances of `accounts` in one statement.
pub async fn update_balances<C: ConnectionTrait>(
    db: &C,
    accounts: &[Account],
) -> Result<(), DbErr> {
    if accounts.is_empty() {
        return Ok(());
    }
    let customer_ids: Vec<Uuid> = accounts.iter().map(|account| account.customer_id).collect();
    let balances: Vec<i64> = accounts
        .iter()
        .map(|account| account.balance_cents)
        .collect();
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "UPDATE accounts SET balance_cents = given.balance_cents, updated_at = now() \
         FROM unnest($1::uuid[], $2::int8[]) AS given (customer_id, balance_cents) \
         WHERE accounts.customer_id = given.customer_id",
        [customer_ids.into(), balances.into()],
    ))
    .await?;
    Ok(())
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
