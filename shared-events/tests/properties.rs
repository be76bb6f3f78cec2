//! Properties of the event contract over generated input: every event survives encoding and
//! decoding unchanged, and no input, however malformed, makes decoding panic.

use proptest::prelude::*;
use shared_events::events::*;
use shared_events::timeline::parse_lookback;
use shared_events::{Envelope, SagaEvent};
use uuid::Uuid;

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

fn line() -> impl Strategy<Value = OrderLine> {
    (uuid(), any::<u32>(), any::<i64>()).prop_map(|(product_id, quantity, unit_price_cents)| {
        OrderLine {
            product_id,
            quantity,
            unit_price_cents,
        }
    })
}

fn lines() -> impl Strategy<Value = Vec<OrderLine>> {
    prop::collection::vec(line(), 0..5)
}

/// Any text, control characters and astral planes included.
fn text() -> impl Strategy<Value = String> {
    any::<String>()
}

fn saga_event() -> impl Strategy<Value = SagaEvent> {
    prop_oneof![
        (uuid(), uuid(), any::<i64>(), lines()).prop_map(
            |(order_id, customer_id, total_cents, items)| {
                SagaEvent::OrderCreated(OrderCreated {
                    order_id,
                    customer_id,
                    total_cents,
                    items,
                })
            }
        ),
        (uuid(), uuid(), uuid(), any::<i64>(), lines()).prop_map(
            |(order_id, customer_id, payment_id, amount_cents, items)| {
                SagaEvent::PaymentSucceeded(PaymentSucceeded {
                    order_id,
                    customer_id,
                    payment_id,
                    amount_cents,
                    items,
                })
            }
        ),
        (uuid(), uuid(), text()).prop_map(|(order_id, customer_id, reason)| {
            SagaEvent::PaymentFailed(PaymentFailed {
                order_id,
                customer_id,
                reason,
            })
        }),
        (uuid(), uuid(), uuid(), any::<i64>(), text()).prop_map(
            |(order_id, customer_id, payment_id, amount_cents, reason)| {
                SagaEvent::PaymentRefunded(PaymentRefunded {
                    order_id,
                    customer_id,
                    payment_id,
                    amount_cents,
                    reason,
                })
            }
        ),
        uuid().prop_map(|order_id| SagaEvent::InventoryReserved(InventoryReserved { order_id })),
        (uuid(), prop::option::of(uuid()), text()).prop_map(|(order_id, product_id, reason)| {
            SagaEvent::InventoryReservationFailed(InventoryReservationFailed {
                order_id,
                product_id,
                reason,
            })
        }),
        (uuid(), any::<i64>()).prop_map(|(order_id, total_cents)| {
            SagaEvent::OrderConfirmed(OrderConfirmed {
                order_id,
                total_cents,
            })
        }),
        (uuid(), any::<bool>(), text()).prop_map(|(order_id, payment, reason)| {
            let status = if payment {
                FailedStatus::FailedPayment
            } else {
                FailedStatus::FailedInventory
            };
            SagaEvent::OrderFailed(OrderFailed {
                order_id,
                status,
                reason,
            })
        }),
        (uuid(), text()).prop_map(|(order_id, reason)| {
            SagaEvent::OrderCancelled(OrderCancelled { order_id, reason })
        }),
        (
            uuid(),
            text(),
            text(),
            any::<i64>(),
            prop::option::of(text()),
            text()
        )
            .prop_map(|(product_id, sku, name, price_cents, category, value)| {
                let mut attributes = serde_json::Map::new();
                attributes.insert("a".to_owned(), serde_json::Value::from(value));
                SagaEvent::ProductUpserted(ProductUpserted {
                    product_id,
                    sku,
                    name,
                    price_cents,
                    category,
                    attributes: serde_json::Value::Object(attributes),
                })
            }),
    ]
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (saga_event(), uuid(), text()).prop_map(|(event, saga_id, source)| {
        // A saga event always carries its saga's ID; the catalog's does not.
        let saga_id = event.belongs_to_saga().then_some(saga_id);
        Envelope::new(&source, saga_id, event)
    })
}

/// Any JSON value, nested a few levels.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        text().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(text(), inner, 0..4)
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

fn failed(error: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(error.to_string())
}

proptest! {
    #[test]
    fn every_event_decodes_to_what_was_encoded(envelope in envelope()) {
        let bytes = envelope.encode().map_err(failed)?;
        let decoded = Envelope::decode(&bytes).map_err(failed)?;
        prop_assert_eq!(decoded, envelope);
    }

    #[test]
    fn decoding_any_bytes_fails_cleanly_or_succeeds(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let _ = Envelope::decode(&bytes);
    }

    /// A real envelope with one attribute, or its whole `data`, replaced by any JSON value:
    /// decoding refuses or accepts it, and never panics. What it accepts encodes again.
    #[test]
    fn a_damaged_envelope_is_refused_or_decoded_never_a_panic(
        envelope in envelope(),
        field in prop::sample::select(vec![
            "specversion", "type", "source", "id", "time", "sagaid", "dataversion",
            "datacontenttype", "data",
        ]),
        value in json(),
    ) {
        let mut record = serde_json::to_value(&envelope).map_err(failed)?;
        record[field] = value;
        let bytes = serde_json::to_vec(&record).map_err(failed)?;
        if let Ok(decoded) = Envelope::decode(&bytes) {
            prop_assert!(decoded.encode().is_ok());
        }
    }

    /// Any text is refused or taken, never a panic (a multi-byte last character once split
    /// inside itself); a number and a unit count that many of the unit.
    #[test]
    fn a_lookback_never_panics_and_counts_its_unit(
        text in any::<String>(),
        n in 0i64..1_000_000,
        unit in prop::sample::select(vec!['s', 'm', 'h', 'd']),
    ) {
        let _ = parse_lookback(&text);
        let seconds = n * match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => 86_400,
        };
        prop_assert_eq!(
            parse_lookback(&format!("{n}{unit}")),
            chrono::TimeDelta::try_seconds(seconds)
        );
    }
}
