//! Test support (feature `testing`): throwaway PostgreSQL databases and Kafka topics on the
//! real servers that `deploy/stack test` starts. Nothing here is faked.
//!
//! Reads `TEST_PG_HOST`, `TEST_PG_PORT` (default 127.0.0.1:5432) and `TEST_KAFKA_BROKERS`
//! (default 127.0.0.1:9092). When each service's database has a server of its own
//! (`STACK_PG_PER_SERVICE=1`), `TEST_PG_PORT_ORDERS`, `_PAYMENTS` and `_INVENTORY` give their
//! ports. Databases are named `<service db>_it_<random>` or `_e2e_`, and `deploy/stack test`
//! drops those left by earlier runs.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbErr};
use uuid::Uuid;

use crate::config::{DatabaseSettings, KafkaSettings};

pub fn pg_host() -> String {
    std::env::var("TEST_PG_HOST").unwrap_or_else(|_| "127.0.0.1".to_owned())
}

fn port_from_env(variable: &str) -> Option<u16> {
    std::env::var(variable).ok().and_then(|p| p.parse().ok())
}

/// The port of the server that holds the service database `home` (`orders`, `payments` or
/// `inventory`).
pub fn pg_port_of(home: &str) -> u16 {
    port_from_env(&format!("TEST_PG_PORT_{}", home.to_uppercase()))
        .or_else(|| port_from_env("TEST_PG_PORT"))
        .unwrap_or(5432)
}

pub fn kafka_brokers() -> String {
    std::env::var("TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// The URL of database `database` on the server at `port`, for `role`, whose development
/// password is its own name.
pub fn database_url(port: u16, role: &str, database: &str) -> String {
    format!("postgres://{role}:{role}@{}:{port}/{database}", pg_host())
}

/// The role the tests create and drop their databases as: `saga_test` (from
/// `deploy/postgres/test-role.sql`, which `deploy/stack test` runs), or `TEST_PG_ROLE`. It may
/// create databases and act as the service roles; the service roles may do neither.
pub fn test_role() -> String {
    std::env::var("TEST_PG_ROLE").unwrap_or_else(|_| "saga_test".to_owned())
}

/// The test role's connection to the server at `port` (its `postgres` database).
pub async fn as_test_role(port: u16) -> Result<DatabaseConnection, DbErr> {
    let role = test_role();
    Database::connect(database_url(port, &role, "postgres")).await
}

/// Creates an empty database owned by `role` (e.g. `orders_svc`), named after the role's own
/// database `home` with `kind` (`it` or `e2e`) and a random suffix, and returns its URL for
/// `role`.
pub async fn fresh_database(role: &str, home: &str, kind: &str) -> Result<String, DbErr> {
    fresh_database_on(pg_port_of(home), role, home, kind).await
}

/// Like [`fresh_database`], on the server at `port`.
pub async fn fresh_database_on(
    port: u16,
    role: &str,
    home: &str,
    kind: &str,
) -> Result<String, DbErr> {
    let name = format!("{home}_{kind}_{}", Uuid::new_v4().simple());
    let admin = as_test_role(port).await?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\" OWNER \"{role}\""))
        .await?;
    admin
        .execute_unprepared(&format!(
            "REVOKE CONNECT ON DATABASE \"{name}\" FROM PUBLIC"
        ))
        .await?;
    admin.close().await?;
    Ok(database_url(port, role, &name))
}

/// Drops the databases of `kind` made from `home` on the server at `port`: what earlier runs
/// left behind, on a server that only one test run uses at a time.
pub async fn drop_stale_databases_on(port: u16, home: &str, kind: &str) -> Result<(), DbErr> {
    let admin = as_test_role(port).await?;
    let rows = admin
        .query_all_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1)",
            [format!("{home}_{kind}_").into()],
        ))
        .await?;
    for row in rows {
        let name: String = row.try_get("", "datname")?;
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await?;
    }
    admin.close().await
}

/// A pool on a fresh database, with the given migrator already applied.
pub async fn migrated_database<M: sea_orm_migration::MigratorTrait>(
    role: &str,
    home: &str,
) -> Result<DatabaseConnection, DbErr> {
    let url = fresh_database(role, home, "it").await?;
    let db = crate::db::connect(&database_settings(url))
        .await
        .map_err(|e| DbErr::Custom(e.to_string()))?;
    M::up(&db, None).await?;
    Ok(db)
}

