//! The `admission_bound` table: the admission bound in force, one for the whole service, and
//! the count it bounds.

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};
use std::time::Duration;

/// What the recount reads: the sagas in flight and the service's bound (`None` before any
/// instance has moved it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Census {
    pub in_flight: u64,
    pub bound: Option<u64>,
}

/// The orders still `PENDING_PAYMENT` (an index-only scan of the partial index
/// `orders_pending_by_age`) and the shared bound, in one round trip.
pub async fn census<C: ConnectionTrait>(db: &C) -> Result<Census, DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT (SELECT count(*) FROM orders WHERE status = 'PENDING_PAYMENT') AS n, \
                    (SELECT bound FROM admission_bound) AS bound",
        ))
        .await?;
    let Some(row) = row else {
        return Ok(Census {
            in_flight: 0,
            bound: None,
        });
    };
    let n: i64 = row.try_get("", "n")?;
    let bound: Option<i64> = row.try_get("", "bound")?;
    Ok(Census {
        in_flight: u64::try_from(n).unwrap_or_default(),
        bound: bound.and_then(|b| u64::try_from(b).ok()),
    })
}

/// Moves the shared bound to `bound`, unless an instance moved it less than `gap` ago. Whether
/// it moved. The database's clock decides, so the instances need not agree on the time.
pub async fn step_bound<C: ConnectionTrait>(
    db: &C,
    bound: u64,
    gap: Duration,
) -> Result<bool, DbErr> {
    let bound = i64::try_from(bound).unwrap_or(i64::MAX);
    let moved = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO admission_bound (bound, stepped_at) VALUES ($1, now()) \
             ON CONFLICT (only_row) DO UPDATE \
                 SET bound = EXCLUDED.bound, stepped_at = EXCLUDED.stepped_at \
                 WHERE admission_bound.stepped_at <= now() - make_interval(secs => $2) \
             RETURNING bound",
            [bound.into(), gap.as_secs_f64().into()],
        ))
        .await?;
    Ok(moved.is_some())
}
