//! Safe retries. A request that creates something (`POST /orders`, `/products`, `/accounts`)
//! may carry an `Idempotency-Key` header. Its key, a fingerprint of the request and the
//! response it got are written in the transaction that makes the change, so the key exists
//! exactly when the change does. A retry with the same key and the same request gets that
//! response again, marked `Idempotent-Replayed: true`, and changes nothing; the same key with
//! a different request is 422 `idempotency_key_reused`.
//!
//! Two requests with one key at the same time: the second's claim of the key waits for the
//! first's transaction (PostgreSQL's `INSERT … ON CONFLICT` waits for a conflicting row not
//! yet committed). If the first commits, the second replays its response; if it rolls back,
//! the second goes ahead. Only what succeeded is kept: a refused request leaves no key, and a
//! retry is judged again.
//!
//! Keys live in `idempotency_keys` for `IDEMPOTENCY_RETENTION_MS` (a day by default), and the
//! retention job deletes them after that; a retry later than that is a new request.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, FromQueryResult, Statement};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::http::ApiError;
use crate::unit_of_work::{Announcements, Command, Tx};

/// The request header that carries the key.
pub const HEADER: &str = "idempotency-key";
/// The response header that marks a replayed response.
pub const REPLAYED: &str = "idempotent-replayed";
/// The longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// A client's key: 1 to [`MAX_KEY_LEN`] visible ASCII characters (a UUID is the usual one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(text: &str) -> Option<Self> {
        let valid = (1..=MAX_KEY_LEN).contains(&text.len())
            && text.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
            && text.trim() == text;
        valid.then(|| Self(text.to_owned()))
    }

    /// This key for one request to `scope` (e.g. `POST /orders`), fingerprinted by the
    /// request as the handler decoded it: the same request written with other spacing, key
    /// order or `2.0` for `2` is the same request.
    pub fn for_request<T: Serialize>(self, scope: &'static str, request: &T) -> KeyedRequest {
        let canonical = serde_json::to_vec(request).unwrap_or_default();
        let digest = Sha256::digest(&canonical);
        let fingerprint = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        KeyedRequest {
            scope,
            key: self.0,
            fingerprint,
        }
    }
}

/// The `Idempotency-Key` header, if the request has one. A malformed key is 400
/// `invalid_idempotency_key`, never ignored: a client that sends one relies on it.
#[derive(Debug, Clone)]
pub struct MaybeIdempotencyKey(pub Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeIdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all(HEADER).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return if parts.headers.contains_key(HEADER) {
                Err(invalid_key("Idempotency-Key is given more than once"))
            } else {
                Ok(Self(None))
            };
        };
        let key = value
            .to_str()
            .ok()
            .and_then(IdempotencyKey::parse)
            .ok_or_else(|| {
                invalid_key(&format!(
                    "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
                ))
            })?;
        Ok(Self(Some(key)))
    }
}

fn invalid_key(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_idempotency_key", message)
}

/// For OpenAPI documents: the header, as a handler that honours it lists it in `params`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyHeader {
    /// Makes a retry safe: the same key with the same request returns the first response
    /// (marked `Idempotent-Replayed: true`) and changes nothing; with a different request it
    /// is 422 `idempotency_key_reused`. Kept for `IDEMPOTENCY_RETENTION_MS` (a day).
    #[param(
        rename = "Idempotency-Key",
        min_length = 1,
        max_length = 255,
        pattern = "^[!-~]([ -~]*[!-~])?$"
    )]
    pub idempotency_key: Option<String>,
}

/// One request under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedRequest {
    scope: &'static str,
    key: String,
    fingerprint: String,
}

/// A response as it was first given, to give again.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub status: StatusCode,
    /// The `Location` header, for a created resource.
    pub location: Option<String>,
    pub body: serde_json::Value,
}

