use saga_runtime::unit_of_work::{Announcements, Command, Tx};
use sea_orm::ConnectionTrait;

use super::ServiceError;
use crate::domain::{Category, Judgement, Product};
use crate::repo::categories;

/// Sets a category's schema and how it is applied. Products already in the category are not
/// touched: the schema judges their next update (see `domain::category`).
#[derive(Debug, Clone)]
pub struct SetCategorySchema(pub Category);

impl Command for SetCategorySchema {
    type Output = Category;
    type Error = ServiceError;

    async fn execute(self, tx: &Tx) -> Result<(Category, Announcements), ServiceError> {
        categories::upsert(tx, &self.0).await?;
        tracing::info!(category = %self.0.name, level = %self.0.level, action = %self.0.action, "category schema set");
        Ok((self.0, Announcements::none()))
    }
}

pub async fn get_category<C: ConnectionTrait>(
    db: &C,
    name: &str,
) -> Result<Category, ServiceError> {
    categories::find(db, name)
        .await?
        .ok_or(ServiceError::NotFound("category"))
}

/// Judges `product`'s attributes by its category's schema, if it names a category that has
/// one; `before` is what they were before an update. A refusal is
/// [`ServiceError::AttributesRefused`]; a `warn` schema's violations are logged and counted.
pub(super) async fn check_attributes(
    tx: &Tx,
    product: &Product,
    before: Option<&serde_json::Value>,
) -> Result<(), ServiceError> {
    let Some(name) = &product.category else {
        return Ok(());
    };
    let Some(category) = categories::find(tx, name).await? else {
        return Ok(());
    };
    match category.judge(&product.attributes, before) {
        Judgement::Valid | Judgement::Unchecked => Ok(()),
        Judgement::AcceptedDespite(violations) => {
            tracing::warn!(product_id = %product.id, category = %name, ?violations, "attributes break the category's schema; accepted (validation_action=warn)");
            saga_runtime::metrics::ATTRIBUTES_ACCEPTED_INVALID.increment();
            Ok(())
        }
        Judgement::Refused(violations) => Err(ServiceError::AttributesRefused {
            category: name.clone(),
            violations,
        }),
    }
}
