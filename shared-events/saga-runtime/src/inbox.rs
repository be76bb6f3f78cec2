//! Recording consumed events. [`crate::unit_of_work::UnitOfWork`] calls [`record_unless_parked`]
//! (or, for an event replayed from the parked table, [`record_all`]) first in a transaction
//! that applies events; [`Delivery::Duplicate`] means the event was applied before, and
//! [`Delivery::Blocked`] that an earlier event of its saga is parked: either way the handler
//! is not called.

use std::collections::HashSet;

use sea_orm::{ConnectionTrait, DbBackend, DbErr, QueryResult, Statement};
use shared_events::Envelope;
use uuid::Uuid;

/// Whether this service has seen an event before, or must hold it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    First,
    Duplicate,
    /// An earlier event of its saga is parked: the event is not recorded, and waits behind
    /// that one (the unit of work parks it in the same transaction).
    Blocked,
}

/// The events' columns, one array each, as both statements take them. A nil saga ID stands
/// for "no saga": saga IDs are v7 UUIDs, never nil.
const EVENTS: &str = "unnest($1::uuid[], $2::text[], $3::uuid[]) AS event (id, type, saga)";

/// Inserts the IDs of `events` into the inbox, in the caller's transaction and in one
/// statement, and says for each event, in order, whether this is its first delivery. If the
/// transaction later rolls back, so do these rows, and the redelivered events are applied
/// then.
///
/// The statement's text is the same for any number of events, so each connection prepares and
/// plans it once. An event that appears twice in `events` is a first delivery only the first
/// time.
pub async fn record_all<C: ConnectionTrait>(
    db: &C,
    events: &[&Envelope],
) -> Result<Vec<Delivery>, DbErr> {
    let sql = format!(
        "INSERT INTO inbox (event_id, event_type, saga_id) \
         SELECT event.id, event.type, NULLIF(event.saga, '00000000-0000-0000-0000-000000000000'::uuid) \
         FROM {EVENTS} \
         ON CONFLICT (event_id) DO NOTHING \
         RETURNING event_id AS id, 'first' AS kind"
    );
    let rows = db.query_all_raw(statement(&sql, events)).await?;
    deliveries(events, &rows)
}

/// [`record_all`], except for the events of sagas that have a parked event: those are not
/// recorded and come back as [`Delivery::Blocked`], unless the inbox already holds them (a
/// redelivery of an event applied before its saga was blocked is still a duplicate). The
/// parked table is the authority, read in the transaction that would apply the event, so
/// every instance of the service sees the same.
///
/// The check locks the saga's parked rows (`FOR KEY SHARE`) until the transaction ends. A retry
/// replays a parked event while holding its row `FOR UPDATE`, and deletes it in the same
/// transaction, so the two exclude each other: this transaction either sees the row still
/// parked after the retry gave up (and parks its event behind it, where the retry's next pass
/// finds it), or sees it gone once the retry committed, never in between.
pub async fn record_unless_parked<C: ConnectionTrait>(
    db: &C,
    events: &[&Envelope],
) -> Result<Vec<Delivery>, DbErr> {
    let sql = format!(
        "WITH event AS (SELECT * FROM {EVENTS}), \
         parked AS (SELECT saga_id FROM parked_events \
                    WHERE saga_id IN (SELECT saga FROM event) FOR KEY SHARE), \
         seen AS (SELECT event_id FROM inbox WHERE event_id IN (SELECT id FROM event)), \
         recorded AS ( \
             INSERT INTO inbox (event_id, event_type, saga_id) \
             SELECT id, type, NULLIF(saga, '00000000-0000-0000-0000-000000000000'::uuid) \
             FROM event WHERE saga NOT IN (SELECT saga_id FROM parked) \
             ON CONFLICT (event_id) DO NOTHING \
             RETURNING event_id) \
         SELECT event_id AS id, 'first' AS kind FROM recorded \
         UNION ALL SELECT DISTINCT saga_id, 'blocked' FROM parked \
         UNION ALL SELECT event_id, 'seen' FROM seen"
    );
    let rows = db.query_all_raw(statement(&sql, events)).await?;
    deliveries(events, &rows)
}

fn statement(sql: &str, events: &[&Envelope]) -> Statement {
    let ids: Vec<Uuid> = events.iter().map(|event| event.id).collect();
    let types: Vec<String> = events
        .iter()
        .map(|event| event.event_type().to_owned())
        .collect();
    let sagas: Vec<Uuid> = events
        .iter()
        .map(|event| event.sagaid.unwrap_or(Uuid::nil()))
        .collect();
    Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        [ids.into(), types.into(), sagas.into()],
    )
}

/// Reads the statement's rows back: recorded event IDs (`first`), blocked saga IDs
/// (`blocked`) and event IDs the inbox held already (`seen`).
fn deliveries(events: &[&Envelope], rows: &[QueryResult]) -> Result<Vec<Delivery>, DbErr> {
    let mut first = HashSet::new();
    let mut blocked = HashSet::new();
    let mut seen = HashSet::new();
    for row in rows {
        let id: Uuid = row.try_get("", "id")?;
        let kind: String = row.try_get("", "kind")?;
        match kind.as_str() {
            "blocked" => blocked.insert(id),
            "seen" => seen.insert(id),
            _ => first.insert(id),
        };
    }
    Ok(events
        .iter()
        .map(|event| {
            if seen.contains(&event.id) {
                Delivery::Duplicate
            } else if event.sagaid.is_some_and(|saga| blocked.contains(&saga)) {
                Delivery::Blocked
            } else if first.remove(&event.id) {
                Delivery::First
            } else {
                Delivery::Duplicate
            }
        })
        .collect())
}
