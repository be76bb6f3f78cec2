//! The CloudEvents 1.0 envelope (structured mode) that is every saga record's value, and the
//! Kafka headers that repeat its routing attributes so tools can filter without parsing JSON.

use chrono::{DateTime, Utc};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use uuid::Uuid;

use crate::events::SagaEvent;

/// The only CloudEvents version this contract speaks.
pub const SPEC_VERSION: &str = "1.0";
/// The payload schema's major version; consumers reject any other as undecodable.
pub const DATA_VERSION: u32 = 1;
/// `datacontenttype` of every event: the payload is JSON.
pub const DATA_CONTENT_TYPE: &str = "application/json";

/// Kafka header names carried on every record.
pub mod headers {
    /// `application/cloudevents+json`: the value is a structured-mode CloudEvent.
    pub const CONTENT_TYPE: &str = "content-type";
    pub const CONTENT_TYPE_VALUE: &str = "application/cloudevents+json";
    /// The CloudEvents `type`, e.g. `OrderCreated`.
    pub const EVENT_TYPE: &str = "event_type";
    /// The saga this event belongs to; absent on catalog events.
    pub const SAGA_ID: &str = "saga_id";
    /// W3C trace context of the transaction that wrote the event, when a trace was active.
    pub const TRACEPARENT: &str = "traceparent";

    /// On a dead-lettered record: why the consumer could not read it.
    pub const DLQ_REASON: &str = "dlq_reason";
    /// On a dead-lettered record: where it was consumed from, so it can be redriven there.
    pub const DLQ_ORIGINAL_TOPIC: &str = "dlq_original_topic";
    pub const DLQ_ORIGINAL_PARTITION: &str = "dlq_original_partition";
    pub const DLQ_ORIGINAL_OFFSET: &str = "dlq_original_offset";
}

/// A CloudEvent in structured mode. `type` and `data` come from the flattened [`SagaEvent`].
/// It serializes its context attributes first and `data` last (see the `Serialize` impl).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Envelope {
    pub specversion: String,
    /// A UUID v7, so event IDs sort by creation time.
    pub id: Uuid,
    /// The producing service, e.g. `orders-svc`.
    pub source: String,
    pub time: DateTime<Utc>,
    pub datacontenttype: String,
    /// Extension attribute: the saga this event belongs to. Catalog events have none.
    #[serde(default)]
    pub sagaid: Option<Uuid>,
    /// Extension attribute: the payload's schema major version, [`DATA_VERSION`].
    pub dataversion: u32,
    #[serde(flatten)]
    pub event: SagaEvent,
}

/// Written by hand for the order of the keys: the context attributes first, in the order of
/// the CloudEvents spec's own examples, and `data` last. Someone watching a topic with
/// `kafka-console-consumer` or `kcat` then sees each record's type, saga and time at the start
/// of its line instead of after the whole payload. The outbox stores this text as it is (a
/// `json` column, not `jsonb`, which would reorder the keys), so it is also what Kafka carries.
impl Serialize for Envelope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("specversion", &self.specversion)?;
        map.serialize_entry("type", self.event_type())?;
        map.serialize_entry("source", &self.source)?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("time", &self.time)?;
        if let Some(saga_id) = &self.sagaid {
            map.serialize_entry("sagaid", saga_id)?;
        }
        map.serialize_entry("dataversion", &self.dataversion)?;
        map.serialize_entry("datacontenttype", &self.datacontenttype)?;
        map.serialize_entry("data", &EventData(&self.event))?;
        map.end()
    }
}

/// The payload of a [`SagaEvent`] without its tag: the envelope's `data`.
struct EventData<'a>(&'a SagaEvent);

impl Serialize for EventData<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            SagaEvent::OrderCreated(data) => data.serialize(serializer),
            SagaEvent::PaymentSucceeded(data) => data.serialize(serializer),
            SagaEvent::PaymentFailed(data) => data.serialize(serializer),
            SagaEvent::PaymentRefunded(data) => data.serialize(serializer),
            SagaEvent::InventoryReserved(data) => data.serialize(serializer),
            SagaEvent::InventoryReservationFailed(data) => data.serialize(serializer),
            SagaEvent::OrderConfirmed(data) => data.serialize(serializer),
            SagaEvent::OrderFailed(data) => data.serialize(serializer),
            SagaEvent::OrderCancelled(data) => data.serialize(serializer),
            SagaEvent::ProductUpserted(data) => data.serialize(serializer),
        }
    }
}