impl Recorded {
    /// `status` with `Location: location` and `body`.
    pub fn at(status: StatusCode, location: String, body: &impl Serialize) -> Self {
        Self {
            status,
            location: Some(location),
            body: serde_json::to_value(body).unwrap_or_default(),
        }
    }

    /// The HTTP response; `replayed` marks one given again for a retry.
    pub fn respond(self, replayed: bool) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        let headers = response.headers_mut();
        if let Some(location) = self.location.and_then(|l| HeaderValue::try_from(l).ok()) {
            headers.insert(header::LOCATION, location);
        }
        if replayed {
            headers.insert(REPLAYED, HeaderValue::from_static("true"));
        }
        response
    }
}

/// The key was used before for a different request.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Idempotency-Key {key:?} was used for a different request to {scope}")]
pub struct KeyReused {
    pub scope: &'static str,
    pub key: String,
}

impl From<KeyReused> for ApiError {
    fn from(reused: KeyReused) -> Self {
        ApiError::unprocessable("idempotency_key_reused", reused.to_string())
    }
}

/// What an [`Idempotent`] command did.
#[derive(Debug)]
pub enum Idempotently<T> {
    /// It ran: its output, and its response as recorded.
    Fresh(T, Recorded),
    /// A request with the key had already run: its response, and nothing was changed.
    Replayed(Recorded),
}

impl<T> Idempotently<T> {
    pub fn respond(self) -> Response {
        match self {
            Self::Fresh(_, recorded) => recorded.respond(false),
            Self::Replayed(recorded) => recorded.respond(true),
        }
    }
}

/// `command`, run at most once per key: with no key it simply runs; with a key it runs only
/// if no request with that key has, and its response (`respond` of its output) is recorded in
/// the same transaction.
#[derive(Debug, Clone)]
pub struct Idempotent<C: Command> {
    pub key: Option<KeyedRequest>,
    pub command: C,
    pub respond: fn(&C::Output) -> Recorded,
}

impl<C> Command for Idempotent<C>
where
    C: Command + Sync,
    C::Error: From<KeyReused>,
{
    type Output = Idempotently<C::Output>;
    type Error = C::Error;

    async fn execute(self, tx: &Tx) -> Result<(Self::Output, Announcements), C::Error> {
        let Some(key) = self.key else {
            let (output, announcements) = self.command.execute(tx).await?;
            let recorded = (self.respond)(&output);
            return Ok((Idempotently::Fresh(output, recorded), announcements));
        };
        if !claim(tx, &key).await? {
            // Committed by another request, or run earlier in this very transaction.
            let recorded = recorded::<_, C::Error>(tx, &key).await?.ok_or_else(|| {
                DbErr::RecordNotFound(format!("idempotency key {:?} vanished", key.key))
            })?;
            return Ok((Idempotently::Replayed(recorded), Announcements::none()));
        }
        let (output, announcements) = self.command.execute(tx).await?;
        let recorded = (self.respond)(&output);
        record(tx, &key, &recorded).await?;
        Ok((Idempotently::Fresh(output, recorded), announcements))
    }
}

/// Why a key could not be looked up.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error(transparent)]
    Reused(#[from] KeyReused),
    #[error(transparent)]
    Db(#[from] DbErr),
}

impl From<LookupError> for ApiError {
    fn from(error: LookupError) -> Self {
        match error {
            LookupError::Reused(reused) => reused.into(),
            LookupError::Db(db) => crate::http::db_error(db),
        }
    }
}

/// The recorded response of an earlier request with this key, if it committed; for a
/// handler to answer a retry before it takes any other step (admission, say). The command
/// checks again in its transaction, which is what makes two requests at once safe.
pub async fn replay<C: ConnectionTrait>(
    db: &C,
    key: &Option<KeyedRequest>,
) -> Result<Option<Response>, LookupError> {
    let Some(key) = key else {
        return Ok(None);
    };
    Ok(recorded::<_, LookupError>(db, key)
        .await?
        .map(|recorded| recorded.respond(true)))
}

/// Takes the key for this transaction; `false` if a committed request (or an earlier command
/// of this transaction) has it.
async fn claim<C: ConnectionTrait>(db: &C, key: &KeyedRequest) -> Result<bool, DbErr> {
    let claimed = db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO idempotency_keys (scope, key, fingerprint) VALUES ($1, $2, $3) \
             ON CONFLICT (scope, key) DO NOTHING",
            [
                key.scope.into(),
                key.key.clone().into(),
                key.fingerprint.clone().into(),
            ],
        ))
        .await?;
    Ok(claimed.rows_affected() == 1)
}

