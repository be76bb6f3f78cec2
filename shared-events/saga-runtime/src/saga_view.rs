//! The saga view: a read model of every event of a service's sagas, one row each, from which
//! a saga's timeline is read (`GET /sagas/{saga_id}`, the explorer page). A service turns it
//! on with [`crate::unit_of_work::UnitOfWork::with_saga_view`]; orders-svc does, since every
//! saga starts and ends there.
//!
//! Rows are written in the transactions that already run, never in one of their own: an event
//! the service publishes is recorded in the transaction that writes it to the outbox, and an
//! event it consumes in the transaction that applies it (so the service must accept, and
//! consume, every event it wants to see). The event's own `time` is kept, so the view's hops
//! are those Kafka's records show.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, FromQueryResult, Statement};
use shared_events::{Envelope, Outcome, SagaEvent, Step, Timeline};
use strum::VariantNames;
use uuid::Uuid;

/// One event of the view.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewRow {
    pub event_id: Uuid,
    pub saga_id: Uuid,
    pub event_type: &'static str,
    pub source: String,
    pub occurred_at: DateTime<Utc>,
    pub outcome: Outcome,
    /// The order's terminal status, when this event ended the saga.
    pub terminal: Option<&'static str>,
}

impl ViewRow {
    /// The row for `event`; catalog events (no saga) have none.
    pub fn of(event: &Envelope) -> Option<ViewRow> {
        Some(ViewRow {
            event_id: event.id,
            saga_id: event.sagaid?,
            event_type: event.event_type(),
            source: event.source.clone(),
            occurred_at: event.time,
            outcome: event.event.outcome(),
            terminal: event.event.terminal_status(),
        })
    }
}

/// The statement that inserts the rows [`columns`] gives, bound from placeholder `$first` on;
/// the same text for any number of rows, as [`crate::outbox::insert_sql`]. A row already there
/// (a redelivered event) is left as it is; an empty terminal status stands for none. The unit
/// of work runs it inside its outbox statement.
pub(crate) fn insert_sql(first: usize) -> String {
    let [
        event_id,
        saga_id,
        event_type,
        source,
        occurred_at,
        outcome,
        terminal,
    ] = std::array::from_fn(|column| first + column);
    format!(
        "INSERT INTO saga_events (event_id, saga_id, event_type, source, occurred_at, outcome, terminal) \
         SELECT event_id, saga_id, event_type, source, occurred_at, outcome, NULLIF(terminal, '') \
         FROM unnest(${event_id}::uuid[], ${saga_id}::uuid[], ${event_type}::text[], ${source}::text[], \
                     ${occurred_at}::timestamptz[], ${outcome}::text[], ${terminal}::text[]) \
              AS row (event_id, saga_id, event_type, source, occurred_at, outcome, terminal) \
         ON CONFLICT (event_id) DO NOTHING"
    )
}

/// The arrays [`insert_sql`] binds, one per column.
pub(crate) fn columns(rows: Vec<ViewRow>) -> Vec<sea_orm::Value> {
    let mut event_ids = Vec::with_capacity(rows.len());
    let mut saga_ids = Vec::with_capacity(rows.len());
    let mut event_types = Vec::with_capacity(rows.len());
    let mut sources = Vec::with_capacity(rows.len());
    let mut times = Vec::with_capacity(rows.len());
    let mut outcomes = Vec::with_capacity(rows.len());
    let mut terminals = Vec::with_capacity(rows.len());
    for row in rows {
        event_ids.push(row.event_id);
        saga_ids.push(row.saga_id);
        event_types.push(row.event_type.to_owned());
        sources.push(row.source);
        times.push(row.occurred_at);
        outcomes.push(row.outcome.as_str().to_owned());
        terminals.push(row.terminal.unwrap_or_default().to_owned());
    }
    vec![
        event_ids.into(),
        saga_ids.into(),
        event_types.into(),
        sources.into(),
        times.into(),
        outcomes.into(),
        terminals.into(),
    ]
}

#[derive(Debug, FromQueryResult)]
struct StoredRow {
    event_id: Uuid,
    event_type: String,
    source: String,
    occurred_at: DateTime<Utc>,
    outcome: String,
    terminal: Option<String>,
}

/// The saga's timeline from the view; no steps when the view has none of its events.
pub async fn timeline<C: ConnectionTrait>(db: &C, saga_id: Uuid) -> Result<Timeline, DbErr> {
    let rows = StoredRow::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT event_id, event_type, source, occurred_at, outcome, terminal \
         FROM saga_events WHERE saga_id = $1 ORDER BY occurred_at, event_id",
        [saga_id.into()],
    ))
    .all(db)
    .await?;
    let steps = rows
        .into_iter()
        // A type this build does not know (written by a newer version) is left out.
        .filter_map(|row| {
            let step = known(&row.event_type, SagaEvent::VARIANTS)?;
            let outcome = match row.outcome.as_str() {
                "failure" => Outcome::Failure,
                "compensation" => Outcome::Compensation,
                _ => Outcome::Success,
            };
            let terminal = row
                .terminal
                .as_deref()
                .and_then(|t| known(t, &shared_events::timeline::TERMINAL_STATUSES));
            Some((
                Step {
                    step,
                    service: row.source,
                    time: row.occurred_at,
                    hop: None,
                    outcome,
                    event_id: row.event_id,
                },
                terminal,
            ))
        })
        .collect();
    Ok(Timeline::from_steps(saga_id, steps))
}

/// `text` as the `'static` name in `names` it equals.
fn known(text: &str, names: &[&'static str]) -> Option<&'static str> {
    names.iter().copied().find(|name| *name == text)
}
