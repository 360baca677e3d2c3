//! Row mapping and the lookups both the write operations and the readers
//! need. Every function takes a connection, which may be a transaction's.

use crate::cache::ReceiverRow;
use crate::{Completion, ReceiverCache, StoreError, StoreResult};
use cairn_domain::completion::Latest;
use cairn_domain::{
    CompletionId, Event, EventId, Group, GroupId, JsonText, Receiver, ReceiverId, Text, Timestamp,
    Unit,
};
use sqlx_core::query::query;
use sqlx_core::row::Row;
use sqlx_postgres::{PgConnection, PgRow};
use std::sync::Arc;

/// Map a database error to a store error carrying what was being done.
/// Losing the server is `Unavailable`; anything else is `Internal`.
pub fn db(context: &'static str) -> impl Fn(sqlx_core::Error) -> StoreError {
    move |e| match e {
        sqlx_core::Error::Io(_)
        | sqlx_core::Error::PoolTimedOut
        | sqlx_core::Error::PoolClosed
        | sqlx_core::Error::WorkerCrashed => StoreError::Unavailable(format!("{context}: {e}")),
        other => StoreError::Internal(format!("{context}: {other}")),
    }
}

pub fn col<'r, T>(row: &'r PgRow, idx: usize) -> StoreResult<T>
where
    T: sqlx_core::decode::Decode<'r, sqlx_postgres::Postgres>
        + sqlx_core::types::Type<sqlx_postgres::Postgres>,
{
    row.try_get(idx)
        .map_err(|e| StoreError::Internal(format!("reading column {idx}: {e}")))
}

macro_rules! id_getter {
    ($fn:ident, $ty:ty, $what:literal) => {
        pub fn $fn(row: &PgRow, idx: usize) -> StoreResult<$ty> {
            let s: String = col(row, idx)?;
            <$ty>::parse(&s).ok_or_else(|| {
                StoreError::Internal(format!("stored {} id {s:?} is not a ULID", $what))
            })
        }
    };
}
id_getter!(receiver_id, ReceiverId, "receiver");
id_getter!(event_id, EventId, "event");
id_getter!(group_id, GroupId, "group");
id_getter!(completion_id, CompletionId, "completion");

fn text(row: &PgRow, idx: usize) -> StoreResult<Text> {
    Ok(Text::from_stored(col::<String>(row, idx)?))
}

pub fn time(row: &PgRow, idx: usize) -> StoreResult<Timestamp> {
    Ok(Timestamp::from_micros(col::<i64>(row, idx)?))
}

pub const RECEIVER_COLUMNS: &str =
    "id, name, type, version, description, schema, fingerprint, created_at, owner";

pub fn receiver_row(row: &PgRow) -> StoreResult<ReceiverRow> {
    Ok(ReceiverRow {
        id: receiver_id(row, 0)?,
        name: col(row, 1)?,
        type_: col(row, 2)?,
        version: col(row, 3)?,
        description: col(row, 4)?,
        schema: col(row, 5)?,
        fingerprint: col(row, 6)?,
        created_at: time(row, 7)?,
        owner: col(row, 8)?,
    })
}

/// The stored receivers among `ids`, in one query.
pub async fn load_receivers(
    conn: &mut PgConnection,
    cache: &ReceiverCache,
    ids: &[ReceiverId],
) -> StoreResult<Vec<Arc<Receiver>>> {
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let rows = query(
        "SELECT id, name, type, version, description, schema, fingerprint, created_at, owner
         FROM receivers WHERE id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(db("reading receivers"))?;
    rows.iter()
        .map(|r| receiver_row(r).and_then(|r| cache.materialise(r).map_err(StoreError::Internal)))
        .collect()
}

pub async fn load_receiver(
    conn: &mut PgConnection,
    cache: &ReceiverCache,
    id: ReceiverId,
) -> StoreResult<Option<Arc<Receiver>>> {
    if let Some(r) = cache.get(id) {
        return Ok(Some(r));
    }
    let row = query(
        "SELECT id, name, type, version, description, schema, fingerprint, created_at, owner
         FROM receivers WHERE id = $1",
    )
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db("reading a receiver"))?;
    row.map(|r| receiver_row(&r).and_then(|r| cache.materialise(r).map_err(StoreError::Internal)))
        .transpose()
}

