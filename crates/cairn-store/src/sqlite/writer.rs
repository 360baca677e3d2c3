//! The single writer. Every change runs here, on one connection, in the order
//! it was queued. Jobs that arrive while a commit is in progress are gathered
//! into the next transaction (group commit), so one fsync acknowledges many
//! writes.
//!
//! A job may refuse (not found, invalid input) only before it changes any
//! row; the writer checks this with SQLite's change counter. A refused job
//! is answered at once and the rest of its batch commits. Any other failure
//! (a database error after some rows changed, a panic) rolls back the whole
//! batch and answers every job in it with the error, so nothing partial is
//! ever committed and nothing unacknowledged is reported as stored.

use super::rows;
use crate::clock::Clock;
use crate::{ReceiverCache, StoreError, StoreResult};
use cairn_domain::{GroupId, ReceiverId};
use rusqlite::Connection;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// Called once the batch's transaction has committed (or failed to).
pub type Reply = Box<dyn FnOnce(StoreResult<()>) + Send>;

/// What a job tells the writer: keep its changes (`Ok`) or roll them back.
pub struct Outcome {
    pub keep: bool,
    pub reply: Reply,
}

pub type Job = Box<dyn FnOnce(&mut WriteCtx<'_>) -> Outcome + Send>;

pub enum Command {
    Job(Job),
    Shutdown(oneshot::Sender<()>),
}

fn exec_cached(conn: &Connection, sql: &str, context: &str) -> StoreResult<()> {
    conn.prepare_cached(sql)
        .and_then(|mut st| st.execute([]))
        .map(|_| ())
        .map_err(|e| StoreError::Internal(format!("{context}: {e}")))
}

/// Which enabled groups each receiver belongs to. Only the writer changes
/// groups, so it keeps this in memory: loaded on first use, dropped by any
/// group change and by any rolled-back batch, then loaded again.
#[derive(Default)]
pub struct Memberships {
    loaded: Option<HashMap<ReceiverId, Vec<GroupId>>>,
}

impl Memberships {
    pub fn invalidate(&mut self) {
        self.loaded = None;
    }

    /// The enabled groups `receiver` belongs to.
    pub fn enabled_groups_of(
        &mut self,
        conn: &Connection,
        receiver: ReceiverId,
    ) -> StoreResult<Vec<GroupId>> {
        if self.loaded.is_none() {
            self.loaded = Some(load_memberships(conn)?);
        }
        Ok(self
            .loaded
            .as_ref()
            .and_then(|m| m.get(&receiver))
            .cloned()
            .unwrap_or_default())
    }
}

fn load_memberships(conn: &Connection) -> StoreResult<HashMap<ReceiverId, Vec<GroupId>>> {
    let mut st = conn
        .prepare(
            "SELECT gr.receiver_id, g.id FROM group_receivers gr
             JOIN groups g ON g.id = gr.group_id WHERE g.enabled = 1 ORDER BY g.seq",
        )
        .map_err(|e| StoreError::Internal(format!("loading group memberships: {e}")))?;
    let pairs = st
        .query_map([], |r| {
            Ok((rows::receiver_id(r, 0)?, rows::group_id(r, 1)?))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| StoreError::Internal(format!("loading group memberships: {e}")))?;
    let mut map: HashMap<ReceiverId, Vec<GroupId>> = HashMap::new();
    for (r, g) in pairs {
        map.entry(r).or_default().push(g);
    }
    Ok(map)
}

pub struct WriteCtx<'a> {
    pub conn: &'a Connection,
    pub clock: &'a mut Clock,
    pub cache: &'a ReceiverCache,
    pub memberships: &'a mut Memberships,
}

/// Queue `op` for the writer; resolves once it is committed and durable.
pub async fn submit<T, F>(jobs: &mpsc::Sender<Command>, op: F) -> StoreResult<T>
where
    T: Send + 'static,
    F: FnOnce(&mut WriteCtx<'_>) -> StoreResult<T> + Send + 'static,
{
    let (tx, rx) = oneshot::channel::<StoreResult<T>>();
    let job: Job = Box::new(move |ctx| match op(ctx) {
        Ok(value) => Outcome {
            keep: true,
            reply: Box::new(move |committed| {
                let _ = tx.send(committed.map(|()| value));
            }),
        },
        Err(e) => {
            let _ = tx.send(Err(e));
            Outcome {
                keep: false,
                reply: Box::new(|_| {}),
            }
        }
    });
    jobs.send(Command::Job(job))
        .await
        .map_err(|_| StoreError::Unavailable("the store is shutting down".into()))?;
    rx.await
        .map_err(|_| StoreError::Unavailable("the write was abandoned at shutdown".into()))?
}

pub struct Writer {
    pub conn: Connection,
    pub clock: Clock,
    pub cache: Arc<ReceiverCache>,
    pub memberships: Memberships,
    pub max_batch: usize,
    /// Set by the checkpointer when the WAL should start over.
    pub restart_wanted: Arc<std::sync::atomic::AtomicBool>,
}

impl Writer {
    /// Run until shut down or until every sender is gone.
    pub fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut batch: Vec<Job> = Vec::with_capacity(self.max_batch);
        let mut shutdown: Option<oneshot::Sender<()>> = None;
        while shutdown.is_none() {
            let Some(first) = rx.blocking_recv() else {
                break;
            };
            match first {
                Command::Job(j) => batch.push(j),
                Command::Shutdown(done) => shutdown = Some(done),
            }
            while shutdown.is_none() && batch.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(Command::Job(j)) => batch.push(j),
                    Ok(Command::Shutdown(done)) => shutdown = Some(done),
                    Err(_) => break,
                }
            }
            if self
                .restart_wanted
                .swap(false, std::sync::atomic::Ordering::AcqRel)
            {
                self.restart_wal();
            }
            if !batch.is_empty() {
                self.commit_batch(&mut batch);
            }
        }
        rx.close();
        // Writes still queued behind the shutdown are dropped unanswered
        // (their callers see `Unavailable`); nothing of them was stored.
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            tracing::warn!(error = %e, "final WAL checkpoint failed; the WAL will be replayed at next start");
        }
        if let Err((_, e)) = self.conn.close() {
            tracing::warn!(error = %e, "closing the database");
        }
        if let Some(done) = shutdown {
            let _ = done.send(());
        }
    }

    /// Copy the last WAL frames back and let the next commit start the WAL
    /// over (see `checkpoint.rs`).
    fn restart_wal(&mut self) {
        let started = Instant::now();
        match super::checkpoint::checkpoint(&self.conn, "RESTART") {
            Ok((busy, log, done)) => {
                metrics::counter!("cairn_store_wal_restarts_total").increment(1);
                metrics::histogram!("cairn_store_wal_restart_seconds")
                    .record(started.elapsed().as_secs_f64());
                tracing::debug!(busy, log, done, "WAL restart checkpoint");
            }
            Err(e) => tracing::warn!(error = %e, "WAL restart checkpoint failed; will retry"),
        }
    }

    fn commit_batch(&mut self, batch: &mut Vec<Job>) {
        let started = Instant::now();
        let size = batch.len();
        let mut replies: Vec<Reply> = Vec::with_capacity(size);
        let result = (|| -> StoreResult<()> {
            exec_cached(
                &self.conn,
                "BEGIN IMMEDIATE",
                "beginning a write transaction",
            )?;
            for job in batch.drain(..) {
                let changes_before = self.conn.total_changes();
                let mut ctx = WriteCtx {
                    conn: &self.conn,
                    clock: &mut self.clock,
                    cache: &self.cache,
                    memberships: &mut self.memberships,
                };
                match std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut ctx))) {
                    Ok(Outcome { keep: true, reply }) => replies.push(reply),
                    Ok(Outcome { keep: false, reply }) => {
                        replies.push(reply);
                        if self.conn.total_changes() != changes_before {
                            return Err(StoreError::Internal(
                                "a write failed after changing rows; its batch was rolled back"
                                    .into(),
                            ));
                        }
                    }
                    Err(_) => {
                        return Err(StoreError::Internal(
                            "a write job panicked; its batch was rolled back".into(),
                        ));
                    }
                }
            }
            exec_cached(&self.conn, "COMMIT", "committing")
        })();
        if result.is_err()
            && !self.conn.is_autocommit()
            && let Err(e) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %e, "rolling back a failed batch");
        }
        batch.clear();
        if result.is_err() {
            self.memberships.invalidate();
        }
        if let Err(e) = &result {
            tracing::error!(error = %e, jobs = size, "write batch failed; nothing of it was stored");
        }
        metrics::histogram!("cairn_store_batch_jobs").record(size as f64);
        metrics::histogram!("cairn_store_commit_seconds").record(started.elapsed().as_secs_f64());
        for reply in replies {
            reply(result.clone());
        }
    }
}
