use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use saga_runtime::http::{ApiError, AppJson, AppPath};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::AppState;
use crate::domain::{LineRequest, Order};
use crate::service::{self, PlaceOrder};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/orders", post(place_order))
        .route("/orders/{id}", get(get_order))
}

/// `POST /orders` body. Prices are never accepted from the client.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderRequest {
    pub customer_id: Uuid,
    pub items: Vec<ItemRequest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemRequest {
    pub product_id: Uuid,
    /// Signed and wide so that a negative or huge quantity is a 422 from the domain rather
    /// than a parse error.
    pub quantity: i64,
}

#[derive(Debug, Serialize)]
pub struct OrderAccepted {
    pub id: Uuid,
    pub saga_id: Uuid,
    pub status: &'static str,
    pub total_cents: i64,
}

#[derive(Debug, Serialize)]
pub struct OrderResponse {
    pub id: Uuid,
    pub saga_id: Uuid,
    pub customer_id: Uuid,
    pub status: &'static str,
    pub total_cents: i64,
    pub items: Vec<ItemResponse>,
    pub failure_reason: Option<String>,
    /// Related resources: the order's saga timeline.
    pub links: OrderLinks,
}

#[derive(Debug, Serialize)]
pub struct OrderLinks {
    /// `GET /sagas/{saga_id}`.
    pub saga: String,
}

#[derive(Debug, Serialize)]
pub struct ItemResponse {
    pub product_id: Uuid,
    pub quantity: u32,
    pub unit_price_cents: i64,
}

async fn place_order(
    State(state): State<AppState>,
    AppJson(request): AppJson<PlaceOrderRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let lines = request
        .items
        .iter()
        .map(|item| LineRequest {
            product_id: item.product_id,
            quantity: item.quantity,
        })
        .collect();
    let admission = state.in_flight.admit().map_err(|refused| {
        ApiError::overloaded(refused.to_string(), state.admission.retry_after)
    })?;
    let order = state
        .place_orders
        .run(PlaceOrder {
            customer_id: request.customer_id,
            lines,
        })
        .await?;
    admission.keep();
    let location = format!("/orders/{}", order.id);
    let body = OrderAccepted {
        id: order.id,
        saga_id: order.saga_id,
        status: order.status.into(),
        total_cents: order.total_cents,
    };
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(body),
    ))
}

async fn get_order(
    State(state): State<AppState>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<OrderResponse>, ApiError> {
    let order = service::get_order(state.uow.db(), id).await?;
    Ok(Json(OrderResponse::from(order)))
}

impl From<Order> for OrderResponse {
    fn from(order: Order) -> Self {
        Self {
            id: order.id,
            saga_id: order.saga_id,
            customer_id: order.customer_id,
            status: order.status.into(),
            total_cents: order.total_cents,
            items: order
                .lines
                .into_iter()
                .map(|line| ItemResponse {
                    product_id: line.product_id,
                    quantity: line.quantity,
                    unit_price_cents: line.unit_price_cents,
                })
                .collect(),
            failure_reason: order.failure_reason,
            links: OrderLinks {
                saga: format!("/sagas/{}", order.saga_id),
            },
        }
    }
}
