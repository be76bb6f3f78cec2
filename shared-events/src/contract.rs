//! The event contract as documents, generated from the types of this crate so that they
//! cannot drift from what the services send:
//!
//! - `contract/schemas/<EventType>.json`: a JSON Schema (draft 7) of each event's record
//!   value, the CloudEvents envelope with that event's `data`;
//! - `contract/asyncapi.json`: an AsyncAPI 3.0 document of the topics, who sends and who
//!   receives on each, the records' keys and headers, and every message with an example.
//!
//! They are checked into `shared-events/contract/`, and `tests/contract.rs` fails when they
//! are stale (`UPDATE_CONTRACT=1 cargo test -p shared-events --test contract -- checked_in` rewrites them)
//! or when an example does not satisfy its schema.

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::envelope::{DATA_CONTENT_TYPE, DATA_VERSION, SPEC_VERSION, headers};
use crate::events::*;
use crate::{Envelope, topics};

/// One generated document: its path under `shared-events/contract/`, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub path: String,
    pub text: String,
}

/// Which service sends on each topic, and which receive from it.
const TOPICS: [(&str, &str, &[&str]); 4] = [
    (
        topics::ORDERS_EVENTS,
        "orders-svc",
        &["payments-svc", "inventory-svc"],
    ),
    (
        topics::PAYMENTS_EVENTS,
        "payments-svc",
        &["inventory-svc", "orders-svc"],
    ),
    (
        topics::INVENTORY_EVENTS,
        "inventory-svc",
        &["payments-svc", "orders-svc"],
    ),
    (topics::INVENTORY_CATALOG, "inventory-svc", &["orders-svc"]),
];

/// Every document of the contract, in a fixed order.
pub fn documents() -> Vec<Document> {
    let mut documents: Vec<Document> = examples()
        .iter()
        .map(|event| Document {
            path: format!("schemas/{}.json", event.event_type()),
            text: pretty(&record_schema(event)),
        })
        .collect();
    documents.push(Document {
        path: "asyncapi.json".to_owned(),
        text: pretty(&asyncapi()),
    });
    documents
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// The draft-7 schema of one payload type, with its own definitions.
fn payload_schema<T: JsonSchema>() -> Value {
    let schema = SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<T>();
    serde_json::to_value(schema).unwrap_or_default()
}

fn payload_schema_of(event: &SagaEvent) -> Value {
    match event {
        SagaEvent::OrderCreated(_) => payload_schema::<OrderCreated>(),
        SagaEvent::PaymentSucceeded(_) => payload_schema::<PaymentSucceeded>(),
        SagaEvent::PaymentFailed(_) => payload_schema::<PaymentFailed>(),
        SagaEvent::PaymentRefunded(_) => payload_schema::<PaymentRefunded>(),
        SagaEvent::InventoryReserved(_) => payload_schema::<InventoryReserved>(),
        SagaEvent::InventoryReservationFailed(_) => payload_schema::<InventoryReservationFailed>(),
        SagaEvent::OrderConfirmed(_) => payload_schema::<OrderConfirmed>(),
        SagaEvent::OrderFailed(_) => payload_schema::<OrderFailed>(),
        SagaEvent::OrderCancelled(_) => payload_schema::<OrderCancelled>(),
        SagaEvent::ProductUpserted(_) => payload_schema::<ProductUpserted>(),
    }
}

/// The schema of a whole record value of `event`'s type: the envelope's context attributes,
/// and `data` as the payload type's schema (whose definitions move up beside it).
pub fn record_schema(event: &SagaEvent) -> Value {
    let event_type = event.event_type();
    let mut data = payload_schema_of(event);
    let definitions = data
        .as_object_mut()
        .and_then(|schema| schema.remove("definitions"))
        .unwrap_or_else(|| json!({}));
    if let Some(schema) = data.as_object_mut() {
        schema.remove("$schema");
    }
    let mut required = vec![
        "specversion",
        "type",
        "source",
        "id",
        "time",
        "dataversion",
        "datacontenttype",
        "data",
    ];
    if event.belongs_to_saga() {
        required.insert(5, "sagaid");
    }
    let mut all_definitions = Map::new();
    if let Value::Object(lifted) = definitions {
        all_definitions.extend(lifted);
    }
    all_definitions.insert(event_type.to_owned(), data);
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": format!("https://saga.example/contract/schemas/{event_type}.json"),
        "title": event_type,
        "description": format!(
            "A `{event_type}` record's value on `{}`: a CloudEvents 1.0 event in structured \
             mode. Consumers accept unknown fields; see the versioning rule in the README.",
            event.topic()
        ),
        "type": "object",
        "required": required,
        "properties": {
            "specversion": {"const": SPEC_VERSION},
            "type": {"const": event_type},
            "source": {"type": "string", "description": "The producing service, e.g. `orders-svc`."},
            "id": {"type": "string", "format": "uuid", "description": "A UUID v7: event IDs sort by creation time. Consumers deduplicate by it."},
            "time": {"type": "string", "format": "date-time"},
            "sagaid": {"type": "string", "format": "uuid", "description": "The saga the event belongs to; also the record's key."},
            "dataversion": {"const": DATA_VERSION, "description": "The payload's major version; a consumer dead-letters a version it does not know."},
            "datacontenttype": {"const": DATA_CONTENT_TYPE},
            "data": {"$ref": format!("#/definitions/{event_type}")},
        },
        "definitions": all_definitions,
    })
}

