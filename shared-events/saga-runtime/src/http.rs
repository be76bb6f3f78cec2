//! HTTP pieces every service shares: the one JSON error shape, a JSON extractor whose
//! rejections use that shape, `GET /health`, the OpenAPI document with its Swagger UI, and
//! serving with a request timeout and graceful shutdown. Each service maps its own errors to
//! [`ApiError`] in its `http/error.rs`.
//!
//! Every route is registered through [`OpenApiRouter::routes`], which takes the handler's
//! `#[utoipa::path]` description with it: the document is built from the same list as the
//! router, so the two cannot drift apart.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use sea_orm::DatabaseConnection;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::ToSchema;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;
use uuid::Uuid;

use crate::config::HttpSettings;
use crate::consumer::{Applier, EventHandler};
use crate::health::Health;
use crate::kafka::SharedProducer;
use crate::outbox;
use crate::telemetry;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

/// An error response: `{"error": {"code": "...", "message": "..."}}` with `status`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// A stable, machine-readable code such as `unknown_product`.
    pub code: &'static str,
    pub message: String,
    /// Sent as `Retry-After` (whole seconds): when a retry may succeed.
    pub retry_after: Option<std::time::Duration>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The service refuses work it cannot finish in time: 503 with `Retry-After`.
    pub fn overloaded(message: impl Into<String>, retry_after: std::time::Duration) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
            .with_retry_after(retry_after)
    }

    pub fn with_retry_after(mut self, retry_after: std::time::Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// Logs the cause and answers 500 without leaking it.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    /// The database is out of reach or its pool is exhausted: worth retrying later.
    pub fn unavailable(cause: &dyn std::error::Error) -> Self {
        tracing::warn!(error = %cause, "request failed: dependency unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "service temporarily unavailable",
        )
        .with_retry_after(std::time::Duration::from_secs(1))
    }

    /// The request did not finish within `limit`. A write it started may still commit, so a
    /// client that retries a create should send the same `Idempotency-Key` again: 503 rather
    /// than 408, because the server, not the client, was too slow, and with `Retry-After`.
    pub fn timed_out(limit: std::time::Duration) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timed_out",
            format!(
                "the request did not finish within {} ms; it may still take effect, so retry \
                 it with the same Idempotency-Key",
                limit.as_millis()
            ),
        )
        .with_retry_after(std::time::Duration::from_secs(1))
    }
}

/// Whether a request that met `error` is worth a retry (503), unlike a failed query (500):
/// pool exhaustion, a lost connection, and the SQLSTATEs the consumer also retries (a
/// deadlock, a statement timeout, a server that is shutting down or restarting). After a
/// PostgreSQL restart a pooled connection answers its first statement with `57P01`; the
/// client should be told to come back, not that the service is broken.
pub fn is_unavailable(error: &sea_orm::DbErr) -> bool {
    crate::consumer::classify_db(error) != crate::consumer::FailureClass::Permanent
}

/// The one error shape every 4xx and 5xx has: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable, e.g. `unknown_product` or `invalid_body`.
    #[schema(example = "invalid_body")]
    pub code: String,
    /// For a person; names the offending field where there is one.
    pub message: String,
}

/// For OpenAPI documents: how any handler that takes a JSON body ([`AppJson`]) refuses one
/// before it runs. A handler lists this beside its own answers.
#[derive(utoipa::IntoResponses)]
pub enum BodyRefusals {
    #[response(
        status = 400,
        description = "Malformed JSON, or a malformed header such as `Idempotency-Key`"
    )]
    Malformed(ErrorBody),
    #[response(status = 413, description = "The body is over the size limit")]
    TooLarge(ErrorBody),
    #[response(status = 415, description = "Not `content-type: application/json`")]
    NotJson(ErrorBody),
}

/// For OpenAPI documents: the database is out of reach or its pool exhausted, or the request
/// ran out of time. Any handler that reads or writes may answer this.
#[derive(utoipa::IntoResponses)]
pub enum Unavailable {
    #[response(
        status = 503,
        description = "The database is out of reach (`unavailable`), or the request did not \
            finish in time (`timed_out`; a create may still take effect, so retry it with the \
            same `Idempotency-Key`): retry after `Retry-After` seconds",
        headers(("Retry-After" = u64, description = "Seconds"))
    )]
    Unavailable(ErrorBody),
}

