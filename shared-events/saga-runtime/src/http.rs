//! HTTP pieces every service shares: the one JSON error shape, a JSON extractor whose
//! rejections use that shape, `GET /health`, and serving with a request timeout and graceful
//! shutdown. Each service maps its own errors to [`ApiError`] in its `http/error.rs`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rdkafka::producer::Producer;
use sea_orm::DatabaseConnection;
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;
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
}

/// Pool exhaustion and lost connections are worth a retry (503), unlike a failed query (500).
pub fn is_unavailable(error: &sea_orm::DbErr) -> bool {
    matches!(
        error,
        sea_orm::DbErr::ConnectionAcquire(_) | sea_orm::DbErr::Conn(_)
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
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

/// `Json` whose rejections are [`ApiError`]s: malformed JSON is 400, a body of the wrong
/// shape 422, a missing `content-type: application/json` 415.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppJson<T>(pub T);

impl<S, T> FromRequest<S> for AppJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(AppJson(value)),
            Err(rejection) => Err(rejection_to_error(&rejection)),
        }
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
pub fn health_router(probe: HealthProbe) -> Router {
    Router::new()
        .route("/health", get(ready))
        .route("/health/ready", get(ready))
        .route("/health/live", get(live))
        .with_state(probe)
}

async fn live(State(probe): State<HealthProbe>) -> Response {
    let loops = probe.health.report(probe.stale_after);
    let alive = loops.iter().all(|part| part.alive);
    let body = json!({
        "status": if alive { "ok" } else { "unavailable" },
        "loops": loops,
    });
    (status_of(alive), Json(body)).into_response()
}

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
    let describe = |r: &Result<(), String>| match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => e.clone(),
    };
    let body = json!({
        "status": if ready { "ok" } else { "unavailable" },
        "database": describe(&database),
        "kafka": describe(&kafka),
        "loops": loops,
    });
    (status_of(ready), Json(body)).into_response()
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
pub fn sagas_router<H: EventHandler>(applier: Applier<H>) -> Router {
    Router::new()
        .route("/sagas/stuck", get(stuck_sagas::<H>))
        .route("/sagas/{saga_id}/retry", post(retry_saga::<H>))
        .with_state(Arc::new(applier))
}

async fn stuck_sagas<H: EventHandler>(
    State(applier): State<Arc<Applier<H>>>,
) -> Result<Response, ApiError> {
    let parked = applier.parking.list().await.map_err(db_error)?;
    Ok(Json(json!({ "count": parked.len(), "parked": parked })).into_response())
}

async fn retry_saga<H: EventHandler>(
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
fn db_error(error: sea_orm::DbErr) -> ApiError {
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
pub fn metrics_router(service: &'static str, db: DatabaseConnection) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state((service, db))
}

async fn metrics(State((service, db)): State<(&'static str, DatabaseConnection)>) -> Response {
    let mut gauges = crate::metrics::pool_gauges(db.get_postgres_connection_pool());
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

/// Serves `router` until `shutdown`, then lets in-flight requests finish. Every request is
/// bounded by `settings.request_timeout` (408 past it) and `settings.max_body_bytes` (413),
/// and traced.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: &HttpSettings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            settings.request_timeout,
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
        .layer(axum::middleware::from_fn(count_request));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
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
        Router::new()
            .route("/things", post(echo))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(DefaultBodyLimit::max(64))
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
