//! Topic names. Saga events are keyed by saga ID so that one saga's events stay in one
//! partition, in order; catalog events are keyed by product ID.

/// Produced by orders-svc: `OrderCreated`, `OrderConfirmed`, `OrderFailed`, `OrderCancelled`.
pub const ORDERS_EVENTS: &str = "orders.events";
/// Produced by payments-svc: `PaymentSucceeded`, `PaymentFailed`, `PaymentRefunded`.
pub const PAYMENTS_EVENTS: &str = "payments.events";
/// Produced by inventory-svc: `InventoryReserved`, `InventoryReservationFailed`.
pub const INVENTORY_EVENTS: &str = "inventory.events";
/// Produced by inventory-svc: `ProductUpserted`, keyed by product ID.
pub const INVENTORY_CATALOG: &str = "inventory.catalog";

/// The partitions of every topic: the one place that says how many. `deploy/stack` reads this
/// line when it creates the topics, and the tests create theirs with it.
///
/// It is also the most instances of one service that can do useful work: Kafka gives each
/// partition of a consumer group's topics to one member, so past this count an instance gets
/// none and only serves HTTP. Raising it later means adding partitions to existing topics,
/// which moves keys (sagas) to other partitions while they run: do it with the system quiet.
pub const PARTITIONS: i32 = 6;

/// Every topic the system uses, for the deploy script's and the tests' topic creation.
pub const ALL: [&str; 4] = [
    ORDERS_EVENTS,
    PAYMENTS_EVENTS,
    INVENTORY_EVENTS,
    INVENTORY_CATALOG,
];

/// Each topic's dead-letter topic, where consumers put records they cannot decode.
pub const DEAD_LETTER: [&str; 4] = [
    "orders.events.dlq",
    "payments.events.dlq",
    "inventory.events.dlq",
    "inventory.catalog.dlq",
];

/// The dead-letter topic of `topic` (logical or prefixed).
pub fn dead_letter(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// The prefix of the environment variables passed through to librdkafka by every Kafka
/// client of this system, the services' and the `saga` CLI's alike. This is how SASL/SCRAM
/// and TLS are turned on: `KAFKA_CLIENT_SECURITY_PROTOCOL=SASL_SSL` sets `security.protocol`.
pub const CLIENT_PROPERTY_PREFIX: &str = "KAFKA_CLIENT_";

/// `KAFKA_CLIENT_SASL_MECHANISM` → `sasl.mechanism`: librdkafka's property names are lower
/// case with dots. `None` for a variable without the prefix or with nothing after it.
pub fn client_property(variable: &str) -> Option<String> {
    let name = variable.strip_prefix(CLIENT_PROPERTY_PREFIX)?;
    (!name.is_empty()).then(|| name.to_ascii_lowercase().replace('_', "."))
}

/// The librdkafka properties `variables` (e.g. `std::env::vars()`) pass through, sorted.
pub fn client_properties(
    variables: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut properties: Vec<(String, String)> = variables
        .into_iter()
        .filter_map(|(variable, value)| Some((client_property(&variable)?, value)))
        .collect();
    properties.sort();
    properties
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_topic_has_its_dead_letter_topic() {
        let named: Vec<String> = ALL.iter().map(|t| dead_letter(t)).collect();
        assert_eq!(named, DEAD_LETTER);
        assert_eq!(
            dead_letter("e2e-1.orders.events"),
            "e2e-1.orders.events.dlq"
        );
    }

    #[test]
    fn client_variables_name_librdkafka_properties() {
        assert_eq!(
            client_property("KAFKA_CLIENT_SECURITY_PROTOCOL").as_deref(),
            Some("security.protocol")
        );
        assert_eq!(
            client_property("KAFKA_CLIENT_SSL_CA_LOCATION").as_deref(),
            Some("ssl.ca.location")
        );
        assert_eq!(client_property("KAFKA_CLIENT_"), None);
        assert_eq!(client_property("KAFKA_BROKERS"), None);
        let variables = [
            ("KAFKA_CLIENT_SASL_MECHANISM", "SCRAM-SHA-512"),
            ("PATH", "/usr/bin"),
            ("KAFKA_CLIENT_SECURITY_PROTOCOL", "SASL_SSL"),
        ]
        .map(|(variable, value)| (variable.to_owned(), value.to_owned()));
        assert_eq!(
            client_properties(variables),
            [
                ("sasl.mechanism".to_owned(), "SCRAM-SHA-512".to_owned()),
                ("security.protocol".to_owned(), "SASL_SSL".to_owned()),
            ]
        );
    }
}
