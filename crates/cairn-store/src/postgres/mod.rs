//! The PostgreSQL store: several cairn nodes may share one database.
//!
//! Each write runs in one READ COMMITTED transaction on a pooled
//! connection; correctness across nodes comes from row locks, advisory
//! locks and constraints (see `ops.rs` and docs/postgres.md), never from
//! in-process coordination. Queries are runtime queries with bound
//! parameters. Connections are plain TCP: TLS is not built in yet.
//! `access.rs` implements [`crate::access::AccessStore`] (identities,
//! sessions, signing keys, audit log) on the same pool.

mod access;
mod idempotency;
mod ops;
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
use ops::WriteCtx;
use rows::{Lock, db};
use sqlx_core::connection::ConnectOptions;
use sqlx_core::query::query;
use sqlx_core::row::Row;
use sqlx_core::sql_str::AssertSqlSafe;
use sqlx_postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Tuning for the PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Connections in this node's pool.
    pub max_connections: u32,
    /// How long a request may wait for a pooled connection.
    pub acquire_timeout: Duration,
    /// Event-writing tasks (group commit, `writer.rs`): each writes one
    /// batch at a time on one pooled connection.
    pub writers: usize,
    /// Most events one batch transaction writes.
    pub max_batch_events: usize,
    /// Requests that may wait for a writer before `create_events` waits
    /// for room.
    pub write_queue_depth: usize,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
            writers: 4,
            max_batch_events: 512,
            write_queue_depth: 4096,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("invalid PostgreSQL URL: {0}")]
    Url(sqlx_core::Error),
    #[error("connecting to PostgreSQL at {target}: {source}")]
    Connect {
        target: String,
        source: sqlx_core::Error,
    },
    #[error("migrating the PostgreSQL database at {target}: {source}")]
    Migrate {
        target: String,
        source: sqlx_core::Error,
    },
    #[error("administering PostgreSQL at {target}: {source}")]
    Admin {
        target: String,
        source: sqlx_core::Error,
    },
}

pub struct PostgresStore {
    pool: PgPool,
    target: String,
    clock: Arc<Mutex<Clock>>,
    cache: Arc<ReceiverCache>,
    /// The event writers' queue (dropped at `close`) and tasks.
    events: Mutex<Option<mpsc::Sender<writer::Job>>>,
    writers: tokio::sync::Mutex<Vec<JoinHandle<()>>>,
}

/// `host:port/database` of a URL, without user or password, for messages.
fn describe(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("(default database)")
    )
}

fn parse_url(url: &str) -> Result<PgConnectOptions, OpenError> {
    PgConnectOptions::from_str(url)
        .map(|o| o.disable_statement_logging())
        .map_err(OpenError::Url)
}

impl PostgresStore {
    /// Connect, apply pending migrations and start handing out ids above
    /// every id already stored.
    pub async fn open(url: &str, options: PostgresOptions) -> Result<Self, OpenError> {
        let connect = parse_url(url)?;
        let target = describe(&connect);
        // One direct connection first: an unreachable server or a refused
        // login fails at once, instead of after the pool's retries.
        let probe: PgConnection = connect
            .connect()
            .await
            .map_err(|source| OpenError::Connect {
                target: target.clone(),
                source,
            })?;
        let _ = sqlx_core::connection::Connection::close(probe).await;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(|source| OpenError::Connect {
                target: target.clone(),
                source,
            })?;
        let applied = schema::migrate(&pool)
            .await
            .map_err(|source| OpenError::Migrate {
                target: target.clone(),
                source,
            })?;
        if !applied.is_empty() {
            tracing::info!(?applied, "applied PostgreSQL migrations to {target}");
        }
        let floor = max_id(&pool).await.map_err(|source| OpenError::Migrate {
            target: target.clone(),
            source,
        })?;
        let clock = Arc::new(Mutex::new(Clock::new(floor)));
        let cache = Arc::new(ReceiverCache::new());
        let (events, writers) = writer::start(
            writer::Shared {
                pool: pool.clone(),
                clock: clock.clone(),
                cache: cache.clone(),
                max_batch_events: options.max_batch_events.max(1),
            },
            options.writers,
            options.write_queue_depth,
        );
        Ok(Self {
            pool,
            target,
            clock,
            cache,
            events: Mutex::new(Some(events)),
            writers: tokio::sync::Mutex::new(writers),
        })
    }

