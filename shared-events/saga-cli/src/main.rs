//! `saga`: one saga, or all of them, as an operator sees them, read from Kafka and from the
//! services' operator endpoints.
//!
//! - `saga show ID`: the saga's timeline (every event, its service, time, hop and outcome).
//! - `saga tail [--saga ID] [--type T]`: events live, one line each, coloured by outcome.
//! - `saga stats [--since 10m]`: counts per event type and terminal state, p50/p99 durations.
//! - `saga stuck` / `saga retry ID`: the services' parked events, and replaying a saga's.
//! - `saga dlq list|redrive TOPIC [--offset N]`: dead letters, and publishing one back.
//!
//! Every command takes `--bootstrap` (or `KAFKA_BROKERS`) and `--json`; `KAFKA_CLIENT_*`
//! variables pass SASL and TLS settings to librdkafka, as they do for the services. A bad ID or an
//! unreachable broker or service is one line on stderr and exit code 2.

mod kafka;
mod render;
mod services;

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use serde_json::json;
use shared_events::{Envelope, Timeline, topics};
use uuid::Uuid;

use crate::kafka::{Reader, Record};
use crate::render::Style;

#[derive(Debug, Parser)]
#[command(
    name = "saga",
    version,
    args_override_self = true,
    about = "Look at the saga system's sagas: timelines, live events, stats, parked events and dead letters"
)]
struct Cli {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "KAFKA_BROKERS",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    bootstrap: String,
    /// Prefix of every topic name, as the services' KAFKA_TOPIC_PREFIX.
    #[arg(long, env = "KAFKA_TOPIC_PREFIX", default_value = "", global = true)]
    topic_prefix: String,
    /// Machine-readable output: one JSON document (or one per line for `tail`).
    #[arg(long, global = true)]
    json: bool,
    /// orders-svc's base URL.
    #[arg(
        long,
        env = "ORDERS_URL",
        default_value = "http://127.0.0.1:8081",
        global = true
    )]
    orders: String,
    /// payments-svc's base URL.
    #[arg(
        long,
        env = "PAYMENTS_URL",
        default_value = "http://127.0.0.1:8082",
        global = true
    )]
    payments: String,
    /// inventory-svc's base URL.
    #[arg(
        long,
        env = "INVENTORY_URL",
        default_value = "http://127.0.0.1:8083",
        global = true
    )]
    inventory: String,
    /// An operator's bearer token for the services' HTTP calls (`stuck`, `retry`):
    /// `deploy/stack token --scope operator` prints one.
    #[arg(long, env = "SAGA_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A saga's timeline, read from Kafka: one row per event, then how it ended.
    Show {
        /// The saga's ID (the order's `saga_id`).
        saga_id: String,
    },
    /// Follow the saga topics live, one line per event.
    Tail {
        /// Only this saga's events.
        #[arg(long = "saga")]
        saga_id: Option<String>,
        /// Only events of this type, e.g. PaymentRefunded.
        #[arg(long = "type")]
        event_type: Option<String>,
    },
    /// Counts per event type and terminal state, and saga durations, over a recent window.
    Stats {
        /// How far back to look: 30s, 10m, 2h, 1d.
        #[arg(long, default_value = "10m")]
        since: String,
    },
    /// The events parked in every service, waiting for an operator.
    Stuck,
    /// Replays a saga's parked events in whichever service holds them.
    Retry {
        /// The saga's ID.
        saga_id: String,
    },
    /// A dead-letter topic: list its records, or publish one back to its original topic.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
}

#[derive(Debug, Subcommand)]
enum DlqAction {
    /// Every record of a dead-letter topic, with why it was put there.
    List {
        /// The dead-letter topic, e.g. payments.events.dlq (the prefix is added).
        topic: String,
    },
    /// Publishes dead letters back to the topic they came from, once their cause is fixed.
    Redrive {
        topic: String,
        /// Only the record at this offset (of partition `--partition`); all of them without.
        #[arg(long)]
        offset: Option<i64>,
        #[arg(long, default_value_t = 0)]
        partition: i32,
    },
}

