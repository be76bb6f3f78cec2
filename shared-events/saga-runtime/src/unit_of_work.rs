//! The unit of work: the one place that opens, fills and commits a service's transactions.
//!
//! A consumed event is applied by [`UnitOfWork::apply_consumed`], always in this order:
//! begin → inbox row (unless an earlier event of its saga is parked: then the event is parked
//! too, in this transaction) → the service's [`EventHandler`] → outbox rows for what it
//! returned, each correlated with the consumed event's saga → commit → wake the relay. The
//! consumer stores the record's offset only after that returns. Under load the consumer hands
//! over several events of a lane at once ([`UnitOfWork::apply_batch`]): one inbox statement
//! for all, the handler for each, one outbox statement and one commit for all.
//!
//! An HTTP command or a periodic job is a [`Command`], run by [`UnitOfWork::run`] the same
//! way without the inbox step.
//!
//! Handlers and commands see the transaction only as a [`Tx`]: something to run statements
//! on, which cannot be committed, rolled back or moved out. So only this module commits.

use std::future::Future;
use std::sync::LazyLock;

use tracing::{Instrument, Span};

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult,
    QueryResult, Statement, TransactionTrait,
};
use shared_events::{Envelope, SagaEvent};
use uuid::Uuid;

use crate::consumer::{EventHandler, HandlerError};
use crate::fault::{self, CrashPoint};
use crate::inbox::{self, Delivery};
use crate::metrics;
use crate::outbox::{self, OutboxEntry, OutboxError, OutboxSignal};
use crate::parking::{self, BEHIND_PARKED, Origin};
use crate::saga_view::{self, ViewRow};

/// The outbox rows and the saga view's rows of one transaction, in one round trip: a
/// data-modifying `WITH` runs whether or not the statement reads it.
static OUTBOX_AND_VIEW: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH viewed AS ({}) {}",
        saga_view::insert_sql(outbox::COLUMNS + 1),
        outbox::insert_sql(1)
    )
});

/// An open transaction as handlers and commands see it: statements only. Repository
/// functions take it as any other `ConnectionTrait`.
#[derive(Debug)]
pub struct Tx(DatabaseTransaction);

#[async_trait::async_trait]
impl ConnectionTrait for Tx {
    fn get_database_backend(&self) -> DbBackend {
        self.0.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.0.execute_raw(stmt).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.0.execute_unprepared(sql).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.0.query_one_raw(stmt).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.0.query_all_raw(stmt).await
    }

    fn support_returning(&self) -> bool {
        self.0.support_returning()
    }
}

/// What a handler asks to publish in answer to a consumed event. The runtime puts every event
/// in the consumed event's saga; a handler never names a saga ID.
#[derive(Debug, Default, PartialEq)]
pub struct Reaction(Vec<SagaEvent>);

impl Reaction {
    /// The event changed state, or was noted, and nothing follows from it.
    pub fn none() -> Self {
        Self::default()
    }

    /// The saga's next step.
    pub fn publish(event: SagaEvent) -> Self {
        Self(vec![event])
    }

    /// Whether nothing follows.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a command publishes with its change. Unlike a [`Reaction`], a command starts sagas
/// (or announces catalog changes), so each event names the saga it belongs to, if any.
#[derive(Debug, Default)]
pub struct Announcements(Vec<(Option<Uuid>, SagaEvent)>);

impl Announcements {
    pub fn none() -> Self {
        Self::default()
    }

    /// One step of saga `saga_id`.
    pub fn saga(saga_id: Uuid, event: SagaEvent) -> Self {
        let mut announcements = Self::none();
        announcements.add_saga(saga_id, event);
        announcements
    }

    /// An event outside any saga, such as a catalog change.
    pub fn outside_saga(event: SagaEvent) -> Self {
        Self(vec![(None, event)])
    }