/// The event types waiting in the outbox, oldest first.
pub async fn outbox_event_types<C: ConnectionTrait>(db: &C) -> Result<Vec<String>, DbErr> {
    let rows = db
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT event_type FROM outbox ORDER BY id",
        ))
        .await?;
    rows.iter()
        .map(|row| row.try_get("", "event_type"))
        .collect()
}

/// How many rows `table` holds.
pub async fn count_rows<C: ConnectionTrait>(db: &C, table: &str) -> Result<i64, DbErr> {
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            format!("SELECT count(*) AS n FROM {table}"),
        ))
        .await?;
    row.map_or(Ok(0), |row| row.try_get("", "n"))
}

/// An `InventoryReserved` of a new order in saga `saga_id`, as inventory-svc publishes it.
pub fn inventory_reserved(saga_id: Uuid) -> shared_events::Envelope {
    shared_events::Envelope::new(
        "inventory-svc",
        Some(saga_id),
        shared_events::SagaEvent::InventoryReserved(shared_events::InventoryReserved {
            order_id: Uuid::now_v7(),
        }),
    )
}

/// The payloads (whole CloudEvents) waiting in the outbox, oldest first.
pub async fn outbox_payloads<C: ConnectionTrait>(db: &C) -> Result<Vec<serde_json::Value>, DbErr> {
    let rows = db
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT payload FROM outbox ORDER BY id",
        ))
        .await?;
    rows.iter().map(|row| row.try_get("", "payload")).collect()
}

/// Pool settings for tests: small, with the production timeouts.
pub fn database_settings(url: String) -> DatabaseSettings {
    DatabaseSettings {
        url,
        max_connections: 8,
        min_connections: 1,
        connect_timeout: Duration::from_secs(5),
        acquire_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
        max_lifetime: Duration::from_secs(600),
        ping_if_idle_for: Duration::from_secs(1),
        statement_timeout: Duration::from_secs(10),
        migration_lock_timeout: Duration::from_secs(30),
    }
}

/// Kafka settings on the test broker, with every topic name behind `topic_prefix`.
pub fn kafka_settings(topic_prefix: &str, group_id: &str) -> KafkaSettings {
    KafkaSettings {
        brokers: kafka_brokers(),
        topic_prefix: topic_prefix.to_owned(),
        group_id: group_id.to_owned(),
        group_instance_id: None,
        message_timeout: Duration::from_secs(10),
        session_timeout: Duration::from_secs(10),
        socket_timeout: Duration::from_secs(10),
        metadata_timeout: Duration::from_secs(3),
        fetch_min_bytes: 1,
        fetch_wait_max: Duration::from_millis(500),
        producer_linger: Duration::from_millis(2),
        client: Vec::new(),
    }
}

/// Creates `topics` behind a prefix of their own, `<kind>-<8 random hex digits>.`, and returns
/// the prefix: one test's topics, apart from every other test's.
pub async fn fresh_topics(kind: &str, topics: &[&str]) -> Result<String, String> {
    let prefix = format!("{kind}-{}.", &Uuid::new_v4().simple().to_string()[..8]);
    create_topics(&prefix, topics).await?;
    Ok(prefix)
}

