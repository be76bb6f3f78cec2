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

/// An event ready for the outbox: encoded, with the trace context of the work that wrote it.
/// Make it where that work runs (inside its span); write it with [`enqueue_all`].
#[derive(Debug)]
pub struct OutboxEntry {
    event_id: uuid::Uuid,
    saga_id: Option<uuid::Uuid>,
    topic: &'static str,
    message_key: String,
    event_type: &'static str,
    /// The encoded envelope, stored and published exactly as written.
    payload: String,
    traceparent: Option<String>,
}

impl OutboxEntry {
    pub fn new(event: &Envelope) -> Result<Self, OutboxError> {
        Ok(Self {
            event_id: event.id,
            saga_id: event.sagaid,
            topic: event.topic(),
            message_key: event.key(),
            event_type: event.event_type(),
            payload: serde_json::to_string(event).map_err(|e| OutboxError::Encode(event.id, e))?,
            traceparent: telemetry::current_traceparent(),
        })
    }
}

const OUTBOX_COLUMNS: usize = 7;
/// The payload's position among the columns below, counting from 0.
const PAYLOAD_COLUMN: usize = 5;

/// Adds `event` to the outbox through `db`, which should be the transaction that makes the
/// change the event announces. The current trace context is stored with it.
pub async fn enqueue<C: ConnectionTrait>(db: &C, event: &Envelope) -> Result<(), OutboxError> {
    enqueue_all(db, vec![OutboxEntry::new(event)?]).await
}

/// Adds `entries` to the outbox in one statement, in order: their IDs rise in the order given,
/// and the relay publishes each key's rows in ID order. A batch of consumed events writes all
/// its answers this way, one round trip instead of one per event.
pub async fn enqueue_all<C: ConnectionTrait>(
    db: &C,
    entries: Vec<OutboxEntry>,
) -> Result<(), OutboxError> {
    if entries.is_empty() {
        return Ok(());
    }
    // The payload is bound as text and cast, so that the `json` column keeps it as written.
    let rows = crate::db::values_list(entries.len(), OUTBOX_COLUMNS, |column| {
        if column == PAYLOAD_COLUMN {
            "::json"
        } else {
            ""
        }
    });
    let sql = format!(
        "INSERT INTO outbox (event_id, saga_id, topic, message_key, event_type, payload, traceparent) \
         VALUES {rows}"
    );
    let mut values: Vec<sea_orm::Value> = Vec::with_capacity(entries.len() * OUTBOX_COLUMNS);
    for entry in entries {
        values.extend([
            entry.event_id.into(),
            entry.saga_id.into(),
            entry.topic.into(),
            entry.message_key.into(),
            entry.event_type.into(),
            entry.payload.into(),
            entry.traceparent.into(),
        ]);
    }
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        values,
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
