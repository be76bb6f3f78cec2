//! The services' operator endpoints: `GET /sagas/stuck` and `POST /sagas/{saga_id}/retry`.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::CliError;

/// A client that sends `token` as the bearer of every call. Without one, the services answer
/// 401, which the calls report.
fn client(token: Option<&str>) -> Result<reqwest::blocking::Client, CliError> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| CliError::Usage("--token: not a valid header value".to_owned()))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .default_headers(headers)
        .build()
        .map_err(|e| CliError::Service(e.to_string()))
}

/// The JSON a service answered, or why it did not. A refused connection is `Unreachable`.
fn call(request: reqwest::blocking::RequestBuilder, what: &str) -> Result<(u16, Value), CliError> {
    let response = request.send().map_err(|e| {
        if e.is_connect() || e.is_timeout() {
            CliError::Unreachable(format!("{what}: {e}"))
        } else {
            CliError::Service(format!("{what}: {e}"))
        }
    })?;
    let status = response.status().as_u16();
    let body: Value = response
        .json()
        .map_err(|e| CliError::Service(format!("{what} answered {status} without JSON: {e}")))?;
    Ok((status, body))
}

pub fn stuck(
    services: &[(&'static str, &str)],
    token: Option<&str>,
    as_json: bool,
) -> Result<(), CliError> {
    let client = client(token)?;
    let mut all = Vec::new();
    for (name, url) in services {
        let (status, body) = call(
            client.get(format!("{url}/sagas/stuck")),
            &format!("{name} at {url}"),
        )?;
        if status != 200 {
            return Err(CliError::Service(format!(
                "{name} answered {status} to GET /sagas/stuck: {body}"
            )));
        }
        for parked in body["parked"].as_array().into_iter().flatten() {
            let mut parked = parked.clone();
            parked["service"] = json!(name);
            all.push(parked);
        }
    }
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"count": all.len(), "parked": all}))
                .unwrap_or_default()
        );
        return Ok(());
    }
    let mut out = String::new();
    let _ = writeln!(out, "{} parked events", all.len());
    if !all.is_empty() {
        let _ = writeln!(
            out,
            "{:<14} {:<36} {:<28} {:>8}  {:<25} error",
            "service", "saga", "event", "attempts", "parked at"
        );
    }
    for parked in &all {
        let text = |key: &str| parked[key].as_str().unwrap_or("-").to_owned();
        let _ = writeln!(
            out,
            "{:<14} {:<36} {:<28} {:>8}  {:<25} {}",
            text("service"),
            text("saga_id"),
            text("event_type"),
            parked["attempts"].as_i64().unwrap_or_default(),
            text("parked_at"),
            text("error")
        );
    }
    if !all.is_empty() {
        let _ = writeln!(out, "fix the cause, then: saga retry <saga>");
    }
    print!("{out}");
    Ok(())
}

pub fn retry(
    services: &[(&'static str, &str)],
    token: Option<&str>,
    saga_id: Uuid,
    as_json: bool,
) -> Result<(), CliError> {
    let client = client(token)?;
    let mut outcomes = Vec::new();
    let mut remaining = 0;
    for (name, url) in services {
        let (status, body) = call(
            client.post(format!("{url}/sagas/{saga_id}/retry")),
            &format!("{name} at {url}"),
        )?;
        if !matches!(status, 200 | 409) {
            return Err(CliError::Service(format!(
                "{name} answered {status} to the retry: {body}"
            )));
        }
        remaining += body["remaining"].as_u64().unwrap_or_default();
        if body["retried"].as_u64().unwrap_or_default() > 0 || status == 409 {
            outcomes.push(json!({"service": name, "outcome": body}));
        }
    }
    if as_json {
        println!(
            "{}",
            json!({"saga_id": saga_id, "services": outcomes, "remaining": remaining})
        );
    } else if outcomes.is_empty() {
        println!("saga {saga_id} has no parked events in any service");
    } else {
        for outcome in &outcomes {
            let body = &outcome["outcome"];
            println!(
                "{}: retried {}, {} still parked{}",
                outcome["service"].as_str().unwrap_or("-"),
                body["retried"],
                body["remaining"],
                body["error"]
                    .as_str()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
        }
    }
    if remaining > 0 {
        return Err(CliError::Service(format!(
            "{remaining} events of saga {saga_id} are still parked"
        )));
    }
    Ok(())
}
