//! Group commit of event writes on PostgreSQL.
//!
//! Every `create_events` request is queued here. A few writer tasks (each
//! on its own pooled connection while it writes) take whatever requests
//! are queued and write them all in one transaction with one `COMMIT`
//! (one WAL flush) and a fixed handful of statements
//! (`ops::insert_events`), instead of one transaction and about eight
//! round trips per event. Every lock, constraint and ordering rule of a
//! single write still holds (docs/postgres.md): the batch takes the unit
//! locks of all its requests in one ascending order, so batches on this
//! node and on others never wait on each other in a cycle.
//!
//! Each request is all or nothing and never fails because of another: if
//! the batch fails before its `COMMIT` was sent (a statement failed), it
//! is rolled back whole and every request in it is written again in a
//! transaction of its own, so only the one at fault gets the error. If
//! the connection is lost, or the `COMMIT` itself fails (its outcome is
//! then unknown), every request of the batch gets the error and none is
//! retried, so nothing is ever stored twice.

use super::ops::{self, WriteCtx};
use super::rows::db;
use crate::clock::Clock;
use crate::{ReceiverCache, StoreError, StoreResult};
use cairn_domain::{CheckedEvent, EventId};
use sqlx_postgres::PgPool;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// One `create_events` request waiting to be written.
pub struct Job {
    pub events: Vec<CheckedEvent>,
    pub reply: oneshot::Sender<StoreResult<Vec<EventId>>>,
    /// The caller's span: its completion checks join the request's trace.
    pub span: tracing::Span,
}

/// What the writer tasks share.
#[derive(Clone)]
pub struct Shared {
    pub pool: PgPool,
    pub clock: Arc<Mutex<Clock>>,
    pub cache: Arc<ReceiverCache>,
    /// Most events written in one transaction (a request larger than
    /// this is written alone).
    pub max_batch_events: usize,
}

/// How a batch failed.
enum Failure {
    /// Before `COMMIT` was sent: nothing of the batch is stored.
    Rolled(StoreError),
    /// The `COMMIT` itself failed: the outcome is unknown.
    Commit(StoreError),
}

/// Start `writers` tasks taking jobs from one queue. They stop once every
/// sender is gone and the queue is empty.
pub fn start(
    shared: Shared,
    writers: usize,
    queue: usize,
) -> (mpsc::Sender<Job>, Vec<JoinHandle<()>>) {
    let (tx, rx) = mpsc::channel::<Job>(queue.max(1));
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let tasks = (0..writers.max(1))
        .map(|_| tokio::spawn(run(shared.clone(), rx.clone())))
        .collect();
    (tx, tasks)
}

async fn run(shared: Shared, rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let batch = {
            // One task gathers at a time; the others are writing meanwhile.
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            let mut events = first.events.len();
            let mut batch = vec![first];
            while events < shared.max_batch_events {
                match rx.try_recv() {
                    Ok(job) => {
                        events += job.events.len();
                        batch.push(job);
                    }
                    Err(_) => break,
                }
            }
            batch
        };
        write_batch(&shared, batch).await;
    }
}

async fn write_batch(shared: &Shared, batch: Vec<Job>) {
    let started = Instant::now();
    let jobs: Vec<&[CheckedEvent]> = batch.iter().map(|j| j.events.as_slice()).collect();
    let spans: Vec<&tracing::Span> = batch.iter().map(|j| &j.span).collect();
    let result = write(shared, &jobs, &spans).await;
    metrics::histogram!("cairn_store_batch_jobs").record(batch.len() as f64);
    metrics::histogram!("cairn_store_commit_seconds").record(started.elapsed().as_secs_f64());
    match result {
        Ok(ids) => {
            for (job, ids) in batch.into_iter().zip(ids) {
                let _ = job.reply.send(Ok(ids));
            }
        }
        Err(Failure::Rolled(e)) if batch.len() > 1 && !matches!(e, StoreError::Unavailable(_)) => {
            tracing::warn!(
                error = %e,
                jobs = batch.len(),
                "a write batch failed and was rolled back; writing its requests one by one"
            );
            metrics::counter!("cairn_store_batch_retries_total").increment(1);
            for job in batch {
                let result = match write(shared, &[job.events.as_slice()], &[&job.span]).await {
                    Ok(mut ids) => Ok(ids.pop().unwrap_or_default()),
                    Err(Failure::Rolled(e) | Failure::Commit(e)) => Err(e),
                };
                let _ = job.reply.send(result);
            }
        }
        Err(Failure::Rolled(e) | Failure::Commit(e)) => {
            for job in batch {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
}

/// Write `jobs` in one transaction; each request's ids, in order.
async fn write(
    shared: &Shared,
    jobs: &[&[CheckedEvent]],
    spans: &[&tracing::Span],
) -> Result<Vec<Vec<EventId>>, Failure> {
    let mut tx = shared
        .pool
        .begin()
        .await
        .map_err(|e| Failure::Rolled(db("starting a transaction")(e)))?;
    let written = {
        let ctx = &mut WriteCtx {
            conn: &mut tx,
            clock: &shared.clock,
            cache: &shared.cache,
        };
        ops::insert_events(ctx, jobs, spans).await
    };
    match written {
        Ok(ids) => {
            tx.commit()
                .await
                .map_err(|e| Failure::Commit(db("committing")(e)))?;
            Ok(ids)
        }
        Err(e) => {
            if let Err(r) = tx.rollback().await {
                tracing::warn!(error = %r, "rolling back a failed write batch");
            }
            Err(Failure::Rolled(e))
        }
    }
}