/// Why a record's value is not an event this contract understands.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("value is not a CloudEvent of a known type: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("specversion {0:?} is not supported")]
    SpecVersion(String),
    #[error("dataversion {0} is not supported, expected {DATA_VERSION}")]
    DataVersion(u32),
    #[error("{0} is a saga event but carries no sagaid")]
    MissingSagaId(&'static str),
}

impl Envelope {
    /// The saga this event belongs to. [`Envelope::decode`] refuses a saga event without
    /// one, so for a decoded saga event this is always `Ok`.
    pub fn saga_id(&self) -> Result<Uuid, DecodeError> {
        self.sagaid
            .ok_or(DecodeError::MissingSagaId(self.event_type()))
    }

    /// Wraps a saga event produced now by `source`.
    pub fn new(source: &str, saga_id: Option<Uuid>, event: SagaEvent) -> Self {
        Self {
            specversion: SPEC_VERSION.to_owned(),
            id: Uuid::now_v7(),
            source: source.to_owned(),
            time: Utc::now(),
            datacontenttype: DATA_CONTENT_TYPE.to_owned(),
            sagaid: saga_id,
            dataversion: DATA_VERSION,
            event,
        }
    }

    /// The Kafka record key: the saga ID, or for catalog events the product ID.
    pub fn key(&self) -> String {
        match (&self.event, self.sagaid) {
            (SagaEvent::ProductUpserted(p), _) => p.product_id.to_string(),
            (_, Some(saga_id)) => saga_id.to_string(),
            (_, None) => self.id.to_string(),
        }
    }