/// The five unit columns starting at column `first`.
pub fn unit_at(row: &PgRow, first: usize) -> StoreResult<Unit> {
    Ok(Unit {
        name: text(row, first)?,
        version: text(row, first + 1)?,
        release: text(row, first + 2)?,
        platform_id: text(row, first + 3)?,
        package: text(row, first + 4)?,
    })
}

pub const EVENT_COLUMNS: &str = "id, name, version, release, platform_id, package, description, payload, success, receiver_id, created_at";

pub fn event_row(row: &PgRow) -> StoreResult<Event> {
    event_at(row, 0)
}

/// The [`EVENT_COLUMNS`] starting at column `first`.
fn event_at(row: &PgRow, first: usize) -> StoreResult<Event> {
    Ok(Event {
        id: event_id(row, first)?,
        unit: unit_at(row, first + 1)?,
        description: text(row, first + 6)?,
        payload: JsonText::from_stored(col(row, first + 7)?),
        success: col(row, first + 8)?,
        receiver_id: receiver_id(row, first + 9)?,
        created_at: time(row, first + 10)?,
    })
}

pub async fn load_event(conn: &mut PgConnection, id: EventId) -> StoreResult<Option<Event>> {
    query(
        "SELECT id, name, version, release, platform_id, package, description, payload, success,
                receiver_id, created_at
         FROM events WHERE id = $1",
    )
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db("reading an event"))?
    .map(|r| event_row(&r))
    .transpose()
}

pub const GROUP_COLUMNS: &str =
    "id, name, type, version, description, enabled, created_at, updated_at, owner";

/// A group row ([`GROUP_COLUMNS`]) without its receivers (filled by
/// [`fill_receivers`]).
pub fn group_row(row: &PgRow) -> StoreResult<Group> {
    Ok(Group {
        id: group_id(row, 0)?,
        name: text(row, 1)?,
        type_: text(row, 2)?,
        version: text(row, 3)?,
        description: text(row, 4)?,
        enabled: col(row, 5)?,
        receiver_ids: Vec::new(),
        created_at: time(row, 6)?,
        updated_at: time(row, 7)?,
        owner: col(row, 8)?,
    })
}

pub async fn group_receivers(conn: &mut PgConnection, id: GroupId) -> StoreResult<Vec<ReceiverId>> {
    query("SELECT receiver_id FROM group_receivers WHERE group_id = $1 ORDER BY position")
        .bind(id.to_string())
        .fetch_all(&mut *conn)
        .await
        .map_err(db("reading group receivers"))?
        .iter()
        .map(|r| receiver_id(r, 0))
        .collect()
}

pub async fn fill_receivers(conn: &mut PgConnection, mut group: Group) -> StoreResult<Group> {
    group.receiver_ids = group_receivers(conn, group.id).await?;
    Ok(group)
}