/// Creates `prefix + name` for each logical topic, with as many partitions as the real ones.
pub async fn create_topics(prefix: &str, topics: &[&str]) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .map_err(|e| e.to_string())?;
    let names: Vec<String> = topics.iter().map(|t| format!("{prefix}{t}")).collect();
    let new_topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| {
            NewTopic::new(
                n,
                shared_events::topics::PARTITIONS,
                TopicReplication::Fixed(1),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(|e| e.to_string())?;
    for result in results {
        match result {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(format!("topic {topic}: {code}")),
        }
    }
    Ok(())
}

/// Creates `effects`, where [`CountingHandler`] writes a row per event it runs for.
pub async fn create_effects<C: ConnectionTrait>(db: &C) -> Result<(), DbErr> {
    db.execute_unprepared("CREATE TABLE effects (event_id UUID NOT NULL)")
        .await
        .map(|_| ())
}

/// A handler with no checks of its own: it records an effect row and answers with one
/// event every time it runs, so only the inbox can keep it from applying twice. Its effects
/// go to the table `effects` ([`create_effects`]).
#[derive(Default)]
pub struct CountingHandler {
    pub calls: std::sync::atomic::AtomicUsize,
    /// The events it ran for, in order, including runs that were rolled back.
    pub ran: std::sync::Mutex<Vec<Uuid>>,
    pub fail: bool,
    /// Fails this one event only (after writing its effect, which must roll back).
    pub fail_on: Option<Uuid>,
}

impl crate::consumer::EventHandler for CountingHandler {
    async fn handle(
        &self,
        tx: &crate::unit_of_work::Tx,
        event: &shared_events::Envelope,
    ) -> Result<crate::unit_of_work::Reaction, crate::consumer::HandlerError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut ran) = self.ran.lock() {
            ran.push(event.id);
        }
        tx.execute_unprepared(&format!("INSERT INTO effects VALUES ('{}')", event.id))
            .await
            .map_err(crate::consumer::HandlerError::new)?;
        if self.fail || self.fail_on == Some(event.id) {
            return Err(crate::consumer::HandlerError::new(DbErr::Custom(
                "refused".into(),
            )));
        }
        Ok(crate::unit_of_work::Reaction::publish(
            shared_events::SagaEvent::OrderConfirmed(shared_events::OrderConfirmed {
                order_id: Uuid::now_v7(),
                total_cents: 1,
            }),
        ))
    }
}

/// Applies `events` as one batch, as the consumer hands them over (from partition 0 of
/// `payments.events`, outside any span).
pub async fn apply_as_batch<H: crate::consumer::EventHandler>(
    uow: &crate::unit_of_work::UnitOfWork,
    handler: &H,
    events: &[shared_events::Envelope],
) -> crate::unit_of_work::Batch {
    let span = tracing::Span::none();
    let origin = crate::parking::Origin {
        topic: "payments.events".to_owned(),
        partition: 0,
        offset: 0,
    };
    let events: Vec<crate::unit_of_work::Consumed<'_>> = events
        .iter()
        .map(|event| crate::unit_of_work::Consumed {
            event,
            origin: &origin,
            span: &span,
        })
        .collect();
    uow.apply_batch(handler, &events).await
}

/// A whole service's settings for a test: `defaults` with a fresh, empty database of its own
/// (owned by `role`, beside `home`), its `topics` behind a fresh prefix, and port 0. Building
/// the service with them migrates that database and subscribes to those topics.
pub async fn service_settings(
    defaults: crate::config::ServiceDefaults,
    role: &str,
    home: &str,
    topics: &[&str],
) -> Result<crate::config::CommonSettings, Box<dyn std::error::Error>> {
    let mut settings =
        crate::config::CommonSettings::from_env_with_auth(defaults, authenticator())?;
    settings.database = database_settings(fresh_database(role, home, "it").await?);
    let prefix = fresh_topics("it", topics).await?;
    settings.kafka = kafka_settings(&prefix, &format!("{prefix}{role}"));
    settings.http.host = "127.0.0.1".to_owned();
    settings.http.port = 0;
    Ok(settings)
}

/// The routes `router` serves and `openapi` does not describe, and the other way round, as
/// `METHOD /path` lines; empty when the two agree. The document itself (`/openapi.json`)
/// and its Swagger UI (`/docs…`) are left out.
///
/// axum has no API that lists a router's routes. Its `Debug` output names each route's path
/// and the methods of its `Allow` header, and that is what this reads; it fails, rather than
/// finding nothing, when that output changes shape.
pub fn undocumented_routes(
    router: &axum::Router,
    openapi: &utoipa::openapi::OpenApi,
) -> Result<Vec<String>, String> {
    use std::collections::BTreeSet;
    let served = served_routes(router)?;
    let document = serde_json::to_value(openapi).map_err(|e| e.to_string())?;
    let paths = document["paths"]
        .as_object()
        .ok_or("the OpenAPI document has no paths")?;
    let described: BTreeSet<String> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flat_map(|item| item.keys())
                .filter(|key| HTTP_METHODS.contains(&key.as_str()))
                .map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    let mut differences: Vec<String> = served
        .difference(&described)
        .map(|route| format!("served, not documented: {route}"))
        .collect();
    differences.extend(
        described
            .difference(&served)
            .map(|route| format!("documented, not served: {route}")),
    );
    Ok(differences)
}

