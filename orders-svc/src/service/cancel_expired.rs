use std::time::Duration;

use saga_runtime::unit_of_work::{Announcements, Command, Tx};
use shared_events::{OrderCancelled, SagaEvent};

use super::ServiceError;
use crate::repo::orders;

/// Orders cancelled per transaction; the job loops while it finds full batches.
pub const CANCEL_BATCH: u64 = 100;

/// The saga deadline: cancels orders still `PENDING_PAYMENT` after `deadline` (by the
/// database's clock) and announces `OrderCancelled` for each, so payments-svc refunds and
/// inventory-svc releases whatever they did. Its output is how many it cancelled.
#[derive(Debug, Clone, Copy)]
pub struct CancelExpiredOrders {
    pub deadline: Duration,
}

impl Command for CancelExpiredOrders {
    type Output = usize;
    type Error = ServiceError;

    async fn execute(self, tx: &Tx) -> Result<(usize, Announcements), ServiceError> {
        let expired = orders::lock_expired(tx, self.deadline, CANCEL_BATCH).await?;
        let reason = format!("the saga did not finish within {:?}", self.deadline);
        let mut cancellations = Announcements::none();
        for (order_id, age) in expired {
            let Some(mut order) = orders::find(tx, order_id).await? else {
                continue;
            };
            if order.cancel(&reason).is_err() {
                continue;
            }
            orders::update_status(tx, &order).await?;
            super::observe_saga_duration(order.status, age);
            let event = SagaEvent::OrderCancelled(OrderCancelled {
                order_id,
                reason: reason.clone(),
            });
            cancellations.add_saga(order.saga_id, event);
            tracing::warn!(%order_id, saga_id = %order.saga_id, "order cancelled: saga deadline passed");
        }
        Ok((cancellations.len(), cancellations))
    }
}
