use axum::response::{IntoResponse, Response};
use saga_runtime::http::ApiError;

use crate::domain::PlaceOrderError;
use crate::service::ServiceError;

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match &error {
            ServiceError::Rejected(rejection) => {
                ApiError::unprocessable(rejection_code(rejection), rejection.to_string())
            }
            ServiceError::NotFound(what) => ApiError::not_found(what),
            ServiceError::KeyReused(reused) => reused.clone().into(),
            ServiceError::Db(db) if saga_runtime::http::is_unavailable(db) => {
                ApiError::unavailable(&error)
            }
            ServiceError::Db(_)
            | ServiceError::Outbox(_)
            | ServiceError::Raced(_)
            | ServiceError::NotAllOpen => ApiError::internal(&error),
        }
    }
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

fn rejection_code(rejection: &PlaceOrderError) -> &'static str {
    match rejection {
        PlaceOrderError::NoItems => "no_items",
        PlaceOrderError::TooManyItems => "too_many_items",
        PlaceOrderError::InvalidQuantity(_) => "invalid_quantity",
        PlaceOrderError::DuplicateProduct(_) => "duplicate_product",
        PlaceOrderError::UnknownProduct(_) => "unknown_product",
        PlaceOrderError::TotalOverflow => "total_overflow",
    }
}