/// Why a command failed. `Usage` and `Unreachable` exit with 2, the rest with 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("no topic {0} on the broker (is the stack up, and is --topic-prefix right?)")]
    NoTopic(String),
    #[error("kafka: {0}")]
    Kafka(String),
    #[error("{0}")]
    Service(String),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Unreachable(_) | CliError::NoTopic(_) => 2,
            CliError::Kafka(_) | CliError::Service(_) => 1,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("saga: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

fn run(cli: &Cli) -> Result<(), CliError> {
    let style = Style::for_stdout(cli.json);
    match &cli.command {
        Command::Show { saga_id } => show(cli, parse_id(saga_id)?, style),
        Command::Tail {
            saga_id,
            event_type,
        } => {
            let saga_id = saga_id.as_deref().map(parse_id).transpose()?;
            tail(cli, saga_id, event_type.as_deref(), style)
        }
        Command::Stats { since } => stats(cli, parse_since(since)?),
        Command::Stuck => services::stuck(&service_urls(cli), cli.token.as_deref(), cli.json),
        Command::Retry { saga_id } => services::retry(
            &service_urls(cli),
            cli.token.as_deref(),
            parse_id(saga_id)?,
            cli.json,
        ),
        Command::Dlq { action } => match action {
            DlqAction::List { topic } => dlq_list(cli, topic),
            DlqAction::Redrive {
                topic,
                offset,
                partition,
            } => dlq_redrive(cli, topic, *partition, *offset),
        },
    }
}

fn service_urls(cli: &Cli) -> [(&'static str, &str); 3] {
    [
        ("orders-svc", cli.orders.as_str()),
        ("payments-svc", cli.payments.as_str()),
        ("inventory-svc", cli.inventory.as_str()),
    ]
}

fn parse_id(text: &str) -> Result<Uuid, CliError> {
    Uuid::parse_str(text.trim())
        .map_err(|_| CliError::Usage(format!("{text:?} is not a saga ID (a UUID)")))
}

/// `30s`, `10m`, `2h` or `1d` before now.
fn parse_since(text: &str) -> Result<DateTime<Utc>, CliError> {
    let back = shared_events::timeline::parse_lookback(text).ok_or_else(|| {
        CliError::Usage(format!(
            "--since {text:?}: expected a number and s, m, h or d, e.g. 10m"
        ))
    })?;
    Ok(Utc::now() - back)
}

fn saga_topics(cli: &Cli) -> Vec<String> {
    [
        topics::ORDERS_EVENTS,
        topics::PAYMENTS_EVENTS,
        topics::INVENTORY_EVENTS,
    ]
    .iter()
    .map(|topic| format!("{}{topic}", cli.topic_prefix))
    .collect()
}

/// The events among `records`, skipping what does not decode (the consumers dead-letter it).
fn envelopes(records: &[Record]) -> Vec<Envelope> {
    records
        .iter()
        .filter_map(|record| Envelope::decode(&record.payload).ok())
        .collect()
}

fn show(cli: &Cli, saga_id: Uuid, style: Style) -> Result<(), CliError> {
    let reader = Reader::connect(&cli.bootstrap)?;
    // A saga ID is a UUID v7: it says when the saga began, so the topics are read from a
    // little before that instead of from their beginning.
    let since = saga_id.get_timestamp().and_then(|ts| {
        let (seconds, nanos) = ts.to_unix();
        DateTime::<Utc>::from_timestamp(i64::try_from(seconds).ok()?, nanos)
            .map(|at| at - chrono::TimeDelta::seconds(60))
    });
    let key = saga_id.to_string();
    let records: Vec<Record> = reader
        .read(&saga_topics(cli), since)?
        .into_iter()
        .filter(|record| record.key.as_deref() == Some(key.as_str()))
        .collect();
    let events = envelopes(&records);
    let timeline = Timeline::of(saga_id, &events);
    if timeline.steps.is_empty() {
        return Err(CliError::Usage(format!(
            "no events of saga {saga_id} on {} (a wrong ID, or a saga older than the topics' retention)",
            saga_topics(cli).join(", ")
        )));
    }
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&timeline).unwrap_or_default()
        );
    } else {
        print!("{}", render::timeline(&timeline, style));
    }
    Ok(())
}

fn tail(
    cli: &Cli,
    saga_id: Option<Uuid>,
    event_type: Option<&str>,
    style: Style,
) -> Result<(), CliError> {
    let reader = Reader::connect(&cli.bootstrap)?;
    if !cli.json {
        eprintln!("following {} (Ctrl-C to stop)", saga_topics(cli).join(", "));
    }
    let mut previous: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
    reader.follow(&saga_topics(cli), |record| {
        let Ok(event) = Envelope::decode(&record.payload) else {
            return true;
        };
        if saga_id.is_some_and(|id| event.sagaid != Some(id))
            || event_type.is_some_and(|t| !t.eq_ignore_ascii_case(event.event_type()))
        {
            return true;
        }
        // The hop since the saga's previous event seen here; sagas already over are forgotten.
        let hop = event.sagaid.and_then(|id| {
            let hop = previous
                .get(&id)
                .map(|at| (event.time - *at).to_std().unwrap_or_default());
            if event.event.terminal_status().is_some() {
                previous.remove(&id);
            } else {
                previous.insert(id, event.time);
            }
            hop
        });
        if cli.json {
            let line = json!({
                "time": event.time,
                "saga_id": event.sagaid,
                "type": event.event_type(),
                "service": event.source,
                "outcome": event.event.outcome(),
                "hop_ms": hop.map(|h| h.as_secs_f64() * 1000.0),
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
            });
            println!("{line}");
        } else {
            println!("{}", render::tail_line(&event, hop, style));
        }
        true
    })
}

