//! The embedded store: one SQLite database file in the data directory.
//!
//! Writes go through a single writer thread that commits concurrent writes
//! together (group commit) with `synchronous = FULL` in WAL mode, so a
//! returned write is on disk. Reads use a pool of read-only connections.

mod access;
mod checkpoint;
mod idempotency;
mod ops;
mod pool;
mod rows;
mod schema;
mod writer;

use crate::clock::Clock;
use crate::{
    Completion, DeadLetter, EventFilter, GroupFilter, GroupStatus, OutboxMessage, PageRequest,
    ReceiverCache, ReceiverFilter, ReceiverStatus, SinkLease, Store, StoreError, StoreResult,
};
use async_trait::async_trait;
use cairn_domain::TraceParent;
use cairn_domain::completion;
use cairn_domain::group::GroupPatch;
use cairn_domain::{
    CheckedEvent, Event, EventId, Group, GroupId, NewGroup, NewReceiver, Receiver, ReceiverId, Unit,
};
use checkpoint::Checkpointer;
use pool::ReaderPool;
use rows::db;
use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OptionalExtension};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use writer::{Command, Writer};

/// Tuning for the embedded store.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Most write jobs committed in one transaction.
    pub max_batch: usize,
    /// Writes that may wait for the writer before callers are held back.
    pub queue_depth: usize,
    /// Read connections.
    pub readers: usize,
    /// How often the background checkpointer runs.
    pub checkpoint_interval: std::time::Duration,
    /// WAL size, in pages, beyond which the checkpointer makes the WAL
    /// start over (briefly holding the writer back).
    pub wal_restart_pages: i64,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            max_batch: 512,
            queue_depth: 8192,
            readers: 8,
            checkpoint_interval: std::time::Duration::from_millis(200),
            wal_restart_pages: 16_384,
        }
    }
}

pub struct SqliteStore {
    path: PathBuf,
    jobs: mpsc::Sender<Command>,
    readers: ReaderPool,
    cache: Arc<ReceiverCache>,
    /// Credentials for authenticating requests, dropped on every identity
    /// write (`access.rs`).
    credentials: access::CredentialCache,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpointer: Mutex<Option<Checkpointer>>,
    lock: Mutex<Option<File>>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("creating data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {path} is in use by another cairn process")]
    Locked { path: PathBuf },
    #[error("locking data directory {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("opening database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("migrating database {path}: {source}")]
    Migrate {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("starting the writer thread: {0}")]
    Thread(std::io::Error),
}

