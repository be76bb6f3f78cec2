//! Recording consumed events. [`crate::unit_of_work::UnitOfWork::apply`] calls [`record`]
//! first inside the event's transaction; [`Delivery::Duplicate`] means the event was applied
//! before, and the transaction is rolled back without calling the handler.

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};
use shared_events::Envelope;

/// Whether this service has seen an event before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    First,
    Duplicate,
}

/// Inserts the event's ID into the inbox in the caller's transaction. If the transaction later
/// rolls back, so does this row, and the redelivered event is applied then.
pub async fn record<C: ConnectionTrait>(db: &C, event: &Envelope) -> Result<Delivery, DbErr> {
    crate::fault::inject_db_failure(db, event.event_type()).await?;
    let result = db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO inbox (event_id, event_type, saga_id) VALUES ($1, $2, $3) \
             ON CONFLICT (event_id) DO NOTHING",
            [
                event.id.into(),
                event.event_type().into(),
                event.sagaid.into(),
            ],
        ))
        .await?;
    Ok(if result.rows_affected() == 1 {
        Delivery::First
    } else {
        Delivery::Duplicate
    })
}
