use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use saga_runtime::auth::{AuthRefusals, Caller};
use saga_runtime::http::{
    ApiError, AppJson, AppPath, BodyRefusals, ErrorBody, PathRefusal, Unavailable,
};
use saga_runtime::idempotency::{
    self, IdempotencyHeader, Idempotent, Idempotently, MaybeIdempotencyKey, Recorded,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use crate::domain::{LineRequest, Order};
use crate::service::{self, PlaceOrder};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(place_order))
        .routes(routes!(get_order))
        .routes(routes!(get_order_details))
}

/// `POST /orders` body. Prices are never accepted from the client. Serialized, it is the
/// request an `Idempotency-Key` is checked against.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderRequest {
    pub customer_id: Uuid,
    /// 1 to 100 lines, each of a different product.
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<ItemRequest>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemRequest {
    pub product_id: Uuid,
    /// Signed and wide so that a negative or huge quantity is a 422 from the domain rather
    /// than a parse error.
    #[serde(deserialize_with = "saga_runtime::http::whole_number")]
    #[schema(minimum = 1, maximum = 1000)]
    pub quantity: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderAccepted {
    pub id: Uuid,
    pub saga_id: Uuid,
    pub status: &'static str,
    pub total_cents: i64,
}

#[derive(Debug, Serialize, ToSchema)]
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

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderLinks {
    /// `GET /sagas/{saga_id}`.
    pub saga: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ItemResponse {
    pub product_id: Uuid,
    pub quantity: u32,
    pub unit_price_cents: i64,
    /// The product's attributes from orders-svc's catalog replica (`{}` if it has none).
    #[schema(value_type = Object)]
    pub attributes: serde_json::Value,
}

/// Places an order and starts its saga. The answer comes before the saga ends: follow
/// `Location` (or `links.saga`) to see how it goes.
#[utoipa::path(post, path = "/orders", tag = "orders",
    security(("bearer" = [])),
    params(IdempotencyHeader),
    request_body = PlaceOrderRequest,
    responses(
        (status = 202, description = "Order accepted; its saga has begun. A retry with the same \
            `Idempotency-Key` gets this again, with `Idempotent-Replayed: true`",
            body = OrderAccepted,
            headers(
                ("Location" = String, description = "The order: `/orders/{id}`"),
                ("Idempotent-Replayed" = Option<bool>, description = "`true` on a replay"),
            )),
        BodyRefusals,
        AuthRefusals,
        (status = 422, description = "The order breaks a rule, or the `Idempotency-Key` was \
            used for another request (the code says which)", body = ErrorBody),
        (status = 503, description = "Too many sagas in flight, or the database is out of reach",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds"))),
    ))]
async fn place_order(
    caller: Caller,
    State(state): State<AppState>,
    MaybeIdempotencyKey(key): MaybeIdempotencyKey,
    AppJson(request): AppJson<PlaceOrderRequest>,
) -> Result<Response, ApiError> {
    // A customer orders for themselves; an admin for anyone.
    caller.acts_for(request.customer_id)?;
    let key = key.map(|key| key.for_request("POST /orders", &request));
    // A retry of an order already placed is answered before admission: it starts no saga.
    if let Some(replayed) = idempotency::replay(state.uow.db(), &key).await? {
        return Ok(replayed);
    }
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
    let placed = state
        .place_orders
        .run(Idempotent {
            key,
            command: PlaceOrder {
                customer_id: request.customer_id,
                lines,
            },
            respond: accepted,
        })
        .await?;
    // Only a new order is a new saga in flight; a replay (another request with the key was
    // just committed) gives its place back.
    if let Idempotently::Fresh(..) = placed {
        admission.keep();
    }
    Ok(placed.respond())
}

/// `202 Accepted` for a new order, as it is recorded for its `Idempotency-Key`.
fn accepted(order: &Order) -> Recorded {
    Recorded::at(
        StatusCode::ACCEPTED,
        format!("/orders/{}", order.id),
        &OrderAccepted {
            id: order.id,
            saga_id: order.saga_id,
            status: order.status.into(),
            total_cents: order.total_cents,
        },
    )
}

/// One order: its lines, its status and, once failed, why.
#[utoipa::path(get, path = "/orders/{id}", tag = "orders",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The order's ID")),
    responses(
        (status = 200, description = "The order", body = OrderResponse),
        PathRefusal,
        (status = 404, description = "No such order", body = ErrorBody),
        AuthRefusals,
        Unavailable,
    ))]