impl SqliteStore {
    /// Open (creating if needed) the store in `data_dir`. Only one process
    /// may hold a data directory at a time.
    pub fn open(data_dir: &Path, options: SqliteOptions) -> Result<Self, OpenError> {
        std::fs::create_dir_all(data_dir).map_err(|source| OpenError::CreateDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let lock_path = data_dir.join("cairn.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| OpenError::Lock {
                path: lock_path.clone(),
                source,
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(OpenError::Locked {
                    path: data_dir.to_owned(),
                });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(OpenError::Lock {
                    path: lock_path,
                    source,
                });
            }
        }
        let path = data_dir.join("cairn.db");
        let open_err = |source| OpenError::Open {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        // WAL with synchronous=FULL: every commit is fsynced before it
        // returns. Checkpoints are the checkpointer thread's job, not the
        // writer's. A modest page cache keeps commits cheap: SQLite walks the
        // cache's hash table at the end of every write transaction.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA wal_autocheckpoint = 0;
             PRAGMA journal_size_limit = 67108864;
             PRAGMA cache_size = -8192;
             PRAGMA temp_store = MEMORY;",
        )
        .map_err(open_err)?;
        schema::migrate(&mut conn).map_err(|source| OpenError::Migrate {
            path: path.clone(),
            source,
        })?;
        let floor = max_id(&conn).map_err(open_err)?;
        let cache = Arc::new(ReceiverCache::new());
        let (tx, rx) = mpsc::channel(options.queue_depth.max(1));
        let checkpointer = Checkpointer::start(
            &path,
            checkpoint::CheckpointPolicy {
                interval: options.checkpoint_interval,
                restart_frames: options.wal_restart_pages.max(1),
            },
        )
        .map_err(OpenError::Thread)?;
        let writer = Writer {
            conn,
            clock: Clock::new(floor),
            cache: cache.clone(),
            memberships: writer::Memberships::default(),
            max_batch: options.max_batch.max(1),
            restart_wanted: checkpointer.restart_wanted.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("cairn-sqlite-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(OpenError::Thread)?;
        Ok(Self {
            readers: ReaderPool::new(path.clone(), options.readers),
            path,
            jobs: tx,
            cache,
            credentials: access::CredentialCache::default(),
            writer_thread: Mutex::new(Some(handle)),
            checkpointer: Mutex::new(Some(checkpointer)),
            lock: Mutex::new(Some(lock)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn write<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut writer::WriteCtx<'_>) -> StoreResult<T> + Send + 'static,
    {
        writer::submit(&self.jobs, op).await
    }

    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &ReceiverCache) -> StoreResult<T> + Send + 'static,
    {
        let cache = self.cache.clone();
        self.readers.read(move |conn| f(conn, &cache)).await
    }
}

/// A sink lease on the embedded store: the data-directory lock is the lease.
struct ProcessLease;

#[async_trait]
impl SinkLease for ProcessLease {
    async fn held(&mut self) -> bool {
        true
    }
}

fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn advance_cursor(conn: &Connection, sink: &str, seq: u64) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO outbox_cursors (sink, last_seq) VALUES (?1, ?2)
         ON CONFLICT (sink) DO UPDATE SET last_seq = MAX(last_seq, excluded.last_seq)",
    )
    .and_then(|mut st| st.execute(rusqlite::params![sink, seq_param(seq)]))
    .map(|_| ())
    .map_err(db("advancing a sink cursor"))
}

/// The largest id ever handed out, so ids keep increasing across restarts
/// even if the wall clock went back.
fn max_id(conn: &Connection) -> rusqlite::Result<Option<ulid::Ulid>> {
    let max: Option<String> = conn.query_row(
        "SELECT MAX(m) FROM (
            SELECT MAX(id) AS m FROM receivers UNION ALL SELECT MAX(id) FROM events
            UNION ALL SELECT MAX(id) FROM groups UNION ALL SELECT MAX(id) FROM completions
            UNION ALL SELECT MAX(id) FROM outbox)",
        [],
        |r| r.get(0),
    )?;
    Ok(max.and_then(|s| ulid::Ulid::from_string(&s).ok()))
}

/// Builds `WHERE ... ORDER BY seq LIMIT ?` for a list with exact filters and
/// an id cursor.
struct ListQuery {
    table: &'static str,
    columns: &'static str,
    clauses: Vec<String>,
    params: Vec<Sql>,
}

impl ListQuery {
    fn new(table: &'static str, columns: &'static str) -> Self {
        Self {
            table,
            columns,
            clauses: Vec::new(),
            params: Vec::new(),
        }
    }

    fn eq(&mut self, column: &str, value: Option<Sql>) -> &mut Self {
        if let Some(v) = value {
            self.params.push(v);
            self.clauses
                .push(format!("{column} = ?{}", self.params.len()));
        }
        self
    }

    fn cmp(&mut self, column: &str, op: &str, value: Option<Sql>) -> &mut Self {
        if let Some(v) = value {
            self.params.push(v);
            self.clauses
                .push(format!("{column} {op} ?{}", self.params.len()));
        }
        self
    }

    /// Restrict to an extra condition with its own parameter.
    fn raw(&mut self, clause: impl FnOnce(usize) -> String, value: Sql) -> &mut Self {
        self.params.push(value);
        self.clauses.push(clause(self.params.len()));
        self
    }

    fn page(&mut self, page: &PageRequest) -> String {
        if let Some(after) = &page.after {
            // Rows are stored in id order, so "ids after X" starts at the
            // first row whose id exceeds X.
            let table = self.table;
            self.raw(
                |n| {
                    format!(
                        "seq >= COALESCE((SELECT seq FROM {table} WHERE id > ?{n} ORDER BY id LIMIT 1), 9223372036854775807)"
                    )
                },
                Sql::Text(after.clone()),
            );
        }
        let filter = if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        };
        self.params.push(Sql::Integer(i64::from(page.limit)));
        format!(
            "SELECT {} FROM {}{} ORDER BY seq LIMIT ?{}",
            self.columns,
            self.table,
            filter,
            self.params.len()
        )
    }
}

fn text(v: Option<String>) -> Option<Sql> {
    v.map(Sql::Text)
}

fn run_list<T>(
    conn: &Connection,
    sql: &str,
    params: Vec<Sql>,
    map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Vec<T>> {
    let mut st = conn.prepare_cached(sql).map_err(db("preparing a list"))?;
    st.query_map(rusqlite::params_from_iter(params), map)
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<T>>>())
        .map_err(db("running a list"))
}

#[async_trait]
impl Store for SqliteStore {
    fn pool_stats(&self) -> crate::PoolStats {
        let (max, idle, in_use) = self.readers.stats();
        crate::PoolStats {
            max,
            idle,
            in_use,
            write_queue: self.jobs.max_capacity() - self.jobs.capacity(),
        }
    }
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn create_receiver(&self, receiver: NewReceiver) -> StoreResult<Arc<Receiver>> {
        let created = self
            .write(move |ctx| ops::insert_receiver(ctx, receiver))
            .await?;
        metrics::counter!("cairn_schema_compilations_total").increment(1);
        self.cache.insert(created.clone());
        Ok(created)
    }

