//! Reads for the saga pages: recent sagas from `orders` (one order, one saga) and their
//! counts by status. A saga's events come from the runtime's saga view
//! (`saga_runtime::saga_view`).

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, FromQueryResult, Statement};
use uuid::Uuid;

use crate::domain::OrderStatus;

/// One saga as the list shows it.
#[derive(Debug, Clone, PartialEq, FromQueryResult)]
pub struct SagaSummary {
    pub saga_id: Uuid,
    pub order_id: Uuid,
    pub status: String,
    pub total_cents: i64,
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What [`recent`] lists.
#[derive(Debug, Clone, Copy, Default)]
pub struct SagaFilter {
    pub status: Option<OrderStatus>,
    pub since: Option<DateTime<Utc>>,
    pub limit: u64,
}

/// The newest sagas first, by the `orders_by_age` index.
pub async fn recent<C: ConnectionTrait>(
    db: &C,
    filter: SagaFilter,
) -> Result<Vec<SagaSummary>, DbErr> {
    let status: Option<&'static str> = filter.status.map(Into::into);
    SagaSummary::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT saga_id, id AS order_id, status, total_cents, failure_reason, created_at, updated_at \
         FROM orders \
         WHERE ($1::text IS NULL OR status = $1) AND ($2::timestamptz IS NULL OR created_at >= $2) \
         ORDER BY created_at DESC LIMIT $3",
        [
            status.map(str::to_owned).into(),
            filter.since.into(),
            filter.limit.into(),
        ],
    ))
    .all(db)
    .await
}

/// The saga's order, by its saga ID.
pub async fn by_saga<C: ConnectionTrait>(
    db: &C,
    saga_id: Uuid,
) -> Result<Option<SagaSummary>, DbErr> {
    SagaSummary::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT saga_id, id AS order_id, status, total_cents, failure_reason, created_at, updated_at \
         FROM orders WHERE saga_id = $1",
        [saga_id.into()],
    ))
    .one(db)
    .await
}

/// Sagas placed since `since`, counted by status.
pub async fn counts_since<C: ConnectionTrait>(
    db: &C,
    since: DateTime<Utc>,
) -> Result<Vec<(String, i64)>, DbErr> {
    #[derive(FromQueryResult)]
    struct Count {
        status: String,
        n: i64,
    }
    let rows = Count::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT status, count(*) AS n FROM orders WHERE created_at >= $1 GROUP BY status ORDER BY status",
        [since.into()],
    ))
    .all(db)
    .await?;
    Ok(rows.into_iter().map(|row| (row.status, row.n)).collect())
}
