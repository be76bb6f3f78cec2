//! Writing events to the outbox. The unit of work ([`crate::unit_of_work`]) calls [`enqueue`]
//! inside the transaction that makes the change, commits, then calls [`OutboxSignal::notify`]
//! so the relay publishes at once instead of at its next poll.

use std::sync::Arc;

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};
use shared_events::Envelope;
use tokio::sync::Notify;

use crate::telemetry;

/// Wakes the relay after a commit. Cloning shares the signal.
#[derive(Debug, Clone, Default)]
pub struct OutboxSignal(Arc<Notify>);

impl OutboxSignal {
    /// Call after the transaction that wrote outbox rows has committed. If the relay is busy,
    /// the wake-up is kept for its next wait, so no commit goes unannounced.
    pub(crate) fn notify(&self) {
        self.0.notify_one();
    }

    pub(crate) async fn notified(&self) {
        self.0.notified().await;
    }
}

/// A failed [`enqueue`]. `Db` keeps the database error as its source, so the consumer can
/// classify it by SQLSTATE (a deadlock here is as transient as anywhere else).
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("event_id={0} cannot be encoded: {1}")]
    Encode(uuid::Uuid, #[source] serde_json::Error),
    #[error("outbox insert failed: {0}")]
    Db(#[from] DbErr),
}

/// Adds `event` to the outbox through `db`, which should be the transaction that makes the
/// change the event announces. The current trace context is stored with it.
pub async fn enqueue<C: ConnectionTrait>(db: &C, event: &Envelope) -> Result<(), OutboxError> {
    let payload = serde_json::to_value(event).map_err(|e| OutboxError::Encode(event.id, e))?;
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO outbox (event_id, saga_id, topic, message_key, event_type, payload, traceparent) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [
            event.id.into(),
            event.sagaid.into(),
            event.topic().into(),
            event.key().into(),
            event.event_type().into(),
            payload.into(),
            telemetry::current_traceparent().into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Rows waiting to be published, and the age in seconds of the oldest (0 when none).
pub async fn backlog_and_age<C: ConnectionTrait>(db: &C) -> Result<(i64, f64), DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) AS n, COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0) AS age FROM outbox",
        ))
        .await?;
    match row {
        Some(row) => Ok((row.try_get("", "n")?, row.try_get("", "age")?)),
        None => Ok((0, 0.0)),
    }
}
