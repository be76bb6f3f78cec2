//! The consumer loop. It reads a service's topics and hands each decoded event to the unit
//! of work ([`UnitOfWork::apply`]), which applies it through the service's [`EventHandler`] in
//! one local transaction (inbox row, effect, outbox rows). The record's offset is stored only
//! after that transaction has committed.
//!
//! Records are spread over parallel lanes by partition: one partition always goes to the same
//! lane, so a saga's events (one key, one partition) are applied in order, while different
//! partitions proceed side by side.
//!
//! What happens to a record that does not simply apply:
//! - undecodable (a saga event without a saga ID included) or oversized: sent to the
//!   dead-letter topic `<topic>.dlq` with the reason and its origin in headers, then skipped;
//! - the database is unreachable: retried with bounded exponential backoff for as long as that
//!   lasts;
//! - a transient failure (serialization failure, deadlock, statement timeout): retried up to
//!   `max_transient_attempts` times, then parked;
//! - a permanent failure: retried `max_attempts` times, then parked for an operator
//!   ([`crate::parking`]), and the saga's later events park behind it.

use std::collections::VecDeque;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_semantic_conventions::attribute as semconv;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::FutureRecord;
use sea_orm::DbErr;
use shared_events::envelope::headers;
use shared_events::{Envelope, SagaEvent};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};

use crate::backoff::Backoff;
use crate::config::{ConsumerSettings, KafkaSettings};
use crate::fault::{self, CrashPoint};
use crate::health::{BEAT_INTERVAL, Health, Loop};
use crate::inbox::Delivery;
use crate::kafka::{self, CommitOnRevoke, ErrorLog, SharedProducer};
use crate::metrics;
use crate::parking::{Origin, Parking};
use crate::telemetry;
use crate::unit_of_work::{Batch, Consumed, MAX_BATCH_EVENTS, Reaction, Tx, UnitOfWork};

/// Records queued per lane. Short on purpose: the broker, not memory, holds the backlog.
const LANE_QUEUE_CAPACITY: usize = 64;

/// A service's reaction to consumed events. The runtime has already opened the transaction
/// and recorded the event in the inbox; the handler changes the service's data on `tx` and
/// returns what to publish. It cannot commit: [`UnitOfWork::apply`] does that, then wakes the
/// relay, and only then is the record's offset stored. An `Err` rolls everything back and the
/// loop retries or parks the event.
pub trait EventHandler: Send + Sync + 'static {
    /// Whether the service reacts to `event` at all. Topics carry every event of their
    /// producer, and most of them concern other services: those are passed over without a
    /// transaction, their offsets stored in turn. Must be true for every event `handle`
    /// changes anything for.
    fn accepts(&self, event: &Envelope) -> bool {
        let _ = event;
        true
    }

    /// Whether events of `event_type` (the record's `event_type` header) only need recording
    /// here: the service takes them (for its inbox or a view) but nothing waits for what it
    /// does with them. A lane holding nothing else waits up to
    /// [`ConsumerSettings::record_only_wait`] for an event the service acts on, and commits
    /// them together: one transaction instead of two.
    fn only_records(&self, event_type: &str) -> bool {
        let _ = event_type;
        false
    }

    fn handle(
        &self,
        tx: &Tx,
        event: &Envelope,
    ) -> impl Future<Output = Result<Reaction, HandlerError>> + Send;

    /// Whether `event` may go to [`EventHandler::handle_together`] with the events next to it
    /// in a batch that this also says yes to. No event does by default.
    fn handles_together(&self, event: &Envelope) -> bool {
        let _ = event;
        false
    }

    /// Handles `events` (consecutive first deliveries of a batch, each accepted by
    /// `handles_together`, at least two) as `handle` would one after the other, but in fewer
    /// statements: a set-based statement per step instead of one per event, since a round
    /// trip costs PostgreSQL and the service more than the row it carries. One reaction per
    /// event, in order.
    ///
    /// If it fails, the runtime rolls the transaction back and applies the same events again
    /// one at a time through `handle`, which then finds the event at fault. So an
    /// implementation may give up whenever handling them together would not be the same as
    /// one by one (an order decided before, say) and leave the case to `handle`.
    fn handle_together(
        &self,
        tx: &Tx,
        events: &[&Envelope],
    ) -> impl Future<Output = Result<Vec<Reaction>, HandlerError>> + Send {
        async move {
            let mut reactions = Vec::with_capacity(events.len());
            for event in events {
                reactions.push(self.handle(tx, event).await?);
            }
            Ok(reactions)
        }
    }
}

/// What a [`EventHandler::handle_together`] for one event type starts from: the payload `pick`
/// finds in each of `events`, with the event's saga ID. An event without a saga ID, or one
/// `pick` does not take, fails the call, and the runtime then applies the events one by one.
pub fn payloads_together<'a, T>(
    events: &[&'a Envelope],
    pick: impl Fn(&'a SagaEvent) -> Option<&'a T>,
) -> Result<Vec<(uuid::Uuid, &'a T)>, HandlerError> {
    events
        .iter()
        .map(|event| {
            let payload = pick(&event.event)
                .ok_or_else(|| HandlerError::new(NotTogether(event.event_type().to_owned())))?;
            Ok((event.saga_id().map_err(HandlerError::new)?, payload))
        })
        .collect()
}

/// An event that [`payloads_together`] was not told how to take.
#[derive(Debug, thiserror::Error)]
#[error("{0} is not handled together with other events")]
struct NotTogether(String);

/// What applying a decoded event takes: the service's handler, the unit of work it runs in,
/// and the parked events it may have to wait behind. Shared by the consumer's lanes and the
/// operator's retry endpoint.
pub struct Applier<H> {
    pub handler: Arc<H>,
    pub uow: UnitOfWork,
    pub parking: Parking,
}

impl<H> Clone for Applier<H> {
    fn clone(&self) -> Self {
        Self {
            handler: Arc::clone(&self.handler),
            uow: self.uow.clone(),
            parking: self.parking.clone(),
        }
    }
}

/// A failure to apply an event. A handler must not return an error for a business outcome
/// (a declined payment is an event, not an error).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub Box<dyn std::error::Error + Send + Sync>);

/// How the consumer treats a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The database cannot be reached: retry until it can; parking would need it too.
    Unavailable,
    /// Serialization failure, deadlock, timeout: retrying is the cure.
    Transient,
    /// Anything else: retrying a few times is worth it, then an operator must look.
    Permanent,
}

