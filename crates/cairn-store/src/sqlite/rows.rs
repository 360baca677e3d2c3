//! Row mapping and the lookups both the writer and the readers need.

use crate::cache::ReceiverRow;
use crate::{Completion, ReceiverCache, StoreError, StoreResult};
use cairn_domain::completion::Latest;
use cairn_domain::{
    CompletionId, Event, EventId, Group, GroupId, JsonText, Receiver, ReceiverId, Text, Timestamp,
    Unit,
};
use rusqlite::{Connection, OptionalExtension, Row, params};
use std::sync::Arc;

pub fn db(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::Internal(format!("{context}: {e}"))
}

fn bad_id(what: &str, s: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("stored {what} id {s:?} is not a ULID").into(),
    )
}

macro_rules! id_getter {
    ($fn:ident, $ty:ty, $what:literal) => {
        pub fn $fn(row: &Row<'_>, idx: usize) -> rusqlite::Result<$ty> {
            let s: String = row.get(idx)?;
            <$ty>::parse(&s).ok_or_else(|| bad_id($what, &s))
        }
    };
}
id_getter!(receiver_id, ReceiverId, "receiver");
id_getter!(event_id, EventId, "event");
id_getter!(group_id, GroupId, "group");
id_getter!(completion_id, CompletionId, "completion");

pub const RECEIVER_COLUMNS: &str =
    "id, name, type, version, description, schema, fingerprint, created_at, owner";

pub fn receiver_row(row: &Row<'_>) -> rusqlite::Result<ReceiverRow> {
    Ok(ReceiverRow {
        id: receiver_id(row, 0)?,
        name: row.get(1)?,
        type_: row.get(2)?,
        version: row.get(3)?,
        description: row.get(4)?,
        schema: row.get(5)?,
        fingerprint: row.get(6)?,
        created_at: Timestamp::from_micros(row.get(7)?),
        owner: row.get(8)?,
    })
}

pub fn load_receiver(
    conn: &Connection,
    cache: &ReceiverCache,
    id: ReceiverId,
) -> StoreResult<Option<Arc<Receiver>>> {
    if let Some(r) = cache.get(id) {
        return Ok(Some(r));
    }
    let row = conn
        .prepare_cached(&format!(
            "SELECT {RECEIVER_COLUMNS} FROM receivers WHERE id = ?1"
        ))
        .and_then(|mut st| st.query_row([id.to_string()], receiver_row).optional())
        .map_err(db("reading a receiver"))?;
    row.map(|r| cache.materialise(r).map_err(StoreError::Internal))
        .transpose()
}

/// The stored receivers among `ids` (one statement per 500 ids).
pub fn load_receivers(
    conn: &Connection,
    cache: &ReceiverCache,
    ids: &[ReceiverId],
) -> StoreResult<Vec<Arc<Receiver>>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let marks = vec!["?"; chunk.len()].join(", ");
        let params: Vec<String> = chunk.iter().map(ToString::to_string).collect();
        let rows = conn
            .prepare(&format!(
                "SELECT {RECEIVER_COLUMNS} FROM receivers WHERE id IN ({marks})"
            ))
            .and_then(|mut st| {
                st.query_map(rusqlite::params_from_iter(params.iter()), receiver_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(db("reading receivers"))?;
        for row in rows {
            out.push(cache.materialise(row).map_err(StoreError::Internal)?);
        }
    }
    Ok(out)
}

/// The five unit columns starting at column `first`.
pub fn unit_at(row: &Row<'_>, first: usize) -> rusqlite::Result<Unit> {
    Ok(Unit {
        name: Text::from_stored(row.get(first)?),
        version: Text::from_stored(row.get(first + 1)?),
        release: Text::from_stored(row.get(first + 2)?),
        platform_id: Text::from_stored(row.get(first + 3)?),
        package: Text::from_stored(row.get(first + 4)?),
    })
}

pub const EVENT_COLUMNS: &str = "id, name, version, release, platform_id, package, description, payload, success, receiver_id, created_at";

pub fn event_row(row: &Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        id: event_id(row, 0)?,
        unit: unit_at(row, 1)?,
        description: Text::from_stored(row.get(6)?),
        payload: JsonText::from_stored(row.get(7)?),
        success: row.get(8)?,
        receiver_id: receiver_id(row, 9)?,
        created_at: Timestamp::from_micros(row.get(10)?),
    })
}

