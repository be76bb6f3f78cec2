//! The checked-in event contract (`shared-events/contract/`) is what the types generate, and
//! the services' records satisfy it. `UPDATE_CONTRACT=1 cargo test -p shared-events --test
//! contract -- checked_in` rewrites the documents after a change to the events (that test
//! alone: the others read the files it writes).

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;
use shared_events::contract::{self, Document};
use shared_events::{Envelope, SagaEvent};
use strum::VariantNames;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn contract_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("contract")
}

#[test]
fn the_checked_in_documents_are_what_the_types_generate() -> TestResult {
    let documents = contract::documents();
    if std::env::var_os("UPDATE_CONTRACT").is_some() {
        for Document { path, text } in &documents {
            let file = contract_dir().join(path);
            if let Some(folder) = file.parent() {
                std::fs::create_dir_all(folder)?;
            }
            std::fs::write(file, text)?;
        }
    }
    let mut stale = Vec::new();
    for Document { path, text } in &documents {
        let on_disk = std::fs::read_to_string(contract_dir().join(path)).unwrap_or_default();
        if on_disk != *text {
            stale.push(path.clone());
        }
    }
    let generated: BTreeSet<String> = documents.iter().map(|d| d.path.clone()).collect();
    for entry in std::fs::read_dir(contract_dir().join("schemas"))? {
        let name = format!("schemas/{}", entry?.file_name().to_string_lossy());
        if !generated.contains(&name) {
            stale.push(format!("{name} (no event has this schema any more)"));
        }
    }
    assert!(
        stale.is_empty(),
        "stale event contract: {stale:?}; run `UPDATE_CONTRACT=1 cargo test -p shared-events \
         --test contract -- checked_in` and commit shared-events/contract/"
    );
    Ok(())
}

#[test]
fn every_event_type_has_a_schema_and_a_message() -> TestResult {
    let asyncapi = contract::asyncapi();
    assert_eq!(asyncapi["asyncapi"], "3.0.0");
    let messages: BTreeSet<&str> = asyncapi["components"]["messages"]
        .as_object()
        .ok_or("no messages")?
        .keys()
        .map(String::as_str)
        .collect();
    let declared: BTreeSet<&str> = SagaEvent::VARIANTS.iter().copied().collect();
    assert_eq!(messages, declared);
    for name in declared {
        assert!(
            contract_dir().join(format!("schemas/{name}.json")).exists(),
            "{name}"
        );
    }
    // Every internal reference points at something.
    let mut refs = Vec::new();
    collect_refs(&asyncapi, &mut refs);
    for reference in refs {
        if let Some(pointer) = reference.strip_prefix('#') {
            let pointer = pointer.replace("%20", " ");
            assert!(asyncapi.pointer(&pointer).is_some(), "dangling {reference}");
        } else {
            assert!(
                contract_dir().join(&reference).exists(),
                "no file {reference}"
            );
        }
    }
    Ok(())
}

fn collect_refs(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(reference)) => into.push(reference.clone()),
                    _ => collect_refs(value, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, into)),
        _ => {}
    }
}

/// Each event, encoded as a service encodes it, satisfies its schema; and the schema is not
/// vacuous: the same record without `data`, or with a wrong `type`, does not.
#[test]
fn every_record_a_service_sends_satisfies_its_schema() -> TestResult {
    for event in shared_events::examples() {
        let saga_id = event.belongs_to_saga().then(uuid::Uuid::now_v7);
        let record: Value =
            serde_json::from_slice(&Envelope::new("orders-svc", saga_id, event.clone()).encode()?)?;
        let schema = contract::record_schema(&event);
        let validator = jsonschema::draft7::new(&schema)
            .map_err(|e| format!("{}: not a schema: {e}", event.event_type()))?;
        let errors: Vec<String> = validator
            .iter_errors(&record)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{}: {errors:?}\n{record}",
            event.event_type()
        );

        let mut without_data = record.clone();
        without_data.as_object_mut().map(|r| r.remove("data"));
        assert!(!validator.is_valid(&without_data), "{}", event.event_type());
        let mut retyped = record.clone();
        retyped["type"] = Value::from("SomethingElse");
        assert!(!validator.is_valid(&retyped), "{}", event.event_type());
    }
    Ok(())
}