impl HandlerError {
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(error))
    }

    /// Classifies by the first database error in the source chain.
    pub fn class(&self) -> FailureClass {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self.0.as_ref());
        while let Some(error) = cause {
            if let Some(db) = error.downcast_ref::<DbErr>() {
                return classify_db(db);
            }
            cause = error.source();
        }
        FailureClass::Permanent
    }
}

/// Classifies a database error by its kind and SQLSTATE.
pub fn classify_db(error: &DbErr) -> FailureClass {
    use sea_orm::RuntimeErr;
    let runtime = match error {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => return FailureClass::Unavailable,
        DbErr::Exec(runtime) | DbErr::Query(runtime) => runtime,
        _ => return FailureClass::Permanent,
    };
    let RuntimeErr::SqlxError(sqlx_error) = runtime else {
        return FailureClass::Permanent;
    };
    match sqlx_error.as_ref() {
        sea_orm::sqlx::Error::Io(_)
        | sea_orm::sqlx::Error::PoolTimedOut
        | sea_orm::sqlx::Error::PoolClosed => FailureClass::Unavailable,
        sea_orm::sqlx::Error::Database(db) => match db.code().as_deref() {
            // serialization_failure, deadlock_detected, lock_not_available, query_canceled
            // (statement timeout), too_many_connections, admin/crash shutdown, cannot_connect_now.
            Some("40001" | "40P01" | "55P03" | "57014" | "53300" | "57P01" | "57P02" | "57P03") => {
                FailureClass::Transient
            }
            Some(code) if code.starts_with("08") => FailureClass::Unavailable,
            _ => FailureClass::Permanent,
        },
        _ => FailureClass::Permanent,
    }
}

type SagaConsumer = StreamConsumer<CommitOnRevoke>;

/// One service's subscription: topics, group, lanes and handler.
pub struct EventConsumer<H> {
    consumer: Arc<SagaConsumer>,
    /// Physical topic names, kept to subscribe a replacement client.
    topics: Vec<String>,
    client_id: String,
    applier: Applier<H>,
    dead_letters: SharedProducer,
    settings: ConsumerSettings,
    kafka: KafkaSettings,
    health: Health,
}

impl<H> std::fmt::Debug for EventConsumer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventConsumer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<H: EventHandler> EventConsumer<H> {
    /// Subscribes the service's group to the logical `topics` (the prefix is applied here).
    pub fn subscribe(
        kafka_settings: &KafkaSettings,
        settings: ConsumerSettings,
        client_id: &str,
        topics: &[&str],
        applier: Applier<H>,
        dead_letters: SharedProducer,
        health: Health,
    ) -> Result<Self, KafkaError> {
        let physical: Vec<String> = topics.iter().map(|t| kafka_settings.topic(t)).collect();
        let consumer = connect(kafka_settings, client_id, &physical)?;
        Ok(Self {
            consumer: Arc::new(consumer),
            topics: physical,
            client_id: client_id.to_owned(),
            applier,
            dead_letters,
            settings,
            kafka: kafka_settings.clone(),
            health,
        })
    }