/// The AsyncAPI 3.0 document.
pub fn asyncapi() -> Value {
    let events = examples();
    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();
    for (topic, sender, receivers) in TOPICS {
        let on_topic: Vec<&SagaEvent> = events.iter().filter(|e| e.topic() == topic).collect();
        let refs: Map<String, Value> = on_topic
            .iter()
            .map(|e| {
                let name = e.event_type();
                (
                    name.to_owned(),
                    json!({"$ref": format!("#/components/messages/{name}")}),
                )
            })
            .collect();
        let keyed_by = if topic == topics::INVENTORY_CATALOG {
            "the product ID"
        } else {
            "the saga ID, so one saga's events share a partition and keep their order"
        };
        channels.insert(
            topic.to_owned(),
            json!({
                "address": topic,
                "description": format!(
                    "Sent by {sender}; keyed by {keyed_by}; {} partitions. A record a consumer \
                     cannot decode goes to `{}` with `dlq_*` headers.",
                    topics::PARTITIONS,
                    topics::dead_letter(topic)
                ),
                "messages": refs,
            }),
        );
        let channel_ref = json!({"$ref": format!("#/channels/{}", escape_pointer(topic))});
        let message_refs: Vec<Value> = on_topic
            .iter()
            .map(|e| {
                json!({"$ref": format!(
                    "#/channels/{}/messages/{}",
                    escape_pointer(topic),
                    e.event_type()
                )})
            })
            .collect();
        operations.insert(
            format!("{sender} sends on {topic}"),
            json!({
                "action": "send",
                "channel": channel_ref,
                "summary": format!("{sender} publishes from its transactional outbox."),
                "messages": message_refs,
            }),
        );
        for receiver in receivers {
            operations.insert(
                format!("{receiver} receives from {topic}"),
                json!({
                    "action": "receive",
                    "channel": channel_ref,
                    "summary": format!(
                        "{receiver}'s consumer group; each event is applied once (inbox)."
                    ),
                    "messages": message_refs,
                }),
            );
        }
        for event in on_topic {
            messages.insert(event.event_type().to_owned(), message(event));
        }
    }
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Saga events",
            "version": DATA_VERSION.to_string(),
            "description": "The events the three services of the order saga exchange over Kafka. \
                Every record's value is a CloudEvents 1.0 event in structured mode, its key is \
                the saga ID (the product ID on the catalog topic), and its headers repeat the \
                routing attributes. Generated from `shared-events` (`contract.rs`).",
        },
        "defaultContentType": headers::CONTENT_TYPE_VALUE,
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": {
                "Headers": record_headers(),
            },
        },
    })
}

/// `orders.events` as a JSON pointer segment (`/` and `~` escaped; dots are fine).
fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn message(event: &SagaEvent) -> Value {
    let name = event.event_type();
    let saga_event = event.belongs_to_saga();
    let example = Envelope {
        specversion: SPEC_VERSION.to_owned(),
        id: uuid::Uuid::from_u128(0x0193_5c3e_8f00_7000_8000_0000_0000_0100),
        source: producer(event).to_owned(),
        time: chrono::DateTime::from_timestamp(1_764_000_000, 0).unwrap_or_default(),
        datacontenttype: DATA_CONTENT_TYPE.to_owned(),
        sagaid: saga_event
            .then(|| uuid::Uuid::from_u128(0x0193_5c3e_8f00_7000_8000_0000_0000_0200)),
        dataversion: DATA_VERSION,
        event: event.clone(),
    };
    let mut example_headers = json!({
        headers::CONTENT_TYPE: headers::CONTENT_TYPE_VALUE,
        headers::EVENT_TYPE: name,
    });
    if let Some(saga_id) = example.sagaid {
        example_headers[headers::SAGA_ID] = json!(saga_id.to_string());
    }
    json!({
        "name": name,
        "title": name,
        "summary": if event.is_compensation() {
            format!("{name}: a compensation, undoing an earlier step of its saga.")
        } else {
            format!("{name}, sent by {}.", producer(event))
        },
        "contentType": headers::CONTENT_TYPE_VALUE,
        "headers": {"$ref": "#/components/schemas/Headers"},
        "payload": {
            "schemaFormat": "application/schema+json;version=draft-07",
            "schema": {"$ref": format!("schemas/{name}.json")},
        },
        "bindings": {
            "kafka": {
                "key": {
                    "type": "string",
                    "format": "uuid",
                    "description": if saga_event { "The saga ID." } else { "The product ID." },
                },
                "bindingVersion": "0.5.0",
            }
        },
        "examples": [{
            "name": format!("{name} example"),
            "headers": example_headers,
            "payload": serde_json::to_value(&example).unwrap_or_default(),
        }],
    })
}

/// The service that sends `event`: the one that produces to its topic.
fn producer(event: &SagaEvent) -> &'static str {
    TOPICS
        .iter()
        .find(|(topic, _, _)| *topic == event.topic())
        .map_or("unknown", |(_, sender, _)| *sender)
}

/// The Kafka headers every record carries.
fn record_headers() -> Value {
    json!({
        "type": "object",
        "required": [headers::CONTENT_TYPE, headers::EVENT_TYPE],
        "properties": {
            headers::CONTENT_TYPE: {"const": headers::CONTENT_TYPE_VALUE},
            headers::EVENT_TYPE: {"type": "string", "description": "The CloudEvents `type`, e.g. `OrderCreated`: filter without parsing the value."},
            headers::SAGA_ID: {"type": "string", "format": "uuid", "description": "The saga; absent on catalog events."},
            headers::TRACEPARENT: {"type": "string", "description": "W3C trace context of the transaction that wrote the event, when it was traced."},
            headers::DLQ_REASON: {"type": "string", "description": "Only on a dead letter: why it could not be read."},
            headers::DLQ_ORIGINAL_TOPIC: {"type": "string", "description": "Only on a dead letter: where it was read from."},
            headers::DLQ_ORIGINAL_PARTITION: {"type": "string"},
            headers::DLQ_ORIGINAL_OFFSET: {"type": "string"},
        },
    })
}
