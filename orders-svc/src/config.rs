//! orders-svc's settings: the shared ones (`saga_runtime::config`) with these defaults.

use std::time::Duration;

use saga_runtime::config::{ConfigError, ServiceDefaults, millis};

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    service_name: "orders-svc",
    http_port: 8081,
    database_url: "postgres://orders_svc:orders_svc@127.0.0.1:5432/orders",
    // orders-svc takes the HTTP traffic, so it gets the largest share of the 20 connections.
    max_connections: 8,
};

/// The saga deadline: orders-svc cancels an order that is not terminal this long after it was
/// placed, measured by the database's clock.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineSettings {
    /// `SAGA_DEADLINE_MS`, default 30 s.
    pub deadline: Duration,
    /// `SAGA_DEADLINE_SCAN_INTERVAL_MS`, default 1 s: how often expired orders are looked for.
    pub scan_interval: Duration,
}

impl DeadlineSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            deadline: millis("SAGA_DEADLINE_MS", Duration::from_secs(30))?,
            scan_interval: millis("SAGA_DEADLINE_SCAN_INTERVAL_MS", Duration::from_secs(1))?,
        })
    }
}