async fn get_order(
    caller: Caller,
    State(state): State<AppState>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<OrderResponse>, ApiError> {
    let order = service::get_order(state.uow.db(), id).await?;
    caller.acts_for(order.customer_id)?;
    Ok(Json(described(&state, order).await?))
}

/// `GET /orders/{id}/details`: the order with its payment and its reservation, each as the
/// service that owns it shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderDetails {
    pub order: OrderResponse,
    /// payments-svc's `GET /payments` entry; `null` while it has decided none, or when it did
    /// not answer (then `missing` says so).
    #[schema(value_type = Option<Object>)]
    pub payment: Option<serde_json::Value>,
    /// inventory-svc's `GET /reservations` entry; `null` likewise.
    #[schema(value_type = Option<Object>)]
    pub reservation: Option<serde_json::Value>,
    /// The parts that could not be had, and why: the answer is partial, not failed.
    pub missing: Vec<MissingPart>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MissingPart {
    /// `payment` or `reservation`.
    pub part: &'static str,
    pub service: &'static str,
    /// e.g. `did not answer in time`, `unreachable`, `answered 503 Service Unavailable`.
    pub reason: String,
}

/// One order composed across the services: the order from here, its payment from
/// payments-svc and its reservation from inventory-svc, asked at the same time with the
/// caller's token and trace context. A service that is down or slow costs at most
/// `PEER_TIMEOUT_MS`, and its part is marked missing.
#[utoipa::path(get, path = "/orders/{id}/details", tag = "orders",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The order's ID")),
    responses(
        (status = 200, description = "The order and what the other services answered in time",
            body = OrderDetails),
        PathRefusal,
        (status = 404, description = "No such order", body = ErrorBody),
        AuthRefusals,
        Unavailable,
    ))]
async fn get_order_details(
    caller: Caller,
    State(state): State<AppState>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<OrderDetails>, ApiError> {
    let order = service::get_order(state.uow.db(), id).await?;
    caller.acts_for(order.customer_id)?;
    let order = described(&state, order).await?;
    let authorization = caller.bearer();
    let (payment, reservation) = tokio::join!(
        state.peers.payment_of(id, &authorization),
        state.peers.reservation_of(id, &authorization),
    );
    let mut missing = Vec::new();
    let mut part = |answer: Result<Option<serde_json::Value>, String>, part, service| {
        answer.unwrap_or_else(|reason| {
            missing.push(MissingPart {
                part,
                service,
                reason,
            });
            None
        })
    };
    let payment = part(payment, "payment", "payments-svc");
    let reservation = part(reservation, "reservation", "inventory-svc");
    Ok(Json(OrderDetails {
        order,
        payment,
        reservation,
        missing,
    }))
}

/// The order as the API shows it, each line with its product's attributes from the replica.
async fn described(state: &AppState, order: Order) -> Result<OrderResponse, ApiError> {
    let product_ids: Vec<Uuid> = order.lines.iter().map(|line| line.product_id).collect();
    let attributes = service::product_attributes(state.uow.db(), &product_ids).await?;
    let mut response = OrderResponse::from(order);
    for item in &mut response.items {
        if let Some(found) = attributes.get(&item.product_id) {
            item.attributes = found.clone();
        }
    }
    Ok(response)
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
                    attributes: serde_json::json!({}),
                })
                .collect(),
            failure_reason: order.failure_reason,
            links: OrderLinks {
                saga: format!("/sagas/{}", order.saga_id),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn decode(body: &serde_json::Value) -> Result<PlaceOrderRequest, serde_json::Error> {
        serde_json::from_value(body.clone())
    }

    proptest! {
        /// A well-formed body decodes to exactly what it says, whichever way JSON writes its
        /// quantities (`2` or `2.0`).
        #[test]
        fn a_well_formed_body_decodes_to_what_it_says(
            customer in any::<u128>(),
            items in prop::collection::vec((any::<u128>(), any::<i32>(), any::<bool>()), 0..8),
        ) {
            let body = serde_json::json!({
                "customer_id": Uuid::from_u128(customer),
                "items": items.iter().map(|(product, quantity, as_float)| {
                    let quantity = if *as_float {
                        serde_json::json!(f64::from(*quantity))
                    } else {
                        serde_json::json!(quantity)
                    };
                    serde_json::json!({"product_id": Uuid::from_u128(*product), "quantity": quantity})
                }).collect::<Vec<_>>(),
            });
            let request = decode(&body).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(request.customer_id, Uuid::from_u128(customer));
            let decoded: Vec<(Uuid, i64)> =
                request.items.iter().map(|i| (i.product_id, i.quantity)).collect();
            let sent: Vec<(Uuid, i64)> = items
                .iter()
                .map(|(p, q, _)| (Uuid::from_u128(*p), i64::from(*q)))
                .collect();
            prop_assert_eq!(decoded, sent);
        }

        /// A fractional quantity, an unknown field or a malformed ID is refused, never
        /// rounded, ignored or guessed.
        #[test]
        fn a_body_off_the_contract_is_refused(
            fraction in 0.001f64..0.999,
            whole in -1_000i64..1_000,
            field in "[a-z_]{1,12}",
            bad_id in "[0-9a-z-]{0,40}",
        ) {
            let product = Uuid::now_v7();
            #[allow(clippy::cast_precision_loss)]
            let fractional = serde_json::json!({
                "customer_id": Uuid::now_v7(),
                "items": [{"product_id": product, "quantity": whole as f64 + fraction}],
            });
            prop_assert!(decode(&fractional).is_err());
            if !["customer_id", "items"].contains(&field.as_str()) {
                let extra = serde_json::json!({
                    "customer_id": Uuid::now_v7(),
                    "items": [],
                    field.clone(): 1,
                });
                prop_assert!(decode(&extra).is_err());
            }
            if Uuid::parse_str(&bad_id).is_err() {
                let malformed = serde_json::json!({"customer_id": bad_id, "items": []});
                prop_assert!(decode(&malformed).is_err());
            }
        }
    }
}
