//! `POST /categories/{name}/schema` and `GET /categories/{name}/schema`: the JSON Schema a
//! category's products' `attributes` must follow, and how it is applied.

use axum::Json;
use axum::extract::State;
use saga_runtime::auth::{Admin, AuthRefusals};
use saga_runtime::http::{ApiError, AppJson, AppPath, BodyRefusals, ErrorBody, Unavailable};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::domain::{Category, ValidationAction, ValidationLevel};
use crate::service::{self, SetCategorySchema};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(set_schema, get_schema))
}

/// A category's schema and how it is applied; the body of both routes.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CategorySchema {
    /// A JSON Schema (drafts 4 to 2020-12, by its `$schema`; 2020-12 without one). It may not
    /// refer to remote documents.
    #[schema(value_type = Object)]
    pub schema: serde_json::Value,
    /// `strict` checks every create and update; `moderate` lets a product that was already
    /// invalid be updated unchecked. Default `strict`.
    #[serde(default = "strict")]
    #[schema(value_type = String, example = "strict")]
    pub validation_level: ValidationLevelName,
    /// `error` refuses invalid attributes (422 `attributes_refused`); `warn` accepts them and
    /// logs a warning. Default `error`.
    #[serde(default = "error")]
    #[schema(value_type = String, example = "error")]
    pub validation_action: ValidationActionName,
}

/// `strict` or `moderate`, as the API spells them.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ValidationLevelName {
    Strict,
    Moderate,
}

/// `error` or `warn`, as the API spells them.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ValidationActionName {
    Error,
    Warn,
}

fn strict() -> ValidationLevelName {
    ValidationLevelName::Strict
}

fn error() -> ValidationActionName {
    ValidationActionName::Error
}

impl From<ValidationLevelName> for ValidationLevel {
    fn from(level: ValidationLevelName) -> Self {
        match level {
            ValidationLevelName::Strict => ValidationLevel::Strict,
            ValidationLevelName::Moderate => ValidationLevel::Moderate,
        }
    }
}

impl From<ValidationActionName> for ValidationAction {
    fn from(action: ValidationActionName) -> Self {
        match action {
            ValidationActionName::Error => ValidationAction::Error,
            ValidationActionName::Warn => ValidationAction::Warn,
        }
    }
}

impl From<Category> for CategorySchema {
    fn from(category: Category) -> Self {
        Self {
            schema: category.schema,
            validation_level: match category.level {
                ValidationLevel::Strict => ValidationLevelName::Strict,
                ValidationLevel::Moderate => ValidationLevelName::Moderate,
            },
            validation_action: match category.action {
                ValidationAction::Error => ValidationActionName::Error,
                ValidationAction::Warn => ValidationActionName::Warn,
            },
        }
    }
}

/// Sets the category's schema, replacing any it had. Products already in the category are
/// not touched; the schema judges their next update as `validation_level` says.
#[utoipa::path(post, path = "/categories/{name}/schema", tag = "categories",
    security(("bearer" = ["admin"])),
    params(("name" = String, Path, description = "The category: 1 to 64 of a-z, 0-9, '-' and '_'",
        pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")),
    request_body = CategorySchema,
    responses(
        (status = 200, description = "The category's schema, as set", body = CategorySchema),
        BodyRefusals,
        (status = 422, description = "A bad category name, or a schema that does not compile \
            (`invalid_schema`)", body = ErrorBody),
        AuthRefusals,
        Unavailable,
    ))]
async fn set_schema(
    _: Admin,
    State(uow): State<AppState>,
    AppPath(name): AppPath<String>,
    AppJson(request): AppJson<CategorySchema>,
) -> Result<Json<CategorySchema>, ApiError> {
    let category = Category::new(
        name,
        request.schema,
        request.validation_level.into(),
        request.validation_action.into(),
    )
    .map_err(service::ServiceError::from)?;
    let set = uow.run(SetCategorySchema(category)).await?;
    Ok(Json(set.into()))
}

/// The category's schema and how it is applied.
#[utoipa::path(get, path = "/categories/{name}/schema", tag = "categories",
    security(("bearer" = ["admin"])),
    params(("name" = String, Path, description = "The category")),
    responses(
        (status = 200, description = "The category's schema", body = CategorySchema),
        (status = 404, description = "The category has no schema", body = ErrorBody),
        AuthRefusals,
        Unavailable,
    ))]
async fn get_schema(
    _: Admin,
    State(uow): State<AppState>,
    AppPath(name): AppPath<String>,
) -> Result<Json<CategorySchema>, ApiError> {
    Ok(Json(service::get_category(uow.db(), &name).await?.into()))
}