    pub fn add_saga(&mut self, saga_id: Uuid, event: SagaEvent) {
        self.0.push((Some(saga_id), event));
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A state change that is not a consumed event: an HTTP command or a job's step. `execute`
/// makes the change on `tx` and says what to announce; [`UnitOfWork::run`] does the rest.
pub trait Command: Send {
    type Output: Send;
    type Error: From<DbErr> + From<OutboxError> + Send;

    fn execute(
        self,
        tx: &Tx,
    ) -> impl Future<Output = Result<(Self::Output, Announcements), Self::Error>> + Send;
}

/// The most events [`UnitOfWork::apply_batch`] puts in one transaction. It bounds how long the
/// transaction holds its row locks, and how much work one failing event makes the batch redo.
/// It is already more than a lane's queue holds at once.
pub const MAX_BATCH_EVENTS: usize = 32;

/// A consumed event as the unit of work takes it: the event, where it was read from (kept
/// if the event has to be parked), and the span its work runs in.
#[derive(Debug, Clone, Copy)]
pub struct Consumed<'a> {
    pub event: &'a Envelope,
    pub origin: &'a Origin,
    pub span: &'a Span,
}

/// What [`UnitOfWork::apply_batch`] did.
#[derive(Debug)]
pub struct Batch {
    /// The first `applied` events are committed (applied, found to be duplicates, or parked
    /// behind an earlier event of their saga)...
    pub applied: usize,
    /// ...and this is what became of each of them, in order.
    pub deliveries: Vec<Delivery>,
    /// Why the event after them was not, if one was not.
    pub failure: Option<HandlerError>,
}

impl Batch {
    fn nothing(failure: HandlerError) -> Self {
        Self {
            applied: 0,
            deliveries: Vec::new(),
            failure: Some(failure),
        }
    }
}

/// What one pass of [`UnitOfWork::replay_parked`] did.
#[derive(Debug)]
pub enum Replayed {
    /// The saga's oldest parked event is applied (or was a duplicate) and its row deleted.
    Applied,
    /// The saga has no parked event left.
    NoneLeft,
    /// The oldest parked event (row `id`) still fails; nothing was kept.
    Failed { id: i64, failure: HandlerError },
}

/// Why a transaction of [`UnitOfWork::apply_batch`] kept nothing.
enum Stopped {
    /// The event at this index failed; the ones before it did not.
    At(usize, HandlerError),
    /// Events handled together failed; which one is to blame is for a pass one by one to say.
    Together(HandlerError),
    /// Beginning, the inbox rows or the commit failed: no event is to blame.
    Whole(HandlerError),
}

/// How a shared transaction of [`UnitOfWork::run_all`] ended, unless it was rolled back.
enum Together<T> {
    Committed(Vec<T>),
    /// No connection to begin with: the database is unavailable.
    NotBegun(DbErr),
    CommitFailed(DbErr),
}

/// A shared transaction of [`UnitOfWork::run_all`] that ended before COMMIT: dropped, so
/// rolled back, with nothing kept. Why does not matter: each command runs again alone and
/// meets its own error, if it has one.
struct RolledBack;

/// `DbErr` is not `Clone`; every command of a batch whose commit failed gets an error that
/// says the same, and classifies the same way (a lost connection stays "unavailable").
fn clone_db_error(error: &DbErr) -> DbErr {
    match error {
        DbErr::ConnectionAcquire(acquire) => DbErr::ConnectionAcquire(*acquire),
        DbErr::Conn(_) => DbErr::Conn(sea_orm::RuntimeErr::Internal(error.to_string())),
        other => DbErr::Custom(other.to_string()),
    }
}

/// [`EventHandler::handle_together`] broke its contract: one reaction per event.
#[derive(Debug, thiserror::Error)]
#[error("{reactions} reactions for {events} events handled together")]
struct ReactionCount {
    events: usize,
    reactions: usize,
}

/// Opens, fills and commits one service's transactions. Cloning shares the pool and signal.
#[derive(Debug, Clone)]
pub struct UnitOfWork {
    db: DatabaseConnection,
    /// Wakes this service's relay after a commit that wrote outbox rows.
    signal: OutboxSignal,
    /// The CloudEvents `source` of everything this service publishes: its name.
    source: &'static str,
    /// Whether the transactions also record their events in the saga view.
    saga_view: bool,
}

/// What a transaction writes besides its business rows: the events it publishes (outbox)
/// and, with the saga view on, a view row for each event it consumes or publishes.
#[derive(Debug, Default)]
struct Answers {
    outbox: Vec<OutboxEntry>,
    view: Vec<ViewRow>,
}

impl UnitOfWork {
    /// Begins a transaction on the pool, counted in `saga_db_pool_waiters` while it waits for
    /// a connection (and its `BEGIN`), so a pool too small for the load shows on `/metrics`.
    async fn begin(&self) -> Result<sea_orm::DatabaseTransaction, DbErr> {
        let _waiting = metrics::PoolWaiter::enter();
        self.db.begin().await
    }

    pub fn new(db: DatabaseConnection, signal: OutboxSignal, source: &'static str) -> Self {
        Self {
            db,
            signal,
            source,
            saga_view: false,
        }
    }

