//! Bearer tokens: who calls, and what they may do.
//!
//! Every route but the probes (`/health/*`), the scrape (`/metrics`) and the contract
//! (`/openapi.json`, `/docs`) wants a JWT, signed with HS256 (`AUTH_JWT_SECRET`) or RS256
//! (`AUTH_JWT_PUBLIC_KEY`, PEM), with an `exp` and a space-separated `scope`:
//!
//! - any valid token: the public API (`POST /orders`, `GET /orders/*`, `GET /catalog/*`),
//!   where the token's subject must be the order's customer unless it has `admin`;
//! - `admin`: `/products`, `/accounts` and `/categories/*`;
//! - `operator`: `/sagas/*` (retry included) and the explorer `/ui/*`, which also takes the
//!   token from the cookie that `/ui/login` sets.
//!
//! No token, or one that is malformed, expired or wrongly signed, is 401 with
//! `WWW-Authenticate: Bearer`; a valid token without the scope, or for another customer, is
//! 403. The reason goes in the body, never the token or the key.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, var};
use crate::http::{ApiError, ErrorBody};

/// The cookie in which the explorer keeps the operator's token (`/ui/login`).
pub const COOKIE: &str = "saga_token";

/// What a token may be for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Products, accounts and categories; and orders of any customer.
    Admin,
    /// Saga timelines, parked events, retries and the explorer.
    Operator,
}

impl Scope {
    pub const ALL: [Scope; 2] = [Scope::Admin, Scope::Operator];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Operator => "operator",
        }
    }
}

/// A token's claims, as this service reads and writes them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Who calls: a customer's ID for the public API.
    pub sub: String,
    /// Space-separated scopes, e.g. `"admin operator"`.
    #[serde(default)]
    pub scope: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// Checks tokens. Built from the environment at start-up; shared by every request.
#[derive(Clone)]
pub struct Authenticator {
    key: Arc<DecodingKey>,
    validation: Arc<Validation>,
}

impl std::fmt::Debug for Authenticator {
    // The key stays out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8]) -> Self {
        Self::with(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// RS256 with the signer's public key, PEM-encoded.
    pub fn rs256(public_key_pem: &[u8]) -> Result<Self, jsonwebtoken::errors::Error> {
        Ok(Self::with(
            DecodingKey::from_rsa_pem(public_key_pem)?,
            Algorithm::RS256,
        ))
    }

    fn with(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_aud = false;
        validation.leeway = 30;
        Self {
            key: Arc::new(key),
            validation: Arc::new(validation),
        }
    }

    /// Also requires `iss` to be `issuer`.
    pub fn with_issuer(mut self, issuer: &str) -> Self {
        Arc::make_mut(&mut self.validation).set_issuer(&[issuer]);
        self
    }

    /// From `AUTH_JWT_SECRET` (HS256, at least 32 bytes) or `AUTH_JWT_PUBLIC_KEY` (RS256,
    /// PEM), and `AUTH_JWT_ISSUER` if set. One key is required: a service never runs open.
    pub fn from_env() -> Result<Self, ConfigError> {
        let secret = var("AUTH_JWT_SECRET", String::new())?;
        let public_key = var("AUTH_JWT_PUBLIC_KEY", String::new())?;
        let issuer = var("AUTH_JWT_ISSUER", String::new())?;
        let authenticator = match (secret.is_empty(), public_key.is_empty()) {
            (false, true) if secret.len() >= 32 => Self::hs256(secret.as_bytes()),
            (false, true) => return Err(invalid("AUTH_JWT_SECRET", "must be at least 32 bytes")),
            (true, false) => Self::rs256(public_key.as_bytes()).map_err(|error| {
                invalid(
                    "AUTH_JWT_PUBLIC_KEY",
                    &format!("not an RSA public key in PEM: {error}"),
                )
            })?,
            (false, false) => {
                return Err(invalid(
                    "AUTH_JWT_SECRET",
                    "set AUTH_JWT_SECRET or AUTH_JWT_PUBLIC_KEY, not both",
                ));
            }
            (true, true) => {
                return Err(invalid(
                    "AUTH_JWT_SECRET",
                    "set AUTH_JWT_SECRET (HS256) or AUTH_JWT_PUBLIC_KEY (RS256): every API but \
                     /health, /metrics and /openapi.json needs a bearer token \
                     (deploy/stack makes a development key)",
                ));
            }
        };
        Ok(if issuer.is_empty() {
            authenticator
        } else {
            authenticator.with_issuer(&issuer)
        })
    }

    /// The caller a token names, if it is valid.
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| AuthError::InvalidToken(describe(&e)))?;
        Ok(Caller {
            subject: data.claims.sub,
            scopes: data
                .claims
                .scope
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            token: token.to_owned(),
        })
    }
}