    /// Runs until `shutdown`. Each lane finishes the record in hand, then the stored offsets
    /// are committed synchronously before returning. A client that librdkafka declares dead
    /// (a fatal error, e.g. fenced after a broker restart) is replaced by a new one; the inbox
    /// makes the records it redelivers harmless.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut consumer = Arc::clone(&self.consumer);
        loop {
            match self.session(Arc::clone(&consumer), &shutdown).await {
                SessionEnd::Shutdown => break,
                SessionEnd::Fatal(reason) => {
                    tracing::error!(reason, "kafka consumer failed fatally; replacing it");
                    self.health.trouble(Loop::Consumer, &reason);
                    consumer = loop {
                        tokio::select! {
                            () = tokio::time::sleep(self.settings.retry_backoff_max) => {}
                            () = shutdown.cancelled() => return,
                        }
                        self.health.beat(Loop::Consumer);
                        match connect(&self.kafka, &self.client_id, &self.topics) {
                            Ok(fresh) => {
                                self.health.working(Loop::Consumer);
                                break Arc::new(fresh);
                            }
                            Err(error) => {
                                tracing::warn!(%error, "kafka consumer cannot be created yet; retrying")
                            }
                        }
                    };
                }
            }
        }
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => tracing::info!("consumer stopped; offsets committed"),
            Err(error) => tracing::info!(%error, "consumer stopped; nothing left to commit"),
        }
    }

    /// Feeds the lanes from one client until shutdown or until the client fails fatally.
    async fn session(
        &self,
        consumer: Arc<SagaConsumer>,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        let lanes = self.settings.lanes.max(1);
        // Stops this session's lanes without stopping the service.
        let session_stop = shutdown.child_token();
        let mut senders = Vec::with_capacity(lanes);
        let mut workers = JoinSet::new();
        for lane in 0..lanes {
            let (tx, rx) = mpsc::channel::<OwnedMessage>(LANE_QUEUE_CAPACITY);
            senders.push(tx);
            let worker = Lane {
                consumer: Arc::clone(&consumer),
                applier: self.applier.clone(),
                dead_letters: self.dead_letters.clone(),
                settings: self.settings.clone(),
                kafka: self.kafka.clone(),
                shutdown: session_stop.clone(),
            };
            workers.spawn(
                worker
                    .run(rx)
                    .instrument(tracing::info_span!("consumer_lane", lane)),
            );
        }

        // The dispatcher never waits for a lane: a record whose lane is full is held back,
        // and its partition paused, so that the other lanes' partitions keep flowing while one
        // lane is stuck (e.g. retrying an event against a failing database). It beats while it
        // waits for records, so `/health/live` tells a running loop from one that has ended.
        let mut backlog = Backlog::new(lanes, PAUSE_AFTER_HELD);
        let errors = ErrorLog::default();
        let mut beat = tokio::time::interval(BEAT_INTERVAL);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let end = loop {
            match backlog.drain(&senders) {
                Ok(resume) => self.set_paused(&consumer, &resume, false),
                Err(LaneClosed) => break SessionEnd::Shutdown,
            }
            let message = tokio::select! {
                () = shutdown.cancelled() => break SessionEnd::Shutdown,
                received = consumer.recv() => received,
                _ = beat.tick() => {
                    self.health.beat(Loop::Consumer);
                    continue;
                }
                () = tokio::time::sleep(HELD_RECHECK), if backlog.is_holding() => continue,
            };
            match message {
                Ok(message) => {
                    let lane = lane_of(message.topic(), message.partition(), lanes);
                    match backlog.offer(lane, message.detach(), &senders[lane]) {
                        Ok(pause) => self.set_paused(&consumer, &pause, true),
                        // A closed lane means shutdown has begun; the record is redelivered
                        // later.
                        Err(LaneClosed) => break SessionEnd::Shutdown,
                    }
                }
                Err(error) => {
                    if let Some((code, reason)) = consumer.client().fatal_error() {
                        break SessionEnd::Fatal(format!("{code:?}: {reason}"));
                    }
                    // No pause here: the errors are events librdkafka queued, in front of the
                    // rebalance that follows a broker's return. Read at a pause of 100 ms each,
                    // the errors of a 70 s outage kept a service from its partitions for 67 s
                    // after the broker was back.
                    errors.note(&error, "kafka consumer errors");
                }
            }
        };
        if matches!(end, SessionEnd::Fatal(_)) {
            // Records in the lanes' queues belong to a dead client: drop them unapplied.
            session_stop.cancel();
        }
        drop(senders);
        while workers.join_next().await.is_some() {}
        end
    }
}

enum SessionEnd {
    Shutdown,
    Fatal(String),
}

impl<H: EventHandler> EventConsumer<H> {
    /// Pauses (or resumes) fetching `partitions`. A failure only costs memory (records keep
    /// arriving and are held) or time (the partition stays paused until the next resume), so
    /// it is logged, not fatal.
    fn set_paused(&self, consumer: &SagaConsumer, partitions: &[(String, i32)], pause: bool) {
        if partitions.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for (topic, partition) in partitions {
            list.add_partition(topic, *partition);
        }
        let done = if pause {
            consumer.pause(&list)
        } else {
            consumer.resume(&list)
        };
        match done {
            Ok(()) => tracing::info!(
                ?partitions,
                pause,
                "lane full: partitions paused or resumed"
            ),
            Err(error) => tracing::warn!(%error, ?partitions, pause, "cannot pause or resume"),
        }
    }
}

/// Moves what has queued up for the lane into `pending`, up to the lane's capacity.
fn take_queued(records: &mut mpsc::Receiver<OwnedMessage>, pending: &mut VecDeque<OwnedMessage>) {
    while pending.len() < LANE_QUEUE_CAPACITY {
        match records.try_recv() {
            Ok(record) => pending.push_back(record),
            Err(_) => break,
        }
    }
}

/// How often the dispatcher tries again to hand held records to their lane.
const HELD_RECHECK: Duration = Duration::from_millis(10);
/// How many records a lane may have held back before their partitions are paused. A lane is
/// full for a moment all the time under load (it takes its queue in batches); pausing then
/// would only cost a refetch, measured as a stall of up to a second per resumed partition.
/// Only a lane that stays stuck should get this far. At 1,500 orders/s offered (twice what
/// the machine completes), a lane of payments-svc held more than 4 × 64 records for moments
/// (the events it ignores, such as each saga's end, pass through its lane too), and the
/// resumes' stalls made the p99 of accepted orders 1.08 s; a thousand small records are cheap
/// to hold.
const PAUSE_AFTER_HELD: usize = 16 * LANE_QUEUE_CAPACITY;

/// A lane's queue was closed: its worker has stopped.
#[derive(Debug, PartialEq, Eq)]
struct LaneClosed;

/// Records the dispatcher holds back because their lane's queue was full, in arrival order per
/// lane, and the partitions it paused once a lane held more than `pause_after`.
#[derive(Debug)]
struct Backlog {
    held: Vec<VecDeque<OwnedMessage>>,
    paused: Vec<Vec<(String, i32)>>,
    pause_after: usize,
}

impl Backlog {
    fn new(lanes: usize, pause_after: usize) -> Self {
        Self {
            held: (0..lanes).map(|_| VecDeque::new()).collect(),
            paused: vec![Vec::new(); lanes],
            pause_after,
        }
    }

    fn is_holding(&self) -> bool {
        self.held.iter().any(|held| !held.is_empty())
    }

