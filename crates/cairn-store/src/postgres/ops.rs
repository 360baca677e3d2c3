//! The write operations, each run inside one transaction (READ COMMITTED).
//!
//! Several nodes may write to one database, so correctness comes from
//! locks and constraints only (see docs/postgres.md):
//!
//! - events take a transaction-scoped advisory lock per unit (sorted), so
//!   writers of one unit queue up and each sees its predecessors' events;
//! - an event's transaction locks its receivers `FOR SHARE` and the groups
//!   containing them `FOR SHARE`; group changes lock the group row
//!   `FOR UPDATE` and, when they add members, the added receivers
//!   `FOR NO KEY UPDATE` first. Lock order is always units, receivers,
//!   groups, so the two never deadlock;
//! - a completion is inserted with `ON CONFLICT DO NOTHING` on its unique
//!   (group, unit) key, and its message is written only when the row was.

use super::rows::{self, Lock, db};
use crate::clock::Clock;
use crate::{ReceiverCache, StoreError, StoreResult};
use cairn_domain::completion::{self, Latest};
use cairn_domain::group::GroupPatch;
use cairn_domain::message::{self, Message};
use cairn_domain::{
    CheckedEvent, CompletionId, Event, EventId, FieldErrors, Group, GroupId, MessageId, NewGroup,
    NewReceiver, Receiver, ReceiverId, Timestamp, Unit,
};
use sqlx_core::query::query;
use sqlx_core::row::Row;
use sqlx_postgres::PgConnection;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use ulid::Ulid;

/// What a write operation works with: its transaction's connection, the
/// node's clock and the receiver cache.
pub struct WriteCtx<'a> {
    pub conn: &'a mut PgConnection,
    pub clock: &'a Mutex<Clock>,
    pub cache: &'a ReceiverCache,
}

impl WriteCtx<'_> {
    fn next(&self) -> (Timestamp, Ulid) {
        self.clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .next()
    }

    fn observe(&self, floor: Ulid) {
        self.clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .observe(floor);
    }

    fn next_message_id(&self) -> MessageId {
        MessageId::new(self.next().1)
    }
}

/// The text a unit's advisory-lock key is hashed from: the five fields
/// joined by the ASCII unit separator. Two units that hash alike merely
/// share a lock.
fn unit_lock_text(u: &Unit) -> String {
    [
        u.name.as_str(),
        u.version.as_str(),
        u.release.as_str(),
        u.platform_id.as_str(),
        u.package.as_str(),
    ]
    .join("\u{1f}")
}

/// Take the transaction-scoped advisory lock of every distinct unit, in
/// ascending key order so two batches never wait on each other in a cycle.
async fn lock_units(ctx: &mut WriteCtx<'_>, units: &[&Unit]) -> StoreResult<()> {
    let texts: Vec<String> = units
        .iter()
        .map(|u| unit_lock_text(u))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let keys = query("SELECT DISTINCT hashtextextended(u, 0) FROM unnest($1::text[]) AS u")
        .bind(texts)
        .fetch_all(&mut *ctx.conn)
        .await
        .map_err(db("hashing unit lock keys"))?;
    let mut keys: Vec<i64> = keys
        .iter()
        .map(|r| r.try_get::<i64, _>(0))
        .collect::<Result<_, _>>()
        .map_err(db("hashing unit lock keys"))?;
    keys.sort_unstable();
    for key in keys {
        query("SELECT pg_advisory_xact_lock($1)")
            .bind(key)
            .execute(&mut *ctx.conn)
            .await
            .map_err(db("locking a unit"))?;
    }
    Ok(())
}

