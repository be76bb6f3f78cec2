//! Recording consumed events. [`crate::unit_of_work::UnitOfWork`] calls [`record_all`] first
//! in a transaction that applies events; [`Delivery::Duplicate`] means the event was applied
//! before, and the handler is not called.

use std::collections::HashSet;

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};
use shared_events::Envelope;
use uuid::Uuid;

/// Whether this service has seen an event before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    First,
    Duplicate,
}

/// Inserts the IDs of `events` into the inbox, in the caller's transaction and in one
/// statement, and says for each event, in order, whether this is its first delivery. If the
/// transaction later rolls back, so do these rows, and the redelivered events are applied
/// then.
///
/// The statement's text is the same for any number of events, so each connection prepares and
/// plans it once. An event that appears twice in `events` is a first delivery only the first
/// time. A nil saga ID stands for "no saga": saga IDs are v7 UUIDs, never nil.
pub async fn record_all<C: ConnectionTrait>(
    db: &C,
    events: &[&Envelope],
) -> Result<Vec<Delivery>, DbErr> {
    let ids: Vec<Uuid> = events.iter().map(|event| event.id).collect();
    let types: Vec<String> = events
        .iter()
        .map(|event| event.event_type().to_owned())
        .collect();
    let sagas: Vec<Uuid> = events
        .iter()
        .map(|event| event.sagaid.unwrap_or(Uuid::nil()))
        .collect();
    let inserted = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO inbox (event_id, event_type, saga_id) \
             SELECT event.id, event.type, NULLIF(event.saga, '00000000-0000-0000-0000-000000000000'::uuid) \
             FROM unnest($1::uuid[], $2::text[], $3::uuid[]) AS event (id, type, saga) \
             ON CONFLICT (event_id) DO NOTHING \
             RETURNING event_id",
            [ids.into(), types.into(), sagas.into()],
        ))
        .await?;
    let mut first: HashSet<Uuid> = inserted
        .iter()
        .map(|row| row.try_get::<Uuid>("", "event_id"))
        .collect::<Result<_, _>>()?;
    Ok(events
        .iter()
        .map(|event| {
            if first.remove(&event.id) {
                Delivery::First
            } else {
                Delivery::Duplicate
            }
        })
        .collect())
}
