//! inventory-svc's settings: the shared ones (`saga_runtime::config`) with these defaults.

use saga_runtime::config::ServiceDefaults;

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    service_name: "inventory-svc",
    http_port: 8083,
    database_url: "postgres://inventory_svc:inventory_svc@127.0.0.1:5432/inventory",
    max_connections: 6,
};