    /// Hands `record` to its lane, or holds it behind the lane's earlier held records (so the
    /// lane's order is kept). Returns the partitions to pause: once the lane holds more than
    /// `pause_after`, those of its held records not paused yet.
    fn offer(
        &mut self,
        lane: usize,
        record: OwnedMessage,
        sender: &mpsc::Sender<OwnedMessage>,
    ) -> Result<Vec<(String, i32)>, LaneClosed> {
        if self.held[lane].is_empty() {
            match sender.try_send(record) {
                Ok(()) => return Ok(Vec::new()),
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(LaneClosed),
                Err(mpsc::error::TrySendError::Full(record)) => self.held[lane].push_back(record),
            }
        } else {
            self.held[lane].push_back(record);
        }
        if self.held[lane].len() <= self.pause_after {
            return Ok(Vec::new());
        }
        let mut pause = Vec::new();
        for record in &self.held[lane] {
            let partition = (record.topic().to_owned(), record.partition());
            if !self.paused[lane].contains(&partition) && !pause.contains(&partition) {
                pause.push(partition);
            }
        }
        self.paused[lane].extend(pause.iter().cloned());
        Ok(pause)
    }

    /// Moves held records into their lanes while there is room. Returns the partitions to
    /// resume: those of every lane whose held records are all handed over.
    fn drain(
        &mut self,
        senders: &[mpsc::Sender<OwnedMessage>],
    ) -> Result<Vec<(String, i32)>, LaneClosed> {
        let mut resume = Vec::new();
        for (lane, sender) in senders.iter().enumerate() {
            while let Some(record) = self.held[lane].pop_front() {
                match sender.try_send(record) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(record)) => {
                        self.held[lane].push_front(record);
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return Err(LaneClosed),
                }
            }
            if self.held[lane].is_empty() {
                resume.append(&mut self.paused[lane]);
            }
        }
        Ok(resume)
    }
}

fn connect(
    kafka: &KafkaSettings,
    client_id: &str,
    topics: &[String],
) -> Result<SagaConsumer, KafkaError> {
    let consumer: SagaConsumer =
        kafka::consumer_config(kafka, client_id).create_with_context(CommitOnRevoke::default())?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    tracing::info!(topics = ?names, group = %kafka.group_id, "consumer subscribed");
    Ok(consumer)
}

/// The lane that applies every record of `topic`'s `partition`: always the same one, so a
/// saga's events (one key, one partition) are applied in order. `lanes` must not be 0.
pub fn lane_of(topic: &str, partition: i32, lanes: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    (topic, partition).hash(&mut hasher);
    // The remainder is below `lanes`, so it fits in a usize.
    (hasher.finish() % lanes as u64) as usize
}

/// One lane: applies its records strictly in arrival order.
struct Lane<H> {
    consumer: Arc<SagaConsumer>,
    applier: Applier<H>,
    dead_letters: SharedProducer,
    settings: ConsumerSettings,
    kafka: KafkaSettings,
    shutdown: CancellationToken,
}

/// A record of a batch, and what to apply for it (nothing for a record to skip).
type Pending = (OwnedMessage, Option<(Envelope, Span)>);

/// What became of a record.
enum Outcome {
    /// Applied, a duplicate, dead-lettered or parked: its offset may be stored.
    Done,
    /// Shutdown interrupted it: not stored, so the partition's next owner gets it again.
    Interrupted,
}

/// What a record needs, decided before any database work.
#[expect(
    clippy::large_enum_variant,
    reason = "made and matched once per record, on the stack; boxing would allocate per event"
)]
enum Prepared {
    /// Apply it; it may share a transaction with its neighbours.
    Apply(Envelope, Span),
    /// The service does not react to it: only its offset is stored.
    Skip,
    /// Undecodable or oversized: to the dead-letter topic, alone.
    DeadLetter(String),
}

impl<H: EventHandler> Lane<H> {
    async fn run(self, mut records: mpsc::Receiver<OwnedMessage>) {
        let mut pending = VecDeque::with_capacity(LANE_QUEUE_CAPACITY);
        while let Some(first) = records.recv().await {
            pending.push_back(first);
            // What queued up while the last transaction ran shares the next one: batches grow
            // with the load and cost nothing when it is light.
            take_queued(&mut records, &mut pending);
            if self.only_records(&pending) {
                self.wait_for_action(&mut records, &mut pending).await;
            }
            if self.shutdown.is_cancelled() {
                break;
            }
            if matches!(self.process(&mut pending).await, Outcome::Interrupted) {
                break;
            }
        }
    }

    /// Whether every record in `pending` is one the service only records (by its
    /// `event_type` header; a record without one may need anything, so it counts as action).
    fn only_records(&self, pending: &VecDeque<OwnedMessage>) -> bool {
        !self.settings.record_only_wait.is_zero()
            && pending.iter().all(|record| {
                header(record, headers::EVENT_TYPE)
                    .is_some_and(|event_type| self.applier.handler.only_records(event_type))
            })
    }

