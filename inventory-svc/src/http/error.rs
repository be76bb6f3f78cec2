use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use saga_runtime::http::ApiError;

use crate::domain::{CategoryError, ProductError};
use crate::service::ServiceError;

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match &error {
            ServiceError::Rejected(rejection) => {
                ApiError::unprocessable(rejection_code(rejection), error.to_string())
            }
            ServiceError::SkuTaken(_) => {
                ApiError::new(StatusCode::CONFLICT, "sku_taken", error.to_string())
            }
            ServiceError::NotFound(what) => ApiError::not_found(what),
            ServiceError::KeyReused(reused) => reused.clone().into(),
            ServiceError::InvalidCategory(CategoryError::InvalidName) => {
                ApiError::unprocessable("invalid_category", error.to_string())
            }
            ServiceError::InvalidCategory(CategoryError::InvalidSchema(_)) => {
                ApiError::unprocessable("invalid_schema", error.to_string())
            }
            ServiceError::AttributesRefused { .. } => {
                ApiError::unprocessable("attributes_refused", error.to_string())
            }
            ServiceError::Db(db) if saga_runtime::http::is_unavailable(db) => {
                ApiError::unavailable(&error)
            }
            ServiceError::Db(_)
            | ServiceError::Outbox(_)
            | ServiceError::StockRace(_)
            | ServiceError::DecidedBefore => ApiError::internal(&error),
        }
    }
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

fn rejection_code(rejection: &ProductError) -> &'static str {
    match rejection {
        ProductError::InvalidSku => "invalid_sku",
        ProductError::InvalidName => "invalid_name",
        ProductError::NegativePrice => "invalid_price",
        ProductError::NegativeStock => "invalid_stock",
        ProductError::InvalidAttributes => "invalid_attributes",
        ProductError::InvalidCategory => "invalid_category",
    }
}