/// Make this node's next ids exceed every event id already committed for
/// the unit (another node's clock may be ahead of ours). Called with the
/// unit's lock held, so ids increase in commit order per unit.
async fn raise_floor(ctx: &mut WriteCtx<'_>, u: &Unit) -> StoreResult<()> {
    let row = query(
        "SELECT max(id) FROM events
         WHERE name = $1 AND version = $2 AND release = $3 AND platform_id = $4 AND package = $5",
    )
    .bind(u.name.as_str())
    .bind(u.version.as_str())
    .bind(u.release.as_str())
    .bind(u.platform_id.as_str())
    .bind(u.package.as_str())
    .fetch_one(&mut *ctx.conn)
    .await
    .map_err(db("reading a unit's newest event id"))?;
    let max: Option<String> = row
        .try_get(0)
        .map_err(db("reading a unit's newest event id"))?;
    if let Some(max) = max {
        let floor = Ulid::from_string(&max).map_err(|e| {
            StoreError::Internal(format!("stored event id {max:?} is not a ULID: {e}"))
        })?;
        ctx.observe(floor);
    }
    Ok(())
}

/// Record an event's message by reference: same id, time and content as
/// [`message::event_created`] renders when the outbox is read.
async fn write_event_message(
    ctx: &mut WriteCtx<'_>,
    event: &Event,
    receiver: &Receiver,
) -> StoreResult<()> {
    let id = ctx.next_message_id();
    query(
        "INSERT INTO outbox (id, type, ordering_key, event_id, created_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id.to_string())
    .bind(receiver.type_.as_str())
    .bind(message::unit_key(&event.unit))
    .bind(event.id.to_string())
    .bind(event.created_at.micros())
    .execute(&mut *ctx.conn)
    .await
    .map_err(db("writing an outbox message"))?;
    Ok(())
}

async fn write_message(ctx: &mut WriteCtx<'_>, msg: &Message) -> StoreResult<()> {
    query(
        "INSERT INTO outbox (id, type, ordering_key, message, created_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(msg.id.to_string())
    .bind(msg.type_.as_str())
    .bind(msg.ordering_key.as_str())
    .bind(msg.json.as_str())
    .bind(msg.time.micros())
    .execute(&mut *ctx.conn)
    .await
    .map_err(db("writing an outbox message"))?;
    Ok(())
}

pub async fn insert_receiver(
    ctx: &mut WriteCtx<'_>,
    new: NewReceiver,
) -> StoreResult<Arc<Receiver>> {
    let (now, ulid) = ctx.next();
    let fingerprint = new.fingerprint();
    let receiver = Receiver {
        id: ReceiverId::new(ulid),
        name: new.name,
        type_: new.type_,
        version: new.version,
        description: new.description,
        schema: new.schema,
        fingerprint,
        created_at: now,
    };
    query(
        "INSERT INTO receivers (id, name, type, version, description, schema, fingerprint, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(receiver.id.to_string())
    .bind(receiver.name.as_str())
    .bind(receiver.type_.as_str())
    .bind(receiver.version.as_str())
    .bind(receiver.description.as_str())
    .bind(receiver.schema.text().as_str())
    .bind(receiver.fingerprint.as_str())
    .bind(now.micros())
    .execute(&mut *ctx.conn)
    .await
    .map_err(db("inserting a receiver"))?;
    let id = ctx.next_message_id();
    write_message(ctx, &message::receiver_created(id, &receiver)).await?;
    Ok(Arc::new(receiver))
}

/// The groups containing `receiver`, locked `FOR SHARE` (in id order) so
/// that a concurrent change of any of them waits for this transaction, or
/// this one for it. Disabled groups are filtered only after the lock.
async fn groups_of(ctx: &mut WriteCtx<'_>, receiver: ReceiverId) -> StoreResult<Vec<Group>> {
    let found = query(
        "SELECT g.id, g.name, g.type, g.version, g.description, g.enabled, g.created_at,
                g.updated_at
         FROM groups g JOIN group_receivers gr ON gr.group_id = g.id
         WHERE gr.receiver_id = $1
         ORDER BY g.id
         FOR SHARE OF g",
    )
    .bind(receiver.to_string())
    .fetch_all(&mut *ctx.conn)
    .await
    .map_err(db("reading the groups of a receiver"))?;
    let mut groups = Vec::with_capacity(found.len());
    for row in &found {
        let group = rows::group_row(row)?;
        if group.enabled {
            groups.push(rows::fill_receivers(ctx.conn, group).await?);
        }
    }
    Ok(groups)
}

pub async fn insert_events(
    ctx: &mut WriteCtx<'_>,
    events: Vec<CheckedEvent>,
) -> StoreResult<Vec<EventId>> {
    let units: Vec<&Unit> = events.iter().map(|c| &c.event().unit).collect();
    lock_units(ctx, &units).await?;
    let receivers: Vec<String> = events
        .iter()
        .map(|c| c.event().receiver_id.to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    query("SELECT id FROM receivers WHERE id = ANY($1) ORDER BY id FOR SHARE")
        .bind(receivers)
        .fetch_all(&mut *ctx.conn)
        .await
        .map_err(db("locking receivers"))?;
    let mut seen: Vec<&Unit> = Vec::new();
    for u in units {
        if !seen.contains(&u) {
            raise_floor(ctx, u).await?;
            seen.push(u);
        }
    }

    let mut groups: HashMap<ReceiverId, Vec<Group>> = HashMap::new();
    let mut ids = Vec::with_capacity(events.len());
    let mut completions = 0u64;
    for checked in &events {
        let (now, ulid) = ctx.next();
        let event = checked.to_event(EventId::new(ulid), now);
        let receiver = checked.receiver();
        let u = &event.unit;
        query(
            "INSERT INTO events (id, receiver_id, name, version, release, platform_id, package,
                                 description, payload, success, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(event.id.to_string())
        .bind(event.receiver_id.to_string())
        .bind(u.name.as_str())
        .bind(u.version.as_str())
        .bind(u.release.as_str())
        .bind(u.platform_id.as_str())
        .bind(u.package.as_str())
        .bind(event.description.as_str())
        .bind(event.payload.as_str())
        .bind(event.success)
        .bind(now.micros())
        .execute(&mut *ctx.conn)
        .await
        .map_err(db("inserting an event"))?;
        write_event_message(ctx, &event, receiver).await?;
        if completion::may_complete(event.success) {
            let of_receiver = match groups.get(&event.receiver_id) {
                Some(found) => found.clone(),
                None => {
                    let found = groups_of(ctx, event.receiver_id).await?;
                    groups.insert(event.receiver_id, found.clone());
                    found
                }
            };
            for group in &of_receiver {
                if evaluate(ctx, group, &event.unit, Some((&event, receiver))).await? {
                    completions += 1;
                }
            }
        }
        ids.push(event.id);
    }
    metrics::counter!("cairn_completions_recorded_total").increment(completions);
    Ok(ids)
}

/// Apply the completion rule for one group and unit, recording the
/// completion (and its message) when it newly holds. `trigger` is the event
/// just written, if any, to avoid reading it back.
async fn evaluate(
    ctx: &mut WriteCtx<'_>,
    group: &Group,
    unit: &Unit,
    trigger: Option<(&Event, &Arc<Receiver>)>,
) -> StoreResult<bool> {
    if !group.enabled || rows::completion_exists(ctx.conn, group.id, unit).await? {
        return Ok(false);
    }
    let mut latest: HashMap<ReceiverId, Latest> = HashMap::with_capacity(group.receiver_ids.len());
    for r in &group.receiver_ids {
        if let Some(l) = rows::latest(ctx.conn, *r, unit).await? {
            latest.insert(*r, l);
        }
    }
    let Some(completing) = completion::evaluate(group.enabled, &group.receiver_ids, |r| {
        latest.get(&r).copied()
    }) else {
        return Ok(false);
    };
    let (event, receiver) = match trigger {
        Some((e, r)) if e.id == completing => (e.clone(), r.clone()),
        _ => {
            let e = rows::load_event(ctx.conn, completing)
                .await?
                .ok_or_else(|| {
                    StoreError::Internal(format!("completing event {completing} vanished"))
                })?;
            let r = rows::load_receiver(ctx.conn, ctx.cache, e.receiver_id)
                .await?
                .ok_or_else(|| {
                    StoreError::Internal(format!(
                        "receiver {} of event {completing} vanished",
                        e.receiver_id
                    ))
                })?;
            (e, r)
        }
    };
    let (now, ulid) = ctx.next();
    let inserted = query(
        "INSERT INTO completions (id, group_id, name, version, release, platform_id, package,
                                  event_id, completed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT ON CONSTRAINT completions_once DO NOTHING",
    )
    .bind(CompletionId::new(ulid).to_string())
    .bind(group.id.to_string())
    .bind(unit.name.as_str())
    .bind(unit.version.as_str())
    .bind(unit.release.as_str())
    .bind(unit.platform_id.as_str())
    .bind(unit.package.as_str())
    .bind(completing.to_string())
    .bind(now.micros())
    .execute(&mut *ctx.conn)
    .await
    .map_err(db("recording a completion"))?
    .rows_affected();
    if inserted == 0 {
        // Another transaction recorded it first: its message is written.
        return Ok(false);
    }
    let msg_id = ctx.next_message_id();
    write_message(
        ctx,
        &message::group_completed(msg_id, now, group, &event, &receiver),
    )
    .await?;
    Ok(true)
}

/// Re-evaluate every unit that has events for the group's receivers.
/// A unit can only be complete if it has an event for every receiver, so
/// the units of the first receiver are the candidates.
async fn reevaluate(ctx: &mut WriteCtx<'_>, group: &Group) -> StoreResult<u64> {
    let Some(first) = group.receiver_ids.first() else {
        return Ok(0);
    };
    if !group.enabled {
        return Ok(0);
    }
    let found = query(
        "SELECT DISTINCT name, version, release, platform_id, package
         FROM events WHERE receiver_id = $1",
    )
    .bind(first.to_string())
    .fetch_all(&mut *ctx.conn)
    .await
    .map_err(db("listing units of a receiver"))?;
    let units = found
        .iter()
        .map(|r| rows::unit_at(r, 0))
        .collect::<StoreResult<Vec<Unit>>>()?;
    let mut recorded = 0;
    for unit in &units {
        if evaluate(ctx, group, unit, None).await? {
            recorded += 1;
        }
    }
    metrics::counter!("cairn_completions_recorded_total").increment(recorded);
    Ok(recorded)
}

/// Lock the named receivers `FOR NO KEY UPDATE` (in id order): an event of
/// one of them that is being written finishes first, and one written later
/// sees the membership this transaction adds. Returns the ids that exist.
async fn lock_receivers(
    ctx: &mut WriteCtx<'_>,
    ids: &[ReceiverId],
) -> StoreResult<BTreeSet<ReceiverId>> {
    let wanted: Vec<String> = ids
        .iter()
        .map(ReceiverId::to_string)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let found = query("SELECT id FROM receivers WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
        .bind(wanted)
        .fetch_all(&mut *ctx.conn)
        .await
        .map_err(db("checking receivers"))?;
    found.iter().map(|r| rows::receiver_id(r, 0)).collect()
}

/// Every id must name a stored receiver; errors name `event_receiver_ids[i]`.
fn check_receivers_exist(ids: &[ReceiverId], existing: &BTreeSet<ReceiverId>) -> StoreResult<()> {
    let mut errors = FieldErrors::default();
    for (i, id) in ids.iter().enumerate() {
        if !existing.contains(id) {
            errors.push(
                format!("event_receiver_ids[{i}]"),
                format!("no event receiver with id \"{id}\""),
            );
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Invalid(errors))
    }
}

async fn insert_memberships(
    ctx: &mut WriteCtx<'_>,
    group: GroupId,
    ids: &[ReceiverId],
    first_position: i64,
) -> StoreResult<()> {
    for (i, id) in ids.iter().enumerate() {
        let position = first_position + i64::try_from(i).unwrap_or(i64::MAX);
        query("INSERT INTO group_receivers (group_id, receiver_id, position) VALUES ($1, $2, $3)")
            .bind(group.to_string())
            .bind(id.to_string())
            .bind(i32::try_from(position).unwrap_or(i32::MAX))
            .execute(&mut *ctx.conn)
            .await
            .map_err(db("adding group receivers"))?;
    }
    Ok(())
}

pub async fn insert_group(ctx: &mut WriteCtx<'_>, new: NewGroup) -> StoreResult<Group> {
    let existing = lock_receivers(ctx, &new.receiver_ids).await?;
    check_receivers_exist(&new.receiver_ids, &existing)?;
    let (now, ulid) = ctx.next();
    let group = Group {
        id: GroupId::new(ulid),
        name: new.name,
        type_: new.type_,
        version: new.version,
        description: new.description,
        enabled: new.enabled,
        receiver_ids: new.receiver_ids,
        created_at: now,
        updated_at: now,
    };
    query(
        "INSERT INTO groups (id, name, type, version, description, enabled, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(group.id.to_string())
    .bind(group.name.as_str())
    .bind(group.type_.as_str())
    .bind(group.version.as_str())
    .bind(group.description.as_str())
    .bind(group.enabled)
    .bind(now.micros())
    .execute(&mut *ctx.conn)
    .await
    .map_err(db("inserting a group"))?;
    insert_memberships(ctx, group.id, &group.receiver_ids, 0).await?;
    let msg_id = ctx.next_message_id();
    write_message(ctx, &message::group_changed(msg_id, &group, true)).await?;
    reevaluate(ctx, &group).await?;
    Ok(group)
}

/// Persist a changed group's fields, bump `updated_at`, write the
/// `.modified` message and re-evaluate completions. The group row is
/// already locked `FOR UPDATE`.
async fn save_changed(ctx: &mut WriteCtx<'_>, mut group: Group) -> StoreResult<Group> {
    let (now, _) = ctx.next();
    group.updated_at = now;
    query(
        "UPDATE groups SET name = $2, type = $3, version = $4, description = $5, enabled = $6,
                           updated_at = $7
         WHERE id = $1",
    )
    .bind(group.id.to_string())
    .bind(group.name.as_str())
    .bind(group.type_.as_str())
    .bind(group.version.as_str())
    .bind(group.description.as_str())
    .bind(group.enabled)
    .bind(now.micros())
    .execute(&mut *ctx.conn)
    .await
    .map_err(db("updating a group"))?;
    let msg_id = ctx.next_message_id();
    write_message(ctx, &message::group_changed(msg_id, &group, false)).await?;
    reevaluate(ctx, &group).await?;
    Ok(group)
}

pub async fn update_group(
    ctx: &mut WriteCtx<'_>,
    id: GroupId,
    patch: GroupPatch,
) -> StoreResult<Group> {
    let mut group = rows::require_group(ctx.conn, id, Lock::Update).await?;
    group.apply(&patch);
    save_changed(ctx, group).await
}

pub async fn add_receivers(
    ctx: &mut WriteCtx<'_>,
    id: GroupId,
    ids: Vec<ReceiverId>,
) -> StoreResult<Group> {
    // Receivers before the group: the order every transaction locks in.
    let existing = lock_receivers(ctx, &ids).await?;
    let mut group = rows::require_group(ctx.conn, id, Lock::Update).await?;
    check_receivers_exist(&ids, &existing)?;
    let fresh = group.additions(ids)?;
    if fresh.is_empty() {
        // Nothing to add: not a change, so no new `updated_at` or message.
        return Ok(group);
    }
    let row = query(
        "SELECT COALESCE(MAX(position) + 1, 0)::BIGINT FROM group_receivers WHERE group_id = $1",
    )
    .bind(id.to_string())
    .fetch_one(&mut *ctx.conn)
    .await
    .map_err(db("adding group receivers"))?;
    let next_position: i64 = row.try_get(0).map_err(db("adding group receivers"))?;
    insert_memberships(ctx, id, &fresh, next_position).await?;
    group.receiver_ids.extend(fresh);
    save_changed(ctx, group).await
}

pub async fn remove_receiver(
    ctx: &mut WriteCtx<'_>,
    id: GroupId,
    receiver: ReceiverId,
) -> StoreResult<Group> {
    let mut group = rows::require_group(ctx.conn, id, Lock::Update).await?;
    group.check_removal(receiver)?;
    query("DELETE FROM group_receivers WHERE group_id = $1 AND receiver_id = $2")
        .bind(id.to_string())
        .bind(receiver.to_string())
        .execute(&mut *ctx.conn)
        .await
        .map_err(db("removing a group receiver"))?;
    group.receiver_ids.retain(|r| *r != receiver);
    save_changed(ctx, group).await
}
