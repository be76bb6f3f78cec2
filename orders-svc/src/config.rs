//! orders-svc's settings: the shared ones (`saga_runtime::config`) with these defaults.

use saga_runtime::config::ServiceDefaults;

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    service_name: "orders-svc",
    http_port: 8081,
    database_url: "postgres://orders_svc:orders_svc@127.0.0.1:5432/orders",
    // orders-svc takes the HTTP traffic, so it gets the largest share of the 20 connections.
    max_connections: 8,
};