    /// `host:port/database` this store is connected to.
    pub fn target(&self) -> &str {
        &self.target
    }

    async fn conn(&self) -> StoreResult<sqlx_core::pool::PoolConnection<sqlx_postgres::Postgres>> {
        self.pool
            .acquire()
            .await
            .map_err(db("taking a connection from the pool"))
    }
}

/// Create database `name` on the server of `server_url` (for tests and
/// tooling; `name` must be a plain identifier).
pub async fn create_database(server_url: &str, name: &str) -> Result<(), OpenError> {
    admin(server_url, &format!("CREATE DATABASE \"{name}\"")).await
}

/// Drop database `name` on the server of `server_url`, closing any
/// connection still open to it.
pub async fn drop_database(server_url: &str, name: &str) -> Result<(), OpenError> {
    admin(
        server_url,
        &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
    )
    .await
}

/// The URL of database `name` on the server of `server_url`.
pub fn database_url(server_url: &str, name: &str) -> Result<String, OpenError> {
    let mut url = sqlx_core::Url::parse(server_url)
        .map_err(|e| OpenError::Url(sqlx_core::Error::Configuration(Box::new(e))))?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

async fn admin(server_url: &str, sql: &str) -> Result<(), OpenError> {
    if !sql
        .split('"')
        .nth(1)
        .is_some_and(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err(OpenError::Url(sqlx_core::Error::Configuration(
            format!("not a plain database name in {sql:?}").into(),
        )));
    }
    let options = parse_url(server_url)?;
    let target = describe(&options);
    let mut conn: PgConnection = options
        .connect()
        .await
        .map_err(|source| OpenError::Connect {
            target: target.clone(),
            source,
        })?;
    let result = query(AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .map(|_| ())
        .map_err(|source| OpenError::Admin { target, source });
    let _ = sqlx_core::connection::Connection::close(conn).await;
    result
}

/// The largest id ever handed out, so this node's ids start above it even
/// if its wall clock is behind.
async fn max_id(pool: &PgPool) -> Result<Option<ulid::Ulid>, sqlx_core::Error> {
    let row = query(
        "SELECT MAX(m) FROM (
            SELECT MAX(id) AS m FROM receivers UNION ALL SELECT MAX(id) FROM events
            UNION ALL SELECT MAX(id) FROM groups UNION ALL SELECT MAX(id) FROM completions
            UNION ALL SELECT MAX(id) FROM outbox) AS ids",
    )
    .fetch_one(pool)
    .await?;
    let max: Option<String> = row.try_get(0)?;
    Ok(max.and_then(|s| ulid::Ulid::from_string(&s).ok()))
}

/// One bound parameter of a list query.
enum Param {
    Text(String),
    Int(i64),
    Bool(bool),
}

/// Builds `WHERE ... AND id > $n ORDER BY id LIMIT $m` for a list with
/// exact filters and an id cursor.
struct ListQuery {
    table: &'static str,
    columns: &'static str,
    clauses: Vec<String>,
    params: Vec<Param>,
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

    fn cmp(&mut self, column: &str, op: &str, value: Option<Param>) -> &mut Self {
        if let Some(v) = value {
            self.params.push(v);
            self.clauses
                .push(format!("{column} {op} ${}", self.params.len()));
        }
        self
    }

    fn eq(&mut self, column: &str, value: Option<Param>) -> &mut Self {
        self.cmp(column, "=", value)
    }

    fn sql(&mut self, page: &PageRequest) -> String {
        self.cmp("id", ">", page.after.clone().map(Param::Text));
        let filter = if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        };
        self.params.push(Param::Int(i64::from(page.limit)));
        format!(
            "SELECT {} FROM {}{} ORDER BY id LIMIT ${}",
            self.columns,
            self.table,
            filter,
            self.params.len()
        )
    }

    async fn run<T>(
        mut self,
        conn: &mut PgConnection,
        page: &PageRequest,
        map: impl Fn(&PgRow) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let sql = self.sql(page);
        let mut q = query(AssertSqlSafe(sql));
        for p in self.params {
            q = match p {
                Param::Text(s) => q.bind(s),
                Param::Int(i) => q.bind(i),
                Param::Bool(b) => q.bind(b),
            };
        }
        q.fetch_all(&mut *conn)
            .await
            .map_err(db("running a list"))?
            .iter()
            .map(map)
            .collect()
    }
}

