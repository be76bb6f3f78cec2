//! Group commit for a command that many clients call at once, such as placing an order.
//!
//! Each request hands its command to a [`CommandQueue`] and waits for its own result. A worker
//! takes whatever has queued up (at most `max_batch` commands) and runs it through
//! [`UnitOfWork::run_all`]: one transaction and one commit (one WAL flush) for all of them
//! instead of one each. At low load a batch is one command and nothing waits; under load the
//! batches grow by themselves, because requests queue while the previous batch commits.
//!
//! Each result is as if its command had run alone (see [`UnitOfWork::run_all`]). A command
//! whose caller has gone away (its request was cancelled, e.g. by a timeout) before its batch
//! starts, or before it runs again alone after its batch rolled back, is not run at all, so an
//! abandoned request creates nothing.

use std::sync::Arc;

use sea_orm::{ConnAcquireErr, DbErr};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::Span;

use crate::unit_of_work::{Command, UnitOfWork};

/// One queued command and where its result goes.
struct Job<C: Command> {
    command: C,
    span: Span,
    reply: oneshot::Sender<Result<C::Output, C::Error>>,
}

/// A handle to the queue of one command type. Cloning shares the queue; the worker stops
/// when the last handle is dropped, after finishing the batches it has begun.
pub struct CommandQueue<C: Command> {
    jobs: mpsc::UnboundedSender<Job<C>>,
}

impl<C: Command> Clone for CommandQueue<C> {
    fn clone(&self) -> Self {
        Self {
            jobs: self.jobs.clone(),
        }
    }
}

impl<C: Command> std::fmt::Debug for CommandQueue<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandQueue").finish_non_exhaustive()
    }
}

impl<C> CommandQueue<C>
where
    C: Command + Clone + Sync + 'static,
    C::Output: 'static,
    C::Error: 'static,
{
    /// Starts the worker. At most `concurrency` batches run at a time, each of at most
    /// `max_batch` commands, so the queue uses at most `concurrency` pooled connections.
    /// The queue itself is unbounded: admission control in front of it bounds the work.
    pub fn start(uow: UnitOfWork, max_batch: usize, concurrency: usize) -> Self {
        let (jobs, queued) = mpsc::unbounded_channel();
        tokio::spawn(work(
            uow,
            queued,
            max_batch.max(1),
            Arc::new(Semaphore::new(concurrency.max(1))),
        ));
        Self { jobs }
    }

    /// Runs `command` in the next batch and returns its own result. The current span goes
    /// with it, so its logs and its outbox rows carry the request's trace.
    pub async fn run(&self, command: C) -> Result<C::Output, C::Error> {
        let (reply, result) = oneshot::channel();
        let job = Job {
            command,
            span: Span::current(),
            reply,
        };
        if self.jobs.send(job).is_err() {
            return Err(stopped());
        }
        // The worker always answers a job it took, unless it is stopping.
        result.await.unwrap_or_else(|_| Err(stopped()))
    }
}

/// The error of a command that cannot run because the service is stopping: "unavailable",
/// like a database that cannot be reached.
fn stopped<E: From<DbErr>>() -> E {
    E::from(DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed))
}

async fn work<C>(
    uow: UnitOfWork,
    mut queued: mpsc::UnboundedReceiver<Job<C>>,
    max_batch: usize,
    running: Arc<Semaphore>,
) where
    C: Command + Clone + Sync + 'static,
    C::Output: 'static,
    C::Error: 'static,
{
    loop {
        // Waiting for a free slot first lets requests queue up while every slot commits:
        // that queue is the next batch.
        let Ok(slot) = running.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = queued.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match queued.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        batch.retain(|job| !job.reply.is_closed());
        let uow = uow.clone();
        tokio::spawn(async move {
            let (commands, replies): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .map(|job| ((job.command, job.span), job.reply))
                .unzip();
            // A command that must run again alone runs only if its caller still waits.
            let results = uow
                .run_all(commands, |index| {
                    replies.get(index).is_some_and(|reply| !reply.is_closed())
                })
                .await;
            for (reply, result) in replies.into_iter().zip(results) {
                // A caller that has gone away no longer wants its result.
                let _ = reply.send(result);
            }
            drop(slot);
        });
    }
}
