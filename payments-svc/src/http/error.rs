use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use saga_runtime::http::ApiError;

use crate::domain::AccountError;
use crate::service::ServiceError;

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match &error {
            ServiceError::Rejected(AccountError::NegativeBalance) => {
                ApiError::unprocessable("negative_balance", error.to_string())
            }
            ServiceError::Rejected(_) => {
                ApiError::unprocessable("invalid_amount", error.to_string())
            }
            ServiceError::AccountExists(_) => {
                ApiError::new(StatusCode::CONFLICT, "account_exists", error.to_string())
            }
            ServiceError::NotFound(what) => ApiError::not_found(what),
            ServiceError::KeyReused(reused) => reused.clone().into(),
            ServiceError::Db(db) if saga_runtime::http::is_unavailable(db) => {
                ApiError::unavailable(&error)
            }
            ServiceError::Db(_)
            | ServiceError::Outbox(_)
            | ServiceError::ChargedWithoutCustomer(_)
            | ServiceError::DecidedBefore => ApiError::internal(&error),
        }
    }
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}
