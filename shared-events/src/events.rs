//! Event payloads. Amounts are integer cents; IDs are UUIDs.

use serde::{Deserialize, Serialize};
use strum::{IntoStaticStr, VariantNames};
use uuid::Uuid;

use crate::topics;

/// One line of an order, priced by orders-svc from its catalog replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OrderLine {
    pub product_id: Uuid,
    pub quantity: u32,
    pub unit_price_cents: i64,
}

/// orders-svc accepted an order in `PENDING_PAYMENT`; payments-svc should charge it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OrderCreated {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub total_cents: i64,
    pub items: Vec<OrderLine>,
}

/// payments-svc debited the customer; inventory-svc should reserve the lines.
/// The lines travel along so that inventory-svc needs nothing but this event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PaymentSucceeded {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub payment_id: Uuid,
    pub amount_cents: i64,
    pub items: Vec<OrderLine>,
}

/// payments-svc could not charge the order; nothing was debited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PaymentFailed {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub reason: String,
}

/// Compensation: payments-svc returned a charge after inventory could not reserve the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PaymentRefunded {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub payment_id: Uuid,
    pub amount_cents: i64,
    pub reason: String,
}

/// inventory-svc reserved every line of the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct InventoryReserved {
    pub order_id: Uuid,
}

/// inventory-svc reserved nothing: a product is short or unknown, or the order was cancelled
/// before its payment arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct InventoryReservationFailed {
    pub order_id: Uuid,
    /// The first product that could not be covered; absent when no product was at fault
    /// (the order had been cancelled).
    #[serde(default)]
    pub product_id: Option<Uuid>,
    pub reason: String,
}

/// The saga ended well: the order is `CONFIRMED`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OrderConfirmed {
    pub order_id: Uuid,
    pub total_cents: i64,
}

/// The saga ended badly, after every compensation it needed had committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OrderFailed {
    pub order_id: Uuid,
    pub status: FailedStatus,
    pub reason: String,
}

/// How an order failed: its terminal status, as `GET /orders/{id}` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailedStatus {
    /// The payment was declined; nothing needed compensating.
    FailedPayment,
    /// Stock was short; the payment was refunded first.
    FailedInventory,
}

/// orders-svc gave up on a saga that passed its deadline: the order is `CANCELLED`.
/// payments-svc refunds a charge and inventory-svc releases a reservation in response, and
/// both refuse any later charge or reservation for the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OrderCancelled {
    pub order_id: Uuid,
    pub reason: String,
}

/// inventory-svc created or changed a product; orders-svc keeps a priced replica of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProductUpserted {
    pub product_id: Uuid,
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    /// The product's category, which names the JSON Schema its attributes follow. Optional:
    /// earlier records have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The flexible attributes, a JSON object; `{}` when a record has none.
    #[serde(default = "empty_object")]
    pub attributes: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// The `type`s of the events that undo an earlier step of their saga, for code that sees the
/// type only as text (the relay, the saga views).
pub const COMPENSATING_EVENT_TYPES: &[&str] = &["PaymentRefunded"];

/// Every event of the system. Serialized adjacently tagged, which is exactly the `type` and
/// `data` attributes of the CloudEvents envelope; the variant's name is the `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, IntoStaticStr, VariantNames)]
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
        self.into()
    }

    /// Whether the event undoes an earlier step of its saga (a refund): the compensations
    /// that `saga_compensations_total` counts and the saga views colour apart.
    pub fn is_compensation(&self) -> bool {
        COMPENSATING_EVENT_TYPES.contains(&self.event_type())
    }

    /// Whether the event is a step of a saga, and so must carry the saga's ID. Catalog events
    /// are not; they are keyed by product.
    pub fn belongs_to_saga(&self) -> bool {
        !matches!(self, SagaEvent::ProductUpserted(_))
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

/// One event of every type, with fixed IDs: the examples of the event contract's documents
/// (`contract`), and what the tests below check every variant with; a test fails if a
/// variant is missing here.
pub fn examples() -> Vec<SagaEvent> {
    let id = Uuid::from_u128(0x0193_5c3e_8f00_7000_8000_0000_0000_0001);
    let line = OrderLine {
        product_id: id,
        quantity: 1,
        unit_price_cents: 5,
    };
    vec![
        SagaEvent::OrderCreated(OrderCreated {
            order_id: id,
            customer_id: id,
            total_cents: 5,
            items: vec![line.clone()],
        }),
        SagaEvent::PaymentSucceeded(PaymentSucceeded {
            order_id: id,
            customer_id: id,
            payment_id: id,
            amount_cents: 5,
            items: vec![line],
        }),
        SagaEvent::PaymentFailed(PaymentFailed {
            order_id: id,
            customer_id: id,
            reason: "declined".into(),
        }),
        SagaEvent::PaymentRefunded(PaymentRefunded {
            order_id: id,
            customer_id: id,
            payment_id: id,
            amount_cents: 5,
            reason: "short".into(),
        }),
        SagaEvent::InventoryReserved(InventoryReserved { order_id: id }),
        SagaEvent::InventoryReservationFailed(InventoryReservationFailed {
            order_id: id,
            product_id: Some(id),
            reason: "short".into(),
        }),
        SagaEvent::OrderConfirmed(OrderConfirmed {
            order_id: id,
            total_cents: 5,
        }),
        SagaEvent::OrderFailed(OrderFailed {
            order_id: id,
            status: FailedStatus::FailedInventory,
            reason: "short".into(),
        }),
        SagaEvent::OrderCancelled(OrderCancelled {
            order_id: id,
            reason: "late".into(),
        }),
        SagaEvent::ProductUpserted(ProductUpserted {
            product_id: id,
            sku: "SKU".into(),
            name: "Widget".into(),
            price_cents: 5,
            category: Some("widgets".into()),
            attributes: serde_json::json!({"colour": "blue"}),
        }),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use strum::VariantNames;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn every_event_type_is_its_serde_tag() -> Result<(), serde_json::Error> {
        let events = examples();
        let covered: BTreeSet<&str> = events.iter().map(SagaEvent::event_type).collect();
        let declared: BTreeSet<&str> = SagaEvent::VARIANTS.iter().copied().collect();
        assert_eq!(covered, declared, "examples must hold every variant");
        for event in events {
            let json = serde_json::to_value(&event)?;
            assert_eq!(json["type"], event.event_type());
        }
        Ok(())
    }

    #[test]
    fn only_catalog_events_stand_outside_a_saga() {
        for event in examples() {
            assert_eq!(
                event.belongs_to_saga(),
                event.event_type() != "ProductUpserted",
                "{}",
                event.event_type()
            );
        }
    }

    #[test]
    fn a_failed_order_names_its_status_as_the_order_api_does() -> Result<(), serde_json::Error> {
        let failed = OrderFailed {
            order_id: Uuid::now_v7(),
            status: FailedStatus::FailedPayment,
            reason: "declined".into(),
        };
        assert_eq!(serde_json::to_value(&failed)?["status"], "FAILED_PAYMENT");
        Ok(())
    }
}