    fn cached_receiver(&self, id: ReceiverId) -> Option<Arc<Receiver>> {
        self.cache.get(id)
    }
    async fn receiver(&self, id: ReceiverId) -> StoreResult<Option<Arc<Receiver>>> {
        if let Some(r) = self.cache.get(id) {
            return Ok(Some(r));
        }
        self.read(move |conn, cache| rows::load_receiver(conn, cache, id))
            .await
    }

    async fn receivers(&self, ids: Vec<ReceiverId>) -> StoreResult<Vec<Arc<Receiver>>> {
        let (mut found, missing) = self.cache.split(ids);
        if missing.is_empty() {
            return Ok(found);
        }
        let loaded = self
            .read(move |conn, cache| rows::load_receivers(conn, cache, &missing))
            .await?;
        found.extend(loaded);
        Ok(found)
    }

    async fn list_receivers(
        &self,
        filter: ReceiverFilter,
        page: PageRequest,
    ) -> StoreResult<Vec<Arc<Receiver>>> {
        self.read(move |conn, cache| {
            let mut q = ListQuery::new("receivers", rows::RECEIVER_COLUMNS);
            q.eq("name", text(filter.name))
                .eq("type", text(filter.type_))
                .eq("version", text(filter.version));
            let sql = q.page(&page);
            let found = run_list(conn, &sql, q.params, rows::receiver_row)?;
            found
                .into_iter()
                .map(|row| cache.materialise(row).map_err(StoreError::Internal))
                .collect()
        })
        .await
    }

    async fn create_events(&self, events: Vec<CheckedEvent>) -> StoreResult<Vec<EventId>> {
        let n = events.len() as u64;
        // The writer thread works inside the caller's span, so the spans it
        // makes (completion checks) join the request's trace.
        let span = tracing::Span::current();
        let ids = self
            .write(move |ctx| span.in_scope(|| ops::insert_events(ctx, events)))
            .await?;
        metrics::counter!("cairn_events_created_total").increment(n);
        Ok(ids)
    }