fn text(v: Option<String>) -> Option<Param> {
    v.map(Param::Text)
}

/// Run one write operation in its own transaction and commit it.
macro_rules! write {
    ($self:ident, |$ctx:ident| $body:expr) => {{
        let mut tx = $self
            .pool
            .begin()
            .await
            .map_err(db("starting a transaction"))?;
        let out = {
            let $ctx = &mut WriteCtx {
                conn: &mut *tx,
                clock: &$self.clock,
                cache: &$self.cache,
            };
            $body.await?
        };
        tx.commit().await.map_err(db("committing"))?;
        out
    }};
}

#[async_trait]
impl Store for PostgresStore {
    fn pool_stats(&self) -> crate::PoolStats {
        let open = self.pool.size() as usize;
        let idle = self.pool.num_idle();
        let write_queue = self
            .events
            .lock()
            .ok()
            .and_then(|q| q.as_ref().map(|q| q.max_capacity() - q.capacity()))
            .unwrap_or(0);
        crate::PoolStats {
            max: self.pool.options().get_max_connections() as usize,
            idle,
            in_use: open.saturating_sub(idle),
            write_queue,
        }
    }
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn create_receiver(&self, receiver: NewReceiver) -> StoreResult<Arc<Receiver>> {
        let created = write!(self, |ctx| ops::insert_receiver(ctx, receiver));
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
        let mut conn = self.conn().await?;
        rows::load_receiver(&mut conn, &self.cache, id).await
    }

    async fn receivers(&self, ids: Vec<ReceiverId>) -> StoreResult<Vec<Arc<Receiver>>> {
        let (mut found, missing) = self.cache.split(ids);
        if missing.is_empty() {
            return Ok(found);
        }
        let mut conn = self.conn().await?;
        found.extend(rows::load_receivers(&mut conn, &self.cache, &missing).await?);
        Ok(found)
    }

    async fn list_receivers(
        &self,
        filter: ReceiverFilter,
        page: PageRequest,
    ) -> StoreResult<Vec<Arc<Receiver>>> {
        let mut q = ListQuery::new("receivers", rows::RECEIVER_COLUMNS);
        q.eq("name", text(filter.name))
            .eq("type", text(filter.type_))
            .eq("version", text(filter.version));
        let mut conn = self.conn().await?;
        let found = q.run(&mut conn, &page, rows::receiver_row).await?;
        found
            .into_iter()
            .map(|row| self.cache.materialise(row).map_err(StoreError::Internal))
            .collect()
    }