pub fn load_event(conn: &Connection, id: EventId) -> StoreResult<Option<Event>> {
    conn.prepare_cached(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?1"))
        .and_then(|mut st| st.query_row([id.to_string()], event_row).optional())
        .map_err(db("reading an event"))
}

pub const GROUP_COLUMNS: &str =
    "id, name, type, version, description, enabled, created_at, updated_at, owner";

/// A group row without its receivers (filled by [`fill_receivers`]).
pub fn group_row(row: &Row<'_>) -> rusqlite::Result<Group> {
    Ok(Group {
        id: group_id(row, 0)?,
        name: Text::from_stored(row.get(1)?),
        type_: Text::from_stored(row.get(2)?),
        version: Text::from_stored(row.get(3)?),
        description: Text::from_stored(row.get(4)?),
        enabled: row.get(5)?,
        receiver_ids: Vec::new(),
        created_at: Timestamp::from_micros(row.get(6)?),
        updated_at: Timestamp::from_micros(row.get(7)?),
        owner: row.get(8)?,
    })
}

pub fn group_receivers(conn: &Connection, id: GroupId) -> StoreResult<Vec<ReceiverId>> {
    let mut st = conn
        .prepare_cached(
            "SELECT receiver_id FROM group_receivers WHERE group_id = ?1 ORDER BY position",
        )
        .map_err(db("reading group receivers"))?;
    let ids = st
        .query_map([id.to_string()], |r| receiver_id(r, 0))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db("reading group receivers"))?;
    Ok(ids)
}

pub fn fill_receivers(conn: &Connection, mut group: Group) -> StoreResult<Group> {
    group.receiver_ids = group_receivers(conn, group.id)?;
    Ok(group)
}

pub fn load_group(conn: &Connection, id: GroupId) -> StoreResult<Option<Group>> {
    let group = conn
        .prepare_cached(&format!("SELECT {GROUP_COLUMNS} FROM groups WHERE id = ?1"))
        .and_then(|mut st| st.query_row([id.to_string()], group_row).optional())
        .map_err(db("reading a group"))?;
    group.map(|g| fill_receivers(conn, g)).transpose()
}

pub fn require_group(conn: &Connection, id: GroupId) -> StoreResult<Group> {
    load_group(conn, id)?.ok_or_else(|| StoreError::NotFound(format!("no group with id {id}")))
}

/// The latest event (by id order) of a receiver for a unit.
pub fn latest(conn: &Connection, receiver: ReceiverId, unit: &Unit) -> StoreResult<Option<Latest>> {
    conn.prepare_cached(
        "SELECT id, success FROM events
         WHERE name = ?2 AND version = ?3 AND release = ?4 AND platform_id = ?5
           AND package = ?6 AND receiver_id = ?1
         ORDER BY seq DESC LIMIT 1",
    )
    .and_then(|mut st| {
        st.query_row(
            params![
                receiver.to_string(),
                unit.name.as_str(),
                unit.version.as_str(),
                unit.release.as_str(),
                unit.platform_id.as_str(),
                unit.package.as_str()
            ],
            |r| {
                Ok(Latest {
                    event_id: event_id(r, 0)?,
                    success: r.get(1)?,
                })
            },
        )
        .optional()
    })
    .map_err(db("finding the latest event for a unit"))
}