    /// Holds `pending`, which only needs recording, until a record arrives that the service
    /// acts on, the lane's queue is full, shutdown begins or `record_only_wait` has passed:
    /// then they all share one transaction. A saga's next step usually comes within a hop, so
    /// at light load this saves the service a transaction per recorded step; under load
    /// batches fill up by themselves and nothing waits.
    async fn wait_for_action(
        &self,
        records: &mut mpsc::Receiver<OwnedMessage>,
        pending: &mut VecDeque<OwnedMessage>,
    ) {
        let deadline = tokio::time::Instant::now() + self.settings.record_only_wait;
        while pending.len() < LANE_QUEUE_CAPACITY && self.only_records(pending) {
            tokio::select! {
                received = records.recv() => match received {
                    Some(record) => {
                        pending.push_back(record);
                        take_queued(records, pending);
                    }
                    // The dispatcher has stopped: what is held is applied (or dropped at
                    // shutdown) as usual.
                    None => return,
                },
                () = tokio::time::sleep_until(deadline) => return,
                () = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Processes `pending` in order until it is empty or shutdown interrupts. Runs of records
    /// to apply (and records to skip) go to the unit of work as one batch; a record that needs
    /// handling of its own ends the run.
    async fn process(&self, pending: &mut VecDeque<OwnedMessage>) -> Outcome {
        while let Some(record) = pending.pop_front() {
            let outcome = match self.prepare(&record) {
                Prepared::Skip => {
                    metrics::EVENTS_SKIPPED.increment();
                    Outcome::Done
                }
                Prepared::DeadLetter(reason) => self.dead_letter(&record, &reason).await,
                Prepared::Apply(envelope, span) => {
                    let mut batch = vec![(record, Some((envelope, span)))];
                    self.extend_batch(&mut batch, pending);
                    match self.apply_batch(batch, pending).await {
                        Outcome::Done => continue,
                        Outcome::Interrupted => return Outcome::Interrupted,
                    }
                }
            };
            match outcome {
                Outcome::Done => self.done(&record),
                Outcome::Interrupted => return Outcome::Interrupted,
            }
        }
        Outcome::Done
    }

    /// Moves the records after the batch's first into it while they can share its
    /// transaction, up to [`MAX_BATCH_EVENTS`] events.
    fn extend_batch(&self, batch: &mut Vec<Pending>, pending: &mut VecDeque<OwnedMessage>) {
        let mut events = 1;
        while events < MAX_BATCH_EVENTS {
            let Some(next) = pending.front() else { break };
            let consumed = match self.prepare(next) {
                Prepared::Apply(envelope, span) => Some((envelope, span)),
                Prepared::Skip => None,
                Prepared::DeadLetter(_) => break,
            };
            let Some(record) = pending.pop_front() else {
                break;
            };
            events += usize::from(consumed.is_some());
            batch.push((record, consumed));
        }
    }

    /// Applies a batch in one transaction and stores the offsets of what it committed. The
    /// event that failed, if one did, is retried alone (with backoff, and parked if it keeps
    /// failing); the records after it go back to the front of `pending`, to be prepared
    /// afresh, since that event may have parked their saga.
    async fn apply_batch(
        &self,
        mut batch: Vec<Pending>,
        pending: &mut VecDeque<OwnedMessage>,
    ) -> Outcome {
        let origins: Vec<Option<Origin>> = batch
            .iter()
            .map(|(record, consumed)| consumed.as_ref().map(|_| Origin::of(record)))
            .collect();
        let events: Vec<Consumed<'_>> = batch
            .iter()
            .zip(&origins)
            .filter_map(|((_, consumed), origin)| {
                let (event, span) = consumed.as_ref()?;
                Some(Consumed {
                    event,
                    origin: origin.as_ref()?,
                    span,
                })
            })
            .collect();
        let Batch {
            applied,
            deliveries,
            failure,
        } = self
            .applier
            .uow
            .apply_batch(&*self.applier.handler, &events)
            .await;
        drop(events);
        // The position of the first event not committed; the records before it are done.
        let cut = batch
            .iter()
            .enumerate()
            .filter(|(_, (_, consumed))| consumed.is_some())
            .nth(applied)
            .map_or(batch.len(), |(position, _)| position);
        let mut rest = batch.split_off(cut).into_iter();
        count_committed(&deliveries);
        if applied > 0 {
            metrics::CONSUMER_TRANSACTIONS.increment();
        }
        for (record, consumed) in &batch {
            if consumed.is_none() {
                metrics::EVENTS_SKIPPED.increment();
            }
            self.done(record);
        }
        if let Some((record, Some((envelope, span)))) = rest.next() {
            if let Some(failure) = &failure {
                tracing::debug!(parent: &span, %failure, "event failed in a batch; retrying it alone");
            }
            match self.apply(&record, envelope).instrument(span).await {
                Outcome::Done => self.done(&record),
                Outcome::Interrupted => return Outcome::Interrupted,
            }
        }
        for (record, _) in rest.rev() {
            pending.push_front(record);
        }
        Outcome::Done
    }

    /// Decides what `record` needs, decoding it and opening its span. It counts nothing: a
    /// record may be prepared again (after a failure in its batch), and is counted once, when
    /// it is done.
    fn prepare(&self, record: &OwnedMessage) -> Prepared {
        let payload = record.payload().unwrap_or_default();
        if payload.len() > self.settings.max_record_bytes {
            return Prepared::DeadLetter(format!(
                "record of {} bytes exceeds the limit of {}",
                payload.len(),
                self.settings.max_record_bytes
            ));
        }
        let envelope = match Envelope::decode(payload) {
            Ok(envelope) => envelope,
            Err(error) => return Prepared::DeadLetter(error.to_string()),
        };
        if !self.applier.handler.accepts(&envelope) {
            return Prepared::Skip;
        }
        // The process span of the OpenTelemetry messaging conventions. It is a root here and
        // takes the sender's span as its parent from the record's `traceparent`: nested in
        // the lane's long-lived span, every saga would be one trace.
        let topic = record.topic();
        let span = tracing::info_span!(
            parent: None,
            "process",
            otel.name = format!("process {topic}"),
            otel.kind = "consumer",
            { semconv::MESSAGING_SYSTEM } = "kafka",
            { semconv::MESSAGING_OPERATION_NAME } = "process",
            { semconv::MESSAGING_OPERATION_TYPE } = "process",
            { semconv::MESSAGING_DESTINATION_NAME } = topic,
            { semconv::MESSAGING_DESTINATION_PARTITION_ID } = record.partition(),
            { semconv::MESSAGING_KAFKA_OFFSET } = record.offset(),
            { semconv::MESSAGING_MESSAGE_ID } = %envelope.id,
            { semconv::MESSAGING_CONSUMER_GROUP_NAME } = %self.kafka.group_id,
            event_type = envelope.event_type(),
            event_id = %envelope.id,
            saga_id = envelope.sagaid.map(tracing::field::display),
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        telemetry::continue_trace_from_message(&span, header(record, headers::TRACEPARENT));
        Prepared::Apply(envelope, span)
    }

    /// The record is finished with (applied, skipped, dead-lettered or parked): store its
    /// offset, so the group moves past it.
    fn done(&self, record: &OwnedMessage) {
        fault::crash_point(CrashPoint::AfterConsumeCommitBeforeOffset);
        self.store_offset(record);
    }

    /// Applies one event alone, retrying it with backoff and parking it once its budget for
    /// its kind of failure is spent.
    async fn apply(&self, record: &OwnedMessage, envelope: Envelope) -> Outcome {
        let origin = Origin::of(record);
        let span = Span::current();
        let consumed = Consumed {
            event: &envelope,
            origin: &origin,
            span: &span,
        };
        let mut backoff = self.backoff();
        let mut failures = Failures::default();
        loop {
            let error = match self
                .applier
                .uow
                .apply_consumed(&*self.applier.handler, consumed)
                .await
            {
                Ok(delivery) => {
                    count_committed(&[delivery]);
                    metrics::CONSUMER_TRANSACTIONS.increment();
                    return Outcome::Done;
                }
                Err(error) => error,
            };
            let class = error.class();
            if failures.record(class, &self.settings) == Verdict::Park {
                return self
                    .park(&envelope, &origin, &error.to_string(), failures.total())
                    .await;
            }
            metrics::EVENTS_RETRIED.increment();
            let delay = backoff.next_delay();
            tracing::warn!(?failures, ?class, %error, retry_in = ?delay, "event handler failed; retrying");
            if !self.pause(delay).await {
                return Outcome::Interrupted;
            }
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(
            self.settings.retry_backoff_initial,
            self.settings.retry_backoff_max,
        )
    }

    async fn park(
        &self,
        envelope: &Envelope,
        origin: &Origin,
        reason: &str,
        attempts: u32,
    ) -> Outcome {
        let mut backoff = self.backoff();
        loop {
            match self
                .applier
                .parking
                .park(envelope, origin, reason, attempts)
                .await
            {
                Ok(()) => return Outcome::Done,
                Err(error) => tracing::warn!(%error, "cannot park the event yet; retrying"),
            }
            if !self.pause(backoff.next_delay()).await {
                return Outcome::Interrupted;
            }
        }
    }

    /// Publishes the record unchanged to `<topic>.dlq`, with why and where from in headers,
    /// and waits for the acknowledgement: the record is skipped only once it is safe there.
    async fn dead_letter(&self, record: &OwnedMessage, reason: &str) -> Outcome {
        let (topic, partition, offset) = (record.topic(), record.partition(), record.offset());
        tracing::error!(
            topic,
            partition,
            offset,
            reason,
            "undecodable record sent to the dead-letter topic"
        );
        let dlq = shared_events::topics::dead_letter(topic);
        let mut backoff = self.backoff();
        loop {
            let mut dead = FutureRecord::to(&dlq)
                .headers(dead_letter_headers(record, reason))
                .payload(record.payload().unwrap_or_default());
            if let Some(key) = record.key() {
                dead = dead.key(key);
            }
            let sent = match self.dead_letters.usable() {
                Ok(producer) => producer
                    .send(dead, self.kafka.message_timeout)
                    .await
                    .map_err(|(error, _)| error),
                Err(error) => Err(error),
            };
            match sent {
                Ok(_) => {
                    metrics::DEAD_LETTERS.increment();
                    return Outcome::Done;
                }
                Err(error) => {
                    tracing::warn!(%error, dlq, "dead-letter publish failed; retrying")
                }
            }
            if !self.pause(backoff.next_delay()).await {
                return Outcome::Interrupted;
            }
        }
    }

    /// Sleeps for `duration` unless shutdown comes first; returns whether to go on.
    async fn pause(&self, duration: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(duration) => true,
            () = self.shutdown.cancelled() => false,
        }
    }

    fn store_offset(&self, record: &OwnedMessage) {
        // Fails harmlessly ("Erroneous state") when a rebalance took the partition meanwhile;
        // the new owner redelivers the record and the inbox makes it a no-op.
        if let Err(error) =
            self.consumer
                .store_offset(record.topic(), record.partition(), record.offset())
        {
            tracing::debug!(topic = record.topic(), partition = record.partition(), offset = record.offset(), %error, "offset not stored");
        }
    }
}

/// Counts committed events by what became of them; a parked one was counted as it was
/// announced.
fn count_committed(deliveries: &[Delivery]) {
    let applied = deliveries
        .iter()
        .filter(|delivery| **delivery != Delivery::Blocked)
        .count();
    metrics::EVENTS_APPLIED.add(applied as u64);
}

/// The headers of a dead letter: why, and where from (topic, partition, offset), followed by
/// the original record's own headers, so `saga_id` and `traceparent` travel along.
fn dead_letter_headers(record: &OwnedMessage, reason: &str) -> OwnedHeaders {
    let (partition, offset) = (record.partition().to_string(), record.offset().to_string());
    let mut headers = OwnedHeaders::new()
        .insert(Header {
            key: headers::DLQ_REASON,
            value: Some(reason),
        })
        .insert(Header {
            key: headers::DLQ_ORIGINAL_TOPIC,
            value: Some(record.topic()),
        })
        .insert(Header {
            key: headers::DLQ_ORIGINAL_PARTITION,
            value: Some(partition.as_str()),
        })
        .insert(Header {
            key: headers::DLQ_ORIGINAL_OFFSET,
            value: Some(offset.as_str()),
        });
    if let Some(original) = record.headers() {
        for h in original.iter() {
            headers = headers.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    headers
}

/// A record's failures so far, counted per class: each class has its own budget, so a run of
/// transient errors does not use up the attempts a permanent error gets, and the other way
/// round.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Failures {
    permanent: u32,
    transient: u32,
    unavailable: u32,
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Retry,
    Park,
}

impl Failures {
    /// Counts one failure of `class` and decides. An unreachable database is retried for as
    /// long as it lasts (parking would need it too); a transient error that keeps coming back
    /// (a statement timeout on every try) is parked once its larger budget is spent.
    fn record(&mut self, class: FailureClass, settings: &ConsumerSettings) -> Verdict {
        let exhausted = match class {
            FailureClass::Unavailable => {
                self.unavailable = self.unavailable.saturating_add(1);
                false
            }
            FailureClass::Transient => {
                self.transient = self.transient.saturating_add(1);
                self.transient >= settings.max_transient_attempts
            }
            FailureClass::Permanent => {
                self.permanent = self.permanent.saturating_add(1);
                self.permanent >= settings.max_attempts
            }
        };
        if exhausted {
            Verdict::Park
        } else {
            Verdict::Retry
        }
    }

    fn total(&self) -> u32 {
        self.permanent
            .saturating_add(self.transient)
            .saturating_add(self.unavailable)
    }
}

fn header<'a>(record: &'a OwnedMessage, name: &str) -> Option<&'a str> {
    let headers = record.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rdkafka::Timestamp;
    use rdkafka::message::Headers;

    use super::*;

    fn settings(max_attempts: u32, max_transient_attempts: u32) -> ConsumerSettings {
        ConsumerSettings {
            lanes: 4,
            retry_backoff_initial: Duration::from_millis(1),
            retry_backoff_max: Duration::from_millis(2),
            max_attempts,
            max_transient_attempts,
            max_record_bytes: 1024,
            record_only_wait: Duration::ZERO,
        }
    }

    fn record(partition: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            Some(Vec::new()),
            None,
            "orders.events".to_owned(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    fn paused(partition: i32) -> (String, i32) {
        ("orders.events".to_owned(), partition)
    }

    #[test]
    fn a_full_lane_holds_its_records_in_order_pauses_their_partitions_and_the_others_flow() {
        let (stuck_lane, mut stuck) = mpsc::channel(1);
        let (free_lane, mut free) = mpsc::channel(8);
        let senders = [stuck_lane, free_lane];
        let mut backlog = Backlog::new(2, 1);

        assert_eq!(backlog.offer(0, record(0, 1), &senders[0]), Ok(Vec::new()));
        // The lane is full now: one record is held without pausing anything...
        assert_eq!(backlog.offer(0, record(0, 2), &senders[0]), Ok(Vec::new()));
        // ...and past that, the partitions of its held records are paused, each once.
        assert_eq!(
            backlog.offer(0, record(2, 1), &senders[0]),
            Ok(vec![paused(0), paused(2)])
        );
        assert_eq!(backlog.offer(0, record(0, 3), &senders[0]), Ok(Vec::new()));
        // Another lane's partition is not held up.
        assert_eq!(backlog.offer(1, record(1, 1), &senders[1]), Ok(Vec::new()));
        assert_eq!(free.try_recv().map(|r| r.offset()), Ok(1));
        assert!(backlog.is_holding());
        assert_eq!(backlog.drain(&senders), Ok(Vec::new()), "still full");

        // As the stuck lane takes its records, the held ones follow in arrival order, and
        // its partitions resume once nothing is held.
        let mut taken = Vec::new();
        let mut resumed = Vec::new();
        while let Ok(record) = stuck.try_recv() {
            taken.push((record.partition(), record.offset()));
            resumed.extend(backlog.drain(&senders).unwrap_or_default());
        }
        assert_eq!(taken, [(0, 1), (0, 2), (2, 1), (0, 3)]);
        assert_eq!(resumed, [paused(0), paused(2)]);
        assert!(!backlog.is_holding());
    }

    #[test]
    fn a_lane_full_for_a_moment_pauses_nothing() {
        let (lane, mut queue) = mpsc::channel(1);
        let mut backlog = Backlog::new(1, 4);
        for offset in 0..5 {
            assert_eq!(backlog.offer(0, record(0, offset), &lane), Ok(Vec::new()));
        }
        while queue.try_recv().is_ok() {
            assert_eq!(backlog.drain(std::slice::from_ref(&lane)), Ok(Vec::new()));
        }
        assert!(!backlog.is_holding());
    }

    #[test]
    fn a_closed_lane_is_reported_not_waited_for() {
        let (lane, closed) = mpsc::channel(1);
        drop(closed);
        let mut backlog = Backlog::new(1, 1);
        assert_eq!(backlog.offer(0, record(0, 1), &lane), Err(LaneClosed));
    }

    #[test]
    fn a_partition_always_maps_to_the_same_lane_within_range() {
        let mut used = HashSet::new();
        for partition in 0..24 {
            let lane = lane_of("orders.events", partition, 4);
            assert!(lane < 4);
            assert_eq!(lane, lane_of("orders.events", partition, 4));
            used.insert(lane);
        }
        assert!(
            used.len() > 1,
            "24 partitions should not all share one lane"
        );
        assert_eq!(lane_of("orders.events", 3, 1), 0);
    }

    #[test]
    fn only_permanent_failures_use_the_permanent_budget() {
        let settings = settings(3, 10);
        let mut failures = Failures::default();
        for _ in 0..9 {
            assert_eq!(
                failures.record(FailureClass::Transient, &settings),
                Verdict::Retry
            );
        }
        assert_eq!(
            failures.record(FailureClass::Permanent, &settings),
            Verdict::Retry
        );
        assert_eq!(
            failures.record(FailureClass::Permanent, &settings),
            Verdict::Retry
        );
        assert_eq!(
            failures.record(FailureClass::Permanent, &settings),
            Verdict::Park
        );
        assert_eq!(failures.total(), 12);
    }

    #[test]
    fn a_transient_failure_that_never_stops_is_parked_in_the_end() {
        let settings = settings(3, 5);
        let mut failures = Failures::default();
        let verdicts: Vec<Verdict> = (0..5)
            .map(|_| failures.record(FailureClass::Transient, &settings))
            .collect();
        assert_eq!(verdicts[..4], [Verdict::Retry; 4]);
        assert_eq!(verdicts[4], Verdict::Park);
    }

    #[test]
    fn an_unreachable_database_is_retried_for_as_long_as_it_lasts() {
        let settings = settings(1, 1);
        let mut failures = Failures::default();
        for _ in 0..1000 {
            assert_eq!(
                failures.record(FailureClass::Unavailable, &settings),
                Verdict::Retry
            );
        }
    }

    /// A PostgreSQL error as sqlx reports it, with only its SQLSTATE.
    #[derive(Debug)]
    struct Sqlstate(&'static str);

    impl std::fmt::Display for Sqlstate {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "SQLSTATE {}", self.0)
        }
    }

    impl std::error::Error for Sqlstate {}

    impl sea_orm::sqlx::error::DatabaseError for Sqlstate {
        fn message(&self) -> &str {
            "injected"
        }

        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(std::borrow::Cow::Borrowed(self.0))
        }

        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }

        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }

        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }

        fn kind(&self) -> sea_orm::sqlx::error::ErrorKind {
            sea_orm::sqlx::error::ErrorKind::Other
        }
    }