    async fn create_events(&self, events: Vec<CheckedEvent>) -> StoreResult<Vec<EventId>> {
        let n = events.len() as u64;
        let queue = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| StoreError::Unavailable("the store is shutting down".into()))?;
        let (reply, answer) = oneshot::channel();
        queue
            .send(writer::Job {
                events,
                reply,
                span: tracing::Span::current(),
            })
            .await
            .map_err(|_| StoreError::Unavailable("the store is shutting down".into()))?;
        let ids = answer
            .await
            .map_err(|_| StoreError::Unavailable("the write was abandoned at shutdown".into()))??;
        metrics::counter!("cairn_events_created_total").increment(n);
        Ok(ids)
    }

    async fn event(&self, id: EventId) -> StoreResult<Option<Event>> {
        let mut conn = self.conn().await?;
        rows::load_event(&mut conn, id).await
    }

    async fn list_events(&self, filter: EventFilter, page: PageRequest) -> StoreResult<Vec<Event>> {
        let mut q = ListQuery::new("events", rows::EVENT_COLUMNS);
        q.eq(
            "receiver_id",
            filter.receiver_id.map(|r| Param::Text(r.to_string())),
        )
        .eq("name", text(filter.name))
        .eq("version", text(filter.version))
        .eq("release", text(filter.release))
        .eq("platform_id", text(filter.platform_id))
        .eq("package", text(filter.package))
        .eq("success", filter.success.map(Param::Bool))
        .cmp(
            "created_at",
            ">=",
            filter.since.map(|t| Param::Int(t.micros())),
        )
        .cmp(
            "created_at",
            "<",
            filter.until.map(|t| Param::Int(t.micros())),
        );
        let mut conn = self.conn().await?;
        q.run(&mut conn, &page, rows::event_row).await
    }

    async fn create_group(&self, group: NewGroup) -> StoreResult<Group> {
        Ok(write!(self, |ctx| ops::insert_group(ctx, group)))
    }

    async fn group(&self, id: GroupId) -> StoreResult<Option<Group>> {
        let mut conn = self.conn().await?;
        rows::load_group(&mut conn, id, Lock::None).await
    }

    async fn list_groups(&self, filter: GroupFilter, page: PageRequest) -> StoreResult<Vec<Group>> {
        let mut q = ListQuery::new("groups", rows::GROUP_COLUMNS);
        q.eq("name", text(filter.name))
            .eq("type", text(filter.type_))
            .eq("version", text(filter.version))
            .eq("enabled", filter.enabled.map(Param::Bool));
        let mut conn = self.conn().await?;
        let groups = q.run(&mut conn, &page, rows::group_row).await?;
        let mut filled = Vec::with_capacity(groups.len());
        for g in groups {
            filled.push(rows::fill_receivers(&mut conn, g).await?);
        }
        Ok(filled)
    }

    async fn update_group(
        &self,
        id: GroupId,
        patch: GroupPatch,
        trace: Option<TraceParent>,
    ) -> StoreResult<Group> {
        Ok(write!(self, |ctx| ops::update_group(ctx, id, patch, trace)))
    }

    async fn add_group_receivers(
        &self,
        id: GroupId,
        ids: Vec<ReceiverId>,
        trace: Option<TraceParent>,
    ) -> StoreResult<Group> {
        Ok(write!(self, |ctx| ops::add_receivers(ctx, id, ids, trace)))
    }

    async fn remove_group_receiver(
        &self,
        id: GroupId,
        receiver: ReceiverId,
        trace: Option<TraceParent>,
    ) -> StoreResult<Group> {
        Ok(write!(self, |ctx| ops::remove_receiver(
            ctx, id, receiver, trace
        )))
    }

    async fn group_status(&self, id: GroupId, unit: Unit) -> StoreResult<GroupStatus> {
        // One snapshot for the group and its receivers' latest events.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(db("starting a read"))?;
        let group = rows::require_group(&mut tx, id, Lock::None).await?;
        let mut receivers = Vec::with_capacity(group.receiver_ids.len());
        for r in &group.receiver_ids {
            receivers.push(ReceiverStatus {
                receiver_id: *r,
                latest: rows::latest(&mut tx, *r, &unit).await?,
            });
        }
        tx.commit().await.map_err(db("finishing a read"))?;
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
    }

    async fn list_completions(
        &self,
        id: GroupId,
        page: PageRequest,
    ) -> StoreResult<Vec<Completion>> {
        let mut conn = self.conn().await?;
        rows::require_group(&mut conn, id, Lock::None).await?;
        let mut q = ListQuery::new("completions", rows::COMPLETION_COLUMNS);
        q.eq("group_id", Some(Param::Text(id.to_string())));
        q.run(&mut conn, &page, rows::completion_row).await
    }

    async fn outbox_head(&self) -> StoreResult<u64> {
        let row = query("SELECT COALESCE(MAX(seq), 0)::BIGINT FROM outbox")
            .fetch_one(&self.pool)
            .await
            .map_err(db("reading the outbox head"))?;
        let n: i64 = row.try_get(0).map_err(db("reading the outbox head"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn outbox_after(&self, after_seq: u64, limit: u32) -> StoreResult<Vec<OutboxMessage>> {
        let mut conn = self.conn().await?;
        rows::outbox_after(&mut conn, &self.cache, after_seq, limit).await
    }

    async fn outbox_deliverable(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<OutboxMessage>> {
        let mut conn = self.conn().await?;
        rows::outbox_deliverable(&mut conn, &self.cache, after_seq, limit).await
    }

    async fn outbox_count_after(&self, after_seq: u64) -> StoreResult<u64> {
        let row = query("SELECT COUNT(*) FROM outbox WHERE seq > $1")
            .bind(seq_param(after_seq))
            .fetch_one(&self.pool)
            .await
            .map_err(db("counting outbox messages"))?;
        let n: i64 = row.try_get(0).map_err(db("counting outbox messages"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn lease_sink(&self, sink: &str) -> StoreResult<Option<Box<dyn SinkLease>>> {
        // A session advisory lock on a connection of its own, taken out of
        // the pool: held while that session lives, released by the server
        // when the connection closes or the node dies. The two-key form
        // keeps it apart from the unit locks (one `bigint` key).
        let context = "taking a sink lease";
        let mut conn = self.conn().await?.detach();
        let got: bool = query("SELECT pg_try_advisory_lock($1, hashtext($2))")
            .bind(SINK_LOCK_CLASS)
            .bind(sink)
            .fetch_one(&mut conn)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(db(context))?;
        if got {
            Ok(Some(Box::new(PgSinkLease { conn })))
        } else {
            let _ = sqlx_core::connection::Connection::close(conn).await;
            Ok(None)
        }
    }

    async fn sink_cursor(&self, sink: &str) -> StoreResult<u64> {
        let row = query("SELECT last_seq FROM outbox_cursors WHERE sink = $1")
            .bind(sink)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reading a sink cursor"))?;
        match row {
            None => Ok(0),
            Some(r) => {
                let n: i64 = r.try_get(0).map_err(db("reading a sink cursor"))?;
                Ok(u64::try_from(n).unwrap_or(0))
            }
        }
    }

    async fn advance_sink_cursor(&self, sink: &str, seq: u64) -> StoreResult<()> {
        advance_cursor(&self.pool, sink, seq).await
    }

    async fn record_dead_letter(&self, letter: DeadLetter) -> StoreResult<()> {
        let context = "recording a dead letter";
        let mut tx = self.pool.begin().await.map_err(db(context))?;
        query(
            "INSERT INTO outbox_dead_letters
                 (sink, seq, message_id, attempts, last_error, failed_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (sink, seq) DO UPDATE SET attempts = excluded.attempts,
                 last_error = excluded.last_error, failed_at = excluded.failed_at",
        )
        .bind(&letter.sink)
        .bind(seq_param(letter.seq))
        .bind(letter.message_id.to_string())
        .bind(i32::try_from(letter.attempts).unwrap_or(i32::MAX))
        .bind(&letter.last_error)
        .bind(letter.failed_at.micros())
        .execute(&mut *tx)
        .await
        .map_err(db(context))?;
        query("DELETE FROM outbox_replays WHERE sink = $1 AND seq = $2")
            .bind(&letter.sink)
            .bind(seq_param(letter.seq))
            .execute(&mut *tx)
            .await
            .map_err(db(context))?;
        advance_cursor(&mut *tx, &letter.sink, letter.seq).await?;
        tx.commit().await.map_err(db(context))
    }

    async fn dead_letters(&self, sink: Option<String>, limit: u32) -> StoreResult<Vec<DeadLetter>> {
        let context = "listing dead letters";
        let rows = query(
            "SELECT sink, seq, message_id, attempts, last_error, failed_at
             FROM outbox_dead_letters WHERE $1::text IS NULL OR sink = $1
             ORDER BY seq, sink LIMIT $2",
        )
        .bind(sink)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db(context))?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get(2).map_err(db(context))?;
                let seq: i64 = r.try_get(1).map_err(db(context))?;
                let attempts: i32 = r.try_get(3).map_err(db(context))?;
                Ok(DeadLetter {
                    sink: r.try_get(0).map_err(db(context))?,
                    seq: u64::try_from(seq).unwrap_or(0),
                    message_id: cairn_domain::MessageId::parse(&id).ok_or_else(|| {
                        StoreError::Internal(format!("dead letter id {id:?} is not a ULID"))
                    })?,
                    attempts: u32::try_from(attempts).unwrap_or(0),
                    last_error: r.try_get(4).map_err(db(context))?,
                    failed_at: cairn_domain::Timestamp::from_micros(
                        r.try_get(5).map_err(db(context))?,
                    ),
                })
            })
            .collect()
    }

    async fn replay_dead_letter(&self, sink: &str, seq: u64) -> StoreResult<()> {
        let context = "queueing a replay";
        let mut tx = self.pool.begin().await.map_err(db(context))?;
        let taken = query("DELETE FROM outbox_dead_letters WHERE sink = $1 AND seq = $2")
            .bind(sink)
            .bind(seq_param(seq))
            .execute(&mut *tx)
            .await
            .map_err(db(context))?;
        if taken.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "no dead letter at position {seq} for sink {sink:?}"
            )));
        }
        query("INSERT INTO outbox_replays (sink, seq) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(sink)
            .bind(seq_param(seq))
            .execute(&mut *tx)
            .await
            .map_err(db(context))?;
        tx.commit().await.map_err(db(context))
    }

    async fn sink_replays(&self, sink: &str, limit: u32) -> StoreResult<Vec<OutboxMessage>> {
        let mut conn = self.conn().await?;
        rows::outbox_replays(&mut conn, &self.cache, sink, limit).await
    }

    async fn finish_replay(&self, sink: &str, seq: u64) -> StoreResult<()> {
        query("DELETE FROM outbox_replays WHERE sink = $1 AND seq = $2")
            .bind(sink)
            .bind(seq_param(seq))
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(db("finishing a replay"))
    }

    async fn check(&self) -> StoreResult<()> {
        query("SELECT 1")
            .fetch_one(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Unavailable(format!("PostgreSQL at {}: {e}", self.target)))
    }

    async fn close(&self) {
        // Writes already queued are still written; then the writers stop.
        drop(
            self.events
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
        for task in self.writers.lock().await.drain(..) {
            let _ = task.await;
        }
        self.pool.close().await;
    }
}

/// First key of the two-key advisory locks that elect a sink's relay
/// ("cair"); the second is `hashtext(sink name)`.
const SINK_LOCK_CLASS: i32 = 0x6361_6972;

/// A sink lease on PostgreSQL: the session holding the advisory lock.
struct PgSinkLease {
    conn: PgConnection,
}

#[async_trait]
impl SinkLease for PgSinkLease {
    async fn held(&mut self) -> bool {
        query("SELECT 1").execute(&mut self.conn).await.is_ok()
    }
}

fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

async fn advance_cursor<'c, E>(executor: E, sink: &str, seq: u64) -> StoreResult<()>
where
    E: sqlx_core::executor::Executor<'c, Database = sqlx_postgres::Postgres>,
{
    query(
        "INSERT INTO outbox_cursors (sink, last_seq) VALUES ($1, $2)
         ON CONFLICT (sink) DO UPDATE
             SET last_seq = GREATEST(outbox_cursors.last_seq, excluded.last_seq)",
    )
    .bind(sink)
    .bind(seq_param(seq))
    .execute(executor)
    .await
    .map(|_| ())
    .map_err(db("advancing a sink cursor"))
}