/// Read a group; with `Lock::Update`, also lock its row for a change.
pub async fn load_group(
    conn: &mut PgConnection,
    id: GroupId,
    lock: Lock,
) -> StoreResult<Option<Group>> {
    let sql = match lock {
        Lock::None => {
            "SELECT id, name, type, version, description, enabled, created_at, updated_at, owner
             FROM groups WHERE id = $1"
        }
        Lock::Update => {
            "SELECT id, name, type, version, description, enabled, created_at, updated_at, owner
             FROM groups WHERE id = $1 FOR UPDATE"
        }
    };
    let row = query(sql)
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db("reading a group"))?;
    match row {
        Some(r) => Ok(Some(fill_receivers(conn, group_row(&r)?).await?)),
        None => Ok(None),
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Lock {
    None,
    Update,
}

pub async fn require_group(conn: &mut PgConnection, id: GroupId, lock: Lock) -> StoreResult<Group> {
    load_group(conn, id, lock)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no group with id {id}")))
}

/// The latest event (by id order) of a receiver for a unit.
pub async fn latest(
    conn: &mut PgConnection,
    receiver: ReceiverId,
    unit: &Unit,
) -> StoreResult<Option<Latest>> {
    let row = query(
        "SELECT id, success FROM events
         WHERE name = $2 AND version = $3 AND release = $4 AND platform_id = $5
           AND package = $6 AND receiver_id = $1
         ORDER BY id DESC LIMIT 1",
    )
    .bind(receiver.to_string())
    .bind(unit.name.as_str())
    .bind(unit.version.as_str())
    .bind(unit.release.as_str())
    .bind(unit.platform_id.as_str())
    .bind(unit.package.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db("finding the latest event for a unit"))?;
    row.map(|r| {
        Ok(Latest {
            event_id: event_id(&r, 0)?,
            success: col(&r, 1)?,
        })
    })
    .transpose()
}

pub async fn completion_exists(
    conn: &mut PgConnection,
    group: GroupId,
    unit: &Unit,
) -> StoreResult<bool> {
    let row = query(
        "SELECT 1 FROM completions
         WHERE group_id = $1 AND name = $2 AND version = $3 AND release = $4
           AND platform_id = $5 AND package = $6",
    )
    .bind(group.to_string())
    .bind(unit.name.as_str())
    .bind(unit.version.as_str())
    .bind(unit.release.as_str())
    .bind(unit.platform_id.as_str())
    .bind(unit.package.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db("checking for a recorded completion"))?;
    Ok(row.is_some())
}

pub const COMPLETION_COLUMNS: &str =
    "id, name, version, release, platform_id, package, completed_at, event_id";

pub fn completion_row(row: &PgRow) -> StoreResult<Completion> {
    Ok(Completion {
        id: completion_id(row, 0)?,
        unit: unit_at(row, 1)?,
        completed_at: time(row, 6)?,
        event_id: event_id(row, 7)?,
    })
}

/// Read and render outbox messages after `after_seq`.
pub async fn outbox_after(
    conn: &mut PgConnection,
    cache: &ReceiverCache,
    after_seq: u64,
    limit: u32,
) -> StoreResult<Vec<crate::OutboxMessage>> {
    let raw = query(
        "SELECT o.seq, o.id, o.type, o.ordering_key, o.event_id, o.message, o.created_at,
                e.id, e.name, e.version, e.release, e.platform_id, e.package, e.description,
                e.payload, e.success, e.receiver_id, e.created_at, o.traceparent
         FROM outbox o LEFT JOIN events e ON e.id = o.event_id
         WHERE o.seq > $1 ORDER BY o.seq LIMIT $2",
    )
    .bind(i64::try_from(after_seq).unwrap_or(i64::MAX))
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await
    .map_err(db("reading the outbox"))?;
    render_outbox(conn, cache, raw).await
}

/// Read and render outbox messages after `after_seq` whose position no
/// transaction still in flight can undercut (docs/delivery.md): read the
/// last position handed out, then the next transaction id to be assigned
/// (`pg_current_xact_id()` of a transaction of its own); every transaction
/// holding a position up to that one took its id (at its first write,
/// always before its outbox row) below it. Once the oldest transaction
/// still running is at or above it, all of them have ended, and the rows
/// up to that position are final. Waits (polling, up to [`HORIZON_WAIT`])
/// for that on the same horizon: a fresh one per try would never be passed
/// under steady writes. Returns nothing (try again later) if an older
/// transaction is still running after that; xids are cluster-wide, so a
/// long transaction in any database delays delivery.
pub async fn outbox_deliverable(
    conn: &mut PgConnection,
    cache: &ReceiverCache,
    after_seq: u64,
    limit: u32,
) -> StoreResult<Vec<crate::OutboxMessage>> {
    let last: Option<i64> =
        query("SELECT pg_sequence_last_value(pg_get_serial_sequence('outbox', 'seq'))")
            .fetch_one(&mut *conn)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(db("reading the outbox position"))?;
    let Some(last) = last else {
        return Ok(Vec::new());
    };
    // The next transaction id to be handed out: every transaction that
    // already holds a position <= `last` took its id before that position
    // and so has a smaller one. (A snapshot's xmax is not this: it is the
    // latest *completed* id + 1, and transactions still running may hold
    // larger ids; waiting on it let the relay pass positions in flight.)
    // Taking it costs this one-statement transaction an id of its own.
    let horizon: i64 = query("SELECT pg_current_xact_id()::text::bigint")
        .fetch_one(&mut *conn)
        .await
        .and_then(|r| r.try_get(0))
        .map_err(db("reading the transaction horizon"))?;
    let deadline = std::time::Instant::now() + HORIZON_WAIT;
    loop {
        let xmin: i64 = query("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            .fetch_one(&mut *conn)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(db("reading the transaction horizon"))?;
        if xmin >= horizon {
            break;
        }
        if std::time::Instant::now() >= deadline {
            return Ok(Vec::new());
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let raw = query(
        "SELECT o.seq, o.id, o.type, o.ordering_key, o.event_id, o.message, o.created_at,
                e.id, e.name, e.version, e.release, e.platform_id, e.package, e.description,
                e.payload, e.success, e.receiver_id, e.created_at, o.traceparent
         FROM outbox o LEFT JOIN events e ON e.id = o.event_id
         WHERE o.seq > $1 AND o.seq <= $3
           AND pg_snapshot_xmin(pg_current_snapshot())::text::bigint >= $4
         ORDER BY o.seq LIMIT $2",
    )
    .bind(i64::try_from(after_seq).unwrap_or(i64::MAX))
    .bind(i64::from(limit))
    .bind(last)
    .bind(horizon)
    .fetch_all(&mut *conn)
    .await
    .map_err(db("reading the outbox"))?;
    render_outbox(conn, cache, raw).await
}

/// How long [`outbox_deliverable`] waits for the transactions in flight
/// when it was called to end.
pub const HORIZON_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Read and render the messages queued for replay to `sink`.
pub async fn outbox_replays(
    conn: &mut PgConnection,
    cache: &ReceiverCache,
    sink: &str,
    limit: u32,
) -> StoreResult<Vec<crate::OutboxMessage>> {
    let raw = query(
        "SELECT o.seq, o.id, o.type, o.ordering_key, o.event_id, o.message, o.created_at,
                e.id, e.name, e.version, e.release, e.platform_id, e.package, e.description,
                e.payload, e.success, e.receiver_id, e.created_at, o.traceparent
         FROM outbox_replays r JOIN outbox o ON o.seq = r.seq
              LEFT JOIN events e ON e.id = o.event_id
         WHERE r.sink = $1 ORDER BY o.seq LIMIT $2",
    )
    .bind(sink)
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await
    .map_err(db("reading the replay queue"))?;
    render_outbox(conn, cache, raw).await
}

/// Render outbox rows: the seven outbox columns, then the
/// [`EVENT_COLUMNS`] of the referenced event (NULL for stored messages),
/// then the outbox row's `traceparent`.
async fn render_outbox(
    conn: &mut PgConnection,
    cache: &ReceiverCache,
    raw: Vec<PgRow>,
) -> StoreResult<Vec<crate::OutboxMessage>> {
    let mut out = Vec::with_capacity(raw.len());
    for r in &raw {
        let seq: i64 = col(r, 0)?;
        let id: String = col(r, 1)?;
        let id = cairn_domain::MessageId::parse(&id).ok_or_else(|| {
            StoreError::Internal(format!("outbox message id {id:?} is not a ULID"))
        })?;
        let message: Option<String> = col(r, 5)?;
        let event: Option<String> = col(r, 4)?;
        let trace: Option<String> = col(r, 18)?;
        let trace = crate::outbox_trace(seq, trace.as_deref())?;
        let json = match (message, event) {
            (Some(json), _) => json,
            (None, Some(eid)) => {
                let joined: Option<String> = col(r, 7)?;
                if joined.is_none() {
                    return Err(StoreError::Internal(format!(
                        "outbox names missing event {eid}"
                    )));
                }
                // The event's columns come with the row (LEFT JOIN).
                let event = event_at(r, 7)?;
                let receiver = load_receiver(conn, cache, event.receiver_id)
                    .await?
                    .ok_or_else(|| {
                        StoreError::Internal(format!("event {eid} names a missing receiver"))
                    })?;
                cairn_domain::message::event_created(
                    id,
                    time(r, 6)?,
                    &event,
                    &receiver,
                    trace.as_ref(),
                )
                .json
            }
            (None, None) => return Err(crate::empty_outbox_row(seq)),
        };
        out.push(crate::OutboxMessage {
            seq: u64::try_from(seq).unwrap_or(0),
            id,
            type_: col(r, 2)?,
            ordering_key: col(r, 3)?,
            created_at: time(r, 6)?,
            trace,
            json,
        });
    }
    Ok(out)
}
