//! Traces and metrics, end to end, through the real tools an operator uses.
//!
//! Traces: the three services export their spans over OTLP to a real Jaeger (`deploy/stack
//! start jaeger`, which `deploy/stack test` runs), with their logs at `RUST_LOG=warn`, and
//! the saga's trace is read back through Jaeger's HTTP API. One trace covers the whole saga,
//! from the caller's own `traceparent` to the last event, with spans from every service; and
//! every hop is a send span (producer) in one service with a process span (consumer) in the
//! next as its child and linked to it, named and tagged by the OpenTelemetry messaging
//! conventions.
//!
//! Metrics: a real Prometheus (Debian's) scrapes every service, and a saga-duration quantile
//! is read back through its query API; the alert rules pass `promtool check rules`.
//!
//! The saga view and the explorer page: `GET /sagas/{saga_id}` has every step of a saga, and
//! the page of a finished saga, loaded in a real headless browser (Debian's Chromium), shows
//! its swim lanes; a screenshot is kept beside the logs.
//!
//! The `saga` CLI, run as an operator runs it against the same stack: a saga's timeline, a bad
//! ID and an unreachable broker, parked events, and a dead letter listed and redriven.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use e2e_tests::runner::{self, World, scenario};
use e2e_tests::stack::{ServiceName, free_port};
use e2e_tests::{Api, Stack, TestResult, ensure, ensure_eq};
use serde_json::{Value, json};

const SETTLE: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    runner::run(vec![
        scenario(
            "one_trace_covers_a_saga_from_the_callers_traceparent_with_logs_at_warn",
            |w: &mut TraceWorld| Box::pin(one_trace_covers_the_saga(w)),
        ),
        scenario(
            "a_failed_saga_is_one_trace_with_its_compensation",
            |w: &mut TraceWorld| Box::pin(compensation_is_traced(w)),
        ),
        scenario(
            "prometheus_scrapes_every_service_and_answers_a_saga_duration_quantile",
            |w: &mut TraceWorld| Box::pin(prometheus_reads_saga_durations(w)),
        ),
        scenario("the_alert_rules_pass_promtool", |_: &mut TraceWorld| {
            Box::pin(alert_rules_pass_promtool())
        }),
        scenario(
            "a_service_at_its_connection_bound_still_answers_probes_and_scrapes_on_its_probe_port",
            |w: &mut TraceWorld| Box::pin(probes_answer_at_the_connection_bound(w)),
        ),
        scenario(
            "the_saga_view_and_the_explorer_page_show_every_step_of_a_compensated_saga",
            |w: &mut TraceWorld| Box::pin(explorer_shows_a_saga(w)),
        ),
        scenario(
            "saga_show_prints_a_compensated_sagas_timeline_from_kafka",
            |w: &mut TraceWorld| Box::pin(cli_shows_a_timeline(w)),
        ),
        scenario(
            "saga_tail_follows_a_saga_live_and_saga_stats_counts_it",
            |w: &mut TraceWorld| Box::pin(cli_tails_and_counts(w)),
        ),
        scenario(
            "saga_cli_answers_a_bad_id_or_an_unreachable_broker_with_exit_code_2",
            |w: &mut TraceWorld| Box::pin(cli_refuses_clearly(w)),
        ),
        scenario(
            "saga_dlq_lists_a_dead_letter_and_redrives_it_to_its_topic",
            |w: &mut TraceWorld| Box::pin(cli_dead_letters(w)),
        ),
    ])
}

struct TraceWorld {
    stack: Stack,
    api: Api,
    jaeger: String,
}

