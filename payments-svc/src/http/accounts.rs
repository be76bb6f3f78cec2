use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use saga_runtime::auth::{Admin, AuthRefusals};
use saga_runtime::http::{
    ApiError, AppJson, AppPath, BodyRefusals, ErrorBody, PathRefusal, Unavailable,
};
use saga_runtime::idempotency::{IdempotencyHeader, Idempotent, MaybeIdempotencyKey, Recorded};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use crate::domain::Account;
use crate::service::{self, CreateAccount};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_account))
        .routes(routes!(get_account))
}

/// Serialized, it is the request an `Idempotency-Key` is checked against.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccountRequest {
    pub customer_id: Uuid,
    /// The opening balance, never negative.
    #[serde(deserialize_with = "saga_runtime::http::whole_number")]
    #[schema(minimum = 0)]
    pub balance_cents: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountResponse {
    pub customer_id: Uuid,
    pub balance_cents: i64,
}

impl From<Account> for AccountResponse {
    fn from(account: Account) -> Self {
        Self {
            customer_id: account.customer_id,
            balance_cents: account.balance_cents,
        }
    }
}

/// Opens a customer's account with an opening balance.
#[utoipa::path(post, path = "/accounts", tag = "accounts",
    security(("bearer" = ["admin"])),
    params(IdempotencyHeader),
    request_body = CreateAccountRequest,
    responses(
        (status = 201, description = "Account opened", body = AccountResponse,
            headers(
                ("Location" = String, description = "`/accounts/{customer_id}`"),
                ("Idempotent-Replayed" = Option<bool>, description = "`true` on a replay"),
            )),
        (status = 409, description = "The customer already has an account", body = ErrorBody),
        BodyRefusals,
        (status = 422, description = "A field is missing or out of range, or the \
            `Idempotency-Key` was used for another request", body = ErrorBody),
        AuthRefusals,
        Unavailable,
    ))]
async fn create_account(
    _: Admin,
    State(uow): State<AppState>,
    MaybeIdempotencyKey(key): MaybeIdempotencyKey,
    AppJson(request): AppJson<CreateAccountRequest>,
) -> Result<Response, ApiError> {
    let key = key.map(|key| key.for_request("POST /accounts", &request));
    let done = uow
        .run(Idempotent {
            key,
            command: CreateAccount {
                customer_id: request.customer_id,
                balance_cents: request.balance_cents,
            },
            respond: opened,
        })
        .await?;
    Ok(done.respond())
}

/// `201 Created`, as it is recorded for the request's `Idempotency-Key`.
fn opened(account: &Account) -> Recorded {
    Recorded::at(
        StatusCode::CREATED,
        format!("/accounts/{}", account.customer_id),
        &AccountResponse::from(*account),
    )
}

/// A customer's balance.
#[utoipa::path(get, path = "/accounts/{customer_id}", tag = "accounts",
    security(("bearer" = ["admin"])),
    params(("customer_id" = Uuid, Path, description = "The customer's ID")),
    responses(
        (status = 200, description = "The account", body = AccountResponse),
        PathRefusal,
        (status = 404, description = "No such account", body = ErrorBody),
        AuthRefusals,
        Unavailable,
    ))]
async fn get_account(
    _: Admin,
    State(uow): State<AppState>,
    AppPath(customer_id): AppPath<Uuid>,
) -> Result<Json<AccountResponse>, ApiError> {
    Ok(Json(
        service::get_account(uow.db(), customer_id).await?.into(),
    ))
}
