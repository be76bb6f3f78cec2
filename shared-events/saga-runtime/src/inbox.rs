//! Recording consumed events. [`crate::unit_of_work::UnitOfWork`] calls [`record`] first for
//! each event inside the event's transaction; [`Delivery::Duplicate`] means the event was
//! applied before, and the handler is not called.

use sea_orm::{ConnectionTrait, DbErr};
use shared_events::Envelope;
use uuid::Uuid;

/// Whether this service has seen an event before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    First,
    Duplicate,
}

/// Opens the savepoint `savepoint` and inserts the event's ID into the inbox, in the caller's
/// transaction and in one round trip. If the transaction (or the savepoint) later rolls back,
/// so does this row, and the redelivered event is applied then.
///
/// The two statements travel as one simple query, so their values are written into the text:
/// they are a UUID, the name of an event type and a savepoint name of the runtime's own,
/// never text from outside.
pub async fn record<C: ConnectionTrait>(
    db: &C,
    event: &Envelope,
    savepoint: &str,
) -> Result<Delivery, DbErr> {
    let sql = format!(
        "SAVEPOINT {savepoint}; \
         INSERT INTO inbox (event_id, event_type, saga_id) VALUES ({}, {}, {}) \
         ON CONFLICT (event_id) DO NOTHING",
        uuid_literal(event.id),
        text_literal(event.event_type()),
        event.sagaid.map_or_else(|| "NULL".to_owned(), uuid_literal),
    );
    let result = db.execute_unprepared(&sql).await?;
    // Inside the savepoint, so that a failure injected here rolls back like a real one.
    crate::fault::inject_db_failure(db, event.event_type()).await?;
    Ok(if result.rows_affected() == 1 {
        Delivery::First
    } else {
        Delivery::Duplicate
    })
}

fn uuid_literal(id: Uuid) -> String {
    format!("'{id}'::uuid")
}

/// A quoted SQL string literal: quotes are doubled, so nothing in `text` can end it.
fn text_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_cannot_be_broken_out_of() {
        assert_eq!(text_literal("OrderCreated"), "'OrderCreated'");
        assert_eq!(
            text_literal("a'); DROP TABLE inbox; --"),
            "'a''); DROP TABLE inbox; --'"
        );
        let id = Uuid::nil();
        assert_eq!(
            uuid_literal(id),
            "'00000000-0000-0000-0000-000000000000'::uuid"
        );
    }
}