async fn record<C: ConnectionTrait>(
    db: &C,
    key: &KeyedRequest,
    recorded: &Recorded,
) -> Result<(), DbErr> {
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "UPDATE idempotency_keys SET status = $3, location = $4, body = $5 \
         WHERE scope = $1 AND key = $2",
        [
            key.scope.into(),
            key.key.clone().into(),
            i16::try_from(recorded.status.as_u16())
                .unwrap_or(i16::MAX)
                .into(),
            recorded.location.clone().into(),
            recorded.body.clone().into(),
        ],
    ))
    .await?;
    Ok(())
}

#[derive(Debug, FromQueryResult)]
struct KeyRow {
    fingerprint: String,
    status: Option<i16>,
    location: Option<String>,
    body: Option<serde_json::Value>,
}

/// The response recorded under `key`; [`KeyReused`] if it was for a different request.
async fn recorded<C, E>(db: &C, key: &KeyedRequest) -> Result<Option<Recorded>, E>
where
    C: ConnectionTrait,
    E: From<DbErr> + From<KeyReused>,
{
    let row = KeyRow::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT fingerprint, status, location, body FROM idempotency_keys \
         WHERE scope = $1 AND key = $2",
        [key.scope.into(), key.key.clone().into()],
    ))
    .one(db)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    if row.fingerprint != key.fingerprint {
        return Err(KeyReused {
            scope: key.scope,
            key: key.key.clone(),
        }
        .into());
    }
    let status = row
        .status
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| DbErr::Type(format!("idempotency key {:?} has no status", key.key)))?;
    Ok(Some(Recorded {
        status,
        location: row.location,
        body: row.body.unwrap_or_default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_visible_ascii_of_bounded_length() {
        assert!(IdempotencyKey::parse("3f1c0a4e-7b1d-4c55-9d0e-8a1b2c3d4e5f").is_some());
        assert!(IdempotencyKey::parse("order 42 / retry").is_some());
        assert!(IdempotencyKey::parse(&"k".repeat(MAX_KEY_LEN)).is_some());
        for bad in ["", " lead", "trail ", "tab\there", "é", "nul\0"] {
            assert!(IdempotencyKey::parse(bad).is_none(), "{bad:?}");
        }
        assert!(IdempotencyKey::parse(&"k".repeat(MAX_KEY_LEN + 1)).is_none());
    }

    #[derive(Serialize)]
    struct Request {
        a: i64,
        b: serde_json::Value,
    }

    #[test]
    fn the_fingerprint_is_of_what_was_asked_not_how_it_was_written() {
        let key = || IdempotencyKey::parse("k").into_iter().next();
        let first = key().map(|k| {
            k.for_request(
                "POST /x",
                &Request {
                    a: 2,
                    b: serde_json::json!({"y": 1, "x": 2}),
                },
            )
        });
        let same = key().map(|k| {
            k.for_request(
                "POST /x",
                &Request {
                    a: 2,
                    b: serde_json::json!({"x": 2, "y": 1}),
                },
            )
        });
        let different = key().map(|k| {
            k.for_request(
                "POST /x",
                &Request {
                    a: 3,
                    b: serde_json::json!({"x": 2, "y": 1}),
                },
            )
        });
        assert!(first.is_some());
        assert_eq!(first, same);
        assert_ne!(first, different);
    }
}