/// For OpenAPI documents: the refusal of a malformed ID in the path ([`AppPath`]).
#[derive(utoipa::IntoResponses)]
pub enum PathRefusal {
    #[response(status = 400, description = "An ID in the path is not a UUID")]
    NotAnId(ErrorBody),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(retry_after) = self.retry_after {
            // Whole seconds, rounded up: a client must not come back before it is worth it.
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// Deserializes an `i64` from any JSON number without a fractional part. To JSON Schema, in
/// which the OpenAPI documents describe the bodies, `5`, `5.0` and `5e0` are the same
/// integer; a client that writes one of the others must not be refused.
pub fn whole_number<'de, D>(deserializer: D) -> Result<i64, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error as _;
    // 2^63 is exactly representable as an f64; every whole f64 below it fits an i64.
    const TWO_TO_THE_63: f64 = 9_223_372_036_854_775_808.0;
    let number = <serde_json::Number as serde::Deserialize>::deserialize(deserializer)?;
    if let Some(whole) = number.as_i64() {
        return Ok(whole);
    }
    match number.as_f64() {
        #[allow(clippy::cast_possible_truncation)]
        Some(float) if float.fract() == 0.0 && (-TWO_TO_THE_63..TWO_TO_THE_63).contains(&float) => {
            Ok(float as i64)
        }
        _ => Err(D::Error::custom(format!(
            "invalid value: {number}, expected a whole number within a signed 64-bit integer"
        ))),
    }
}

/// `Json` whose rejections are [`ApiError`]s: malformed JSON is 400, a body of the wrong
/// shape 422, a missing `content-type: application/json` 415. The body must be a JSON
/// object, as every request body's schema in the OpenAPI documents says.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppJson<T>(pub T);

impl<S, T> FromRequest<S> for AppJson<T>
where
    Json<ObjectBody<T>>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<ObjectBody<T>>::from_request(req, state).await {
            Ok(Json(ObjectBody(value))) => Ok(AppJson(value)),
            Err(rejection) => Err(rejection_to_error(&rejection)),
        }
    }
}

/// A `T` read only from a JSON object. serde's derived `Deserialize` of a struct also takes
/// an array, its fields by position: `[{"schema": …}]` would be read as a body whose first
/// field is that object, and accepted although the document allows only an object (found by
/// schemathesis). This asks the JSON deserializer for a map, so an array is refused as a
/// body of the wrong shape (422) and an object is read exactly as before.
#[derive(Debug)]
pub struct ObjectBody<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for ObjectBody<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectOnly<T>(std::marker::PhantomData<T>);

        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for ObjectOnly<T> {
            type Value = ObjectBody<T>;

            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(ObjectBody)
            }
        }

        deserializer.deserialize_map(ObjectOnly(std::marker::PhantomData))
    }
}

impl<T: Serialize> IntoResponse for AppJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

/// `Path` whose rejections are [`ApiError`]s: a malformed ID in the URL is 400 `invalid_path`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppPath<T>(pub T);

impl<S, T> FromRequestParts<S> for AppPath<T>
where
    Path<T>: FromRequestParts<S, Rejection = PathRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(AppPath(value)),
            Err(rejection) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                rejection.body_text(),
            )),
        }
    }
}

/// `Query` whose rejections are [`ApiError`]s: a malformed or unknown query parameter is
/// 400 `invalid_query`, naming it.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for AppQuery<T>
where
    axum::extract::Query<T>:
        FromRequestParts<S, Rejection = axum::extract::rejection::QueryRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(AppQuery(value)),
            Err(rejection) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                rejection.body_text(),
            )),
        }
    }
}

/// Maps a JSON extractor's rejection to the one error shape. Anything not named here (a body
/// over the size limit is 413, for one) keeps the status axum gives it.
fn rejection_to_error(rejection: &JsonRejection) -> ApiError {
    let (status, code) = match rejection {
        JsonRejection::JsonDataError(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
        JsonRejection::MissingJsonContentType(_) => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
        }
        other => (other.status(), "bad_request"),
    };
    ApiError::new(status, code, rejection.body_text())
}

/// What the health endpoints look at: the process's loops, the pool and the broker.
#[derive(Clone)]
pub struct HealthProbe {
    pub db: DatabaseConnection,
    pub producer: SharedProducer,
    pub metadata_timeout: Duration,
    pub health: Health,
    /// A loop that has not beaten for this long is not alive.
    pub stale_after: Duration,
}