fn stats(cli: &Cli, since: DateTime<Utc>) -> Result<(), CliError> {
    let reader = Reader::connect(&cli.bootstrap)?;
    let events = envelopes(&reader.read(&saga_topics(cli), Some(since))?);
    let mut per_type: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut by_saga: HashMap<Uuid, Vec<&Envelope>> = HashMap::new();
    for event in &events {
        *per_type.entry(event.event_type()).or_default() += 1;
        if let Some(saga) = event.sagaid {
            by_saga.entry(saga).or_default().push(event);
        }
    }
    let mut per_end: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut durations = Vec::new();
    let mut unfinished = 0_u64;
    for (saga, events) in &by_saga {
        let timeline = Timeline::of(*saga, events.iter().copied());
        // Only sagas whose beginning is in the window have a duration to give.
        let began_here = timeline
            .steps
            .first()
            .is_some_and(|step| step.step == "OrderCreated");
        match timeline.terminal {
            Some(end) => {
                *per_end.entry(end).or_default() += 1;
                if began_here {
                    durations.extend(timeline.duration);
                }
            }
            None if began_here => unfinished += 1,
            None => {}
        }
    }
    durations.sort_unstable();
    let percentile = |p: f64| -> Option<Duration> {
        if durations.is_empty() {
            return None;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let index = ((durations.len() as f64 * p).ceil() as usize).clamp(1, durations.len()) - 1;
        durations.get(index).copied()
    };
    let report = render::Stats {
        since,
        events: events.len() as u64,
        sagas: by_saga.len() as u64,
        per_type,
        per_end,
        unfinished,
        timed: durations.len() as u64,
        p50: percentile(0.50),
        p99: percentile(0.99),
    };
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report.to_json()).unwrap_or_default()
        );
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

fn dlq_list(cli: &Cli, topic: &str) -> Result<(), CliError> {
    let reader = Reader::connect(&cli.bootstrap)?;
    let topic = format!("{}{topic}", cli.topic_prefix);
    let records = reader.read(std::slice::from_ref(&topic), None)?;
    if cli.json {
        let rows: Vec<serde_json::Value> = records.iter().map(render::dead_letter_json).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"topic": topic, "count": rows.len(), "records": rows})
            )
            .unwrap_or_default()
        );
    } else {
        print!("{}", render::dead_letters(&topic, &records));
    }
    Ok(())
}

fn dlq_redrive(
    cli: &Cli,
    topic: &str,
    partition: i32,
    offset: Option<i64>,
) -> Result<(), CliError> {
    let reader = Reader::connect(&cli.bootstrap)?;
    let topic = format!("{}{topic}", cli.topic_prefix);
    let records: Vec<Record> = reader
        .read(std::slice::from_ref(&topic), None)?
        .into_iter()
        .filter(|record| offset.is_none_or(|n| record.partition == partition && record.offset == n))
        .collect();
    if records.is_empty() {
        return Err(CliError::Usage(match offset {
            Some(n) => format!("no record at partition {partition} offset {n} of {topic}"),
            None => format!("{topic} is empty"),
        }));
    }
    let mut redriven = Vec::new();
    for record in &records {
        let original = record
            .header(shared_events::envelope::headers::DLQ_ORIGINAL_TOPIC)
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "the record at {}/{} has no {} header: not a dead letter of this system",
                    record.partition,
                    record.offset,
                    shared_events::envelope::headers::DLQ_ORIGINAL_TOPIC
                ))
            })?;
        kafka::republish(&cli.bootstrap, original, record)?;
        redriven
            .push(json!({"partition": record.partition, "offset": record.offset, "to": original}));
        if !cli.json {
            println!(
                "redriven {topic} partition {} offset {} to {original}",
                record.partition, record.offset
            );
        }
    }
    if cli.json {
        println!("{}", json!({"topic": topic, "redriven": redriven}));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_id_and_a_bad_window_are_usage_errors_with_exit_code_2() {
        let bad = parse_id("not-a-uuid").err();
        assert!(matches!(bad, Some(CliError::Usage(_))));
        assert_eq!(bad.map(|e| e.exit_code()), Some(2));
        assert!(parse_since("10x").is_err());
        assert!(parse_since("m").is_err());
        let ten_minutes_ago = parse_since("10m").ok();
        assert!(ten_minutes_ago.is_some_and(|at| {
            let back = Utc::now() - at;
            back >= chrono::TimeDelta::seconds(599) && back <= chrono::TimeDelta::seconds(601)
        }));
    }
}
