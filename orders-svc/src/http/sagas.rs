//! The saga read API: `GET /sagas` (recent sagas, filtered) and `GET /sagas/{saga_id}` (one
//! saga's timeline from the saga view). The runtime serves `GET /sagas/stuck` and
//! `POST /sagas/{saga_id}/retry` beside them.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use saga_runtime::auth::{AuthRefusals, Operator};
use saga_runtime::http::{ApiError, AppPath, AppQuery, ErrorBody, PathRefusal, Unavailable};
use serde::{Deserialize, Serialize};
use shared_events::Step;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use crate::domain::OrderStatus;
use crate::repo::sagas::{self, SagaFilter, SagaSummary};
use crate::service;

/// The most sagas one `GET /sagas` returns.
pub const MAX_LIMIT: u64 = 500;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_sagas))
        .routes(routes!(get_saga))
}

/// `GET /sagas` query. Unknown parameters are refused, so a typo is not silently ignored.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SagaQuery {
    /// An order status, e.g. `PENDING_PAYMENT` or `FAILED_INVENTORY`.
    #[param(schema_with = status_schema)]
    pub status: Option<String>,
    /// How far back: `30s`, `10m`, `2h`, `1d`. An RFC 3339 time is taken too.
    #[param(pattern = "^[0-9]{1,6}[smhd]$")]
    pub since: Option<String>,
    /// 1..=500, default 50.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
}

/// The order statuses by name, as `status` takes them.
pub fn status_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(
            <OrderStatus as strum::VariantNames>::VARIANTS
                .iter()
                .copied(),
        ))
        .build()
}

impl SagaQuery {
    pub fn filter(&self) -> Result<SagaFilter, ApiError> {
        let status = self
            .status
            .as_deref()
            .map(|s| {
                s.parse::<OrderStatus>().map_err(|_| {
                    ApiError::unprocessable(
                        "invalid_status",
                        format!("status {s:?} is not an order status"),
                    )
                })
            })
            .transpose()?;
        let since = self.since.as_deref().map(parse_since).transpose()?;
        let limit = self.limit.unwrap_or(50);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::unprocessable(
                "invalid_limit",
                format!("limit must be 1..={MAX_LIMIT}"),
            ));
        }
        Ok(SagaFilter {
            status,
            since,
            limit,
        })
    }
}

/// `10m` before now, or an RFC 3339 time.
fn parse_since(text: &str) -> Result<DateTime<Utc>, ApiError> {
    let bad = || {
        ApiError::unprocessable(
            "invalid_since",
            format!("since {text:?}: expected e.g. 30s, 10m, 2h, 1d or an RFC 3339 time"),
        )
    };
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let back = shared_events::timeline::parse_lookback(text).ok_or_else(bad)?;
    Utc::now().checked_sub_signed(back).ok_or_else(bad)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SagaListItem {
    pub saga_id: Uuid,
    pub order_id: Uuid,
    pub status: String,
    pub total_cents: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Placement to terminal status; absent while in flight.
    pub duration_ms: Option<f64>,
    pub failure_reason: Option<String>,
    pub href: String,
}

impl From<SagaSummary> for SagaListItem {
    fn from(saga: SagaSummary) -> Self {
        let finished = saga.status != OrderStatus::OPEN.to_string();
        let duration_ms = finished.then(|| {
            (saga.updated_at - saga.created_at)
                .to_std()
                .unwrap_or_default()
                .as_secs_f64()
                * 1000.0
        });
        Self {
            href: format!("/sagas/{}", saga.saga_id),
            saga_id: saga.saga_id,
            order_id: saga.order_id,
            status: saga.status,
            total_cents: saga.total_cents,
            created_at: saga.created_at,
            updated_at: saga.updated_at,
            duration_ms,
            failure_reason: saga.failure_reason,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SagaList {
    pub count: usize,
    pub sagas: Vec<SagaListItem>,
}

/// Recent sagas, newest first, by their orders.
#[utoipa::path(get, path = "/sagas", tag = "sagas",
    security(("bearer" = ["operator"])),
    params(SagaQuery),
    responses(
        (status = 200, description = "Sagas begun since `since`, newest first", body = SagaList),
        (status = 400, description = "An unknown or malformed parameter", body = ErrorBody),
        (status = 422, description = "A bad `status`, `since` or `limit`", body = ErrorBody),
        AuthRefusals,
        Unavailable,
    ))]
async fn list_sagas(
    _: Operator,
    State(state): State<AppState>,
    AppQuery(query): AppQuery<SagaQuery>,
) -> Result<Json<SagaList>, ApiError> {
    let filter = query.filter()?;
    let sagas: Vec<SagaListItem> = sagas::recent(state.uow.db(), filter)
        .await
        .map_err(service::ServiceError::from)?
        .into_iter()
        .map(SagaListItem::from)
        .collect();
    Ok(Json(SagaList {
        count: sagas.len(),
        sagas,
    }))
}

/// `GET /sagas/{saga_id}`: the order's current status and the saga's timeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct SagaResponse {
    pub saga_id: Uuid,
    pub order_id: Uuid,
    /// The order's status now.
    pub status: String,
    pub order: String,
    /// The status the saga's last event set, once it has ended.
    pub terminal: Option<&'static str>,
    pub duration_ms: Option<f64>,
    /// Each event: `step` (type), `service`, `time`, `hop_ms`, `outcome`, `event_id`.
    pub steps: Vec<Step>,
}

/// One saga's timeline, from orders-svc's saga view.
#[utoipa::path(get, path = "/sagas/{saga_id}", tag = "sagas",
    security(("bearer" = ["operator"])),
    params(("saga_id" = Uuid, Path, description = "The saga's ID (the order's `saga_id`)")),
    responses(
        (status = 200, description = "The saga's events and hops", body = SagaResponse),
        PathRefusal,
        (status = 404, description = "No such saga", body = ErrorBody),
        AuthRefusals,
        Unavailable,
    ))]
async fn get_saga(
    _: Operator,
    State(state): State<AppState>,
    AppPath(saga_id): AppPath<Uuid>,
) -> Result<Json<SagaResponse>, ApiError> {
    let detail = service::get_saga(state.uow.db(), saga_id).await?;
    Ok(Json(SagaResponse {
        saga_id,
        order_id: detail.summary.order_id,
        status: detail.summary.status,
        order: format!("/orders/{}", detail.summary.order_id),
        terminal: detail.timeline.terminal,
        duration_ms: detail.timeline.duration.map(|d| d.as_secs_f64() * 1000.0),
        steps: detail.timeline.steps,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(status: Option<&str>, since: Option<&str>, limit: Option<u64>) -> SagaQuery {
        SagaQuery {
            status: status.map(str::to_owned),
            since: since.map(str::to_owned),
            limit,
        }
    }

    #[test]
    fn a_bad_status_since_or_limit_is_a_422_naming_it() {
        for (bad, code) in [
            (query(Some("DONE"), None, None), "invalid_status"),
            (query(None, Some("10x"), None), "invalid_since"),
            (query(None, Some("-5m"), None), "invalid_since"),
            (query(None, None, Some(0)), "invalid_limit"),
            (query(None, None, Some(MAX_LIMIT + 1)), "invalid_limit"),
        ] {
            let error = bad.filter().err();
            assert_eq!(error.map(|e| e.code), Some(code));
        }
        let good = query(Some("CONFIRMED"), Some("10m"), Some(5)).filter();
        assert!(good.is_ok_and(|f| f.limit == 5 && f.status == Some(OrderStatus::Confirmed)));
    }
}
