//! `GET /reservations?order_id=`: an order's reservation, for API composition (orders-svc's
//! `GET /orders/{id}/details`) and for support.

use axum::Json;
use axum::extract::State;
use saga_runtime::auth::{AuthRefusals, Caller};
use saga_runtime::http::{ApiError, AppQuery, ErrorBody, Unavailable};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use crate::domain::Reservation;
use crate::service;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(reservations_of_order))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReservationQuery {
    /// The order whose reservation to show.
    pub order_id: Uuid,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReservationList {
    /// The order's reservation decision; empty while inventory-svc has made none.
    pub reservations: Vec<ReservationResponse>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReservationResponse {
    pub order_id: Uuid,
    pub saga_id: Uuid,
    /// `RESERVED`, `REJECTED`, `RELEASED` or `CANCELLED`.
    pub status: &'static str,
    pub lines: Vec<ReservedLine>,
    /// Why it was rejected, released or cancelled.
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReservedLine {
    pub product_id: Uuid,
    pub quantity: u32,
}

impl From<Reservation> for ReservationResponse {
    fn from(reservation: Reservation) -> Self {
        Self {
            order_id: reservation.order_id,
            saga_id: reservation.saga_id,
            status: reservation.status.into(),
            lines: reservation
                .lines
                .iter()
                .map(|line| ReservedLine {
                    product_id: line.product_id,
                    quantity: line.quantity,
                })
                .collect(),
            reason: reservation.reason,
        }
    }
}

/// The reservation of an order: to its customer's token, or an admin's.
#[utoipa::path(get, path = "/reservations", tag = "reservations",
    security(("bearer" = [])),
    params(ReservationQuery),
    responses(
        (status = 200, description = "The order's reservation, if any", body = ReservationList),
        (status = 400, description = "No `order_id`, or not a UUID", body = ErrorBody),
        AuthRefusals,
        Unavailable,
    ))]
async fn reservations_of_order(
    caller: Caller,
    State(uow): State<AppState>,
    AppQuery(query): AppQuery<ReservationQuery>,
) -> Result<Json<ReservationList>, ApiError> {
    let reservation = service::get_reservation(uow.db(), query.order_id).await?;
    if let Some(reservation) = &reservation {
        caller.may_see(reservation.customer_id)?;
    }
    Ok(Json(ReservationList {
        reservations: reservation.into_iter().map(Into::into).collect(),
    }))
}
