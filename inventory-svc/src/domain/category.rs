//! Product categories and the JSON Schema each holds for its products' `attributes`: the
//! flexible, document-style part of the catalog, validated on the server as a document
//! database validates a collection.
//!
//! - `validation_level`: `strict` checks every create and every update; `moderate` checks
//!   creates and the updates of products whose attributes were valid before, and lets a
//!   product that was already invalid (say, made before the schema) be updated as it is.
//! - `validation_action`: `error` refuses what fails; `warn` accepts it and reports it.
//!
//! So a new or stricter schema never breaks the products that exist: they can still be read,
//! and (under `moderate`) still be updated.

use strum::{Display, EnumString, IntoStaticStr};

/// The most violations one answer lists.
const MAX_VIOLATIONS: usize = 20;

/// Its text (`strict`, `moderate`) is what the database stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Display, EnumString, IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum ValidationLevel {
    Strict,
    Moderate,
}

/// Its text (`error`, `warn`) is what the database stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Display, EnumString, IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum ValidationAction {
    Error,
    Warn,
}

/// A category and the schema of its products' attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Category {
    pub name: String,
    pub schema: serde_json::Value,
    pub level: ValidationLevel,
    pub action: ValidationAction,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CategoryError {
    #[error("a category name is 1 to 64 of a-z, 0-9, '-' and '_', starting with a letter or digit")]
    InvalidName,
    #[error("schema is not a JSON Schema this service can use: {0}")]
    InvalidSchema(String),
}

/// A category's name: lower case, so that `Shoes` and `shoes` are not two categories.
pub fn valid_category_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    first_ok
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'))
}

impl Category {
    /// A category with `schema`, which must be an object that compiles as a JSON Schema
    /// without fetching anything (a remote `$ref` does not).
    pub fn new(
        name: String,
        schema: serde_json::Value,
        level: ValidationLevel,
        action: ValidationAction,
    ) -> Result<Category, CategoryError> {
        if !valid_category_name(&name) {
            return Err(CategoryError::InvalidName);
        }
        if !schema.is_object() {
            return Err(CategoryError::InvalidSchema(
                "it must be an object".to_owned(),
            ));
        }
        // Stored as JSONB, like attributes, so under the same limits.
        if super::product::unstorable(&schema) {
            return Err(CategoryError::InvalidSchema(
                "it holds a NUL character or a number beyond ±1e300".to_owned(),
            ));
        }
        jsonschema::validator_for(&schema)
            .map_err(|error| CategoryError::InvalidSchema(error.to_string()))?;
        Ok(Category {
            name,
            schema,
            level,
            action,
        })
    }

    /// What `attributes` break of the schema, each as `path: message`; empty if nothing.
    pub fn violations(&self, attributes: &serde_json::Value) -> Vec<String> {
        match jsonschema::validator_for(&self.schema) {
            Ok(validator) => validator
                .iter_errors(attributes)
                .take(MAX_VIOLATIONS)
                .map(|error| {
                    let path = error.instance_path().to_string();
                    let path = if path.is_empty() {
                        "/".to_owned()
                    } else {
                        path
                    };
                    format!("{path}: {error}")
                })
                .collect(),
            // Stored schemas compiled when they were set; this is a schema from elsewhere.
            Err(error) => vec![format!("the category's schema does not compile: {error}")],
        }
    }

    /// What to do with `attributes`, given the product's attributes `before` an update (none
    /// on a create).
    pub fn judge(
        &self,
        attributes: &serde_json::Value,
        before: Option<&serde_json::Value>,
    ) -> Judgement {
        if self.level == ValidationLevel::Moderate
            && before.is_some_and(|before| !self.violations(before).is_empty())
        {
            return Judgement::Unchecked;
        }
        let violations = self.violations(attributes);
        match (violations.is_empty(), self.action) {
            (true, _) => Judgement::Valid,
            (false, ValidationAction::Warn) => Judgement::AcceptedDespite(violations),
            (false, ValidationAction::Error) => Judgement::Refused(violations),
        }
    }
}

/// The verdict on a product's attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    Valid,
    /// `moderate`: the product was invalid before this update, so it is not checked.
    Unchecked,
    /// `warn`: invalid, accepted and reported.
    AcceptedDespite(Vec<String>),
    /// `error`: invalid, refused.
    Refused(Vec<String>),
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn shoes(level: ValidationLevel, action: ValidationAction) -> Result<Category, CategoryError> {
        Category::new(
            "shoes".into(),
            json!({
                "type": "object",
                "required": ["size"],
                "properties": {"size": {"type": "integer", "minimum": 30, "maximum": 50}},
            }),
            level,
            action,
        )
    }

    #[test]
    fn strict_with_error_refuses_what_breaks_the_schema_naming_where() -> Result<(), CategoryError>
    {
        let category = shoes(ValidationLevel::Strict, ValidationAction::Error)?;
        assert_eq!(category.judge(&json!({"size": 42}), None), Judgement::Valid);
        match category.judge(&json!({"size": 60}), None) {
            Judgement::Refused(violations) => {
                assert!(violations[0].starts_with("/size: "), "{violations:?}")
            }
            other => panic!("{other:?}"),
        }
        // Strict checks an update whatever the product was before.
        assert!(matches!(
            category.judge(&json!({}), Some(&json!({"size": 1}))),
            Judgement::Refused(_)
        ));
        Ok(())
    }

    #[test]
    fn moderate_lets_a_product_that_was_already_invalid_be_updated() -> Result<(), CategoryError> {
        let category = shoes(ValidationLevel::Moderate, ValidationAction::Error)?;
        let invalid_before = json!({"colour": "red"});
        assert_eq!(
            category.judge(&json!({"colour": "blue"}), Some(&invalid_before)),
            Judgement::Unchecked
        );
        // A valid product stays valid: its update is checked.
        assert!(matches!(
            category.judge(&json!({"size": 99}), Some(&json!({"size": 40}))),
            Judgement::Refused(_)
        ));
        // A new product is always checked.
        assert!(matches!(
            category.judge(&invalid_before, None),
            Judgement::Refused(_)
        ));
        Ok(())
    }

    #[test]
    fn warn_accepts_and_reports() -> Result<(), CategoryError> {
        let category = shoes(ValidationLevel::Strict, ValidationAction::Warn)?;
        assert!(matches!(
            category.judge(&json!({"size": "large"}), None),
            Judgement::AcceptedDespite(v) if !v.is_empty()
        ));
        Ok(())
    }

    #[test]
    fn a_schema_must_compile_and_a_name_be_plain() {
        let bad = |schema| {
            Category::new(
                "shoes".into(),
                schema,
                ValidationLevel::Strict,
                ValidationAction::Error,
            )
        };
        assert!(matches!(
            bad(json!({"type": "no-such-type"})),
            Err(CategoryError::InvalidSchema(_))
        ));
        assert!(matches!(
            bad(json!(["not", "an", "object"])),
            Err(CategoryError::InvalidSchema(_))
        ));
        assert!(matches!(
            bad(json!({"\u{0}": 1})),
            Err(CategoryError::InvalidSchema(_))
        ));
        assert!(matches!(
            bad(json!({"$ref": "https://example.com/remote.json"})),
            Err(CategoryError::InvalidSchema(_))
        ));
        for name in ["Shoes", "", "-x", "a b", &"x".repeat(65)] {
            assert!(!valid_category_name(name), "{name:?}");
        }
        assert!(valid_category_name("shoes_2024-eu"));
    }
}