    /// The same unit of work, recording every event it applies or publishes in the saga view
    /// ([`crate::saga_view`]), in the same transaction. The database needs `saga_events`.
    pub fn with_saga_view(mut self) -> Self {
        self.saga_view = true;
        self
    }

    /// The pool, for queries outside any unit of work (reads).
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Applies one consumed event through `handler`, at most once, as the consumer does, or
    /// parks it if an earlier event of its saga is parked. On `Err` nothing was committed and
    /// the consumer may retry.
    pub async fn apply_consumed<H: EventHandler>(
        &self,
        handler: &H,
        consumed: Consumed<'_>,
    ) -> Result<Delivery, HandlerError> {
        match self.apply_together(handler, &[consumed], false).await {
            Ok(deliveries) => Ok(deliveries.first().copied().unwrap_or(Delivery::Duplicate)),
            Err(Stopped::At(_, failure) | Stopped::Together(failure) | Stopped::Whole(failure)) => {
                Err(failure)
            }
        }
    }

    /// Applies one event through `handler`, at most once, without asking whether its saga
    /// has parked events: for a test that feeds a service's handler directly. The consumer
    /// uses [`UnitOfWork::apply_consumed`].
    pub async fn apply<H: EventHandler>(
        &self,
        handler: &H,
        event: &Envelope,
    ) -> Result<Delivery, HandlerError> {
        let tx = Tx(self.begin().await.map_err(HandlerError::new)?);
        let (delivery, answers) = self.record_and_handle(&tx, handler, event).await?;
        self.commit_answers(tx, answers).await?;
        Ok(delivery)
    }

    /// One event's inbox row and handler, unchecked against the parked table, in `tx`.
    async fn record_and_handle<H: EventHandler>(
        &self,
        tx: &Tx,
        handler: &H,
        event: &Envelope,
    ) -> Result<(Delivery, Answers), HandlerError> {
        let deliveries = inbox::record_all(tx, &[event])
            .await
            .map_err(HandlerError::new)?;
        let delivery = deliveries.first().copied().unwrap_or(Delivery::Duplicate);
        let mut answers = Answers::default();
        self.handle(tx, handler, event, delivery, &mut answers)
            .await?;
        Ok((delivery, answers))
    }

    /// Replays the oldest parked event of `saga_id` in one transaction: locks its row, applies
    /// the event as [`UnitOfWork::apply`] would, deletes the row and commits. The row's lock
    /// makes a consumer that meets a later event of the saga meanwhile wait for this
    /// transaction's outcome (see [`inbox::record_unless_parked`]). `Err` is a database
    /// failure around the replay, not the event's own.
    pub async fn replay_parked<H: EventHandler>(
        &self,
        handler: &H,
        saga_id: Uuid,
    ) -> Result<Replayed, DbErr> {
        let tx = Tx(self.begin().await?);
        let Some(taken) = parking::take_oldest(&tx, saga_id).await? else {
            return Ok(Replayed::NoneLeft);
        };
        let id = taken.id;
        let failed = |failure| Ok(Replayed::Failed { id, failure });
        let event = match taken.event {
            Ok(event) => event,
            Err(error) => return failed(HandlerError::new(error)),
        };
        let replay = async {
            let (_, answers) = self.record_and_handle(&tx, handler, &event).await?;
            parking::remove(&tx, id).await.map_err(HandlerError::new)?;
            Ok::<_, HandlerError>(answers)
        };
        match replay.await {
            Ok(answers) => match self.commit_answers(tx, answers).await {
                Ok(()) => Ok(Replayed::Applied),
                Err(failure) => failed(failure),
            },
            Err(failure) => failed(failure),
        }
    }