/// Health for orchestrators (see [`crate::health`]):
/// - `GET /health/live`: 200 while the consumer and the relay loops run, else 503. It does
///   not look at the database or the broker: restarting the process would not bring them
///   back.
/// - `GET /health/ready`: 200 once the database and Kafka answer and neither loop reports
///   trouble, else 503. The server only listens once the migrations have run, so an answer
///   at all means they have.
/// - `GET /health`: the same as ready.
pub fn health_router(probe: HealthProbe) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(live))
        .with_state(probe)
}

/// `GET /health/live`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Liveness {
    /// `ok` or `unavailable`.
    pub status: &'static str,
    pub loops: Vec<crate::health::LoopReport>,
}

/// `GET /health/ready`'s answer: each dependency is `ok` or the error met reaching it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ok` or `unavailable`.
    pub status: &'static str,
    pub database: String,
    pub kafka: String,
    pub loops: Vec<crate::health::LoopReport>,
}

fn availability(ok: bool) -> &'static str {
    if ok { "ok" } else { "unavailable" }
}

/// Alive: the consumer and relay loops beat.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses(
        (status = 200, description = "The loops run", body = Liveness),
        (status = 503, description = "A loop has stopped beating", body = Liveness),
    ))]
async fn live(State(probe): State<HealthProbe>) -> Response {
    let loops = probe.health.report(probe.stale_after);
    let alive = loops.iter().all(|part| part.alive);
    let body = Liveness {
        status: availability(alive),
        loops,
    };
    (status_of(alive), Json(body)).into_response()
}

/// Ready: the database and Kafka answer, and no loop reports trouble.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "Ready for traffic", body = Readiness),
        (status = 503, description = "A dependency is out of reach", body = Readiness),
    ))]
async fn ready(State(probe): State<HealthProbe>) -> Response {
    let database = probe.db.ping().await.map_err(|e| e.to_string());
    let producer = probe.producer.current();
    let timeout = probe.metadata_timeout;
    // Metadata fetches block, so they run off the async workers.
    let kafka = tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(None, timeout)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    let loops = probe.health.report(probe.stale_after);
    let ready =
        database.is_ok() && kafka.is_ok() && loops.iter().all(|part| part.trouble.is_none());
    let describe = |r: Result<(), String>| r.err().unwrap_or_else(|| "ok".to_owned());
    let body = Readiness {
        status: availability(ready),
        database: describe(database),
        kafka: describe(kafka),
        loops,
    };
    (status_of(ready), Json(body)).into_response()
}

/// The same as `GET /health/ready`.
#[utoipa::path(get, path = "/health", tag = "health",
    responses(
        (status = 200, description = "Ready for traffic", body = Readiness),
        (status = 503, description = "A dependency is out of reach", body = Readiness),
    ))]
async fn health(probe: State<HealthProbe>) -> Response {
    ready(probe).await
}

fn status_of(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// `GET /sagas/stuck` lists parked events; `POST /sagas/{saga_id}/retry` replays a saga's
/// parked events through the service's handler once an operator has fixed the cause.
pub fn sagas_router<H: EventHandler>(applier: Applier<H>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(stuck_sagas))
        .routes(routes!(retry_saga))
        .with_state(Arc::new(applier))
}

/// `GET /sagas/stuck`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct StuckSagas {
    pub count: usize,
    pub parked: Vec<crate::parking::ParkedEvent>,
}

/// The events this service has parked: each failed for good and blocks its saga here until
/// an operator retries it.
#[utoipa::path(get, path = "/sagas/stuck", tag = "operations",
    security(("bearer" = ["operator"])),
    responses(
        (status = 200, description = "This service's parked events", body = StuckSagas),
        crate::auth::AuthRefusals,
        Unavailable,
    ))]
async fn stuck_sagas<H: EventHandler>(
    _: crate::auth::Operator,
    State(applier): State<Arc<Applier<H>>>,
) -> Result<Json<StuckSagas>, ApiError> {
    let parked = applier.parking.list().await.map_err(db_error)?;
    Ok(Json(StuckSagas {
        count: parked.len(),
        parked,
    }))
}

/// Replays the saga's parked events, oldest first, through this service's handler. It
/// stops at the first that fails again, which stays parked.
#[utoipa::path(post, path = "/sagas/{saga_id}/retry", tag = "operations",
    security(("bearer" = ["operator"])),
    params(("saga_id" = Uuid, Path, description = "The saga whose parked events to replay")),
    responses(
        (status = 200, description = "Every parked event of the saga applied (none is fine)", body = crate::parking::RetryOutcome),
        (status = 409, description = "An event failed again and stays parked", body = crate::parking::RetryOutcome),
        PathRefusal,
        crate::auth::AuthRefusals,
        Unavailable,
    ))]