    pub fn event_type(&self) -> &'static str {
        self.event.event_type()
    }

    pub fn topic(&self) -> &'static str {
        self.event.topic()
    }

    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Parses a record value and checks the versions this consumer understands.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let envelope: Envelope = serde_json::from_slice(bytes)?;
        if envelope.specversion != SPEC_VERSION {
            return Err(DecodeError::SpecVersion(envelope.specversion));
        }
        if envelope.dataversion != DATA_VERSION {
            return Err(DecodeError::DataVersion(envelope.dataversion));
        }
        if envelope.event.belongs_to_saga() && envelope.sagaid.is_none() {
            return Err(DecodeError::MissingSagaId(envelope.event_type()));
        }
        Ok(envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{InventoryReserved, ProductUpserted};

    fn reserved() -> Envelope {
        Envelope::new(
            "inventory-svc",
            Some(Uuid::now_v7()),
            SagaEvent::InventoryReserved(InventoryReserved {
                order_id: Uuid::now_v7(),
            }),
        )
    }

    #[test]
    fn envelope_round_trips_as_structured_cloudevent() -> Result<(), Box<dyn std::error::Error>> {
        let envelope = reserved();
        let json: serde_json::Value = serde_json::from_slice(&envelope.encode()?)?;
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], "InventoryReserved");
        assert_eq!(json["datacontenttype"], "application/json");
        assert_eq!(
            json["sagaid"],
            envelope.sagaid.map(|id| id.to_string()).unwrap_or_default()
        );
        assert!(json["data"]["order_id"].is_string());
        assert_eq!(Envelope::decode(&envelope.encode()?)?, envelope);
        Ok(())
    }

    /// The keys of the encoded record, in the order they are written.
    fn keys_in_order(bytes: &[u8]) -> Result<Vec<String>, serde_json::Error> {
        // A map that keeps insertion order would need serde_json's `preserve_order` feature
        // in every crate of the workspace; reading the keys as a stream of entries does not.
        struct Keys(Vec<String>);
        impl<'de> Deserialize<'de> for Keys {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Visit;
                impl<'de> serde::de::Visitor<'de> for Visit {
                    type Value = Keys;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("an object")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<Keys, A::Error> {
                        let mut keys = Vec::new();
                        while let Some((key, _)) =
                            map.next_entry::<String, serde::de::IgnoredAny>()?
                        {
                            keys.push(key);
                        }
                        Ok(Keys(keys))
                    }
                }
                d.deserialize_map(Visit)
            }
        }
        Ok(serde_json::from_slice::<Keys>(bytes)?.0)
    }

    #[test]
    fn context_attributes_come_before_data() -> Result<(), Box<dyn std::error::Error>> {
        assert_eq!(
            keys_in_order(&reserved().encode()?)?,
            [
                "specversion",
                "type",
                "source",
                "id",
                "time",
                "sagaid",
                "dataversion",
                "datacontenttype",
                "data"
            ]
        );
        let encoded = String::from_utf8(reserved().encode()?)?;
        assert!(
            encoded.starts_with(
                r#"{"specversion":"1.0","type":"InventoryReserved","source":"inventory-svc","#
            ),
            "{encoded}"
        );
        Ok(())
    }

    #[test]
    fn events_round_trip_with_their_data() -> Result<(), Box<dyn std::error::Error>> {
        let order_id = Uuid::now_v7();
        let events = [
            SagaEvent::OrderCreated(crate::events::OrderCreated {
                order_id,
                customer_id: Uuid::now_v7(),
                total_cents: 1200,
                items: vec![crate::events::OrderLine {
                    product_id: Uuid::now_v7(),
                    quantity: 2,
                    unit_price_cents: 600,
                }],
            }),
            SagaEvent::InventoryReserved(InventoryReserved { order_id }),
            SagaEvent::OrderFailed(crate::events::OrderFailed {
                order_id,
                status: crate::events::FailedStatus::FailedInventory,
                reason: "short".into(),
            }),
        ];
        for event in events {
            let envelope = Envelope::new("orders-svc", Some(Uuid::now_v7()), event);
            assert_eq!(Envelope::decode(&envelope.encode()?)?, envelope);
        }
        Ok(())
    }

    #[test]
    fn unknown_payload_fields_are_ignored_for_forward_compatibility()
    -> Result<(), Box<dyn std::error::Error>> {
        let mut json = serde_json::to_value(reserved())?;
        json["data"]["added_in_a_later_minor_version"] = serde_json::json!(42);
        json["someextension"] = serde_json::json!("x");
        assert!(Envelope::decode(&serde_json::to_vec(&json)?).is_ok());
        Ok(())
    }

    #[test]
    fn unknown_type_missing_data_and_wrong_versions_are_rejected()
    -> Result<(), Box<dyn std::error::Error>> {
        let good = serde_json::to_value(reserved())?;
        let mut unknown_type = good.clone();
        unknown_type["type"] = serde_json::json!("OrderTeleported");
        let mut missing_data = good.clone();
        missing_data.as_object_mut().map(|o| o.remove("data"));
        let mut wrong_data_version = good.clone();
        wrong_data_version["dataversion"] = serde_json::json!(2);
        let mut wrong_spec = good.clone();
        wrong_spec["specversion"] = serde_json::json!("0.3");
        let mut no_saga = good;
        no_saga.as_object_mut().map(|o| o.remove("sagaid"));
        for bad in [
            unknown_type,
            missing_data,
            wrong_data_version,
            wrong_spec,
            no_saga,
        ] {
            assert!(
                Envelope::decode(&serde_json::to_vec(&bad)?).is_err(),
                "{bad}"
            );
        }
        assert!(Envelope::decode(b"{not json").is_err());
        Ok(())
    }

    #[test]
    fn an_envelope_answers_its_saga_type_and_topic() -> Result<(), DecodeError> {
        let envelope = reserved();
        assert_eq!(Some(envelope.saga_id()?), envelope.sagaid);
        assert_eq!(envelope.event_type(), "InventoryReserved");
        assert_eq!(envelope.topic(), crate::topics::INVENTORY_EVENTS);
        let orphan = Envelope {
            sagaid: None,
            ..reserved()
        };
        assert!(matches!(
            orphan.saga_id(),
            Err(DecodeError::MissingSagaId("InventoryReserved"))
        ));
        Ok(())
    }

    #[test]
    fn catalog_events_are_keyed_by_product() {
        let product_id = Uuid::now_v7();
        let envelope = Envelope::new(
            "inventory-svc",
            None,
            SagaEvent::ProductUpserted(ProductUpserted {
                product_id,
                sku: "SKU-1".into(),
                name: "Widget".into(),
                price_cents: 100,
                category: None,
                attributes: serde_json::json!({}),
            }),
        );
        assert_eq!(envelope.key(), product_id.to_string());
        assert_eq!(envelope.topic(), crate::topics::INVENTORY_CATALOG);
    }
}
