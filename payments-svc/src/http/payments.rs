//! `GET /payments?order_id=`: an order's payment, for API composition (orders-svc's
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
use crate::domain::Payment;
use crate::service;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(payments_of_order))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PaymentQuery {
    /// The order whose payment to show.
    pub order_id: Uuid,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentList {
    /// The order's payment; empty while payments-svc has decided none.
    pub payments: Vec<PaymentResponse>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentResponse {
    pub id: Uuid,
    pub order_id: Uuid,
    pub saga_id: Uuid,
    pub customer_id: Option<Uuid>,
    pub amount_cents: i64,
    /// `CHARGED`, `DECLINED`, `REFUNDED` or `CANCELLED`.
    pub status: &'static str,
    /// Why it was declined, refunded or cancelled.
    pub reason: Option<String>,
}

impl From<Payment> for PaymentResponse {
    fn from(payment: Payment) -> Self {
        Self {
            id: payment.id,
            order_id: payment.order_id,
            saga_id: payment.saga_id,
            customer_id: payment.customer_id,
            amount_cents: payment.amount_cents,
            status: payment.status.into(),
            reason: payment.reason,
        }
    }
}

/// The payment of an order: to its customer's token, or an admin's.
#[utoipa::path(get, path = "/payments", tag = "payments",
    security(("bearer" = [])),
    params(PaymentQuery),
    responses(
        (status = 200, description = "The order's payment, if any", body = PaymentList),
        (status = 400, description = "No `order_id`, or not a UUID", body = ErrorBody),
        AuthRefusals,
        Unavailable,
    ))]
async fn payments_of_order(
    caller: Caller,
    State(uow): State<AppState>,
    AppQuery(query): AppQuery<PaymentQuery>,
) -> Result<Json<PaymentList>, ApiError> {
    let payment = service::get_payment_of_order(uow.db(), query.order_id).await?;
    if let Some(payment) = &payment {
        caller.may_see(payment.customer_id)?;
    }
    Ok(Json(PaymentList {
        payments: payment.into_iter().map(Into::into).collect(),
    }))
}
