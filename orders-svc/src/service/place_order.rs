use saga_runtime::outbox;
use sea_orm::TransactionTrait;
use shared_events::{Envelope, OrderCreated, OrderLine as EventLine, SagaEvent};
use uuid::Uuid;

use super::{OrdersService, SOURCE, ServiceError};
use crate::domain::{LineRequest, Order};
use crate::repo::{CatalogRepository, OrderRepository};

/// A client's request to buy `lines` for `customer_id`.
#[derive(Debug, Clone)]
pub struct PlaceOrder {
    pub customer_id: Uuid,
    pub lines: Vec<LineRequest>,
}

impl<O: OrderRepository, C: CatalogRepository> OrdersService<O, C> {
    /// Saga step 1: prices the order from the catalog replica, stores it as
    /// `PENDING_PAYMENT` and announces `OrderCreated`, all in one transaction.
    pub async fn place_order(&self, command: PlaceOrder) -> Result<Order, ServiceError> {
        let txn = self.db.begin().await?;
        let product_ids: Vec<Uuid> = command.lines.iter().map(|line| line.product_id).collect();
        let prices = self.catalog.prices(&txn, &product_ids).await?;
        let order = Order::place(command.customer_id, &command.lines, &prices)?;
        self.orders.insert(&txn, &order).await?;
        outbox::enqueue(&txn, &order_created(&order)).await?;
        txn.commit().await?;
        self.outbox_signal.notify();
        tracing::info!(order_id = %order.id, saga_id = %order.saga_id, total_cents = order.total_cents, "order placed");
        Ok(order)
    }
}

fn order_created(order: &Order) -> Envelope {
    Envelope::new(
        SOURCE,
        Some(order.saga_id),
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
        }),
    )
}