async fn retry_saga<H: EventHandler>(
    _: crate::auth::Operator,
    State(applier): State<Arc<Applier<H>>>,
    AppPath(saga_id): AppPath<Uuid>,
) -> Result<Response, ApiError> {
    let outcome = applier
        .parking
        .retry(saga_id, &applier)
        .await
        .map_err(db_error)?;
    let status = if outcome.remaining == 0 {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    Ok((status, Json(outcome)).into_response())
}

/// A database error of an operator endpoint: 503 when the database is out of reach, else 500.
pub(crate) fn db_error(error: sea_orm::DbErr) -> ApiError {
    if is_unavailable(&error) {
        ApiError::unavailable(&error)
    } else {
        ApiError::internal(&error)
    }
}

/// `GET /metrics`: the recorder's series plus gauges read now: the outbox backlog and the
/// age of its oldest row, the parked events and the pool. When the database does not answer,
/// the database's gauges are left out (never a made-up value) and
/// `saga_metrics_scrape_errors_total` counts the miss.
pub fn metrics_router(service: &'static str, db: DatabaseConnection) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(metrics))
        .with_state((service, db))
}

/// Prometheus's text format. Keep it off the public network: it is open, for scrapers.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Every series, in Prometheus's text format",
        body = String, content_type = "text/plain; version=0.0.4")))]
async fn metrics(State((service, db)): State<(&'static str, DatabaseConnection)>) -> Response {
    let mut gauges = crate::metrics::pool_gauges(db.get_postgres_connection_pool());
    gauges.extend(crate::metrics::connection_gauges());
    match scraped_from_database(&db).await {
        Ok(read) => gauges.extend(read),
        Err(error) => {
            tracing::warn!(%error, "metrics scrape: database gauges unavailable");
            crate::metrics::SCRAPE_ERRORS.increment();
        }
    }
    (
        [("content-type", "text/plain; version=0.0.4")],
        crate::metrics::render(service, &gauges),
    )
        .into_response()
}

#[allow(clippy::cast_precision_loss)]
async fn scraped_from_database(
    db: &DatabaseConnection,
) -> Result<Vec<crate::metrics::ScrapedGauge>, sea_orm::DbErr> {
    use crate::metrics::ScrapedGauge;
    let (backlog, age) = outbox::backlog_and_age(db).await?;
    let parked = crate::parking::count(db).await?;
    Ok(vec![
        ScrapedGauge::new(
            "saga_outbox_backlog",
            "Outbox rows waiting to be published.",
            backlog as f64,
        ),
        ScrapedGauge::new(
            "saga_outbox_oldest_age_seconds",
            "Age of the oldest waiting outbox row.",
            age,
        ),
        ScrapedGauge::new(
            "saga_parked_events",
            "Events parked now, waiting for an operator's retry (GET /sagas/stuck).",
            parked as f64,
        ),
    ])
}

/// The service's routes with the OpenAPI document they describe, served at `GET /openapi.json`
/// (OpenAPI 3.1) and browsable at `/docs` (Swagger UI, shipped inside the binary).
pub fn documented(routes: OpenApiRouter) -> (Router, OpenApi) {
    let (router, openapi) = routes.split_for_parts();
    let docs = SwaggerUi::new("/docs").url("/openapi.json", openapi.clone());
    (router.merge(docs), openapi)
}

/// Serves `router` until `shutdown`, then lets in-flight requests finish. Every request is
/// bounded by `settings.request_timeout` (503 `timed_out` past it) and `settings.max_body_bytes` (413),
/// and traced; the open connections are bounded by `settings.max_connections`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: &HttpSettings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = crate::listener::BoundedListener::new(listener, settings.max_connections);
    axum::serve(listener, with_api_layers(router, settings))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Serves `router` (the probes' routes) on `listener` until `shutdown`, with the same layers
/// as [`serve`] but no bound on connections: this port is for the orchestrator's probes and
/// Prometheus's scrapes, a few connections on the cluster's network, and it must answer
/// while the main port is at its bound. Keep it off the public network.
pub async fn serve_probes(
    listener: TcpListener,
    router: Router,
    settings: HttpSettings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, with_api_layers(router, &settings))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// `router` as it is served: the error-shaped fallbacks, a caught panic as 500, the body
/// limit, the request timeout, a span and a count per request.
pub fn with_api_layers(router: Router, settings: &HttpSettings) -> Router {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // A bug that panics in a handler answers 500 in the one error shape, and is logged,
        // instead of dropping the connection without a word.
        .layer(CatchPanicLayer::custom(panicked))
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            settings.request_timeout,
            finish_within,
        ))
        // Request spans at INFO, so a trace (and the saga's `traceparent`) starts at the HTTP call.
        // Failed responses are not logged again here: the error path already logs an internal
        // error or an unavailable dependency, and an overload refusal is expected and counted
        // (`saga_requests_refused_total`). Logging each 5xx at ERROR made an overload burst
        // write thousands of error lines a second.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(
                    |response: &Response, latency: Duration, span: &tracing::Span| {
                        span.record(
                            "http.response.status_code",
                            i64::from(response.status().as_u16()),
                        );
                        tracing::debug!(status = response.status().as_u16(), ?latency, "responded");
                    },
                )
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .layer(axum::middleware::from_fn(count_request))
}

