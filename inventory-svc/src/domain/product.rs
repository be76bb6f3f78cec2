use uuid::Uuid;

/// Bound on a product's attribute document, so one product cannot bloat every read.
pub const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;

/// A catalog product and its stock.
#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    pub id: Uuid,
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    /// Units that can still be reserved.
    pub available: i64,
    /// Units held for orders.
    pub reserved: i64,
    /// The category whose JSON Schema the attributes follow, if any.
    pub category: Option<String>,
    /// The flexible, per-category part of the product (colour, size, voltage...): a JSON object.
    pub attributes: serde_json::Value,
}

/// A request to create a product, before validation.
#[derive(Debug, Clone, PartialEq)]
pub struct NewProduct {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub stock: i64,
    pub category: Option<String>,
    pub attributes: Option<serde_json::Value>,
}

/// A change to an existing product: each field given replaces the product's.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProductChanges {
    pub name: Option<String>,
    pub price_cents: Option<i64>,
    pub category: Option<String>,
    pub attributes: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProductError {
    #[error("sku must be 1 to 64 characters of letters, digits, '-', '_' or '.'")]
    InvalidSku,
    #[error("name must be 1 to 200 characters, not all spaces, and without NUL characters")]
    InvalidName,
    #[error("price_cents must not be negative")]
    NegativePrice,
    #[error("stock must not be negative")]
    NegativeStock,
    #[error(
        "attributes must be a JSON object of at most {MAX_ATTRIBUTES_BYTES} bytes, without NUL \
         characters, its numbers within ±{MAX_ATTRIBUTE_NUMBER:e}"
    )]
    InvalidAttributes,
    #[error("category must be 1 to 64 of a-z, 0-9, '-' and '_', starting with a letter or digit")]
    InvalidCategory,
}

/// The largest magnitude of a number in `attributes`. JSONB keeps numbers as exact
/// decimals and gives them back as digits, and a double read back from those digits near its
/// own limit (1.8e308) can fall out of range: refused here, it is a 422, never a product that
/// cannot be read.
pub const MAX_ATTRIBUTE_NUMBER: f64 = 1e300;

/// What PostgreSQL cannot store or give back: a NUL character (`\u0000`) anywhere, which
/// text and JSONB cannot hold, or a number beyond [`MAX_ATTRIBUTE_NUMBER`].
pub(super) fn unstorable(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(unstorable),
        Value::Object(fields) => fields
            .iter()
            .any(|(key, value)| key.contains('\0') || unstorable(value)),
        Value::Number(number) => number
            .as_f64()
            .is_none_or(|n| !n.is_finite() || n.abs() > MAX_ATTRIBUTE_NUMBER),
        Value::Null | Value::Bool(_) => false,
    }
}

impl NewProduct {
    /// Validates the request into a product with all its stock available.
    pub fn validate(self) -> Result<Product, ProductError> {
        // Taken as written: a SKU with spaces around it is refused, not trimmed, so that what
        // is stored is what was sent.
        let sku = self.sku.as_str();
        let sku_ok = !sku.is_empty()
            && sku.len() <= 64
            && sku
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !sku_ok {
            return Err(ProductError::InvalidSku);
        }
        if self.stock < 0 {
            return Err(ProductError::NegativeStock);
        }
        Ok(Product {
            id: Uuid::now_v7(),
            sku: sku.to_owned(),
            name: checked_name(&self.name)?,
            price_cents: checked_price(self.price_cents)?,
            available: self.stock,
            reserved: 0,
            category: self.category.map(checked_category).transpose()?,
            attributes: checked_attributes(
                self.attributes.unwrap_or_else(|| serde_json::json!({})),
            )?,
        })
    }
}

impl Product {
    /// The product with `changes` made, each checked as a new product's would be.
    pub fn changed(&self, changes: ProductChanges) -> Result<Product, ProductError> {
        Ok(Product {
            name: changes
                .name
                .as_deref()
                .map(checked_name)
                .transpose()?
                .unwrap_or_else(|| self.name.clone()),
            price_cents: changes
                .price_cents
                .map(checked_price)
                .transpose()?
                .unwrap_or(self.price_cents),
            category: match changes.category {
                Some(category) => Some(checked_category(category)?),
                None => self.category.clone(),
            },
            attributes: match changes.attributes {
                Some(attributes) => checked_attributes(attributes)?,
                None => self.attributes.clone(),
            },
            ..self.clone()
        })
    }
}

/// The name trimmed; the length limit counts what was sent, as the API's JSON Schema does.
fn checked_name(name: &str) -> Result<String, ProductError> {
    let trimmed = name.trim();
    if trimmed.is_empty() || name.chars().count() > 200 || trimmed.contains('\0') {
        return Err(ProductError::InvalidName);
    }
    Ok(trimmed.to_owned())
}

