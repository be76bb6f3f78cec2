//! Event payloads. Amounts are integer cents; IDs are UUIDs.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::topics;

/// One line of an order, priced by orders-svc from its catalog replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub product_id: Uuid,
    pub quantity: u32,
    pub unit_price_cents: i64,
}

/// orders-svc accepted an order in `PENDING_PAYMENT`; payments-svc should charge it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCreated {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub total_cents: i64,
    pub items: Vec<OrderLine>,
}

/// payments-svc debited the customer; inventory-svc should reserve the lines.
/// The lines travel along so that inventory-svc needs nothing but this event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentSucceeded {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub payment_id: Uuid,
    pub amount_cents: i64,
    pub items: Vec<OrderLine>,
}

/// payments-svc could not charge the order; nothing was debited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFailed {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub reason: String,
}

/// Compensation: payments-svc returned a charge after inventory could not reserve the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub payment_id: Uuid,
    pub amount_cents: i64,
    pub reason: String,
}

/// inventory-svc reserved every line of the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryReserved {
    pub order_id: Uuid,
}

/// inventory-svc reserved nothing, because `product_id` is short or unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryReservationFailed {
    pub order_id: Uuid,
    pub product_id: Uuid,
    pub reason: String,
}

/// The saga ended well: the order is `CONFIRMED`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderConfirmed {
    pub order_id: Uuid,
    pub total_cents: i64,
}

/// The saga ended badly, after every compensation it needed had committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderFailed {
    pub order_id: Uuid,
    /// The order's terminal status, `FAILED_PAYMENT` or `FAILED_INVENTORY`.
    pub status: String,
    pub reason: String,
}

/// orders-svc gave up on a saga that passed its deadline: the order is `CANCELLED`.
/// payments-svc refunds a charge and inventory-svc releases a reservation in response, and
/// both refuse any later charge or reservation for the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: Uuid,
    pub reason: String,
}

/// inventory-svc created or changed a product; orders-svc keeps a priced replica of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductUpserted {
    pub product_id: Uuid,
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
}

/// Every event of the system. Serialized adjacently tagged, which is exactly the `type` and
/// `data` attributes of the CloudEvents envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum SagaEvent {
    OrderCreated(OrderCreated),
    PaymentSucceeded(PaymentSucceeded),
    PaymentFailed(PaymentFailed),
    PaymentRefunded(PaymentRefunded),
    InventoryReserved(InventoryReserved),
    InventoryReservationFailed(InventoryReservationFailed),
    OrderConfirmed(OrderConfirmed),
    OrderFailed(OrderFailed),
    OrderCancelled(OrderCancelled),
    ProductUpserted(ProductUpserted),
}

impl SagaEvent {
    /// The CloudEvents `type`, which is also the `event_type` header.
    pub fn event_type(&self) -> &'static str {
        match self {
            SagaEvent::OrderCreated(_) => "OrderCreated",
            SagaEvent::PaymentSucceeded(_) => "PaymentSucceeded",
            SagaEvent::PaymentFailed(_) => "PaymentFailed",
            SagaEvent::PaymentRefunded(_) => "PaymentRefunded",
            SagaEvent::InventoryReserved(_) => "InventoryReserved",
            SagaEvent::InventoryReservationFailed(_) => "InventoryReservationFailed",
            SagaEvent::OrderConfirmed(_) => "OrderConfirmed",
            SagaEvent::OrderFailed(_) => "OrderFailed",
            SagaEvent::OrderCancelled(_) => "OrderCancelled",
            SagaEvent::ProductUpserted(_) => "ProductUpserted",
        }
    }

    /// The topic this event is published to; each topic has exactly one producing service.
    pub fn topic(&self) -> &'static str {
        match self {
            SagaEvent::OrderCreated(_)
            | SagaEvent::OrderConfirmed(_)
            | SagaEvent::OrderFailed(_)
            | SagaEvent::OrderCancelled(_) => topics::ORDERS_EVENTS,
            SagaEvent::PaymentSucceeded(_)
            | SagaEvent::PaymentFailed(_)
            | SagaEvent::PaymentRefunded(_) => topics::PAYMENTS_EVENTS,
            SagaEvent::InventoryReserved(_) | SagaEvent::InventoryReservationFailed(_) => {
                topics::INVENTORY_EVENTS
            }
            SagaEvent::ProductUpserted(_) => topics::INVENTORY_CATALOG,
        }
    }
}