    /// Applies consecutive consumed events of one lane in one transaction, in order, and
    /// commits once. Under load this turns many commits (and WAL flushes) into one.
    ///
    /// If an event fails, nothing of the transaction is kept, and the events before it are
    /// applied again in a new one without it: [`Batch::applied`] says how many were
    /// committed, and [`Batch::failure`] why the next one was not. The batch stops there,
    /// because a later event may belong to the same saga and must not overtake it; the
    /// consumer retries the failed event alone, then goes on. A failure to begin, to record
    /// the inbox rows or to commit commits nothing (`applied` is 0).
    ///
    /// Failures are rare, so this costs less than a savepoint per event: a savepoint that
    /// writes is a subtransaction, with its own ID, `pg_subtrans` entry and WAL.
    ///
    /// Consecutive first deliveries that the handler takes together
    /// ([`EventHandler::handles_together`]) go to [`EventHandler::handle_together`] at once.
    /// If that fails, the whole batch is applied again with every event on its own, which
    /// finds the event at fault as above.
    ///
    /// Each event's work runs inside its `span`, so its outbox rows carry its trace (the
    /// statements of events handled together run in the first one's). At most
    /// [`MAX_BATCH_EVENTS`] events are taken; the rest are left to the caller.
    pub async fn apply_batch<H: EventHandler>(
        &self,
        handler: &H,
        events: &[Consumed<'_>],
    ) -> Batch {
        let mut end = events.len().min(MAX_BATCH_EVENTS);
        let mut failure = None;
        let mut deliveries = Vec::new();
        let mut together = true;
        while end > 0 {
            match self.apply_together(handler, &events[..end], together).await {
                Ok(committed) => {
                    deliveries = committed;
                    break;
                }
                Err(Stopped::At(index, error)) => {
                    failure = Some(error);
                    end = index;
                }
                Err(Stopped::Together(error)) => {
                    tracing::debug!(%error, "events handled together failed; applying them one by one");
                    together = false;
                }
                Err(Stopped::Whole(error)) => return Batch::nothing(error),
            }
        }
        Batch {
            applied: end,
            deliveries,
            failure,
        }
    }

    /// One transaction for `events`: their inbox rows in one statement (which also finds the
    /// events whose saga is blocked by a parked event), then in order the handler for each
    /// first delivery (with `together`, runs of them at once where the handler takes them so)
    /// and a parked row for each blocked event, then their answers to the outbox in one
    /// statement, then the commit. An event that fails adds no answers, and the dropped
    /// transaction rolls back everything before it too.
    async fn apply_together<H: EventHandler>(
        &self,
        handler: &H,
        events: &[Consumed<'_>],
        together: bool,
    ) -> Result<Vec<Delivery>, Stopped> {
        let whole = |error| Stopped::Whole(HandlerError::new(error));
        let tx = Tx(self.begin().await.map_err(whole)?);
        let envelopes: Vec<&Envelope> = events.iter().map(|consumed| consumed.event).collect();
        let deliveries = inbox::record_unless_parked(&tx, &envelopes)
            .await
            .map_err(whole)?;
        let mut answers = Answers::default();
        let mut index = 0;
        while index < events.len() {
            let run = if together {
                events[index..]
                    .iter()
                    .zip(&deliveries[index..])
                    .take_while(|(consumed, delivery)| {
                        **delivery == Delivery::First && handler.handles_together(consumed.event)
                    })
                    .count()
            } else {
                0
            };
            if run >= 2 {
                self.handle_run(&tx, handler, &events[index..index + run], &mut answers)
                    .await
                    .map_err(Stopped::Together)?;
                index += run;
                continue;
            }
            let (consumed, delivery) = (&events[index], &deliveries[index]);
            let work = async {
                if *delivery == Delivery::Blocked {
                    parking::park_in(&tx, consumed.event, consumed.origin, BEHIND_PARKED, 0)
                        .await
                        .map_err(HandlerError::new)
                } else {
                    self.handle(&tx, handler, consumed.event, *delivery, &mut answers)
                        .await
                }
            };
            work.instrument(consumed.span.clone())
                .await
                .map_err(|failure| Stopped::At(index, failure))?;
            index += 1;
        }
        self.commit_answers(tx, answers)
            .await
            .map_err(Stopped::Whole)?;
        for (consumed, delivery) in events.iter().zip(&deliveries) {
            if *delivery == Delivery::Blocked {
                consumed
                    .span
                    .in_scope(|| parking::announce(consumed.event, BEHIND_PARKED, 0));
            }
        }
        Ok(deliveries)
    }

    /// One consumed event's work, inside an open transaction whose inbox row for it is
    /// written: the handler, unless the event is a duplicate. Its reaction, put in the event's
    /// saga, is added to `answers`, which the caller writes to the outbox before it commits.
    async fn handle<H: EventHandler>(
        &self,
        tx: &Tx,
        handler: &H,
        event: &Envelope,
        delivery: Delivery,
        answers: &mut Answers,
    ) -> Result<(), HandlerError> {
        // Before the duplicate check, as a real failure of the inbox insert would be.
        fault::inject_db_failure(tx, event.event_type())
            .await
            .map_err(HandlerError::new)?;
        if delivery != Delivery::First {
            tracing::debug!(event_id = %event.id, ?delivery, "event not handled");
            return Ok(());
        }
        let started = std::time::Instant::now();
        let reaction = handler.handle(tx, event).await;
        metrics::observe(
            &metrics::HANDLER_DURATION,
            started.elapsed(),
            &[("event_type", event.event_type().to_owned())],
        );
        self.react(answers, event, reaction?)
            .map_err(HandlerError::new)
    }

    /// Consecutive first deliveries through [`EventHandler::handle_together`], in the first
    /// one's span. Each event's fault point and reaction are its own, as with
    /// [`UnitOfWork::handle`]; the handler's time is shared out evenly in its metric.
    async fn handle_run<H: EventHandler>(
        &self,
        tx: &Tx,
        handler: &H,
        run: &[Consumed<'_>],
        answers: &mut Answers,
    ) -> Result<(), HandlerError> {
        let envelopes: Vec<&Envelope> = run.iter().map(|consumed| consumed.event).collect();
        for event in &envelopes {
            fault::inject_db_failure(tx, event.event_type())
                .await
                .map_err(HandlerError::new)?;
        }
        let started = std::time::Instant::now();
        let handled = handler.handle_together(tx, &envelopes);
        let reactions = match run.first() {
            Some(first) => handled.instrument(first.span.clone()).await?,
            None => handled.await?,
        };
        if reactions.len() != run.len() {
            return Err(HandlerError::new(ReactionCount {
                events: run.len(),
                reactions: reactions.len(),
            }));
        }
        let each = started.elapsed() / u32::try_from(run.len()).unwrap_or(u32::MAX);
        for (consumed, reaction) in run.iter().zip(reactions) {
            let event = consumed.event;
            metrics::observe(
                &metrics::HANDLER_DURATION,
                each,
                &[("event_type", event.event_type().to_owned())],
            );
            // In the event's own span, so that its outbox rows carry its own trace.
            consumed
                .span
                .in_scope(|| self.react(answers, event, reaction))
                .map_err(HandlerError::new)?;
        }
        Ok(())
    }

    /// What follows from having handled `event`: its view row, and its reaction put in its
    /// saga as outbox rows.
    fn react(
        &self,
        answers: &mut Answers,
        event: &Envelope,
        reaction: Reaction,
    ) -> Result<(), OutboxError> {
        if self.saga_view {
            answers.view.extend(ViewRow::of(event));
        }
        for next in reaction.0 {
            self.answer(answers, Envelope::new(self.source, event.sagaid, next))?;
        }
        Ok(())
    }

    /// Runs `command` in one transaction, writes its announcements to the outbox and commits.
    pub async fn run<C: Command>(&self, command: C) -> Result<C::Output, C::Error> {
        let tx = Tx(self.begin().await?);
        let (output, announcements) = command.execute(&tx).await?;
        let answers = self.announced(announcements)?;
        let published = self.write_answers(&tx, answers).await?;
        self.commit(tx, published).await?;
        Ok(output)
    }

    /// Runs commands that arrived together in one transaction, each inside its own `span`,
    /// and commits once: group commit, for a use case that many clients call at the same
    /// time. The results come back in order, each as if its command had run alone:
    ///
    /// - if every command succeeds, their announcements go to the outbox in one statement and
    ///   one commit makes them all durable;
    /// - if one fails, nothing of the batch is kept (the transaction is dropped, so it rolls
    ///   back) and each command runs again alone through [`UnitOfWork::run`], so a bad
    ///   request fails only itself. Commands must therefore be safe to execute again after a
    ///   rollback, which any command is, since its first execution left nothing;
    /// - if the commit itself fails, whether it happened is unknown, so no command is run
    ///   again: each gets the error, as a client of [`UnitOfWork::run`] would;
    /// - if the transaction cannot even begin (no connection within the pool's acquire
    ///   timeout), each command gets that error at once: alone, each would only wait for the
    ///   same unavailable database again, one after another.
    ///
    /// Before a command runs alone, `wanted(its index)` is asked whether its caller still
    /// waits. One that has gone away (its request timed out, say) is not run: a client that
    /// was told its request failed must not find it done later. Such a command gets an error
    /// that nobody reads.
    pub async fn run_all<C: Command + Clone + Sync>(
        &self,
        commands: Vec<(C, Span)>,
        wanted: impl Fn(usize) -> bool,
    ) -> Vec<Result<C::Output, C::Error>> {
        if commands.len() < 2 {
            return self.run_each(commands, wanted).await;
        }
        match self.try_run_together(&commands).await {
            Ok(Together::Committed(outputs)) => outputs.into_iter().map(Ok).collect(),
            Ok(Together::NotBegun(error) | Together::CommitFailed(error)) => commands
                .iter()
                .map(|_| Err(C::Error::from(clone_db_error(&error))))
                .collect(),
            Err(RolledBack) => self.run_each(commands, wanted).await,
        }
    }

    /// Runs each command whose caller is still `wanted` in its own transaction, in order.
    async fn run_each<C: Command>(
        &self,
        commands: Vec<(C, Span)>,
        wanted: impl Fn(usize) -> bool,
    ) -> Vec<Result<C::Output, C::Error>> {
        let mut results = Vec::with_capacity(commands.len());
        for (index, (command, span)) in commands.into_iter().enumerate() {
            results.push(if wanted(index) {
                self.run(command).instrument(span).await
            } else {
                Err(C::Error::from(DbErr::Custom(
                    "not run: its caller went away".to_owned(),
                )))
            });
        }
        results
    }

    /// The shared transaction of [`UnitOfWork::run_all`]. [`RolledBack`] means nothing was
    /// kept, and the commands may run again alone.
    async fn try_run_together<C: Command + Clone + Sync>(
        &self,
        commands: &[(C, Span)],
    ) -> Result<Together<C::Output>, RolledBack> {
        let tx = match self.begin().await {
            Ok(tx) => Tx(tx),
            Err(error) => return Ok(Together::NotBegun(error)),
        };
        let mut outputs = Vec::with_capacity(commands.len());
        let mut answers = Answers::default();
        for (command, span) in commands {
            let (output, announcements) = command
                .clone()
                .execute(&tx)
                .instrument(span.clone())
                .await
                .map_err(|_| RolledBack)?;
            // Made inside the request's span, so each outbox row carries its own trace.
            let announced = span
                .in_scope(|| self.announced(announcements))
                .map_err(|_| RolledBack)?;
            answers.outbox.extend(announced.outbox);
            answers.view.extend(announced.view);
            outputs.push(output);
        }
        let published = self
            .write_answers(&tx, answers)
            .await
            .map_err(|_| RolledBack)?;
        Ok(match self.commit(tx, published).await {
            Ok(()) => Together::Committed(outputs),
            Err(error) => Together::CommitFailed(error),
        })
    }

    /// A command's announcements as outbox rows (and view rows), with this service as their
    /// source and the current span's trace.
    fn announced(&self, announcements: Announcements) -> Result<Answers, OutboxError> {
        let mut answers = Answers::default();
        for (saga_id, event) in announcements.0 {
            self.answer(&mut answers, Envelope::new(self.source, saga_id, event))?;
        }
        Ok(answers)
    }

    /// Adds an event this transaction publishes to `answers`.
    fn answer(&self, answers: &mut Answers, event: Envelope) -> Result<(), OutboxError> {
        answers.outbox.push(OutboxEntry::new(&event)?);
        if self.saga_view {
            answers.view.extend(ViewRow::of(&event));
        }
        Ok(())
    }

    /// Writes `answers` in `tx`, the outbox rows and the view rows in one statement; says
    /// whether anything was published (so the relay must be woken).
    async fn write_answers(&self, tx: &Tx, answers: Answers) -> Result<bool, OutboxError> {
        let published = !answers.outbox.is_empty();
        if answers.view.is_empty() {
            outbox::enqueue_all(tx, answers.outbox).await?;
        } else {
            // An empty outbox array inserts nothing, so one statement serves with or without
            // answers to publish.
            let mut values = outbox::columns(answers.outbox);
            values.extend(saga_view::columns(answers.view));
            tx.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                OUTBOX_AND_VIEW.as_str(),
                values,
            ))
            .await?;
        }
        Ok(published)
    }

    /// Ends a consumed event's (or a batch's) transaction: writes the answers, then commits.
    async fn commit_answers(&self, tx: Tx, answers: Answers) -> Result<(), HandlerError> {
        let published = self
            .write_answers(&tx, answers)
            .await
            .map_err(HandlerError::new)?;
        self.commit(tx, published).await.map_err(HandlerError::new)
    }

    /// Commits, then wakes the relay if the transaction wrote outbox rows (a relay woken for
    /// nothing would still run a claim query).
    async fn commit(&self, tx: Tx, published: bool) -> Result<(), DbErr> {
        tx.0.commit().await?;
        if published {
            fault::crash_point(CrashPoint::AfterCommitBeforePublish);
            self.signal.notify();
        }
        Ok(())
    }
}