/// Answers 503 `timed_out` with `Retry-After` when the request takes longer than `limit`,
/// in the one error shape. The handler's future is dropped: a transaction it had open rolls
/// back, but a command already handed to a [`crate::group_commit::CommandQueue`] batch
/// commits anyway, which is why the answer points to the idempotency key.
async fn finish_within(
    State(limit): State<Duration>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_elapsed) => {
            tracing::warn!(limit_ms = limit.as_millis(), "request timed out");
            ApiError::timed_out(limit).into_response()
        }
    }
}

/// Counts and times every request by method, route pattern and status. The pattern
/// (`/orders/{id}`), never the raw path, keeps the series few; a request no route matched is
/// `unmatched`.
async fn count_request(request: Request, next: axum::middleware::Next) -> Response {
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let labels = [
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    crate::metrics::HTTP_REQUESTS.add_with(1, &labels);
    crate::metrics::observe(
        &crate::metrics::HTTP_REQUEST_DURATION,
        started.elapsed(),
        &labels,
    );
    response
}

/// A request's server span, named and described as the OpenTelemetry HTTP conventions do. A
/// caller's `traceparent` header makes it a child of the caller's trace, so an order placed
/// from a traced client continues that client's trace through the whole saga.
fn request_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let name = match &route {
        Some(route) => format!("{} {route}", request.method()),
        None => request.method().to_string(),
    };
    let span = tracing::info_span!(
        parent: None,
        "request",
        otel.name = name,
        otel.kind = "server",
        http.request.method = %request.method(),
        http.route = route,
        url.path = request.uri().path(),
        http.response.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    let traceparent = request
        .headers()
        .get(shared_events::envelope::headers::TRACEPARENT)
        .and_then(|value| value.to_str().ok());
    telemetry::continue_trace(&span, traceparent);
    span
}

fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %what, "request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error",
    )
    .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::post;
    use serde::Deserialize;
    use tower::ServiceExt;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Payload {
        name: String,
    }

    async fn echo(AppJson(payload): AppJson<Payload>) -> String {
        payload.name
    }

    /// The router a service serves, reduced to one JSON route, with its real fallbacks and a
    /// small body limit.
    fn app() -> Router {
        let settings = HttpSettings {
            host: "127.0.0.1".to_owned(),
            port: 0,
            request_timeout: std::time::Duration::from_millis(200),
            max_body_bytes: 64,
            max_connections: 16,
            probe_port: None,
            shutdown_timeout: std::time::Duration::from_secs(1),
            health_stale_after: std::time::Duration::from_secs(1),
        };
        let routes = Router::new()
            .route("/things", post(echo))
            .route("/panics", axum::routing::get(panics))
            .route("/slow", axum::routing::get(slow));
        with_api_layers(routes, &settings)
    }

    async fn slow() -> &'static str {
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        "too late"
    }

    #[tokio::test]
    async fn a_request_past_its_time_limit_answers_503_timed_out_with_retry_after()
    -> Result<(), Box<dyn std::error::Error>> {
        let started = std::time::Instant::now();
        let response = app()
            .oneshot(Request::get("/slow").body(Body::empty())?)
            .await?;
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "answered at the limit, not when the handler finished: {:?}",
            started.elapsed()
        );
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get(axum::http::header::RETRY_AFTER),
            Some(&axum::http::HeaderValue::from_static("1"))
        );
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await?;
        let body: ErrorBody = serde_json::from_slice(&bytes)?;
        assert_eq!(body.error.code, "timed_out");
        assert!(
            body.error.message.contains("200 ms"),
            "{}",
            body.error.message
        );
        Ok(())
    }

    async fn panics() -> &'static str {
        let empty: Vec<&str> = Vec::new();
        // An out-of-bounds index, the kind of bug a handler could have.
        empty[usize::from(empty.is_empty())]
    }

    #[tokio::test]
    async fn a_handler_that_panics_answers_500_in_the_error_shape()
    -> Result<(), Box<dyn std::error::Error>> {
        let response = app()
            .oneshot(Request::get("/panics").body(Body::empty())?)
            .await?;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await?;
        let body: ErrorBody = serde_json::from_slice(&bytes)?;
        assert_eq!(body.error.code, "internal");
        Ok(())
    }

    #[derive(Debug, Deserialize)]
    struct Amount {
        #[serde(deserialize_with = "whole_number")]
        cents: i64,
    }

    fn amount(json: &str) -> Option<i64> {
        serde_json::from_str::<Amount>(&format!(r#"{{"cents":{json}}}"#))
            .ok()
            .map(|a| a.cents)
    }

    #[test]
    fn a_whole_number_is_whole_however_written_and_within_i64() {
        assert_eq!(amount("5"), Some(5));
        assert_eq!(amount("5.0"), Some(5));
        assert_eq!(amount("5e2"), Some(500));
        assert_eq!(amount("-0.0"), Some(0));
        assert_eq!(amount(&i64::MIN.to_string()), Some(i64::MIN));
        for refused in [
            "5.5",
            "1e-3",
            "9223372036854775808",
            "9.3e18",
            "\"5\"",
            "null",
            "1e400",
        ] {
            assert_eq!(amount(refused), None, "{refused}");
        }
    }

    proptest::proptest! {
        #[test]
        fn every_i64_decodes_to_itself_and_no_fraction_decodes(
            n in proptest::prelude::any::<i64>(),
            fraction in 0.01f64..0.99,
        ) {
            proptest::prop_assert_eq!(amount(&n.to_string()), Some(n));
            #[allow(clippy::cast_precision_loss)]
            let small = (n % 1_000_000) as f64;
            proptest::prop_assert_eq!(amount(&format!("{:?}", small + fraction)), None);
        }
    }

    async fn call(
        method: &str,
        content_type: Option<&str>,
        body: &'static str,
    ) -> Result<(StatusCode, serde_json::Value), Box<dyn std::error::Error>> {
        let mut request = Request::builder().method(method).uri("/things");
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = app().oneshot(request.body(Body::from(body))?).await?;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await?;
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Ok((status, json))
    }

    #[tokio::test]
    async fn every_rejection_has_the_one_error_shape_and_the_right_status()
    -> Result<(), Box<dyn std::error::Error>> {
        let json = Some("application/json");
        let long = r#"{"name":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#;
        let cases = [
            ("POST", json, "{not json", 400, "malformed_json"),
            ("POST", json, r#"{"name":1}"#, 422, "invalid_body"),
            ("POST", json, r#"{"name":"a","x":1}"#, 422, "invalid_body"),
            // A struct's fields by position, which serde would take, but not an object.
            ("POST", json, r#"["a"]"#, 422, "invalid_body"),
            ("POST", json, r#"[{"name":"a"}]"#, 422, "invalid_body"),
            ("POST", json, r#""a""#, 422, "invalid_body"),
            (
                "POST",
                None,
                r#"{"name":"a"}"#,
                415,
                "unsupported_media_type",
            ),
            ("POST", json, long, 413, "body_too_large"),
            ("DELETE", json, "", 405, "method_not_allowed"),
        ];
        for (method, content_type, body, status, code) in cases {
            let (got, json) = call(method, content_type, body).await?;
            assert_eq!(got.as_u16(), status, "{method} {body}");
            assert_eq!(json["error"]["code"], code, "{method} {body}");
            assert!(json["error"]["message"].is_string());
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_body_that_breaks_off_is_a_bad_request_not_too_large()
    -> Result<(), Box<dyn std::error::Error>> {
        let broken: Vec<Result<&'static str, std::io::Error>> = vec![
            Ok("{\"name\":"),
            Err(std::io::Error::other("connection reset")),
        ];
        let request = Request::builder()
            .method("POST")
            .uri("/things")
            .header("content-type", "application/json")
            .body(Body::from_stream(futures::stream::iter(broken)))?;
        let response = app().oneshot(request).await?;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await?;
        let json: serde_json::Value = serde_json::from_slice(&bytes)?;
        assert_eq!(json["error"]["code"], "bad_request");
        Ok(())
    }
}
