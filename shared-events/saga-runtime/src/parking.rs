//! Parked events: consumed events whose handler failed with an error that retrying does not
//! fix. The consumer parks such an event (and every later event of its saga, to keep the
//! saga's order) and moves on; an operator sees them at `GET /sagas/stuck` and replays a saga
//! with `POST /sagas/{saga_id}/retry` once the cause is fixed. Nothing is dropped.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, FromQueryResult, Statement};
use serde::Serialize;
use shared_events::Envelope;
use uuid::Uuid;

use crate::consumer::{Applier, EventHandler};
use crate::metrics;

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
#[derive(Debug, Clone, Serialize, FromQueryResult)]
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

/// The parked events of one service, with an in-memory index of the sagas that have any so
/// the consumer can check every event without a query.
#[derive(Clone)]
pub struct Parking {
    db: DatabaseConnection,
    sagas: Arc<Mutex<HashSet<Uuid>>>,
}

/// What a retry did.
#[derive(Debug, Clone, Serialize)]
pub struct RetryOutcome {
    pub saga_id: Uuid,
    pub retried: usize,
    pub remaining: usize,
    pub error: Option<String>,
}

impl Parking {
    /// Loads the sagas that have parked events.
    pub async fn load(db: DatabaseConnection) -> Result<Self, DbErr> {
        let rows = db
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT DISTINCT saga_id FROM parked_events WHERE saga_id IS NOT NULL",
            ))
            .await?;
        let sagas = rows
            .iter()
            .map(|row| row.try_get::<Uuid>("", "saga_id"))
            .collect::<Result<HashSet<_>, _>>()?;
        Ok(Self {
            db,
            sagas: Arc::new(Mutex::new(sagas)),
        })
    }

    /// Whether an earlier event of this saga is parked, so this one must wait behind it.
    pub fn blocks(&self, saga_id: Option<Uuid>) -> bool {
        saga_id.is_some_and(|id| self.parked_sagas().contains(&id))
    }

    /// Stores the event for an operator; idempotent per event ID.
    pub async fn park(
        &self,
        event: &Envelope,
        origin: &Origin,
        error: &str,
        attempts: u32,
    ) -> Result<(), DbErr> {
        let payload = serde_json::to_value(event).map_err(|e| DbErr::Custom(e.to_string()))?;
        self.db
            .execute_raw(Statement::from_sql_and_values(
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
                    i32::try_from(attempts)
                        .map_err(|_| DbErr::Custom(format!("attempts={attempts} exceeds INT")))?
                        .into(),
                ],
            ))
            .await?;
        if let Some(saga_id) = event.sagaid {
            self.parked_sagas().insert(saga_id);
        }
        metrics::PARKED_EVENTS.increment();
        tracing::error!(event_id = %event.id, saga_id = ?event.sagaid, event_type = event.event_type(), attempts, error, "event parked; the saga needs an operator (POST /sagas/{{saga_id}}/retry)");
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

    /// Replays the saga's parked events in order through `applier`, deleting each one that
    /// now applies (or had been applied after all), and stops at the first that still fails.
    pub async fn retry<H: EventHandler>(
        &self,
        saga_id: Uuid,
        applier: &Applier<H>,
    ) -> Result<RetryOutcome, DbErr> {
        let mut retried = 0;
        let mut error = None;
        loop {
            let next = self
                .db
                .query_one_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT id, payload FROM parked_events WHERE saga_id = $1 ORDER BY id LIMIT 1",
                    [saga_id.into()],
                ))
                .await?;
            let Some(row) = next else { break };
            let id: i64 = row.try_get("", "id")?;
            let payload: serde_json::Value = row.try_get("", "payload")?;
            let event: Envelope =
                serde_json::from_value(payload).map_err(|e| DbErr::Custom(e.to_string()))?;
            match applier.uow.apply(&*applier.handler, &event).await {
                Ok(_) => {
                    self.db
                        .execute_raw(Statement::from_sql_and_values(
                            DbBackend::Postgres,
                            "DELETE FROM parked_events WHERE id = $1",
                            [id.into()],
                        ))
                        .await?;
                    retried += 1;
                }
                Err(failure) => {
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
            }
        }
        let remaining = self.count(saga_id).await?;
        if remaining == 0 {
            self.parked_sagas().remove(&saga_id);
        }
        tracing::info!(%saga_id, retried, remaining, "parked events retried");
        Ok(RetryOutcome {
            saga_id,
            retried,
            remaining,
            error,
        })
    }

    /// The index of parked sagas. A lane that panicked while holding it leaves it poisoned,
    /// not wrong: every update is a single insert or remove, so the set is still the truth,
    /// and reading it anyway keeps a parked saga blocked instead of silently unblocking it.
    fn parked_sagas(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.sagas.lock().unwrap_or_else(PoisonError::into_inner)
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
