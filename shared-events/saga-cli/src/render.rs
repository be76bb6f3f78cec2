//! What the commands print for a person: tables, and colour by outcome when stdout is a
//! terminal (never with `--json`, or when `NO_COLOR` is set).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;
use shared_events::timeline::format_millis as millis;
use shared_events::{Envelope, Outcome, Timeline};

use crate::kafka::Record;

#[derive(Debug, Clone, Copy)]
pub struct Style {
    colour: bool,
}

impl Style {
    pub fn for_stdout(json: bool) -> Style {
        Style {
            colour: !json
                && std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn paint(self, outcome: Outcome, text: &str) -> String {
        if !self.colour {
            return text.to_owned();
        }
        let code = match outcome {
            Outcome::Success => "32",
            Outcome::Failure => "31",
            Outcome::Compensation => "33",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The `show` table: one row per event, then the saga's end and duration.
pub fn timeline(timeline: &Timeline, style: Style) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "saga {}", timeline.saga_id);
    let _ = writeln!(
        out,
        "{:<28} {:<14} {:<25} {:>10}  outcome",
        "step", "service", "time", "hop"
    );
    for step in &timeline.steps {
        let hop = step.hop.map_or_else(|| "-".to_owned(), millis);
        let _ = writeln!(
            out,
            "{:<28} {:<14} {:<25} {:>10}  {}",
            step.step,
            step.service,
            time(step.time),
            hop,
            style.paint(step.outcome, step.outcome.as_str())
        );
    }
    match (timeline.terminal, timeline.duration) {
        (Some(end), Some(took)) => {
            let _ = writeln!(out, "ended {end} after {}", millis(took));
        }
        _ => {
            let _ = writeln!(out, "in flight: no terminal event yet");
        }
    }
    out
}

/// One `tail` line.
pub fn tail_line(event: &Envelope, hop: Option<Duration>, style: Style) -> String {
    let outcome = event.event.outcome();
    let saga = event
        .sagaid
        .map_or_else(|| "-".to_owned(), |id| id.to_string());
    let hop = hop.map_or_else(String::new, |h| format!("  +{}", millis(h)));
    format!(
        "{}  {:<36}  {:<14} {}{hop}",
        time(event.time),
        saga,
        event.source,
        style.paint(outcome, event.event_type())
    )
}

/// What `stats` found.
pub struct Stats {
    pub since: DateTime<Utc>,
    pub events: u64,
    pub sagas: u64,
    pub per_type: BTreeMap<&'static str, u64>,
    pub per_end: BTreeMap<&'static str, u64>,
    pub unfinished: u64,
    /// Sagas that began and ended in the window: those the percentiles are of.
    pub timed: u64,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
}

impl Stats {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "since {}: {} events of {} sagas",
            time(self.since),
            self.events,
            self.sagas
        );
        let _ = writeln!(out, "\n{:<28} {:>8}", "event type", "count");
        for (event_type, count) in &self.per_type {
            let _ = writeln!(out, "{event_type:<28} {count:>8}");
        }
        let _ = writeln!(out, "\n{:<28} {:>8}", "terminal state", "sagas");
        for (end, count) in &self.per_end {
            let _ = writeln!(out, "{end:<28} {count:>8}");
        }
        let _ = writeln!(out, "{:<28} {:>8}", "(in flight)", self.unfinished);
        let show = |d: Option<Duration>| d.map_or_else(|| "-".to_owned(), millis);
        let _ = writeln!(
            out,
            "\nsaga duration over {} sagas begun and ended in the window: p50 {}, p99 {}",
            self.timed,
            show(self.p50),
            show(self.p99)
        );
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        json!({
            "since": self.since,
            "events": self.events,
            "sagas": self.sagas,
            "per_event_type": self.per_type,
            "per_terminal_state": self.per_end,
            "in_flight": self.unfinished,
            "timed_sagas": self.timed,
            "p50_ms": ms(self.p50),
            "p99_ms": ms(self.p99),
        })
    }
}

fn preview(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload);
    let mut preview: String = text.chars().take(60).collect();
    if text.chars().count() > 60 {
        preview.push('…');
    }
    preview.replace('\n', " ")
}

pub fn dead_letter_json(record: &Record) -> serde_json::Value {
    use shared_events::envelope::headers;
    json!({
        "partition": record.partition,
        "offset": record.offset,
        "key": record.key,
        "reason": record.header(headers::DLQ_REASON),
        "original_topic": record.header(headers::DLQ_ORIGINAL_TOPIC),
        "original_partition": record.header(headers::DLQ_ORIGINAL_PARTITION),
        "original_offset": record.header(headers::DLQ_ORIGINAL_OFFSET),
        "value": String::from_utf8_lossy(&record.payload),
    })
}

/// The `dlq list` table.
pub fn dead_letters(topic: &str, records: &[Record]) -> String {
    use shared_events::envelope::headers;
    let mut out = String::new();
    let _ = writeln!(out, "{topic}: {} records", records.len());
    if records.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "{:>9} {:>8}  {:<28} {:<40} value",
        "partition", "offset", "from", "reason"
    );
    for record in records {
        let from = format!(
            "{}/{}@{}",
            record.header(headers::DLQ_ORIGINAL_TOPIC).unwrap_or("?"),
            record
                .header(headers::DLQ_ORIGINAL_PARTITION)
                .unwrap_or("?"),
            record.header(headers::DLQ_ORIGINAL_OFFSET).unwrap_or("?"),
        );
        let reason: String = record
            .header(headers::DLQ_REASON)
            .unwrap_or("")
            .chars()
            .take(40)
            .collect();
        let _ = writeln!(
            out,
            "{:>9} {:>8}  {from:<28} {reason:<40} {}",
            record.partition,
            record.offset,
            preview(&record.payload)
        );
    }
    out
}
