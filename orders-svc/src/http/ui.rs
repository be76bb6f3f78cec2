//! The saga explorer: server-rendered HTML and SVG, no JavaScript and no build step.
//!
//! - `GET /ui/`: recent sagas with their status and duration, a filter by status, counts per
//!   status over the last minutes, and the sagas that need a look highlighted: those with a
//!   parked event in any service (with its error; the other services' come from their
//!   `GET /sagas/stuck`) and those in flight for longer than a few seconds.
//! - `GET /ui/sagas/{saga_id}`: one saga as a swim-lane diagram, a lane per service, its
//!   events in time order, an arrow per hop labelled with its latency, compensations in their
//!   own colour; and the same steps as a table.

use std::fmt::Write as _;
use std::time::Duration;

use axum::extract::State;
use axum::response::{Html, Redirect};
use chrono::{DateTime, SecondsFormat, Utc};
use saga_runtime::auth::{AuthRefusals, Caller, Operator};
use saga_runtime::http::{ApiError, AppPath, AppQuery, ErrorBody, PathRefusal, Unavailable};
use saga_runtime::parking::Parking;
use serde::Deserialize;
use shared_events::timeline::format_millis as millis;
use shared_events::{Outcome, Timeline};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use crate::domain::OrderStatus;
use crate::repo::sagas::{self, SagaFilter, SagaSummary};
use crate::service::{self, ServiceError};

/// How far back the counts per status look.
const COUNTS_WINDOW: Duration = Duration::from_secs(5 * 60);
/// A saga in flight for longer than this is highlighted as slow.
const SLOW_AFTER: Duration = Duration::from_secs(5);
/// The lanes of the swim-lane diagram, in the order a saga visits them.
const LANES: [&str; 3] = ["orders-svc", "payments-svc", "inventory-svc"];

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(explorer))
        .routes(routes!(login))
        .routes(routes!(sagas_page))
        .routes(routes!(saga_page))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only sagas whose order has this status, e.g. `CONFIRMED`. Empty means all.
    #[param(schema_with = status_or_all_schema)]
    status: Option<String>,
}

/// The filter's choices: an order status, or the empty string for all.
fn status_or_all_schema() -> utoipa::openapi::Object {
    let statuses = <OrderStatus as strum::VariantNames>::VARIANTS
        .iter()
        .copied();
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(std::iter::once("").chain(statuses)))
        .build()
}

/// `GET /ui/login` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LoginQuery {
    /// An operator's bearer token (`deploy/stack token`).
    token: String,
    /// Where to go next: a path under `/ui/` (anything else goes to `/ui/`).
    next: Option<String>,
}

/// Takes an operator's token once and keeps it in an HttpOnly cookie for the explorer's
/// pages, so a browser can open them: `/ui/login?token=…&next=/ui/sagas/…`.
#[utoipa::path(get, path = "/ui/login", tag = "explorer",
    params(LoginQuery),
    responses(
        (status = 303, description = "Logged in: to `next`",
            headers(
                ("Location" = String, description = "`next`, or `/ui/`"),
                ("Set-Cookie" = String, description = "`saga_token`, HttpOnly, SameSite=Strict, Path=/ui"),
            )),
        (status = 400, description = "No `token`", body = ErrorBody),
        AuthRefusals,
    ))]
