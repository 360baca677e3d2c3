//! The write operations, run by the writer inside a transaction.

use super::rows::{self, db};
use super::writer::WriteCtx;
use crate::{StoreError, StoreResult};
use cairn_domain::completion::{self, Latest};
use cairn_domain::group::GroupPatch;
use cairn_domain::message::{self, Message};
use cairn_domain::{
    CheckedEvent, CompletionId, Event, EventId, FieldErrors, Group, GroupId, MessageId, NewGroup,
    NewReceiver, Receiver, ReceiverId, TraceParent, Unit,
};
use rusqlite::params;
use std::collections::HashMap;
use std::sync::Arc;

/// Record an event's message by reference: same id, time and content as
/// [`message::event_created`] renders when the outbox is read.
fn write_event_message(
    ctx: &mut WriteCtx<'_>,
    event: &Event,
    receiver: &Receiver,
    trace: Option<&TraceParent>,
) -> StoreResult<()> {
    let id = next_message_id(ctx);
    ctx.conn
        .prepare_cached(
            "INSERT INTO outbox (id, type, ordering_key, event_id, created_at, traceparent)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .and_then(|mut st| {
            st.execute(params![
                id.to_string(),
                receiver.type_.as_str(),
                message::unit_key(&event.unit),
                event.id.to_string(),
                event.created_at.micros(),
                trace.map(TraceParent::as_str)
            ])
        })
        .map_err(db("writing an outbox message"))?;
    Ok(())
}

fn write_message(ctx: &mut WriteCtx<'_>, msg: &Message) -> StoreResult<()> {
    ctx.conn
        .prepare_cached(
            "INSERT INTO outbox (id, type, ordering_key, message, created_at, traceparent)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .and_then(|mut st| {
            st.execute(params![
                msg.id.to_string(),
                msg.type_,
                msg.ordering_key,
                msg.json,
                msg.time.micros(),
                msg.trace.as_ref().map(TraceParent::as_str)
            ])
        })
        .map_err(db("writing an outbox message"))?;
    Ok(())
}

fn next_message_id(ctx: &mut WriteCtx<'_>) -> MessageId {
    MessageId::new(ctx.clock.next().1)
}

pub fn insert_receiver(ctx: &mut WriteCtx<'_>, new: NewReceiver) -> StoreResult<Arc<Receiver>> {
    let new_trace = new.trace;
    let (now, ulid) = ctx.clock.next();
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
        owner: new.owner,
    };
    ctx.conn
        .prepare_cached(
            "INSERT INTO receivers (id, name, type, version, description, schema, fingerprint,
                                    created_at, owner)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .and_then(|mut st| {
            st.execute(params![
                receiver.id.to_string(),
                receiver.name.as_str(),
                receiver.type_.as_str(),
                receiver.version.as_str(),
                receiver.description.as_str(),
                receiver.schema.text().as_str(),
                receiver.fingerprint,
                now.micros(),
                receiver.owner,
            ])
        })
        .map_err(db("inserting a receiver"))?;
    let id = next_message_id(ctx);
    write_message(
        ctx,
        &message::receiver_created(id, &receiver, new_trace.as_ref()),
    )?;
    Ok(Arc::new(receiver))
}