/// A key variable that is wrong. Its value is a secret (or a key): it is not repeated.
fn invalid(name: &str, reason: &str) -> ConfigError {
    ConfigError {
        name: name.to_owned(),
        value: "(not shown)".to_owned(),
        reason: reason.to_owned(),
    }
}

/// Why a token was refused, in words safe to show its holder.
fn describe(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
        ErrorKind::InvalidSignature => "the token's signature does not verify".to_owned(),
        ErrorKind::InvalidAlgorithm => "the token is signed with another algorithm".to_owned(),
        ErrorKind::InvalidIssuer => "the token is from another issuer".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no `{claim}`"),
        _ => "the token is malformed".to_owned(),
    }
}

/// Signs tokens: the tests' and `deploy/stack token`'s counterpart of [`Authenticator`].
pub fn sign_hs256(secret: &[u8], claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
}

/// A request refused for who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this route needs a bearer token (Authorization: Bearer …)")]
    MissingToken,
    #[error("{0}")]
    InvalidToken(String),
    #[error("the token has no `{0}` scope")]
    MissingScope(&'static str),
    #[error("the token is not for customer {0}")]
    OtherCustomer(String),
    #[error("authentication is not set up on this route")]
    NotConfigured,
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        if self == AuthError::NotConfigured {
            tracing::error!("a route that needs a caller was served without an Authenticator");
        }
        let challenge = match self {
            AuthError::MissingToken => Some("Bearer"),
            AuthError::InvalidToken(_) => Some("Bearer error=\"invalid_token\""),
            _ => None,
        };
        let mut response = ApiError::from(self).into_response();
        if let Some(challenge) = challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        let (status, code) = match error {
            AuthError::MissingToken => (StatusCode::UNAUTHORIZED, "unauthorized"),
            AuthError::InvalidToken(_) => (StatusCode::UNAUTHORIZED, "invalid_token"),
            AuthError::MissingScope(_) | AuthError::OtherCustomer(_) => {
                (StatusCode::FORBIDDEN, "forbidden")
            }
            AuthError::NotConfigured => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, error.to_string())
    }
}

/// Who sent the request: a token that verified.
#[derive(Debug, Clone)]
pub struct Caller {
    pub subject: String,
    scopes: BTreeSet<String>,
    /// The token as sent, to pass on to the services this one asks (API composition).
    token: String,
}

impl Caller {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(scope.as_str())
    }

    pub fn require(&self, scope: Scope) -> Result<(), AuthError> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(AuthError::MissingScope(scope.as_str()))
        }
    }

    /// The caller may act for `customer`: it is that customer, or an admin.
    pub fn acts_for(&self, customer: impl std::fmt::Display) -> Result<(), AuthError> {
        let customer = customer.to_string();
        if self.subject == customer || self.has(Scope::Admin) {
            Ok(())
        } else {
            Err(AuthError::OtherCustomer(customer))
        }
    }

    /// The caller may see a record of `customer`'s: it is that customer or an admin; a record
    /// whose customer is not known, only an admin.
    pub fn may_see(&self, customer: Option<impl std::fmt::Display>) -> Result<(), AuthError> {
        match customer {
            Some(customer) => self.acts_for(customer),
            None => self.require(Scope::Admin),
        }
    }

    /// `Authorization` for a call made on the caller's behalf.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }
}

/// The token of a request: `Authorization: Bearer …`, or else the explorer's cookie.
fn token_of(parts: &Parts) -> Option<&str> {
    let bearer = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .map(str::trim);
    bearer.or_else(|| {
        parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
    })
}