async fn login(
    axum::Extension(authenticator): axum::Extension<saga_runtime::auth::Authenticator>,
    AppQuery(query): AppQuery<LoginQuery>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let caller = authenticator.verify(&query.token)?;
    caller.require(saga_runtime::auth::Scope::Operator)?;
    // Only a page of the explorer: never a redirect to another site.
    let next = query
        .next
        .filter(|next| next.starts_with("/ui/") && !next.contains("//") && !next.contains('\\'))
        .unwrap_or_else(|| "/ui/".to_owned());
    let cookie = format!(
        "{}={}; HttpOnly; SameSite=Strict; Path=/ui",
        saga_runtime::auth::COOKIE,
        query.token
    );
    let mut response = Redirect::to(&next).into_response();
    if let Ok(cookie) = axum::http::HeaderValue::try_from(cookie) {
        response
            .headers_mut()
            .insert(axum::http::header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// The explorer lives at `/ui/`.
#[utoipa::path(get, path = "/ui", tag = "explorer",
    responses((status = 308, description = "To `/ui/`",
        headers(("Location" = String, description = "`/ui/`")))))]
async fn explorer() -> Redirect {
    Redirect::permanent("/ui/")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

const STYLE: &str = r#"
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2330; }
h1 { font-size: 20px; margin: 0 0 12px; } h2 { font-size: 16px; margin: 20px 0 8px; }
a { color: #2456c7; text-decoration: none; } a:hover { text-decoration: underline; }
table { border-collapse: collapse; } td, th { padding: 4px 10px; border-bottom: 1px solid #e3e6ec; text-align: left; }
th { font-weight: 600; color: #555d6e; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.count { display: inline-block; margin-right: 14px; padding: 6px 10px; border-radius: 6px; background: #f1f3f7; }
.status-CONFIRMED { color: #137333; } .status-FAILED_PAYMENT, .status-FAILED_INVENTORY, .status-CANCELLED { color: #b3261e; }
.status-PENDING_PAYMENT { color: #8a5a00; }
tr.slow, tr.parked { background: #fff4e0; } tr.parked td.note { color: #b3261e; }
nav a { margin-right: 10px; } nav a.current { font-weight: 700; }
.success { fill: #1e8e3e; } .failure { fill: #d93025; } .compensation { fill: #f29900; }
"#;

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title}</title><style>{STYLE}</style></head><body>{body}</body></html>\n",
        title = escape(title)
    ))
}

/// Recent sagas, with the ones that need a look highlighted.
#[utoipa::path(get, path = "/ui/", tag = "explorer",
    security(("bearer" = ["operator"])),
    params(ListQuery),
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html"),
        (status = 400, description = "An unknown or malformed parameter", body = ErrorBody),
        (status = 422, description = "`status` is not an order status", body = ErrorBody),
        AuthRefusals,
        Unavailable,
    ))]
async fn sagas_page(
    Operator(caller): Operator,
    State(state): State<AppState>,
    AppQuery(query): AppQuery<ListQuery>,
) -> Result<Html<String>, ApiError> {
    let db = state.uow.db();
    let status = match query.status.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(s.parse::<OrderStatus>().map_err(|_| {
            ApiError::unprocessable("invalid_status", format!("{s:?} is not an order status"))
        })?),
        None => None,
    };
    let recent = sagas::recent(
        db,
        SagaFilter {
            status,
            since: None,
            limit: 50,
        },
    )
    .await
    .map_err(ServiceError::from)?;
    let window = chrono::TimeDelta::from_std(COUNTS_WINDOW).unwrap_or_default();
    let counts = sagas::counts_since(db, Utc::now() - window)
        .await
        .map_err(ServiceError::from)?;
    let parked = all_parked(&state, &caller)
        .await
        .map_err(ServiceError::from)?;

    let mut body = String::from("<h1>Sagas</h1>");
    let _ = write!(
        body,
        "<section id=\"counts\"><h2>Placed in the last {} minutes</h2>",
        COUNTS_WINDOW.as_secs() / 60
    );
    for (status, n) in &counts {
        let _ = write!(
            body,
            "<span class=\"count status-{s}\" data-status=\"{s}\">{s} <b>{n}</b></span>",
            s = escape(status)
        );
    }
    if counts.is_empty() {
        body.push_str("<span class=\"count\">none</span>");
    }
    body.push_str("</section><nav id=\"filter\"><h2>Recent sagas</h2>");
    let current = query.status.as_deref().unwrap_or("");
    let _ = write!(
        body,
        "<a href=\"/ui/\"{}>all</a>",
        if current.is_empty() {
            " class=\"current\""
        } else {
            ""
        }
    );
    for s in <OrderStatus as strum::VariantNames>::VARIANTS
        .iter()
        .copied()
    {
        let _ = write!(
            body,
            "<a href=\"/ui/?status={s}\"{}>{s}</a>",
            if current == s {
                " class=\"current\""
            } else {
                ""
            }
        );
    }
    body.push_str(
        "</nav><table id=\"sagas\"><tr><th>status</th><th>saga</th><th>placed</th>\
         <th>duration</th><th>note</th></tr>",
    );
    for saga in &recent {
        body.push_str(&saga_row(saga, &parked));
    }
    body.push_str("</table>");
    if recent.is_empty() {
        body.push_str("<p>No sagas yet.</p>");
    }
    let _ = write!(
        body,
        "<h2>Parked ({})</h2><table id=\"parked\"><tr><th>service</th><th>saga</th>\
         <th>event</th><th>attempts</th><th>parked</th><th>error</th></tr>",
        parked.events.len()
    );
    for event in &parked.events {
        let saga = event.saga_id.map(|id| id.to_string()).unwrap_or_default();
        let _ = write!(
            body,
            "<tr class=\"parked\" data-service=\"{service}\" data-saga-id=\"{saga}\">\
             <td>{service}</td><td><a href=\"/ui/sagas/{saga}\">{saga}</a></td><td>{}</td>\
             <td class=\"num\">{}</td><td>{}</td><td class=\"note\">{}</td></tr>",
            escape(&event.event_type),
            event.attempts,
            escape(&event.parked_at),
            escape(&event.error),
            service = event.service
        );
    }
    body.push_str("</table>");
    for (service, why) in &parked.unanswered {
        let _ = write!(
            body,
            "<p class=\"unanswered\" data-service=\"{service}\">{service}: {} (its parked \
             events are not shown)</p>",
            escape(why)
        );
    }
    body.push_str("<p>Retry a parked saga with <code>saga retry &lt;saga&gt;</code> or <code>POST /sagas/{saga_id}/retry</code> on its service once the cause is fixed.</p>");
    Ok(page("Sagas", &body))
}