pub fn insert_events(
    ctx: &mut WriteCtx<'_>,
    events: Vec<CheckedEvent>,
) -> StoreResult<Vec<EventId>> {
    let mut ids = Vec::with_capacity(events.len());
    let mut completions = 0u64;
    for checked in events {
        let (now, ulid) = ctx.clock.next();
        let event = checked.to_event(EventId::new(ulid), now);
        let receiver = checked.receiver();
        let u = &event.unit;
        ctx.conn
            .prepare_cached(
                "INSERT INTO events (id, receiver_id, name, version, release, platform_id, package,
                                     description, payload, success, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    event.id.to_string(),
                    event.receiver_id.to_string(),
                    u.name.as_str(),
                    u.version.as_str(),
                    u.release.as_str(),
                    u.platform_id.as_str(),
                    u.package.as_str(),
                    event.description.as_str(),
                    event.payload.as_str(),
                    event.success,
                    now.micros()
                ])
            })
            .map_err(db("inserting an event"))?;
        let trace = checked.trace();
        write_event_message(ctx, &event, receiver, trace)?;
        if completion::may_complete(event.success) {
            for group_id in ctx
                .memberships
                .enabled_groups_of(ctx.conn, event.receiver_id)?
            {
                let group = rows::require_group(ctx.conn, group_id)?;
                if evaluate(ctx, &group, &event.unit, Some((&event, receiver)), trace)? {
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
/// just written, if any, to avoid reading it back; `trace` the context it
/// was written in, for the completion message.
fn evaluate(
    ctx: &mut WriteCtx<'_>,
    group: &Group,
    unit: &Unit,
    trigger: Option<(&Event, &Arc<Receiver>)>,
    trace: Option<&TraceParent>,
) -> StoreResult<bool> {
    let span = tracing::debug_span!(
        "completion.evaluate",
        group_id = %group.id,
        completed = tracing::field::Empty
    );
    let _entered = span.enter();
    let done = evaluate_in(ctx, group, unit, trigger, trace);
    if let Ok(done) = &done {
        span.record("completed", *done);
    }
    done
}

fn evaluate_in(
    ctx: &mut WriteCtx<'_>,
    group: &Group,
    unit: &Unit,
    trigger: Option<(&Event, &Arc<Receiver>)>,
    trace: Option<&TraceParent>,
) -> StoreResult<bool> {
    if !group.enabled || rows::completion_exists(ctx.conn, group.id, unit)? {
        return Ok(false);
    }
    let mut latest: HashMap<ReceiverId, Latest> = HashMap::with_capacity(group.receiver_ids.len());
    for r in &group.receiver_ids {
        if let Some(l) = rows::latest(ctx.conn, *r, unit)? {
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
            let e = rows::load_event(ctx.conn, completing)?.ok_or_else(|| {
                StoreError::Internal(format!("completing event {completing} vanished"))
            })?;
            let r = rows::load_receiver(ctx.conn, ctx.cache, e.receiver_id)?.ok_or_else(|| {
                StoreError::Internal(format!(
                    "receiver {} of event {completing} vanished",
                    e.receiver_id
                ))
            })?;
            (e, r)
        }
    };
    let (now, ulid) = ctx.clock.next();
    ctx.conn
        .prepare_cached(
            "INSERT INTO completions (id, group_id, name, version, release, platform_id, package,
                                      event_id, completed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .and_then(|mut st| {
            st.execute(params![
                CompletionId::new(ulid).to_string(),
                group.id.to_string(),
                unit.name.as_str(),
                unit.version.as_str(),
                unit.release.as_str(),
                unit.platform_id.as_str(),
                unit.package.as_str(),
                completing.to_string(),
                now.micros()
            ])
        })
        .map_err(db("recording a completion"))?;
    let msg_id = next_message_id(ctx);
    write_message(
        ctx,
        &message::group_completed(msg_id, now, group, &event, &receiver, trace),
    )?;
    Ok(true)
}

/// Re-evaluate every unit that has events for the group's receivers.
/// A unit can only be complete if it has an event for every receiver, so
/// the units of the first receiver are the candidates.
fn reevaluate(
    ctx: &mut WriteCtx<'_>,
    group: &Group,
    trace: Option<&TraceParent>,
) -> StoreResult<u64> {
    let Some(first) = group.receiver_ids.first() else {
        return Ok(0);
    };
    if !group.enabled {
        return Ok(0);
    }
    let units: Vec<Unit> = {
        let mut st = ctx
            .conn
            .prepare_cached(
                "SELECT DISTINCT name, version, release, platform_id, package
                 FROM events WHERE receiver_id = ?1",
            )
            .map_err(db("listing units of a receiver"))?;
        st.query_map([first.to_string()], |r| rows::unit_at(r, 0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(db("listing units of a receiver"))?
    };
    let mut recorded = 0;
    for unit in &units {
        if evaluate(ctx, group, unit, None, trace)? {
            recorded += 1;
        }
    }
    metrics::counter!("cairn_completions_recorded_total").increment(recorded);
    Ok(recorded)
}

/// Every id must name a stored receiver; errors name `event_receiver_ids[i]`.
fn check_receivers_exist(ctx: &WriteCtx<'_>, ids: &[ReceiverId]) -> StoreResult<()> {
    let mut errors = FieldErrors::default();
    let mut st = ctx
        .conn
        .prepare_cached("SELECT 1 FROM receivers WHERE id = ?1")
        .map_err(db("checking receivers"))?;
    for (i, id) in ids.iter().enumerate() {
        if !st
            .exists([id.to_string()])
            .map_err(db("checking receivers"))?
        {
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

fn insert_memberships(
    ctx: &WriteCtx<'_>,
    group: GroupId,
    ids: &[ReceiverId],
    first_position: usize,
) -> StoreResult<()> {
    let mut st = ctx
        .conn
        .prepare_cached(
            "INSERT INTO group_receivers (group_id, receiver_id, position) VALUES (?1, ?2, ?3)",
        )
        .map_err(db("adding group receivers"))?;
    for (i, id) in ids.iter().enumerate() {
        st.execute(params![
            group.to_string(),
            id.to_string(),
            (first_position + i) as i64
        ])
        .map_err(db("adding group receivers"))?;
    }
    Ok(())
}

pub fn insert_group(ctx: &mut WriteCtx<'_>, new: NewGroup) -> StoreResult<Group> {
    check_receivers_exist(ctx, &new.receiver_ids)?;
    let trace = new.trace;
    ctx.memberships.invalidate();
    let (now, ulid) = ctx.clock.next();
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
        owner: new.owner,
    };
    ctx.conn
        .prepare_cached(
            "INSERT INTO groups (id, name, type, version, description, enabled, created_at,
                                 updated_at, owner)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
        )
        .and_then(|mut st| {
            st.execute(params![
                group.id.to_string(),
                group.name.as_str(),
                group.type_.as_str(),
                group.version.as_str(),
                group.description.as_str(),
                group.enabled,
                now.micros(),
                group.owner,
            ])
        })
        .map_err(db("inserting a group"))?;
    insert_memberships(ctx, group.id, &group.receiver_ids, 0)?;
    let msg_id = next_message_id(ctx);
    write_message(
        ctx,
        &message::group_changed(msg_id, &group, true, trace.as_ref()),
    )?;
    reevaluate(ctx, &group, trace.as_ref())?;
    Ok(group)
}

/// Persist a changed group's fields, bump `updated_at`, write the
/// `.modified` message and re-evaluate completions (`trace`: the context
/// of the change, for their messages).
fn save_changed(
    ctx: &mut WriteCtx<'_>,
    mut group: Group,
    trace: Option<&TraceParent>,
) -> StoreResult<Group> {
    ctx.memberships.invalidate();
    let (now, _) = ctx.clock.next();
    group.updated_at = now;
    ctx.conn
        .prepare_cached(
            "UPDATE groups SET name = ?2, type = ?3, version = ?4, description = ?5, enabled = ?6,
                               updated_at = ?7
             WHERE id = ?1",
        )
        .and_then(|mut st| {
            st.execute(params![
                group.id.to_string(),
                group.name.as_str(),
                group.type_.as_str(),
                group.version.as_str(),
                group.description.as_str(),
                group.enabled,
                now.micros()
            ])
        })
        .map_err(db("updating a group"))?;
    let msg_id = next_message_id(ctx);
    write_message(ctx, &message::group_changed(msg_id, &group, false, trace))?;
    reevaluate(ctx, &group, trace)?;
    Ok(group)
}

pub fn update_group(
    ctx: &mut WriteCtx<'_>,
    id: GroupId,
    patch: GroupPatch,
    trace: Option<TraceParent>,
) -> StoreResult<Group> {
    let mut group = rows::require_group(ctx.conn, id)?;
    group.apply(&patch);
    save_changed(ctx, group, trace.as_ref())
}

pub fn add_receivers(
    ctx: &mut WriteCtx<'_>,
    id: GroupId,
    ids: Vec<ReceiverId>,
    trace: Option<TraceParent>,
) -> StoreResult<Group> {
    let mut group = rows::require_group(ctx.conn, id)?;
    check_receivers_exist(ctx, &ids)?;
    let fresh = group.additions(ids)?;
    if fresh.is_empty() {
        // Nothing to add: not a change, so no new `updated_at` or message.
        return Ok(group);
    }
    let next_position: i64 = ctx
        .conn
        .query_row(
            "SELECT COALESCE(MAX(position) + 1, 0) FROM group_receivers WHERE group_id = ?1",
            [id.to_string()],
            |r| r.get(0),
        )
        .map_err(db("adding group receivers"))?;
    insert_memberships(ctx, id, &fresh, usize::try_from(next_position).unwrap_or(0))?;
    group.receiver_ids.extend(fresh);
    save_changed(ctx, group, trace.as_ref())
}

pub fn remove_receiver(
    ctx: &mut WriteCtx<'_>,
    id: GroupId,
    receiver: ReceiverId,
    trace: Option<TraceParent>,
) -> StoreResult<Group> {
    let mut group = rows::require_group(ctx.conn, id)?;
    group.check_removal(receiver)?;
    ctx.conn
        .execute(
            "DELETE FROM group_receivers WHERE group_id = ?1 AND receiver_id = ?2",
            [id.to_string(), receiver.to_string()],
        )
        .map_err(db("removing a group receiver"))?;
    group.receiver_ids.retain(|r| *r != receiver);
    save_changed(ctx, group, trace.as_ref())
}
