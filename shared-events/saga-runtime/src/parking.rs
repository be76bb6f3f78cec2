//! Parked events: consumed events whose handler failed with an error that retrying does not
//! fix. The consumer parks such an event (and every later event of its saga, to keep the
//! saga's order) and moves on; an operator sees them at `GET /sagas/stuck` and replays a saga
//! with `POST /sagas/{saga_id}/retry` once the cause is fixed. Nothing is dropped.
//!
//! The `parked_events` table is the only record of which sagas are blocked. The unit of work
//! reads it in the transaction that would apply an event ([`crate::inbox::record_unless_parked`])
//! and parks the event there if its saga is blocked, so every instance of a service, before
//! and after a rebalance or a restart, holds back the same sagas. A retry replays one parked
//! event per transaction, holding its row locked until the row is deleted with the event
//! applied ([`crate::unit_of_work::UnitOfWork::replay_parked`]); that lock is what makes a
//! retry and a concurrent park exclude each other.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, FromQueryResult, Statement};
use serde::Serialize;
use shared_events::Envelope;
use uuid::Uuid;

use crate::consumer::{Applier, EventHandler};
use crate::metrics;
use crate::unit_of_work::Replayed;

/// Why an event that never failed itself was parked.
pub const BEHIND_PARKED: &str = "an earlier event of this saga is parked";

/// Where a parked event was read from.
#[derive(Debug, Clone)]
pub struct Origin {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl Origin {
    pub fn of(record: &rdkafka::message::OwnedMessage) -> Self {
        use rdkafka::Message as _;
        Self {
            topic: record.topic().to_owned(),
            partition: record.partition(),
            offset: record.offset(),
        }
    }
}

/// One parked event, as `GET /sagas/stuck` shows it.
#[derive(Debug, Clone, Serialize, FromQueryResult, utoipa::ToSchema)]
pub struct ParkedEvent {
    pub event_id: Uuid,
    pub saga_id: Option<Uuid>,
    pub event_type: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub error: String,
    pub attempts: i32,
    pub parked_at: chrono::DateTime<chrono::Utc>,
}

/// The parked events of one service.
#[derive(Clone)]
pub struct Parking {
    db: DatabaseConnection,
}

/// What a retry did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RetryOutcome {
    pub saga_id: Uuid,
    pub retried: usize,
    pub remaining: usize,
    pub error: Option<String>,
}

impl Parking {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Stores the event for an operator, in a transaction of its own; idempotent per event
    /// ID. For an event that has just failed for good: it blocks its saga from now on.
    pub async fn park(
        &self,
        event: &Envelope,
        origin: &Origin,
        error: &str,
        attempts: u32,
    ) -> Result<(), DbErr> {
        park_in(&self.db, event, origin, error, attempts).await?;
        announce(event, error, attempts);
        Ok(())
    }

    pub async fn list(&self) -> Result<Vec<ParkedEvent>, DbErr> {
        ParkedEvent::find_by_statement(Statement::from_string(
            DbBackend::Postgres,
            r#"SELECT event_id, saga_id, event_type, topic, partition, "offset", error, attempts, parked_at
               FROM parked_events ORDER BY id"#,
        ))
        .all(&self.db)
        .await
    }

    /// Replays the saga's parked events in order through `applier`, each in its own
    /// transaction that also deletes its row, and stops at the first that still fails. Any
    /// instance of the service may serve it: the table is shared, and an event parked behind
    /// the saga while this runs is replayed too, in its place.
    pub async fn retry<H: EventHandler>(
        &self,
        saga_id: Uuid,
        applier: &Applier<H>,
    ) -> Result<RetryOutcome, DbErr> {
        let mut retried = 0;
        let mut error = None;
        loop {
            match applier.uow.replay_parked(&*applier.handler, saga_id).await {
                Ok(Replayed::Applied) => retried += 1,
                Ok(Replayed::NoneLeft) => break,
                Ok(Replayed::Failed { id, failure }) => {
                    self.db
                        .execute_raw(Statement::from_sql_and_values(
                            DbBackend::Postgres,
                            "UPDATE parked_events SET error = $2, attempts = attempts + 1, retried_at = now() WHERE id = $1",
                            [id.into(), failure.to_string().into()],
                        ))
                        .await?;
                    error = Some(failure.to_string());
                    break;
                }
                Err(db) => return Err(db),
            }
        }
        let remaining = self.count(saga_id).await?;
        tracing::info!(%saga_id, retried, remaining, "parked events retried");
        Ok(RetryOutcome {
            saga_id,
            retried,
            remaining,
            error,
        })
    }