pub fn completion_exists(conn: &Connection, group: GroupId, unit: &Unit) -> StoreResult<bool> {
    conn.prepare_cached(
        "SELECT 1 FROM completions
         WHERE group_id = ?1 AND name = ?2 AND version = ?3 AND release = ?4
           AND platform_id = ?5 AND package = ?6",
    )
    .and_then(|mut st| {
        st.exists(params![
            group.to_string(),
            unit.name.as_str(),
            unit.version.as_str(),
            unit.release.as_str(),
            unit.platform_id.as_str(),
            unit.package.as_str()
        ])
    })
    .map_err(db("checking for a recorded completion"))
}

pub const COMPLETION_COLUMNS: &str =
    "id, name, version, release, platform_id, package, completed_at, event_id";

pub fn completion_row(row: &Row<'_>) -> rusqlite::Result<Completion> {
    Ok(Completion {
        id: completion_id(row, 0)?,
        unit: unit_at(row, 1)?,
        completed_at: Timestamp::from_micros(row.get(6)?),
        event_id: event_id(row, 7)?,
    })
}

/// Read and render outbox messages after `after_seq`.
pub fn outbox_after(
    conn: &Connection,
    cache: &ReceiverCache,
    after_seq: u64,
    limit: u32,
) -> StoreResult<Vec<crate::OutboxMessage>> {
    outbox_query(
        conn,
        cache,
        "SELECT seq, id, type, ordering_key, event_id, message, created_at, traceparent
         FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        params![i64::try_from(after_seq).unwrap_or(i64::MAX), limit],
    )
}

/// Read and render the messages queued for replay to `sink`.
pub fn outbox_replays(
    conn: &Connection,
    cache: &ReceiverCache,
    sink: &str,
    limit: u32,
) -> StoreResult<Vec<crate::OutboxMessage>> {
    outbox_query(
        conn,
        cache,
        "SELECT o.seq, o.id, o.type, o.ordering_key, o.event_id, o.message, o.created_at,
                o.traceparent
         FROM outbox_replays r JOIN outbox o ON o.seq = r.seq
         WHERE r.sink = ?1 ORDER BY o.seq LIMIT ?2",
        params![sink, limit],
    )
}

/// Run `sql` (selecting the outbox columns in `outbox_after`'s order) and
/// render each row.
fn outbox_query(
    conn: &Connection,
    cache: &ReceiverCache,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> StoreResult<Vec<crate::OutboxMessage>> {
    let mut st = conn.prepare_cached(sql).map_err(db("reading the outbox"))?;
    let raw = st
        .query_map(params, |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, Option<String>>(7)?,
            ))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db("reading the outbox"))?;
    raw.into_iter()
        .map(
            |(seq, id, type_, ordering_key, event_id, message, time, trace)| {
                let id = cairn_domain::MessageId::parse(&id).ok_or_else(|| {
                    StoreError::Internal(format!("outbox message id {id:?} is not a ULID"))
                })?;
                let trace = crate::outbox_trace(seq, trace.as_deref())?;
                let json = match (message, event_id) {
                    (Some(json), _) => json,
                    (None, Some(eid)) => {
                        let eid = EventId::parse(&eid).ok_or_else(|| {
                            StoreError::Internal(format!("outbox event id {eid:?} is not a ULID"))
                        })?;
                        let event = load_event(conn, eid)?.ok_or_else(|| {
                            StoreError::Internal(format!("outbox names missing event {eid}"))
                        })?;
                        let receiver =
                            load_receiver(conn, cache, event.receiver_id)?.ok_or_else(|| {
                                StoreError::Internal(format!(
                                    "event {eid} names a missing receiver"
                                ))
                            })?;
                        cairn_domain::message::event_created(
                            id,
                            Timestamp::from_micros(time),
                            &event,
                            &receiver,
                            trace.as_ref(),
                        )
                        .json
                    }
                    (None, None) => return Err(crate::empty_outbox_row(seq)),
                };
                Ok(crate::OutboxMessage {
                    seq: u64::try_from(seq).unwrap_or(0),
                    id,
                    type_,
                    ordering_key,
                    created_at: Timestamp::from_micros(time),
                    trace,
                    json,
                })
            },
        )
        .collect()
}