const HTTP_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// `METHOD /path` for every route of `router` but the documentation's own, HEAD (which axum
/// answers for every GET) left out.
fn served_routes(router: &axum::Router) -> Result<std::collections::BTreeSet<String>, String> {
    let text = format!("{router:?}");
    // The routes proper come before the fallback router's.
    let routes = text
        .split("fallback_router")
        .next()
        .ok_or("no routes in the router's Debug output")?;
    let (endpoints, node) = routes
        .split_once("node: Node { paths: {")
        .ok_or("the router's Debug output has no `node: Node { paths: {`")?;
    // `RouteId(7): "/orders/{id}"`
    let mut paths = std::collections::HashMap::new();
    for entry in node.split("RouteId(").skip(1) {
        let (id, rest) = entry.split_once("): \"").ok_or("a path without its ID")?;
        let (path, _) = rest.split_once('"').ok_or("an unterminated path")?;
        paths.insert(id.to_owned(), path.to_owned());
    }
    // `RouteId(7): MethodRouter(MethodRouter { get: …, allow_header: Bytes(b"GET,HEAD") })`
    let mut served = std::collections::BTreeSet::new();
    for entry in endpoints.split("RouteId(").skip(1) {
        let (id, rest) = entry.split_once("): ").ok_or("a route without its ID")?;
        let path = paths
            .get(id)
            .ok_or_else(|| format!("route {id} has no path"))?;
        if path == "/openapi.json" || path == "/docs" || path.starts_with("/docs/") {
            continue;
        }
        let methods = rest
            .split_once("allow_header: Bytes(b\"")
            .and_then(|(_, allowed)| allowed.split_once('"'))
            .map(|(allowed, _)| allowed)
            // A service mounted with `route_service` answers every method.
            .ok_or_else(|| format!("{path}: no Allow header in {rest:.80}"))?;
        for method in methods.split(',').filter(|m| *m != "HEAD") {
            served.insert(format!("{method} {path}"));
        }
    }
    if served.is_empty() {
        return Err(format!(
            "found no routes in the router's Debug output: {text:.200}"
        ));
    }
    Ok(served)
}

/// Checks a built service's documentation: every route is in its OpenAPI document and
/// nothing else is ([`undocumented_routes`]), `GET /openapi.json` serves that document as
/// OpenAPI 3.1, and `GET /docs/` serves Swagger UI.
pub async fn check_documented(
    router: &axum::Router,
    openapi: &utoipa::openapi::OpenApi,
) -> Result<(), String> {
    use tower::ServiceExt;
    let differences = undocumented_routes(router, openapi)?;
    if !differences.is_empty() {
        return Err(differences.join("\n"));
    }
    let get = |uri: &str| {
        let request = axum::http::Request::get(uri).body(axum::body::Body::empty());
        let router = router.clone();
        async move {
            let response = router
                .oneshot(request.map_err(|e| e.to_string())?)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((status, body))
        }
    };
    let (status, body) = get("/openapi.json").await?;
    let served: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    let expected = serde_json::to_value(openapi).map_err(|e| e.to_string())?;
    if status != axum::http::StatusCode::OK || served != expected {
        return Err(format!(
            "GET /openapi.json: {status}, not the router's document"
        ));
    }
    if served["openapi"] != "3.1.0" {
        return Err(format!(
            "GET /openapi.json is OpenAPI {}",
            served["openapi"]
        ));
    }
    let (status, body) = get("/docs/").await?;
    if status != axum::http::StatusCode::OK || !String::from_utf8_lossy(&body).contains("swagger") {
        return Err(format!("GET /docs/: {status}, not Swagger UI"));
    }
    Ok(())
}

/// The HS256 secret of the tests' tokens; the e2e harness gives it to the services it starts.
pub const AUTH_SECRET: &str = "the tests' signing secret, thirty-two bytes or more";

/// Checks the tests' tokens.
pub fn authenticator() -> crate::auth::Authenticator {
    crate::auth::Authenticator::hs256(AUTH_SECRET.as_bytes())
}

/// A token for `subject` with `scopes`, valid for an hour.
pub fn token(subject: &str, scopes: &[crate::auth::Scope]) -> String {
    let scope: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    crate::auth::sign_hs256(
        AUTH_SECRET.as_bytes(),
        &crate::auth::Claims {
            sub: subject.to_owned(),
            scope: scope.join(" "),
            exp: jsonwebtoken::get_current_timestamp() + 3600,
            iss: None,
        },
    )
    .unwrap_or_default()
}