    async fn count(&self, saga_id: Uuid) -> Result<usize, DbErr> {
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT count(*) AS n FROM parked_events WHERE saga_id = $1",
                [saga_id.into()],
            ))
            .await?;
        let n: i64 = row.map_or(Ok(0), |row| row.try_get("", "n"))?;
        usize::try_from(n).map_err(|_| DbErr::Custom(format!("count(*)={n} is negative")))
    }
}

/// Inserts the parked row on `db`, which may be the transaction that found the event's saga
/// blocked. Idempotent per event ID.
pub(crate) async fn park_in<C: ConnectionTrait>(
    db: &C,
    event: &Envelope,
    origin: &Origin,
    error: &str,
    attempts: u32,
) -> Result<(), DbErr> {
    let payload = serde_json::to_value(event).map_err(|e| DbErr::Custom(e.to_string()))?;
    let attempts = i32::try_from(attempts)
        .map_err(|_| DbErr::Custom(format!("attempts={attempts} exceeds INT")))?;
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        r#"INSERT INTO parked_events (event_id, saga_id, event_type, topic, partition, "offset", payload, error, attempts)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (event_id) DO NOTHING"#,
        [
            event.id.into(),
            event.sagaid.into(),
            event.event_type().into(),
            origin.topic.clone().into(),
            origin.partition.into(),
            origin.offset.into(),
            payload.into(),
            error.to_owned().into(),
            attempts.into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Counts and logs a park once it is committed.
pub(crate) fn announce(event: &Envelope, error: &str, attempts: u32) {
    metrics::PARKED_EVENTS.increment();
    tracing::error!(event_id = %event.id, saga_id = ?event.sagaid, event_type = event.event_type(), attempts, error, "event parked; the saga needs an operator (POST /sagas/{{saga_id}}/retry)");
}

/// A parked row taken for replay: its ID and the event it holds.
pub(crate) struct Taken {
    pub id: i64,
    pub event: Result<Envelope, serde_json::Error>,
}

/// Locks the saga's oldest parked row `FOR UPDATE` in the caller's transaction and returns
/// it, or `None` when the saga has none left. A consumer's transaction that has the saga's
/// rows share-locked makes this wait for its commit, so an event it parks is seen here.
pub(crate) async fn take_oldest<C: ConnectionTrait>(
    db: &C,
    saga_id: Uuid,
) -> Result<Option<Taken>, DbErr> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT id, payload FROM parked_events WHERE saga_id = $1 ORDER BY id LIMIT 1 FOR UPDATE",
            [saga_id.into()],
        ))
        .await?;
    let Some(row) = row else { return Ok(None) };
    let id: i64 = row.try_get("", "id")?;
    let payload: serde_json::Value = row.try_get("", "payload")?;
    Ok(Some(Taken {
        id,
        event: serde_json::from_value(payload),
    }))
}

/// Deletes a replayed row, in the transaction that applied its event.
pub(crate) async fn remove<C: ConnectionTrait>(db: &C, id: i64) -> Result<(), DbErr> {
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "DELETE FROM parked_events WHERE id = $1",
        [id.into()],
    ))
    .await?;
    Ok(())
}

/// How many events are parked now, in every saga.
pub async fn count<C: ConnectionTrait>(db: &C) -> Result<i64, DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM parked_events",
        ))
        .await?;
    match row {
        Some(row) => row.try_get("", "n"),
        None => Ok(0),
    }
}