    async fn event(&self, id: EventId) -> StoreResult<Option<Event>> {
        self.read(move |conn, _| rows::load_event(conn, id)).await
    }

    async fn list_events(&self, filter: EventFilter, page: PageRequest) -> StoreResult<Vec<Event>> {
        self.read(move |conn, _| {
            let mut q = ListQuery::new("events", rows::EVENT_COLUMNS);
            q.eq(
                "receiver_id",
                filter.receiver_id.map(|r| Sql::Text(r.to_string())),
            )
            .eq("name", text(filter.name))
            .eq("version", text(filter.version))
            .eq("release", text(filter.release))
            .eq("platform_id", text(filter.platform_id))
            .eq("package", text(filter.package))
            .eq(
                "success",
                filter.success.map(|b| Sql::Integer(i64::from(b))),
            )
            .cmp(
                "created_at",
                ">=",
                filter.since.map(|t| Sql::Integer(t.micros())),
            )
            .cmp(
                "created_at",
                "<",
                filter.until.map(|t| Sql::Integer(t.micros())),
            );
            let sql = q.page(&page);
            run_list(conn, &sql, q.params, rows::event_row)
        })
        .await
    }

    async fn create_group(&self, group: NewGroup) -> StoreResult<Group> {
        self.write(move |ctx| ops::insert_group(ctx, group)).await
    }

    async fn group(&self, id: GroupId) -> StoreResult<Option<Group>> {
        self.read(move |conn, _| rows::load_group(conn, id)).await
    }

    async fn list_groups(&self, filter: GroupFilter, page: PageRequest) -> StoreResult<Vec<Group>> {
        self.read(move |conn, _| {
            let mut q = ListQuery::new("groups", rows::GROUP_COLUMNS);
            q.eq("name", text(filter.name))
                .eq("type", text(filter.type_))
                .eq("version", text(filter.version))
                .eq(
                    "enabled",
                    filter.enabled.map(|b| Sql::Integer(i64::from(b))),
                );
            let sql = q.page(&page);
            let groups = run_list(conn, &sql, q.params, rows::group_row)?;
            groups
                .into_iter()
                .map(|g| rows::fill_receivers(conn, g))
                .collect()
        })
        .await
    }

    async fn update_group(
        &self,
        id: GroupId,
        patch: GroupPatch,
        trace: Option<TraceParent>,
    ) -> StoreResult<Group> {
        self.write(move |ctx| ops::update_group(ctx, id, patch, trace))
            .await
    }

    async fn add_group_receivers(
        &self,
        id: GroupId,
        ids: Vec<ReceiverId>,
        trace: Option<TraceParent>,
    ) -> StoreResult<Group> {
        self.write(move |ctx| ops::add_receivers(ctx, id, ids, trace))
            .await
    }

    async fn remove_group_receiver(
        &self,
        id: GroupId,
        receiver: ReceiverId,
        trace: Option<TraceParent>,
    ) -> StoreResult<Group> {
        self.write(move |ctx| ops::remove_receiver(ctx, id, receiver, trace))
            .await
    }

    async fn group_status(&self, id: GroupId, unit: Unit) -> StoreResult<GroupStatus> {
        self.read(move |conn, _| {
            let group = rows::require_group(conn, id)?;
            let mut receivers = Vec::with_capacity(group.receiver_ids.len());
            for r in &group.receiver_ids {
                receivers.push(ReceiverStatus {
                    receiver_id: *r,
                    latest: rows::latest(conn, *r, &unit)?,
                });
            }
            let complete = completion::evaluate(group.enabled, &group.receiver_ids, |r| {
                receivers
                    .iter()
                    .find(|s| s.receiver_id == r)
                    .and_then(|s| s.latest)
            })
            .is_some();
            Ok(GroupStatus {
                enabled: group.enabled,
                complete,
                receivers,
            })
        })
        .await
    }

