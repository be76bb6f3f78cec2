//! Recording consumed events. A handler calls [`record`] first inside its transaction; when it
//! returns [`Delivery::Duplicate`] the event was applied before and the handler commits nothing.

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, Statement,
    TransactionTrait,
};
use shared_events::Envelope;

/// Opens the transaction that applies `event` and records the event in it: the first two
/// steps of every consumed event's unit of work. `None` means the event was applied before
/// and there is nothing to do; the caller owns the rest of the transaction, commit included.
pub async fn begin_once(
    db: &DatabaseConnection,
    event: &Envelope,
) -> Result<Option<DatabaseTransaction>, DbErr> {
    let txn = db.begin().await?;
    match record(&txn, event).await? {
        Delivery::First => Ok(Some(txn)),
        Delivery::Duplicate => {
            tracing::debug!(event_id = %event.id, "duplicate event ignored");
            Ok(None)
        }
    }
}

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