/// `Authorization` with a token of every scope: what [`send`] sends unless told otherwise.
pub fn bearer_of_all_scopes() -> String {
    format!("Bearer {}", token("tests", &crate::auth::Scope::ALL))
}

/// `router` checking the tests' tokens, as a running service checks its own.
pub fn authorized(router: axum::Router) -> axum::Router {
    router.layer(axum::Extension(authenticator()))
}

/// What [`send`] got back.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: axum::http::HeaderMap,
    /// The body as JSON; `Null` when it is not JSON.
    pub body: serde_json::Value,
}

/// Sends `method uri` with a JSON `body` and extra `headers` through `router`, as a client
/// would, and returns the answer. Without an `authorization` header among `headers`, it sends
/// a token of every scope.
pub async fn send(
    router: &axum::Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &serde_json::Value,
) -> Result<Answer, Box<dyn std::error::Error>> {
    use tower::ServiceExt;
    let mut request = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("authorization"))
    {
        request = request.header("authorization", bearer_of_all_scopes());
    }
    let request = request.body(axum::body::Body::from(body.to_string()))?;
    let response = router.clone().oneshot(request).await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024).await?;
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// Checks that `POST uri` honours `Idempotency-Key` as every create does: the same key and
/// request twice give the first answer again (201, same body and `Location`, marked
/// replayed) and one row in `table`; the key with another request is 422 and adds nothing.
/// `request(n)` is a valid request body, a different one for each `n`.
pub async fn check_create_is_idempotent<C: ConnectionTrait>(
    app: &axum::Router,
    db: &C,
    uri: &str,
    table: &str,
    request: impl Fn(i64) -> serde_json::Value,
) -> Result<(), Box<dyn std::error::Error>> {
    let key = [("idempotency-key", "create-once")];
    let first = send(app, "POST", uri, &key, &request(100)).await?;
    let again = send(app, "POST", uri, &key, &request(100)).await?;
    let reused = send(app, "POST", uri, &key, &request(200)).await?;
    let checks = [
        (first.status == 201, format!("first: {first:?}")),
        (
            again.status == 201,
            format!("a replay, not a conflict: {again:?}"),
        ),
        (
            again.body == first.body,
            "the replay's body differs".to_owned(),
        ),
        (
            again.headers.get("location") == first.headers.get("location"),
            "the replay's Location differs".to_owned(),
        ),
        (
            again.headers.contains_key("idempotent-replayed"),
            "the replay is not marked".to_owned(),
        ),
        (reused.status == 422, format!("reused: {reused:?}")),
        (
            reused.body["error"]["code"] == "idempotency_key_reused",
            format!("reused: {reused:?}"),
        ),
        (
            count_rows(db, table).await? == 1,
            format!("not one row in {table}"),
        ),
    ];
    match checks.into_iter().find(|(ok, _)| !ok) {
        Some((_, failed)) => Err(failed.into()),
        None => Ok(()),
    }
}