    async fn list_completions(
        &self,
        id: GroupId,
        page: PageRequest,
    ) -> StoreResult<Vec<Completion>> {
        self.read(move |conn, _| {
            rows::require_group(conn, id)?;
            let mut q = ListQuery::new("completions", rows::COMPLETION_COLUMNS);
            q.eq("group_id", Some(Sql::Text(id.to_string())));
            let sql = q.page(&page);
            run_list(conn, &sql, q.params, rows::completion_row)
        })
        .await
    }

    async fn outbox_head(&self) -> StoreResult<u64> {
        self.read(|conn, _| {
            conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM outbox", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(db("reading the outbox head"))
        })
        .await
    }

    async fn outbox_after(&self, after_seq: u64, limit: u32) -> StoreResult<Vec<OutboxMessage>> {
        self.read(move |conn, cache| rows::outbox_after(conn, cache, after_seq, limit))
            .await
    }

    async fn outbox_deliverable(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<OutboxMessage>> {
        // One writer commits batches in order: committed positions are
        // always a prefix, so every visible message is deliverable.
        self.outbox_after(after_seq, limit).await
    }

    async fn outbox_count_after(&self, after_seq: u64) -> StoreResult<u64> {
        self.read(move |conn, _| {
            conn.query_row(
                "SELECT COUNT(*) FROM outbox WHERE seq > ?1",
                [seq_param(after_seq)],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(db("counting outbox messages"))
        })
        .await
    }

    async fn lease_sink(&self, _sink: &str) -> StoreResult<Option<Box<dyn SinkLease>>> {
        // The data directory's lock already makes this process the only one.
        Ok(Some(Box::new(ProcessLease)))
    }

    async fn sink_cursor(&self, sink: &str) -> StoreResult<u64> {
        let sink = sink.to_owned();
        self.read(move |conn, _| {
            conn.query_row(
                "SELECT last_seq FROM outbox_cursors WHERE sink = ?1",
                [&sink],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|n| n.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
            .map_err(db("reading a sink cursor"))
        })
        .await
    }

    async fn advance_sink_cursor(&self, sink: &str, seq: u64) -> StoreResult<()> {
        let sink = sink.to_owned();
        self.write(move |ctx| advance_cursor(ctx.conn, &sink, seq))
            .await
    }

    async fn record_dead_letter(&self, letter: DeadLetter) -> StoreResult<()> {
        self.write(move |ctx| {
            ctx.conn
                .prepare_cached(
                    "INSERT INTO outbox_dead_letters
                         (sink, seq, message_id, attempts, last_error, failed_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (sink, seq) DO UPDATE SET attempts = excluded.attempts,
                         last_error = excluded.last_error, failed_at = excluded.failed_at",
                )
                .and_then(|mut st| {
                    st.execute(rusqlite::params![
                        letter.sink,
                        seq_param(letter.seq),
                        letter.message_id.to_string(),
                        letter.attempts,
                        letter.last_error,
                        letter.failed_at.micros(),
                    ])
                })
                .map_err(db("recording a dead letter"))?;
            ctx.conn
                .execute(
                    "DELETE FROM outbox_replays WHERE sink = ?1 AND seq = ?2",
                    rusqlite::params![letter.sink, seq_param(letter.seq)],
                )
                .map_err(db("dropping a replay"))?;
            advance_cursor(ctx.conn, &letter.sink, letter.seq)
        })
        .await
    }

    async fn dead_letters(&self, sink: Option<String>, limit: u32) -> StoreResult<Vec<DeadLetter>> {
        self.read(move |conn, _| {
            let mut st = conn
                .prepare_cached(
                    "SELECT sink, seq, message_id, attempts, last_error, failed_at
                     FROM outbox_dead_letters WHERE ?1 IS NULL OR sink = ?1
                     ORDER BY seq, sink LIMIT ?2",
                )
                .map_err(db("listing dead letters"))?;
            let raw = st
                .query_map(rusqlite::params![sink, limit], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, u32>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(db("listing dead letters"))?;
            raw.into_iter()
                .map(|(sink, seq, id, attempts, last_error, failed_at)| {
                    Ok(DeadLetter {
                        sink,
                        seq: u64::try_from(seq).unwrap_or(0),
                        message_id: cairn_domain::MessageId::parse(&id).ok_or_else(|| {
                            StoreError::Internal(format!("dead letter id {id:?} is not a ULID"))
                        })?,
                        attempts,
                        last_error,
                        failed_at: cairn_domain::Timestamp::from_micros(failed_at),
                    })
                })
                .collect()
        })
        .await
    }

    async fn replay_dead_letter(&self, sink: &str, seq: u64) -> StoreResult<()> {
        let sink = sink.to_owned();
        self.write(move |ctx| {
            // Refuse before changing anything (the writer's rule).
            let exists = ctx
                .conn
                .query_row(
                    "SELECT 1 FROM outbox_dead_letters WHERE sink = ?1 AND seq = ?2",
                    rusqlite::params![sink, seq_param(seq)],
                    |_| Ok(()),
                )
                .optional()
                .map_err(db("finding a dead letter"))?;
            if exists.is_none() {
                return Err(StoreError::NotFound(format!(
                    "no dead letter at position {seq} for sink {sink:?}"
                )));
            }
            ctx.conn
                .execute(
                    "DELETE FROM outbox_dead_letters WHERE sink = ?1 AND seq = ?2",
                    rusqlite::params![sink, seq_param(seq)],
                )
                .map_err(db("taking a dead letter"))?;
            ctx.conn
                .execute(
                    "INSERT INTO outbox_replays (sink, seq) VALUES (?1, ?2)
                     ON CONFLICT DO NOTHING",
                    rusqlite::params![sink, seq_param(seq)],
                )
                .map_err(db("queueing a replay"))?;
            Ok(())
        })
        .await
    }

    async fn sink_replays(&self, sink: &str, limit: u32) -> StoreResult<Vec<OutboxMessage>> {
        let sink = sink.to_owned();
        self.read(move |conn, cache| rows::outbox_replays(conn, cache, &sink, limit))
            .await
    }

    async fn finish_replay(&self, sink: &str, seq: u64) -> StoreResult<()> {
        let sink = sink.to_owned();
        self.write(move |ctx| {
            ctx.conn
                .execute(
                    "DELETE FROM outbox_replays WHERE sink = ?1 AND seq = ?2",
                    rusqlite::params![sink, seq_param(seq)],
                )
                .map(|_| ())
                .map_err(db("finishing a replay"))
        })
        .await
    }

    async fn check(&self) -> StoreResult<()> {
        if self.jobs.is_closed() {
            return Err(StoreError::Unavailable("the writer has stopped".into()));
        }
        let checkpointing = self
            .checkpointer
            .lock()
            .map(|c| c.as_ref().is_some_and(Checkpointer::is_alive))
            .unwrap_or(false);
        if !checkpointing {
            return Err(StoreError::Unavailable(
                "the WAL checkpointer has stopped".into(),
            ));
        }
        self.read(|conn, _| {
            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map(|_| ())
                .map_err(db("health check"))
        })
        .await
    }

    async fn close(&self) {
        // Stop background checkpoints first; the writer does a final
        // TRUNCATE checkpoint once it has drained its queue.
        let checkpointer = self.checkpointer.lock().ok().and_then(|mut c| c.take());
        if let Some(mut c) = checkpointer {
            let _ = tokio::task::spawn_blocking(move || c.stop()).await;
        }
        let (done_tx, done_rx) = oneshot::channel();
        if self.jobs.send(Command::Shutdown(done_tx)).await.is_ok() {
            let _ = done_rx.await;
        }
        let handle = self.writer_thread.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        self.readers.close();
        if let Ok(mut lock) = self.lock.lock() {
            lock.take();
        }
    }
}
