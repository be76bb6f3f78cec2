//! payments-svc's settings: the shared ones (`saga_runtime::config`) with these defaults.

use saga_runtime::config::ServiceDefaults;

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    service_name: "payments-svc",
    http_port: 8082,
    database_url: "postgres://payments_svc:payments_svc@127.0.0.1:5432/payments",
    max_connections: 6,
};
