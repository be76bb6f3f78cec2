use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use saga_runtime::http::{ApiError, AppJson, AppPath};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::AppState;
use crate::domain::Account;
use crate::service::{self, CreateAccount};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/accounts", post(create_account))
        .route("/accounts/{customer_id}", get(get_account))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAccountRequest {
    pub customer_id: Uuid,
    pub balance_cents: i64,
}

#[derive(Debug, Serialize)]
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

async fn create_account(
    State(uow): State<AppState>,
    AppJson(request): AppJson<CreateAccountRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let account = uow
        .run(CreateAccount {
            customer_id: request.customer_id,
            balance_cents: request.balance_cents,
        })
        .await?;
    let location = format!("/accounts/{}", account.customer_id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(AccountResponse::from(account)),
    ))
}

async fn get_account(
    State(uow): State<AppState>,
    AppPath(customer_id): AppPath<Uuid>,
) -> Result<Json<AccountResponse>, ApiError> {
    Ok(Json(
        service::get_account(uow.db(), customer_id).await?.into(),
    ))
}