/// A parked event of any service, as the list shows it.
struct Parked {
    service: &'static str,
    saga_id: Option<Uuid>,
    event_type: String,
    error: String,
    attempts: i64,
    parked_at: String,
}

/// Every service's parked events: orders-svc's from its database, the others' from their
/// `GET /sagas/stuck` (API composition), and the services that did not answer.
struct AllParked {
    events: Vec<Parked>,
    unanswered: Vec<(&'static str, String)>,
}

async fn all_parked(state: &AppState, caller: &Caller) -> Result<AllParked, sea_orm::DbErr> {
    let parking = Parking::new(state.uow.db().clone());
    let authorization = caller.bearer();
    let (here, elsewhere) = tokio::join!(parking.list(), state.peers.parked(&authorization));
    let mut events: Vec<Parked> = here?
        .into_iter()
        .map(|event| Parked {
            service: "orders-svc",
            saga_id: event.saga_id,
            event_type: event.event_type,
            error: event.error,
            attempts: i64::from(event.attempts),
            parked_at: time(event.parked_at),
        })
        .collect();
    let mut unanswered = Vec::new();
    for peer in elsewhere {
        match peer.parked {
            Ok(parked) => events.extend(parked.into_iter().map(|event| Parked {
                service: peer.service,
                saga_id: event.saga_id,
                event_type: event.event_type,
                error: event.error,
                attempts: event.attempts,
                parked_at: event.parked_at,
            })),
            Err(why) => unanswered.push((peer.service, why)),
        }
    }
    Ok(AllParked { events, unanswered })
}

fn saga_row(saga: &SagaSummary, parked: &AllParked) -> String {
    let in_flight = saga.status == OrderStatus::OPEN.to_string();
    let age = (Utc::now() - saga.created_at).to_std().unwrap_or_default();
    let parked_event = parked
        .events
        .iter()
        .find(|p| p.saga_id == Some(saga.saga_id));
    let (class, note) = match parked_event {
        Some(event) => (
            "parked",
            format!(
                "parked in {}: {} ({})",
                event.service, event.event_type, event.error
            ),
        ),
        None if in_flight && age > SLOW_AFTER => {
            ("slow", format!("in flight for {} s", age.as_secs()))
        }
        None => ("", saga.failure_reason.clone().unwrap_or_default()),
    };
    let duration = if in_flight {
        "-".to_owned()
    } else {
        millis(
            (saga.updated_at - saga.created_at)
                .to_std()
                .unwrap_or_default(),
        )
    };
    format!(
        "<tr class=\"saga {class}\" data-saga-id=\"{id}\" data-status=\"{status}\">\
         <td class=\"status-{status}\">{status}</td><td><a href=\"/ui/sagas/{id}\">{id}</a></td>\
         <td>{placed}</td><td class=\"num\">{duration}</td><td class=\"note\">{note}</td></tr>",
        id = saga.saga_id,
        status = escape(&saga.status),
        placed = time(saga.created_at),
        note = escape(&note)
    )
}

/// One saga as swim lanes, a lane per service.
#[utoipa::path(get, path = "/ui/sagas/{saga_id}", tag = "explorer",
    security(("bearer" = ["operator"])),
    params(("saga_id" = Uuid, Path, description = "The saga's ID")),
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html"),
        PathRefusal,
        (status = 404, description = "No such saga", body = ErrorBody),
        AuthRefusals,
        Unavailable,
    ))]
async fn saga_page(
    _: Operator,
    State(state): State<AppState>,
    AppPath(saga_id): AppPath<Uuid>,
) -> Result<Html<String>, ApiError> {
    let detail = service::get_saga(state.uow.db(), saga_id).await?;
    let timeline = &detail.timeline;
    let mut body = format!(
        "<p><a href=\"/ui/\">← all sagas</a></p><h1>Saga {saga_id}</h1>\
         <p id=\"summary\">order <a href=\"/orders/{order}\">{order}</a> · status \
         <b class=\"status-{status}\" id=\"status\">{status}</b>",
        order = detail.summary.order_id,
        status = escape(&detail.summary.status)
    );
    match timeline.duration {
        Some(took) => {
            let _ = write!(
                body,
                " · ended after <b id=\"duration\">{}</b>",
                millis(took)
            );
        }
        None => body.push_str(" · in flight"),
    }
    body.push_str("</p>");
    body.push_str(&swim_lanes(timeline));
    body.push_str(
        "<h2>Steps</h2><table id=\"steps\"><tr><th>step</th><th>service</th><th>time</th>\
         <th>hop</th><th>outcome</th></tr>",
    );
    for step in &timeline.steps {
        let _ = write!(
            body,
            "<tr class=\"{outcome}\"><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td>{outcome}</td></tr>",
            step.step,
            escape(&step.service),
            time(step.time),
            step.hop.map_or_else(|| "-".to_owned(), millis),
            outcome = step.outcome.as_str()
        );
    }
    body.push_str("</table>");
    Ok(page(&format!("Saga {saga_id}"), &body))
}