fn checked_price(price_cents: i64) -> Result<i64, ProductError> {
    if price_cents < 0 {
        return Err(ProductError::NegativePrice);
    }
    Ok(price_cents)
}

fn checked_category(category: String) -> Result<String, ProductError> {
    if !super::category::valid_category_name(&category) {
        return Err(ProductError::InvalidCategory);
    }
    Ok(category)
}

fn checked_attributes(attributes: serde_json::Value) -> Result<serde_json::Value, ProductError> {
    if !attributes.is_object()
        || attributes.to_string().len() > MAX_ATTRIBUTES_BYTES
        || unstorable(&attributes)
    {
        return Err(ProductError::InvalidAttributes);
    }
    Ok(attributes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> NewProduct {
        NewProduct {
            sku: "WID-1".into(),
            name: "Widget".into(),
            price_cents: 1250,
            stock: 10,
            category: None,
            attributes: Some(serde_json::json!({"colour": "blue"})),
        }
    }

    #[test]
    fn a_valid_request_makes_a_product_with_all_stock_available() -> Result<(), ProductError> {
        let product = request().validate()?;
        assert_eq!((product.available, product.reserved), (10, 0));
        assert_eq!(product.attributes["colour"], "blue");
        Ok(())
    }

    #[test]
    fn every_bound_is_inclusive() -> Result<(), ProductError> {
        // An attributes object serialised to exactly `bytes` bytes.
        let attributes_of = |bytes: usize| {
            let overhead = r#"{"a":""}"#.len();
            Some(serde_json::json!({ "a": "x".repeat(bytes - overhead) }))
        };
        let at_the_bounds = NewProduct {
            sku: "S".repeat(64),
            name: "n".repeat(200),
            price_cents: 0,
            stock: 0,
            category: Some("c".repeat(64)),
            attributes: attributes_of(MAX_ATTRIBUTES_BYTES),
        };
        let product = at_the_bounds.clone().validate()?;
        assert_eq!((product.price_cents, product.available), (0, 0));
        assert_eq!(MAX_ATTRIBUTES_BYTES, 16_384);
        let past = [
            (
                NewProduct {
                    name: "n".repeat(201),
                    ..at_the_bounds.clone()
                },
                ProductError::InvalidName,
            ),
            (
                NewProduct {
                    sku: "S".repeat(65),
                    ..at_the_bounds.clone()
                },
                ProductError::InvalidSku,
            ),
            (
                NewProduct {
                    attributes: attributes_of(MAX_ATTRIBUTES_BYTES + 1),
                    ..at_the_bounds
                },
                ProductError::InvalidAttributes,
            ),
        ];
        for (request, expected) in past {
            assert_eq!(request.validate(), Err(expected));
        }
        Ok(())
    }

    #[test]
    fn invalid_requests_are_rejected() {
        let cases = [
            (
                NewProduct {
                    sku: " ".into(),
                    ..request()
                },
                ProductError::InvalidSku,
            ),
            (
                NewProduct {
                    sku: "has space".into(),
                    ..request()
                },
                ProductError::InvalidSku,
            ),
            (
                NewProduct {
                    name: String::new(),
                    ..request()
                },
                ProductError::InvalidName,
            ),
            (
                NewProduct {
                    price_cents: -1,
                    ..request()
                },
                ProductError::NegativePrice,
            ),
            (
                NewProduct {
                    stock: -1,
                    ..request()
                },
                ProductError::NegativeStock,
            ),
            (
                NewProduct {
                    attributes: Some(serde_json::json!([1])),
                    ..request()
                },
                ProductError::InvalidAttributes,
            ),
            (
                NewProduct {
                    sku: " SKU-1".into(),
                    ..request()
                },
                ProductError::InvalidSku,
            ),
            (
                NewProduct {
                    category: Some("Shoes".into()),
                    ..request()
                },
                ProductError::InvalidCategory,
            ),
            (
                NewProduct {
                    name: "a\0b".into(),
                    ..request()
                },
                ProductError::InvalidName,
            ),
            // PostgreSQL cannot store a NUL, in a key or in a value however deep.
            (
                NewProduct {
                    attributes: Some(serde_json::json!({"a\u{0}": 1})),
                    ..request()
                },
                ProductError::InvalidAttributes,
            ),
            (
                NewProduct {
                    attributes: Some(serde_json::json!({"a": [{"b": "x\u{0}"}]})),
                    ..request()
                },
                ProductError::InvalidAttributes,
            ),
            // It would be stored, and then could not be read back.
            (
                NewProduct {
                    attributes: Some(serde_json::json!({"a": {"b": [1.7976931348623157e308]}})),
                    ..request()
                },
                ProductError::InvalidAttributes,
            ),
        ];
        for (bad, expected) in cases {
            assert_eq!(bad.validate(), Err(expected));
        }
    }
}