/// Checks every operation of `openapi` against `router` for who may call it, as the document
/// says (`security`): one that names the bearer scheme answers 401 without a token and with
/// a forged one, and 403 to a token without the scopes it lists; one that names none (the
/// probes, the scrape, the contract) answers without a token. A token with every scope it
/// needs is never refused for who it is. Path parameters get a fresh UUID.
pub async fn check_auth(
    router: &axum::Router,
    openapi: &utoipa::openapi::OpenApi,
) -> Result<(), String> {
    let document = serde_json::to_value(openapi).map_err(|e| e.to_string())?;
    let paths = document["paths"]
        .as_object()
        .ok_or("the OpenAPI document has no paths")?;
    let forged = crate::auth::sign_hs256(
        b"not the services' secret, though long enough",
        &crate::auth::Claims {
            sub: "x".into(),
            scope: "admin operator".into(),
            exp: jsonwebtoken::get_current_timestamp() + 3600,
            iss: None,
        },
    )
    .map_err(|e| e.to_string())?;
    let mut failures = Vec::new();
    let mut checked = 0;
    for (path, item) in paths {
        let uri = concrete(path);
        for (method, operation) in item.as_object().into_iter().flatten() {
            if !HTTP_METHODS.contains(&method.as_str()) {
                continue;
            }
            checked += 1;
            let method = method.to_uppercase();
            let route = format!("{method} {path}");
            let scopes: Option<Vec<String>> = operation["security"].as_array().map(|schemes| {
                schemes
                    .iter()
                    .filter_map(|scheme| scheme["bearer"].as_array())
                    .flatten()
                    .filter_map(|scope| scope.as_str().map(str::to_owned))
                    .collect()
            });
            let status_with = |authorization: Option<String>| {
                let (router, method, uri) = (router.clone(), method.clone(), uri.clone());
                async move {
                    let headers: Vec<(&str, &str)> = authorization
                        .as_deref()
                        .map(|value| vec![("authorization", value)])
                        .unwrap_or_default();
                    // `send` adds a token unless one is given; an empty value stands for none.
                    let headers = if headers.is_empty() {
                        vec![("authorization", "")]
                    } else {
                        headers
                    };
                    send(&router, &method, &uri, &headers, &serde_json::json!({}))
                        .await
                        .map(|answer| answer.status)
                        .map_err(|e| e.to_string())
                }
            };
            let anonymous = status_with(None).await?;
            let everything = status_with(Some(bearer_of_all_scopes())).await?;
            if matches!(everything, 401 | 403) {
                failures.push(format!("{route}: {everything} to a token of every scope"));
            }
            match scopes {
                None => {
                    if matches!(anonymous, 401 | 403) {
                        failures.push(format!("{route} is open, yet {anonymous} without a token"));
                    }
                }
                Some(scopes) => {
                    if anonymous != 401 {
                        failures.push(format!("{route}: {anonymous} without a token, not 401"));
                    }
                    let forged = status_with(Some(format!("Bearer {forged}"))).await?;
                    if forged != 401 {
                        failures.push(format!("{route}: {forged} to a forged token, not 401"));
                    }
                    let bare =
                        status_with(Some(format!("Bearer {}", token("nobody", &[])))).await?;
                    let refused = matches!(bare, 401 | 403);
                    if scopes.is_empty() == refused {
                        failures.push(format!(
                            "{route} wants scopes {scopes:?}, yet {bare} to a token without any"
                        ));
                    }
                }
            }
        }
    }
    if checked == 0 {
        return Err("the document has no operations".to_owned());
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

/// `path` with every `{parameter}` replaced by a fresh UUID.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') && segment.ends_with('}') {
                Uuid::now_v7().to_string()
            } else {
                segment.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Checks a read of an order's part (`GET /payments?order_id=`, `GET /reservations?order_id=`)
/// at `path`: the order's customer and an admin see its one entry in `list`, another
/// customer gets 403, and an order with nothing yet is an empty list.
pub async fn check_order_part_is_its_customers(
    app: &axum::Router,
    path: &str,
    list: &str,
    order_id: Uuid,
    customer: Uuid,
) -> Result<(), Box<dyn std::error::Error>> {
    use crate::auth::Scope;
    let read = |order: Uuid, bearer: String| async move {
        let uri = format!("{path}?order_id={order}");
        let bearer = format!("Bearer {bearer}");
        send(
            app,
            "GET",
            &uri,
            &[("authorization", bearer.as_str())],
            &serde_json::Value::Null,
        )
        .await
    };
    let own = read(order_id, token(&customer.to_string(), &[])).await?;
    let admin = read(order_id, token("support", &[Scope::Admin])).await?;
    let other = read(order_id, token(&Uuid::now_v7().to_string(), &[])).await?;
    let none = read(Uuid::now_v7(), token(&customer.to_string(), &[])).await?;
    let entries = |answer: &Answer| answer.body[list].as_array().map(Vec::len);
    let checks = [
        (
            own.status == 200 && entries(&own) == Some(1),
            format!("its customer: {own:?}"),
        ),
        (
            own.body[list][0]["order_id"] == order_id.to_string(),
            format!("{own:?}"),
        ),
        (
            admin.status == 200 && entries(&admin) == Some(1),
            format!("an admin: {admin:?}"),
        ),
        (other.status == 403, format!("another customer: {other:?}")),
        (
            none.status == 200 && entries(&none) == Some(0),
            format!("no such order: {none:?}"),
        ),
    ];
    match checks.into_iter().find(|(ok, _)| !ok) {
        Some((_, failed)) => Err(failed.into()),
        None => Ok(()),
    }
}
