use saga_runtime::unit_of_work::{Announcements, Command, Tx};
use shared_events::{OrderCreated, OrderLine as EventLine, SagaEvent};
use uuid::Uuid;

use super::ServiceError;
use crate::domain::{LineRequest, Order};
use crate::repo::{catalog, orders};

/// Saga step 1: a client's request to buy `lines` for `customer_id`. Prices the order from
/// the catalog replica, stores it as `PENDING_PAYMENT` and announces `OrderCreated`.
#[derive(Debug, Clone)]
pub struct PlaceOrder {
    pub customer_id: Uuid,
    pub lines: Vec<LineRequest>,
}

impl Command for PlaceOrder {
    type Output = Order;
    type Error = ServiceError;

    async fn execute(self, tx: &Tx) -> Result<(Order, Announcements), ServiceError> {
        let product_ids: Vec<Uuid> = self.lines.iter().map(|line| line.product_id).collect();
        let prices = catalog::prices(tx, &product_ids).await?;
        let order = Order::place(self.customer_id, &self.lines, &prices)?;
        orders::insert(tx, &order).await?;
        tracing::debug!(order_id = %order.id, saga_id = %order.saga_id, total_cents = order.total_cents, "order placed");
        let created = Announcements::saga(order.saga_id, order_created(&order));
        Ok((order, created))
    }
}

fn order_created(order: &Order) -> SagaEvent {
    SagaEvent::OrderCreated(OrderCreated {
        order_id: order.id,
        customer_id: order.customer_id,
        total_cents: order.total_cents,
        items: order
            .lines
            .iter()
            .map(|line| EventLine {
                product_id: line.product_id,
                quantity: line.quantity,
                unit_price_cents: line.unit_price_cents,
            })
            .collect(),
    })
}