    fn failed_statement(code: &'static str) -> DbErr {
        let error = sea_orm::sqlx::Error::Database(Box::new(Sqlstate(code)));
        DbErr::Exec(sea_orm::RuntimeErr::SqlxError(Arc::new(error)))
    }

    #[test]
    fn database_errors_are_classified_by_their_sqlstate() {
        let cases = [
            ("40001", FailureClass::Transient),
            ("40P01", FailureClass::Transient),
            ("55P03", FailureClass::Transient),
            ("57014", FailureClass::Transient),
            ("53300", FailureClass::Transient),
            ("57P01", FailureClass::Transient),
            ("08006", FailureClass::Unavailable),
            ("08001", FailureClass::Unavailable),
            ("23505", FailureClass::Permanent),
            ("22023", FailureClass::Permanent),
        ];
        for (code, class) in cases {
            assert_eq!(classify_db(&failed_statement(code)), class, "{code}");
            // An HTTP request that meets it is told to retry exactly when the consumer would.
            assert_eq!(
                crate::http::is_unavailable(&failed_statement(code)),
                class != FailureClass::Permanent,
                "{code} over HTTP"
            );
            // Wrapped as the unit of work wraps it, the class survives.
            let wrapped = HandlerError::new(crate::outbox::OutboxError::Db(failed_statement(code)));
            assert_eq!(wrapped.class(), class, "{code} inside OutboxError");
        }
        let io = sea_orm::sqlx::Error::Io(std::io::Error::other("reset"));
        let lost = DbErr::Query(sea_orm::RuntimeErr::SqlxError(Arc::new(io)));
        assert_eq!(classify_db(&lost), FailureClass::Unavailable);
    }