fn caller_of(parts: &Parts) -> Result<Caller, AuthError> {
    let authenticator = parts
        .extensions
        .get::<Authenticator>()
        .ok_or(AuthError::NotConfigured)?;
    let token = token_of(parts).ok_or(AuthError::MissingToken)?;
    authenticator.verify(token)
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        caller_of(parts)
    }
}

/// A caller with the `admin` scope.
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let caller = caller_of(parts)?;
        caller.require(Scope::Admin)?;
        Ok(Self(caller))
    }
}

/// A caller with the `operator` scope.
#[derive(Debug, Clone)]
pub struct Operator(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Operator {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let caller = caller_of(parts)?;
        caller.require(Scope::Operator)?;
        Ok(Self(caller))
    }
}

/// For OpenAPI documents: the refusals of a route that wants a token.
#[derive(utoipa::IntoResponses)]
pub enum AuthRefusals {
    #[response(
        status = 401,
        description = "No bearer token, or one that is malformed, expired or wrongly signed",
        headers(("WWW-Authenticate" = String, description = "`Bearer`"))
    )]
    Unauthorized(ErrorBody),
    #[response(
        status = 403,
        description = "The token lacks the scope, or is for another customer"
    )]
    Forbidden(ErrorBody),
}

/// Adds the `bearer` security scheme (a JWT) to a document; routes name it in `security`.
pub struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT (HS256 or RS256) with `sub` and `exp`, and `scope`: `admin`, \
                         `operator`. `deploy/stack token` prints one.",
                    ))
                    .build(),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a test secret of at least thirty-two bytes";

    fn token(sub: &str, scope: &str, exp: u64) -> String {
        sign_hs256(
            SECRET,
            &Claims {
                sub: sub.to_owned(),
                scope: scope.to_owned(),
                exp,
                iss: None,
            },
        )
        .unwrap_or_default()
    }

    fn later() -> u64 {
        jsonwebtoken::get_current_timestamp() + 600
    }

    #[test]
    fn a_valid_token_names_its_caller_and_scopes() -> Result<(), AuthError> {
        let caller = Authenticator::hs256(SECRET).verify(&token("c-1", "operator", later()))?;
        assert_eq!(caller.subject, "c-1");
        assert!(caller.has(Scope::Operator));
        assert_eq!(
            caller.require(Scope::Admin),
            Err(AuthError::MissingScope("admin"))
        );
        assert!(caller.acts_for("c-1").is_ok());
        assert!(caller.acts_for("c-2").is_err());
        Ok(())
    }

    #[test]
    fn an_admin_acts_for_any_customer() -> Result<(), AuthError> {
        let caller = Authenticator::hs256(SECRET).verify(&token("ops", "admin", later()))?;
        assert!(caller.acts_for("anyone").is_ok());
        Ok(())
    }

    #[test]
    fn expired_forged_and_malformed_tokens_are_refused_and_say_why() {
        let authenticator = Authenticator::hs256(SECRET);
        let expired = token("c", "admin", jsonwebtoken::get_current_timestamp() - 120);
        let forged = sign_hs256(
            b"another secret of at least thirty-two bytes",
            &Claims {
                sub: "c".into(),
                scope: "admin".into(),
                exp: later(),
                iss: None,
            },
        )
        .unwrap_or_default();
        for (bad, why) in [
            (expired.as_str(), "expired"),
            (forged.as_str(), "signature"),
            ("not.a.token", "malformed"),
            ("", "malformed"),
        ] {
            match authenticator.verify(bad) {
                Err(AuthError::InvalidToken(reason)) => assert!(reason.contains(why), "{reason}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_token_comes_from_the_header_or_else_the_cookie() -> Result<(), axum::http::Error> {
        let request = axum::http::Request::get("/")
            .header("cookie", "a=b; saga_token=from-cookie")
            .body(())?;
        let (parts, ()) = request.into_parts();
        assert_eq!(token_of(&parts), Some("from-cookie"));
        let request = axum::http::Request::get("/")
            .header("authorization", "Bearer from-header")
            .header("cookie", "saga_token=from-cookie")
            .body(())?;
        let (parts, ()) = request.into_parts();
        assert_eq!(token_of(&parts), Some("from-header"));
        Ok(())
    }
}