impl World for TraceWorld {
    async fn start() -> TestResult<Self> {
        let endpoint = std::env::var("TEST_OTLP_ENDPOINT").map_err(
            |_| "TEST_OTLP_ENDPOINT is unset: run `deploy/stack test`, which starts Jaeger",
        )?;
        let jaeger = std::env::var("TEST_JAEGER_URL")
            .map_err(|_| "TEST_JAEGER_URL is unset: run `deploy/stack test`")?;
        let mut env = Vec::new();
        for name in ServiceName::ALL {
            env.push((name, "OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()));
            // The log filter must not decide what is traced.
            env.push((name, "RUST_LOG", "warn"));
            // Export every 100 ms instead of every 5 s, so the test does not wait.
            env.push((name, "OTEL_BSP_SCHEDULE_DELAY", "100"));
        }
        let stack = Stack::start_with(env).await?;
        println!(
            "e2e: services up (topics {}*, logs {}), exporting to {endpoint}",
            stack.prefix,
            stack.log_dir.display()
        );
        let api = Api::new(&stack);
        Ok(TraceWorld { stack, api, jaeger })
    }

    async fn finish(self) -> TestResult {
        self.stack.stop().await
    }
}

/// A span as Jaeger's HTTP API returns it, with what the checks need.
#[derive(Debug, Clone)]
struct SpanView {
    span_id: String,
    operation: String,
    service: String,
    tags: HashMap<String, Value>,
    /// (refType, spanID) of each reference: `CHILD_OF` for a parent, `FOLLOWS_FROM` for a link.
    references: Vec<(String, String)>,
}

impl SpanView {
    fn tag(&self, key: &str) -> Option<&Value> {
        self.tags.get(key)
    }

    fn kind(&self) -> &str {
        self.tag("span.kind").and_then(Value::as_str).unwrap_or("")
    }

    /// The span this one continues. A process span has the send span as its parent and as a
    /// link; Jaeger folds the two into one `FOLLOWS_FROM` reference, so either kind counts.
    fn parent(&self) -> Option<&str> {
        self.references
            .iter()
            .find(|(kind, _)| kind == "CHILD_OF")
            .or_else(|| self.references.first())
            .map(|(_, id)| id.as_str())
    }

    fn links_to(&self, span_id: &str) -> bool {
        self.references.iter().any(|(_, id)| id == span_id)
    }
}

/// The spans of trace `trace_id` in Jaeger, or none while it has not got them yet.
async fn trace(api: &Api, jaeger: &str, trace_id: &str) -> TestResult<Vec<SpanView>> {
    let (status, body) = api
        .get_text(&format!("{jaeger}/api/traces/{trace_id}"))
        .await?;
    if status == 404 {
        return Ok(Vec::new());
    }
    ensure!(status == 200, "Jaeger answered {status}: {body}");
    let body: Value = serde_json::from_str(&body)?;
    let Some(trace) = body["data"].as_array().and_then(|traces| traces.first()) else {
        return Ok(Vec::new());
    };
    let processes = &trace["processes"];
    let mut spans = Vec::new();
    for span in trace["spans"].as_array().into_iter().flatten() {
        ensure_eq!(
            span["traceID"].as_str(),
            Some(trace_id),
            "every span's trace ID"
        );
        let process = span["processID"].as_str().unwrap_or_default();
        let tags = span["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|tag| Some((tag["key"].as_str()?.to_owned(), tag["value"].clone())))
            .collect();
        let references = span["references"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| {
                Some((
                    r["refType"].as_str()?.to_owned(),
                    r["spanID"].as_str()?.to_owned(),
                ))
            })
            .collect();
        spans.push(SpanView {
            span_id: span["spanID"].as_str().unwrap_or_default().to_owned(),
            operation: span["operationName"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            service: processes[process]["serviceName"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            tags,
            references,
        });
    }
    Ok(spans)
}

/// Waits until Jaeger holds `hops` process spans of the trace (the batch exporters send what
/// is finished every 100 ms, each service on its own), then returns the trace.
async fn wait_for_trace(w: &TraceWorld, trace_id: &str, hops: usize) -> TestResult<Vec<SpanView>> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let spans = trace(&w.api, &w.jaeger, trace_id).await?;
        let processed = spans.iter().filter(|s| s.kind() == "consumer").count();
        if processed >= hops {
            // The last send spans close when Kafka acknowledges; give the exporters a beat.
            tokio::time::sleep(Duration::from_millis(500)).await;
            return trace(&w.api, &w.jaeger, trace_id).await;
        }
        ensure!(
            Instant::now() < deadline,
            "Jaeger has {processed} of {hops} process spans of trace {trace_id} after {SETTLE:?}: {:?}",
            spans
                .iter()
                .map(|s| format!("{}:{}", s.service, s.operation))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Checks every hop of the trace: each process span is the child of a send span of another
/// service, on the same topic, and links to it; and returns the hops as (sender, receiver).
fn hops_of(spans: &[SpanView]) -> TestResult<Vec<(String, String)>> {
    let by_id: HashMap<&str, &SpanView> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut hops = Vec::new();
    for process in spans.iter().filter(|s| s.kind() == "consumer") {
        let topic = process
            .tag("messaging.destination.name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("process span without a destination: {process:?}"))?;
        ensure_eq!(
            process.operation,
            format!("process {topic}"),
            "a process span's name"
        );
        ensure_eq!(
            process.tag("messaging.system"),
            Some(&json!("kafka")),
            "messaging.system of {}",
            process.operation
        );
        ensure_eq!(
            process.tag("messaging.operation.type"),
            Some(&json!("process")),
            "messaging.operation.type of {}",
            process.operation
        );
        let parent = process
            .parent()
            .and_then(|id| by_id.get(id))
            .ok_or_else(|| format!("the parent of {process:?} is not in the trace"))?;
        ensure_eq!(
            parent.kind(),
            "producer",
            "the kind of {}'s parent",
            process.operation
        );
        ensure_eq!(
            parent.operation,
            format!("send {topic}"),
            "the parent of {} in {}",
            process.operation,
            process.service
        );
        ensure_eq!(
            parent.tag("messaging.operation.type"),
            Some(&json!("send")),
            "messaging.operation.type of {}",
            parent.operation
        );
        ensure!(
            parent.service != process.service,
            "{} sent to itself on {topic}",
            parent.service
        );
        ensure!(
            process.links_to(&parent.span_id),
            "{} in {} does not link to its send span",
            process.operation,
            process.service
        );
        hops.push((parent.service.clone(), process.service.clone()));
    }
    hops.sort();
    Ok(hops)
}

async fn one_trace_covers_the_saga(w: &mut TraceWorld) -> TestResult {
    let product = w.api.product(500, 5).await?;
    let customer = w.api.customer(10_000).await?;
    // The caller's own trace: the saga must continue it.
    let trace_id = format!("{:032x}", uuid::Uuid::new_v4().as_u128());
    let caller_span = format!("{:016x}", uuid::Uuid::new_v4().as_u128() as u64);
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let order = w
        .api
        .place_order_with_headers(customer, &[(product, 1)], &[("traceparent", &traceparent)])
        .await?;
    let done = w.api.wait_terminal(order.id, SETTLE).await?;
    ensure_eq!(done["status"], json!("CONFIRMED"), "the order's status");

    // Four process spans: payments, inventory, and orders twice (PaymentSucceeded, which it
    // only records in its saga view, and InventoryReserved).
    let spans = wait_for_trace(w, &trace_id, 4).await?;
    let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    ensure_eq!(
        services,
        BTreeSet::from(["inventory-svc", "orders-svc", "payments-svc"]),
        "the services in the trace"
    );
    let request = spans
        .iter()
        .find(|s| s.kind() == "server" && s.operation == "POST /orders")
        .ok_or("no POST /orders server span in the trace")?;
    ensure_eq!(
        request.parent(),
        Some(caller_span.as_str()),
        "the request span's parent (the caller's traceparent)"
    );
    ensure_eq!(
        request.tag("http.response.status_code"),
        Some(&json!(202)),
        "the request span's status code"
    );
    ensure_eq!(
        hops_of(&spans)?,
        vec![
            ("inventory-svc".to_owned(), "orders-svc".to_owned()),
            ("orders-svc".to_owned(), "payments-svc".to_owned()),
            ("payments-svc".to_owned(), "inventory-svc".to_owned()),
            ("payments-svc".to_owned(), "orders-svc".to_owned()),
        ],
        "the hops (sender, receiver) of a confirmed saga"
    );
    // RUST_LOG=warn held: the services wrote no INFO line while tracing all of this.
    for name in ServiceName::ALL {
        let log = std::fs::read_to_string(w.stack.log_dir.join(format!("{}.log", name.binary())))
            .unwrap_or_default();
        ensure!(
            !log.contains("INFO"),
            "{} logged at INFO with RUST_LOG=warn: {}",
            name.binary(),
            log.lines()
                .find(|line| line.contains("INFO"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

async fn compensation_is_traced(w: &mut TraceWorld) -> TestResult {
    // Stock is short: payments charges, inventory fails, payments refunds, orders fails.
    let trace_id = format!("{:032x}", uuid::Uuid::new_v4().as_u128());
    let traceparent = format!("00-{trace_id}-{:016x}-01", 0x5eed_u64);
    compensated_saga(w, &[("traceparent", &traceparent)]).await?;
    // Six process spans: OrderCreated in payments, PaymentSucceeded in inventory and in
    // orders (its saga view), InventoryReservationFailed in payments (the compensation) and in
    // orders, PaymentRefunded in orders. A service that passes over an event it does not
    // react to makes no span.
    let spans = wait_for_trace(w, &trace_id, 6).await?;
    let hops = hops_of(&spans)?;
    for hop in [
        ("orders-svc", "payments-svc"),
        ("payments-svc", "inventory-svc"),
        ("inventory-svc", "payments-svc"),
        ("payments-svc", "orders-svc"),
    ] {
        ensure!(
            hops.contains(&(hop.0.to_owned(), hop.1.to_owned())),
            "no hop {} → {} in {hops:?}",
            hop.0,
            hop.1
        );
    }
    Ok(())
}

/// The repository's `deploy/` folder.
fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

async fn alert_rules_pass_promtool() -> TestResult {
    let report = promtool("check", "prometheus/alerts.yml").await?;
    ensure!(
        report.contains("SUCCESS: 6 rules found"),
        "promtool did not find the six rules: {report}"
    );
    // The rules' own unit tests: an alert fires on the series it should, and not before.
    promtool("test", "prometheus/alerts.test.yml").await?;
    Ok(())
}

/// At its connection bound a service stops accepting on its main port, but its probe port
/// (`HTTP_PROBE_PORT`) still answers the orchestrator's probes and Prometheus's scrape, and
/// the scrape counts the connections that hold the bound.
async fn probes_answer_at_the_connection_bound(w: &mut TraceWorld) -> TestResult {
    let service = ServiceName::Payments;
    let probe_port = free_port()?.to_string();
    w.stack
        .restart(
            service,
            &[
                ("HTTP_MAX_CONNECTIONS", "2"),
                ("HTTP_PROBE_PORT", probe_port.as_str()),
            ],
        )
        .await?;
    let outcome = at_the_bound(&w.api, &w.stack.url(service), &probe_port).await;
    // Back to its usual settings, whatever happened, for the scenarios after this one.
    w.stack.restart(service, &[]).await?;
    outcome
}

async fn at_the_bound(api: &Api, main: &str, probe_port: &str) -> TestResult {
    let address = main.trim_start_matches("http://");
    // Two idle connections hold the bound of 2...
    let held = [
        tokio::net::TcpStream::connect(address).await?,
        tokio::net::TcpStream::connect(address).await?,
    ];
    // ...so a third is left in the kernel's accept queue, its request unanswered.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let live = |base: &str| format!("{base}/health/live");
    let past_the_bound = client.get(live(main)).send().await;
    ensure!(
        past_the_bound.is_err(),
        "the main port answered past its bound of 2 connections: {past_the_bound:?}"
    );
    let probes = format!("http://127.0.0.1:{probe_port}");
    for path in ["/health/live", "/health/ready", "/health"] {
        let (status, body) = api.get_text(&format!("{probes}{path}")).await?;
        ensure_eq!(status, 200, "{path} on the probe port: {body}");
    }
    ensure_eq!(
        api.metric(&probes, "saga_http_connections").await?,
        2,
        "the main port's open connections, scraped on the probe port"
    );
    ensure_eq!(
        api.metric(&probes, "saga_http_max_connections").await?,
        2,
        "the bound"
    );
    // Once a held connection closes, the main port serves again.
    drop(held);
    let response = client.get(live(main)).send().await?;
    ensure_eq!(
        response.status().as_u16(),
        200,
        "the main port once the held connections closed"
    );
    Ok(())
}

/// `promtool <verb> rules deploy/<file>`: its output when it succeeds, an error with the
/// output when it fails.
async fn promtool(verb: &str, file: &str) -> TestResult<String> {
    let output = tokio::process::Command::new("promtool")
        .args([verb, "rules"])
        .arg(deploy_dir().join(file))
        .output()
        .await
        .map_err(|e| format!("cannot run promtool (deploy/stack test installs it): {e}"))?;
    let report = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success(),
        "promtool {verb} rules {file} failed: {report}"
    );
    Ok(report)
}

/// A Prometheus of the test's own, on a free port, scraping every service of the stack each
/// second with the repository's alert rules loaded. Killed when dropped.
struct Prometheus {
    url: String,
    _process: tokio::process::Child,
    _data: TempDir,
}

/// A folder removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Prometheus {
    async fn start(stack: &Stack) -> TestResult<Prometheus> {
        let dir = TempDir(std::env::temp_dir().join(format!("e2e-prometheus-{}", stack.prefix)));
        std::fs::create_dir_all(dir.0.join("data"))?;
        let targets: Vec<String> = stack
            .all_instances()
            .into_iter()
            .map(|instance| {
                format!(
                    "\"{}\"",
                    stack.url(instance).trim_start_matches("http://").to_owned()
                )
            })
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: [\"{rules}\"]\n\
             scrape_configs:\n  - job_name: saga\n    static_configs:\n      - targets: [{targets}]\n",
            rules = deploy_dir().join("prometheus/alerts.yml").display(),
            targets = targets.join(", "),
        );
        std::fs::write(dir.0.join("prometheus.yml"), config)?;
        let port = free_port()?;
        let log = std::fs::File::create(stack.log_dir.join("prometheus.log"))?;
        let process = tokio::process::Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.0.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start prometheus (deploy/stack test installs it): {e}"))?;
        Ok(Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            _process: process,
            _data: dir,
        })
    }

    /// The value of an instant query whose result is one sample, once it has one.
    async fn query_one(&self, api: &Api, query: &str, within: Duration) -> TestResult<f64> {
        let deadline = Instant::now() + within;
        let url = format!(
            "{}/api/v1/query?query={}",
            self.url,
            utf8_percent_encode(query)
        );
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok((200, body)) = api.get_text(&url).await {
                let body: Value = serde_json::from_str(&body)?;
                let value = body["data"]["result"][0]["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok());
                if let Some(value) = value.filter(|v| v.is_finite()) {
                    return Ok(value);
                }
                last = body.to_string();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(format!("Prometheus had no finite answer to {query} within {within:?}: {last}").into())
    }
}

/// Percent-encodes a query string value (PromQL has braces, quotes and spaces).
fn utf8_percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn prometheus_reads_saga_durations(w: &mut TraceWorld) -> TestResult {
    let prometheus = Prometheus::start(&w.stack).await?;
    // Every service instance is a healthy target. A comparison without `bool` filters, so the
    // query has an answer only once it holds.
    let instances = w.stack.all_instances().len();
    prometheus
        .query_one(&w.api, &format!("count(up == 1) == {instances}"), SETTLE)
        .await
        .map_err(|e| format!("not every service is up in Prometheus: {e}"))?;
    // The counts as they stood before this scenario's sagas, which are all it may judge: the
    // histogram holds every saga since the services started, and an earlier scenario's first
    // saga, on a cold stack, may have been slower than any of these. Every target has been
    // scraped since the earlier scenarios ended, so the samples at `before` hold their sagas.
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    let since_before = |series: &str| {
        format!("sum by (le) ({series}) - sum by (le) ({series} @ {before:.3} or {series} * 0)")
    };
    let product = w.api.product(100, 50).await?;
    let customer = w.api.customer(100_000).await?;
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let placed = Instant::now();
        let order = w.api.place_order(customer, &[(product, 1)]).await?;
        let done = w.api.wait_terminal(order.id, SETTLE).await?;
        ensure_eq!(done["status"], json!("CONFIRMED"), "the order's status");
        slowest = slowest.max(placed.elapsed());
    }
    // Once a scrape has seen all five.
    prometheus
        .query_one(
            &w.api,
            &format!(
                "{} >= 5",
                since_before("saga_duration_seconds_count{outcome=\"CONFIRMED\"}")
            ),
            SETTLE,
        )
        .await?;
    let p99 = prometheus
        .query_one(
            &w.api,
            &format!(
                "histogram_quantile(0.99, {})",
                since_before("saga_duration_seconds_bucket{outcome=\"CONFIRMED\"}")
            ),
            SETTLE,
        )
        .await?;
    // A quantile from buckets is an interpolation inside the bucket the saga fell in, so it
    // is bounded by that bucket's upper edge, never far above the slowest saga seen.
    ensure!(
        p99 > 0.0 && p99 <= bucket_above(slowest),
        "saga p99 from Prometheus is {p99} s; the slowest saga took {slowest:?} as the client saw it"
    );
    Ok(())
}

/// The upper edge of the histogram bucket that holds `took`.
fn bucket_above(took: Duration) -> f64 {
    let seconds = took.as_secs_f64();
    saga_runtime::metrics::BUCKETS
        .into_iter()
        .find(|edge| *edge >= seconds)
        .unwrap_or(f64::INFINITY)
}

/// Runs the `saga` binary (built beside the services) against the test stack.
async fn saga_cli(w: &TraceWorld, args: &[&str]) -> TestResult<(i32, String, String)> {
    let output =
        saga_command(w).args(args).output().await.map_err(|e| {
            format!("cannot run saga (cargo build --workspace --bins builds it): {e}")
        })?;
    Ok((
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

async fn cli_shows_a_timeline(w: &mut TraceWorld) -> TestResult {
    let (order, _) = compensated_saga(w, &[]).await?;
    let saga = order.saga_id.to_string();
    // The last event may still be on its way to Kafka when the order reads terminal.
    let deadline = Instant::now() + SETTLE;
    let timeline: Value = loop {
        let (code, stdout, stderr) = saga_cli(w, &["show", &saga, "--json"]).await?;
        if code == 0 {
            let timeline: Value = serde_json::from_str(&stdout)?;
            if timeline["terminal"].is_string() {
                break timeline;
            }
        }
        ensure!(
            Instant::now() < deadline,
            "saga show {saga}: exit {code}: {stderr}{stdout}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let steps: Vec<(String, String, String)> = timeline["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|step| {
            (
                step["step"].as_str().unwrap_or_default().to_owned(),
                step["service"].as_str().unwrap_or_default().to_owned(),
                step["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("OrderCreated", "orders-svc", "success"),
        ("PaymentSucceeded", "payments-svc", "success"),
        ("InventoryReservationFailed", "inventory-svc", "failure"),
        ("PaymentRefunded", "payments-svc", "compensation"),
        ("OrderFailed", "orders-svc", "failure"),
    ]
    .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()));
    ensure_eq!(steps, expected.to_vec(), "the timeline's steps");
    ensure_eq!(
        timeline["terminal"],
        json!("FAILED_INVENTORY"),
        "the saga's end"
    );
    ensure!(
        timeline["steps"][0]["hop_ms"].is_null()
            && timeline["steps"][1]["hop_ms"]
                .as_f64()
                .is_some_and(|ms| ms >= 0.0),
        "hops: none before the first event, one after: {timeline}"
    );
    let total = timeline["duration_ms"].as_f64().unwrap_or(-1.0);
    let hops: f64 = timeline["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|step| step["hop_ms"].as_f64())
        .sum();
    ensure!(
        (total - hops).abs() < 0.01,
        "the duration ({total} ms) is the sum of the hops ({hops} ms)"
    );
    // The table a person reads.
    let (code, table, _) = saga_cli(w, &["show", &saga]).await?;
    ensure_eq!(code, 0, "saga show's exit code");
    ensure!(
        table.contains("PaymentRefunded")
            && table.contains("compensation")
            && table.contains("ended FAILED_INVENTORY after"),
        "the table: {table}"
    );
    // Nothing is parked in this stack.
    let (code, stuck, stderr) = saga_cli(w, &["stuck", "--json"]).await?;
    ensure_eq!(code, 0, "saga stuck's exit code ({stderr})");
    let stuck: Value = serde_json::from_str(&stuck)?;
    ensure_eq!(stuck["count"], json!(0), "parked events");
    Ok(())
}

/// The `saga` binary the harness runs, with the test stack's brokers, prefix and URLs.
fn saga_command(w: &TraceWorld) -> tokio::process::Command {
    let bin_dir = std::env::var("SAGA_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug"));
    let mut command = tokio::process::Command::new(bin_dir.join("saga"));
    command
        .args(["--bootstrap", &saga_runtime::testing::kafka_brokers()])
        .args(["--topic-prefix", &w.stack.prefix])
        .args(["--orders", &w.stack.url(ServiceName::Orders)])
        .args(["--payments", &w.stack.url(ServiceName::Payments)])
        .args(["--inventory", &w.stack.url(ServiceName::Inventory)])
        .env(
            "SAGA_TOKEN",
            saga_runtime::testing::token("operator", &[saga_runtime::auth::Scope::Operator]),
        )
        .env("NO_COLOR", "1");
    command
}

async fn cli_tails_and_counts(w: &mut TraceWorld) -> TestResult {
    use tokio::io::AsyncBufReadExt;
    let product = w.api.product(300, 5).await?;
    let customer = w.api.customer(5_000).await?;
    // `tail` starts at the end of the topics: it is running before the order is placed. Its
    // first line on stderr says it follows; then the saga's events come as JSON lines.
    let mut tail = saga_command(w)
        .args(["tail", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = tail.stdout.take().ok_or("no stdout from saga tail")?;
    // Give it a moment to be assigned its partitions at their end.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let order = w.api.place_order(customer, &[(product, 1)]).await?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    let deadline = Instant::now() + SETTLE;
    while seen.last().map(String::as_str) != Some("OrderConfirmed") {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = tokio::time::timeout(left, lines.next_line())
            .await
            .map_err(|_| format!("saga tail showed {seen:?} of the saga within {SETTLE:?}"))??
            .ok_or("saga tail ended")?;
        let event: Value = serde_json::from_str(&line)?;
        if event["saga_id"] == json!(order.saga_id) {
            seen.push(event["type"].as_str().unwrap_or_default().to_owned());
        }
    }
    ensure_eq!(
        seen,
        vec![
            "OrderCreated".to_owned(),
            "PaymentSucceeded".to_owned(),
            "InventoryReserved".to_owned(),
            "OrderConfirmed".to_owned()
        ],
        "the saga's events as saga tail printed them"
    );
    tail.kill().await?;

    let (code, stdout, stderr) = saga_cli(w, &["stats", "--since", "10m", "--json"]).await?;
    ensure_eq!(code, 0, "saga stats's exit code ({stderr})");
    let stats: Value = serde_json::from_str(&stdout)?;
    ensure!(
        stats["per_terminal_state"]["CONFIRMED"]
            .as_u64()
            .is_some_and(|n| n >= 1)
            && stats["per_event_type"]["OrderCreated"]
                .as_u64()
                .is_some_and(|n| n >= 1)
            && stats["p50_ms"].as_f64().is_some_and(|ms| ms > 0.0)
            && stats["p99_ms"].as_f64() >= stats["p50_ms"].as_f64(),
        "saga stats: {stats}"
    );
    Ok(())
}

async fn cli_refuses_clearly(w: &mut TraceWorld) -> TestResult {
    let (code, _, stderr) = saga_cli(w, &["show", "not-a-saga"]).await?;
    ensure_eq!(code, 2, "exit code for a malformed ID");
    ensure!(
        stderr.lines().count() == 1 && stderr.contains("not a saga ID"),
        "stderr: {stderr}"
    );
    let unknown = uuid::Uuid::now_v7().to_string();
    let (code, _, stderr) = saga_cli(w, &["show", &unknown]).await?;
    ensure_eq!(code, 2, "exit code for an ID without events");
    ensure!(stderr.contains("no events of saga"), "stderr: {stderr}");
    // The last --bootstrap wins: a port nothing listens on.
    let dead = format!("127.0.0.1:{}", free_port()?);
    let (code, _, stderr) = saga_cli(w, &["--bootstrap", &dead, "stats"]).await?;
    ensure_eq!(code, 2, "exit code for an unreachable broker");
    ensure!(
        stderr.lines().count() == 1 && stderr.contains("unreachable"),
        "stderr: {stderr}"
    );
    // KAFKA_CLIENT_* reach librdkafka, as the services' do: a value it refuses is named.
    let output = saga_command(w)
        .arg("stats")
        .env("KAFKA_CLIENT_SECURITY_PROTOCOL", "carrier-pigeon")
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure_eq!(
        output.status.code(),
        Some(1),
        "exit code for a refused client property"
    );
    ensure!(
        stderr.contains("security.protocol") && stderr.contains("carrier-pigeon"),
        "stderr: {stderr}"
    );
    Ok(())
}

/// `saga dlq list TOPIC --json`.
async fn dlq_listing(w: &TraceWorld, dlq: &str) -> TestResult<Value> {
    let (code, stdout, stderr) = saga_cli(w, &["dlq", "list", dlq, "--json"]).await?;
    ensure_eq!(code, 0, "saga dlq list's exit code ({stderr})");
    Ok(serde_json::from_str(&stdout)?)
}

async fn cli_dead_letters(w: &mut TraceWorld) -> TestResult {
    let dlq = format!("{}.dlq", shared_events::topics::PAYMENTS_EVENTS);
    let count = |listing: &Value| listing["count"].as_u64().unwrap_or_default();
    let before = count(&dlq_listing(w, &dlq).await?);
    // A record no consumer can read: orders-svc and inventory-svc dead-letter it.
    let poison = format!("{{\"not\": \"an event {}\"}}", uuid::Uuid::now_v7());
    e2e_tests::RawProducer::new()?
        .send(
            &w.stack.topic(shared_events::topics::PAYMENTS_EVENTS),
            Some(0),
            "poison",
            poison.as_bytes(),
        )
        .await?;
    let deadline = Instant::now() + SETTLE;
    let listing = loop {
        let listing = dlq_listing(w, &dlq).await?;
        if count(&listing) > before {
            break listing;
        }
        ensure!(
            Instant::now() < deadline,
            "no dead letter appeared: {listing}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let record = listing["records"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["value"] == json!(poison))
        .ok_or_else(|| format!("the poison is not listed: {listing}"))?
        .clone();
    ensure_eq!(
        record["original_topic"],
        json!(w.stack.topic(shared_events::topics::PAYMENTS_EVENTS)),
        "the dead letter's original topic"
    );
    ensure!(
        record["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "a reason: {record}"
    );
    // Redriven, it is published back to payments.events, where the consumers meet it again
    // and (still unreadable) dead-letter it once more: one more copy of it in the DLQ.
    let copies = |listing: &Value| {
        listing["records"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["value"] == json!(poison))
            .count()
    };
    let copies_before = copies(&dlq_listing(w, &dlq).await?);
    let partition = record["partition"].as_i64().unwrap_or_default().to_string();
    let offset = record["offset"].as_i64().unwrap_or_default().to_string();
    let (code, out, stderr) = saga_cli(
        w,
        &[
            "dlq",
            "redrive",
            &dlq,
            "--partition",
            &partition,
            "--offset",
            &offset,
            "--json",
        ],
    )
    .await?;
    ensure_eq!(code, 0, "saga dlq redrive's exit code ({stderr})");
    let redriven: Value = serde_json::from_str(&out)?;
    ensure_eq!(
        redriven["redriven"].as_array().map(Vec::len),
        Some(1),
        "records redriven"
    );
    let deadline = Instant::now() + SETTLE;
    loop {
        let now = copies(&dlq_listing(w, &dlq).await?);
        if now > copies_before {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the redriven record never came back to the DLQ ({now} copies)"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}

/// Chromium, headless, as the machine's probe runs it: without the background networking that
/// this closed network refuses, and with a profile of its own.
async fn chromium(args: &[&str], profile: &std::path::Path) -> TestResult<Vec<u8>> {
    let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".to_owned());
    let output = tokio::process::Command::new(&binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .await
        .map_err(|e| format!("cannot run {binary} (deploy/stack test installs chromium): {e}"))?;
    ensure!(
        output.status.success(),
        "{binary} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output.stdout)
}

async fn explorer_shows_a_saga(w: &mut TraceWorld) -> TestResult {
    let (order, done) = compensated_saga(w, &[]).await?;
    ensure_eq!(
        done["links"]["saga"],
        json!(format!("/sagas/{}", order.saga_id)),
        "the order's link to its saga"
    );
    let orders = w.stack.url(ServiceName::Orders);
    // orders-svc consumes the inventory and payments topics apart, so the view may get its
    // last step a moment after the order is terminal.
    let deadline = Instant::now() + SETTLE;
    let saga = loop {
        let saga = w
            .api
            .get(format!("{orders}/sagas/{}", order.saga_id))
            .await?;
        if saga["steps"].as_array().map(Vec::len) == Some(5) {
            break saga;
        }
        ensure!(
            Instant::now() < deadline,
            "the saga view never had 5 steps: {saga}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let steps: Vec<&str> = saga["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["step"].as_str())
        .collect();
    ensure_eq!(
        steps,
        vec![
            "OrderCreated",
            "PaymentSucceeded",
            "InventoryReservationFailed",
            "PaymentRefunded",
            "OrderFailed"
        ],
        "the saga view's steps"
    );
    ensure_eq!(
        saga["terminal"],
        json!("FAILED_INVENTORY"),
        "the saga's end"
    );
    ensure_eq!(
        saga["steps"][3]["outcome"],
        json!("compensation"),
        "the refund's outcome"
    );
    let listed = w
        .api
        .get(format!(
            "{orders}/sagas?status=FAILED_INVENTORY&since=10m&limit=500"
        ))
        .await?;
    ensure!(
        listed["sagas"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["saga_id"] == json!(order.saga_id) && s["duration_ms"].as_f64().is_some()),
        "GET /sagas lists the saga with its duration: {listed}"
    );

    let profile = TempDir(std::env::temp_dir().join(format!("e2e-chromium-{}", w.stack.prefix)));
    // As an operator opens it: the token once, at the login, which keeps it in a cookie and
    // goes on to the page.
    let token = saga_runtime::testing::token("operator", &[saga_runtime::auth::Scope::Operator]);
    let through_login = |next: &str| format!("{orders}/ui/login?token={token}&next={next}");
    let page = through_login(&format!("/ui/sagas/{}", order.saga_id));
    let dom = String::from_utf8(chromium(&["--dump-dom", &page], &profile.0).await?)?;
    ensure!(
        dom.contains("<svg id=\"swimlanes\""),
        "no swim lanes in the page: {dom}"
    );
    ensure_eq!(dom.matches("<g class=\"lane\"").count(), 3, "lanes");
    ensure_eq!(dom.matches("<g class=\"event ").count(), 5, "events drawn");
    ensure_eq!(dom.matches("<g class=\"hop\"").count(), 4, "hops drawn");
    ensure!(
        dom.contains("<g class=\"event compensation\" data-step=\"PaymentRefunded\" data-service=\"payments-svc\">"),
        "the refund is drawn as a compensation in payments-svc's lane"
    );
    ensure!(
        dom.contains("id=\"status\">FAILED_INVENTORY</b>"),
        "the page shows the order's status"
    );
    let list = String::from_utf8(
        chromium(
            &[
                "--dump-dom",
                &through_login("/ui/%3Fstatus%3DFAILED_INVENTORY"),
            ],
            &profile.0,
        )
        .await?,
    )?;
    ensure!(
        list.contains(&format!(
            "data-saga-id=\"{}\" data-status=\"FAILED_INVENTORY\"",
            order.saga_id
        )),
        "the list page shows the saga under its status filter"
    );
    let screenshot = w.stack.log_dir.join("saga-explorer.png");
    chromium(
        &[
            &format!("--screenshot={}", screenshot.display()),
            "--window-size=1000,760",
            &page,
        ],
        &profile.0,
    )
    .await?;
    let png = std::fs::read(&screenshot)?;
    ensure!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "the screenshot at {} is not a real PNG ({} bytes)",
        screenshot.display(),
        png.len()
    );
    println!("e2e: explorer screenshot at {}", screenshot.display());
    Ok(())
}

/// Places an order whose stock is short, so that its saga is compensated (charge, refund,
/// `FAILED_INVENTORY`), with extra request headers, and waits for its end.
async fn compensated_saga(
    w: &TraceWorld,
    headers: &[(&str, &str)],
) -> TestResult<(e2e_tests::PlacedOrder, Value)> {
    let product = w.api.product(700, 0).await?;
    let customer = w.api.customer(5_000).await?;
    let order = w
        .api
        .place_order_with_headers(customer, &[(product, 1)], headers)
        .await?;
    let done = w.api.wait_terminal(order.id, SETTLE).await?;
    ensure_eq!(
        done["status"],
        json!("FAILED_INVENTORY"),
        "the order's status"
    );
    Ok((order, done))
}
