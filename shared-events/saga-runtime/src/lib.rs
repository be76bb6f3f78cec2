//! Plumbing that the three saga services share, written once. In reading order:
//!
//! - [`config`]: settings from environment variables, each with a documented default.
//! - [`telemetry`]: `tracing` subscriber, OpenTelemetry tracer and W3C trace-context helpers.
//! - [`db`]: the PostgreSQL pool with its timeouts.
//! - [`unit_of_work`]: the one place that begins, fills and commits a transaction: a
//!   consumed event's (inbox → handler → outbox) and an HTTP command's (command → outbox).
//! - [`outbox`]: writing an event in the caller's transaction, and the signal that wakes the relay.
//! - [`relay`]: publishes outbox rows to Kafka and deletes them once delivered.
//! - [`inbox`]: records a consumed event in the caller's transaction, at most once.
//! - [`consumer`]: the Kafka consumer loop that hands events to a service's [`consumer::EventHandler`],
//!   with dead-lettering of undecodable records and retries.
//! - [`parking`]: events that keep failing, kept for an operator to retry.
//! - [`saga_view`]: the read model of a service's saga events (orders-svc's timelines).
//! - [`retention`]: how long the inbox remembers, checked against the topics' retention, and
//!   the job that deletes older rows.
//! - [`backoff`]: the bounded exponential backoff of every retry loop.
//! - [`fault`]: fault hooks for the failure-injection suite; empty without the
//!   `fault-injection` feature.
//! - [`metrics`]: counters and gauges for `GET /metrics`.
//! - [`kafka`]: librdkafka client configuration shared by producer and consumer.
//! - [`producer`]: the producer, with the thread that serves its delivery reports.
//! - [`http`]: the one JSON error shape, the JSON extractor, `/health`, and serving with shutdown.
//! - [`service`]: [`service::Infrastructure`] (pool, producer, signal) and [`service::run`].

pub mod auth;
pub mod backoff;
pub mod config;
pub mod consumer;
pub mod db;
pub mod fault;
pub mod group_commit;
pub mod health;
pub mod http;
pub mod idempotency;
pub mod inbox;
pub mod kafka;
pub mod listener;
pub mod metrics;
pub mod outbox;
pub mod parking;
pub mod producer;
pub mod relay;
pub mod retention;
pub mod saga_view;
pub mod service;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod unit_of_work;
