//! The event contract between the saga's three services, and nothing else: no I/O lives here.
//!
//! - [`topics`]: the Kafka topic names and who produces to each.
//! - [`events`]: the payload of every event, one struct per event type, and [`SagaEvent`],
//!   the closed set of them.
//! - [`envelope`]: the CloudEvents 1.0 structured-mode envelope every record's value carries,
//!   and the Kafka header names that travel beside it.
//! - [`contract`]: the contract as documents, JSON Schemas and AsyncAPI, generated from these
//!   types and checked in under `contract/`.
//! - [`timeline`]: one saga's events in order with their hops and outcomes, as the `saga`
//!   CLI and orders-svc's saga view show it.
//!
//! Versioning rule: payload structs accept unknown fields and every field added after version 1
//! is `Option` or `#[serde(default)]`, so an older consumer keeps reading a newer producer's
//! events. A breaking change bumps [`envelope::DATA_VERSION`], which older consumers reject.

pub mod contract;
pub mod envelope;
pub mod events;
pub mod timeline;
pub mod topics;

pub use envelope::{DecodeError, Envelope};
pub use events::*;
pub use timeline::{Outcome, Step, Timeline};