/// The SVG diagram: a column per service, a row per event, an arrow per hop.
fn swim_lanes(timeline: &Timeline) -> String {
    const LANE_WIDTH: usize = 240;
    const ROW_HEIGHT: usize = 64;
    const TOP: usize = 56;
    let lane_of = |service: &str| LANES.iter().position(|l| *l == service).unwrap_or(0);
    let x_of = |lane: usize| 40 + LANE_WIDTH / 2 + lane * LANE_WIDTH;
    let y_of = |row: usize| TOP + 30 + row * ROW_HEIGHT;
    // Room on the right for the last lane's labels.
    let width = 160 + LANES.len() * LANE_WIDTH;
    let height = y_of(timeline.steps.len()) + 10;
    let mut svg = format!(
        "<svg id=\"swimlanes\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" \
         height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"system-ui, sans-serif\" \
         font-size=\"12\"><defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" \
         markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\">\
         <path d=\"M0,0 L10,5 L0,10 z\" fill=\"#555d6e\"/></marker></defs>"
    );
    for (lane, name) in LANES.iter().enumerate() {
        let x = x_of(lane);
        let _ = write!(
            svg,
            "<g class=\"lane\" data-service=\"{name}\"><rect x=\"{left}\" y=\"8\" width=\"{w}\" \
             height=\"{h}\" fill=\"{fill}\" rx=\"6\"/><text x=\"{x}\" y=\"32\" text-anchor=\"middle\" \
             font-weight=\"600\">{name}</text><line x1=\"{x}\" y1=\"{TOP}\" x2=\"{x}\" y2=\"{bottom}\" \
             stroke=\"#c9ced8\" stroke-dasharray=\"4 4\"/></g>",
            left = x - LANE_WIDTH / 2 + 6,
            w = LANE_WIDTH - 12,
            h = height - 16,
            fill = if lane % 2 == 0 { "#f6f7fa" } else { "#eef1f6" },
            bottom = height - 12
        );
    }
    for (row, pair) in timeline.steps.windows(2).enumerate() {
        let (from, to) = (&pair[0], &pair[1]);
        let (x1, y1) = (x_of(lane_of(&from.service)), y_of(row));
        let (x2, y2) = (x_of(lane_of(&to.service)), y_of(row + 1));
        let label = to.hop.map_or_else(String::new, millis);
        let _ = write!(
            svg,
            "<g class=\"hop\" data-to=\"{step}\"><line x1=\"{x1}\" y1=\"{y1a}\" x2=\"{x2}\" y2=\"{y2a}\" \
             stroke=\"#555d6e\" stroke-width=\"1.5\" marker-end=\"url(#arrow)\"/>\
             <text x=\"{tx}\" y=\"{ty}\" text-anchor=\"middle\" fill=\"#555d6e\">{label}</text></g>",
            step = to.step,
            y1a = y1 + 9,
            y2a = y2 - 11,
            tx = (x1 + x2) / 2 + if x1 == x2 { 36 } else { 0 },
            ty = (y1 + y2) / 2 - 2
        );
    }
    for (row, step) in timeline.steps.iter().enumerate() {
        let (x, y) = (x_of(lane_of(&step.service)), y_of(row));
        let outcome = step.outcome.as_str();
        let _ = write!(
            svg,
            "<g class=\"event {outcome}\" data-step=\"{name}\" data-service=\"{service}\">\
             <circle cx=\"{x}\" cy=\"{y}\" r=\"8\" class=\"{outcome}\"/>\
             <text x=\"{tx}\" y=\"{ty}\">{name}</text></g>",
            name = step.step,
            service = escape(&step.service),
            tx = x + 14,
            ty = y + 4
        );
    }
    if timeline
        .steps
        .iter()
        .any(|s| s.outcome == Outcome::Compensation)
    {
        let _ = write!(
            svg,
            "<text x=\"40\" y=\"{}\" class=\"compensation\">● compensation</text>",
            height - 2
        );
    }
    svg.push_str("</svg>");
    svg
}