    #[test]
    fn errors_without_a_database_cause_are_permanent_and_lost_connections_unavailable() {
        let plain = HandlerError::new(shared_events::DecodeError::MissingSagaId("OrderCreated"));
        assert_eq!(plain.class(), FailureClass::Permanent);
        let custom = HandlerError::new(DbErr::Custom("no such row".into()));
        assert_eq!(custom.class(), FailureClass::Permanent);
        let acquire = HandlerError::new(crate::outbox::OutboxError::Db(DbErr::ConnectionAcquire(
            sea_orm::error::ConnAcquireErr::Timeout,
        )));
        assert_eq!(acquire.class(), FailureClass::Unavailable);
    }

    #[test]
    fn a_dead_letter_says_why_and_where_from_and_keeps_the_original_headers() {
        let original = OwnedHeaders::new()
            .insert(Header {
                key: "saga_id",
                value: Some("abc"),
            })
            .insert(Header {
                key: "traceparent",
                value: Some("00-1-2-01"),
            });
        let record = OwnedMessage::new(
            Some(b"{not json".to_vec()),
            Some(b"abc".to_vec()),
            "e2e-1.orders.events".to_owned(),
            Timestamp::NotAvailable,
            4,
            1234,
            Some(original),
        );
        let headers = dead_letter_headers(&record, "value is not a CloudEvent");
        let pairs: Vec<(String, String)> = headers
            .iter()
            .map(|h| {
                (
                    h.key.to_owned(),
                    String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                )
            })
            .collect();
        let expected = [
            ("dlq_reason", "value is not a CloudEvent"),
            ("dlq_original_topic", "e2e-1.orders.events"),
            ("dlq_original_partition", "4"),
            ("dlq_original_offset", "1234"),
            ("saga_id", "abc"),
            ("traceparent", "00-1-2-01"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(pairs, expected);
    }
}
