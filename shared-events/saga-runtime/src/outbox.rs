//! Writing events to the outbox. The unit of work ([`crate::unit_of_work`]) calls [`enqueue`]
//! inside the transaction that makes the change, commits, then calls [`OutboxSignal::notify`]
//! so the relay publishes at once instead of at its next poll.

use std::sync::{Arc, LazyLock};

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};
use shared_events::Envelope;
use tokio::sync::watch;

use crate::telemetry;

/// Wakes the relay after a commit. Cloning shares the signal.
///
/// It counts announced commits rather than holding a single wake-up, so that the relay can
/// tell the commits its last claim already covered from those that came after. A wake-up
/// kept from a commit whose rows the relay has just published would cost a claim that finds
/// nothing: three round trips and a transaction.
#[derive(Debug, Clone)]
pub struct OutboxSignal(Arc<watch::Sender<u64>>);

impl Default for OutboxSignal {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(0)))
    }
}

impl OutboxSignal {
    /// Call after the transaction that wrote outbox rows has committed. If the relay is busy,
    /// the announcement waits for it, so no commit goes unannounced.
    pub(crate) fn notify(&self) {
        self.0
            .send_modify(|announced| *announced = announced.wrapping_add(1));
    }

    /// A relay's view of the announcements, every one made so far counted as seen.
    pub(crate) fn commits(&self) -> AnnouncedCommits {
        AnnouncedCommits(self.0.subscribe())
    }
}

/// The commits announced on an [`OutboxSignal`], as one relay has seen them.
#[derive(Debug)]
pub(crate) struct AnnouncedCommits(watch::Receiver<u64>);

impl AnnouncedCommits {
    /// Counts every commit announced so far as seen. Call it just before a claim: a commit
    /// announced by then is visible to the claim's snapshot, so its rows need no other claim.
    pub(crate) fn see_all(&mut self) {
        self.0.borrow_and_update();
    }

    /// Returns once a commit not yet seen is announced, at once if one already was.
    pub(crate) async fn next(&mut self) {
        if self.0.changed().await.is_err() {
            // Every signal is gone, so no commit can be announced any more.
            std::future::pending::<()>().await;
        }
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
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        INSERT.as_str(),
        columns(entries),
    ))
    .await?;
    Ok(())
}

/// [`insert_sql`] bound from `$1`, written once.
static INSERT: LazyLock<String> = LazyLock::new(|| insert_sql(1));

/// How many placeholders [`insert_sql`] takes: one array per column.
pub(crate) const COLUMNS: usize = 7;

/// The statement that inserts the rows [`columns`] gives, bound from placeholder `$first` on.
/// Its text is the same for any number of rows, so each connection prepares it once (a
/// `VALUES` list would be a new statement for every batch size, and a batch of answers can
/// have any). `unnest` yields the arrays' elements in order, so the IDs rise in that order.
/// The payload is bound as text and cast, so that the `json` column keeps it as written; a
/// nil saga ID and an empty traceparent stand for none (saga IDs are v7 UUIDs, never nil).
pub(crate) fn insert_sql(first: usize) -> String {
    let [
        event_id,
        saga_id,
        topic,
        key,
        event_type,
        payload,
        traceparent,
    ] = std::array::from_fn(|column| first + column);
    format!(
        "INSERT INTO outbox (event_id, saga_id, topic, message_key, event_type, payload, traceparent) \
         SELECT event_id, NULLIF(saga_id, '00000000-0000-0000-0000-000000000000'::uuid), topic, \
                message_key, event_type, payload::json, NULLIF(traceparent, '') \
         FROM unnest(${event_id}::uuid[], ${saga_id}::uuid[], ${topic}::text[], ${key}::text[], \
                     ${event_type}::text[], ${payload}::text[], ${traceparent}::text[]) \
              AS entry (event_id, saga_id, topic, message_key, event_type, payload, traceparent)"
    )
}

/// The arrays [`insert_sql`] binds, [`COLUMNS`] of them.
pub(crate) fn columns(entries: Vec<OutboxEntry>) -> Vec<sea_orm::Value> {
    let mut event_ids = Vec::with_capacity(entries.len());
    let mut saga_ids = Vec::with_capacity(entries.len());
    let mut topics = Vec::with_capacity(entries.len());
    let mut keys = Vec::with_capacity(entries.len());
    let mut event_types = Vec::with_capacity(entries.len());
    let mut payloads = Vec::with_capacity(entries.len());
    let mut traceparents = Vec::with_capacity(entries.len());
    for entry in entries {
        event_ids.push(entry.event_id);
        saga_ids.push(entry.saga_id.unwrap_or(uuid::Uuid::nil()));
        topics.push(entry.topic.to_owned());
        keys.push(entry.message_key);
        event_types.push(entry.event_type.to_owned());
        payloads.push(entry.payload);
        traceparents.push(entry.traceparent.unwrap_or_default());
    }
    vec![
        event_ids.into(),
        saga_ids.into(),
        topics.into(),
        keys.into(),
        event_types.into(),
        payloads.into(),
        traceparents.into(),
    ]
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::OutboxSignal;

    /// Long enough for a ready future to resolve on any machine; a pending one is not expected
    /// to resolve at all.
    const WAKE: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn a_relay_that_has_seen_every_commit_waits_for_the_next_one() {
        let signal = OutboxSignal::default();
        let mut commits = signal.commits();
        signal.notify();
        signal.notify();
        commits.see_all();
        assert!(
            tokio::time::timeout(WAKE, commits.next()).await.is_err(),
            "commits seen before the claim are no reason to claim again"
        );
        signal.clone().notify();
        assert!(
            tokio::time::timeout(WAKE, commits.next()).await.is_ok(),
            "a commit after the claim wakes the relay, through any clone of the signal"
        );
    }

    #[tokio::test]
    async fn commits_announced_while_the_relay_was_busy_wake_it_once() {
        let signal = OutboxSignal::default();
        let mut commits = signal.commits();
        signal.notify();
        signal.notify();
        assert!(tokio::time::timeout(WAKE, commits.next()).await.is_ok());
        assert!(
            tokio::time::timeout(WAKE, commits.next()).await.is_err(),
            "two announcements before one wait are one reason to claim, not two"
        );
    }
}
