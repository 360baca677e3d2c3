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
    NewReceiver, Receiver, ReceiverId, Timestamp, TraceParent, Unit,
};
use sqlx_core::query::query;
use sqlx_core::row::Row;
use sqlx_postgres::PgConnection;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use tracing::Instrument;
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
/// One statement: the keys are hashed, made distinct and sorted in a
/// materialised CTE, whose scan hands them to `pg_advisory_xact_lock` in
/// that order.
async fn lock_units(ctx: &mut WriteCtx<'_>, units: &[&Unit]) -> StoreResult<()> {
    let texts: Vec<String> = units
        .iter()
        .map(|u| unit_lock_text(u))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    query(
        "WITH k AS MATERIALIZED (
             SELECT DISTINCT hashtextextended(u, 0) AS k FROM unnest($1::text[]) AS u ORDER BY 1)
         SELECT count(pg_advisory_xact_lock(k)) FROM k",
    )
    .bind(texts)
    .execute(&mut *ctx.conn)
    .await
    .map_err(db("locking units"))?;
    Ok(())
}

/// Lock the batch's `receivers` `FOR SHARE` (in id order) and make this
/// node's next ids exceed every event id already committed for the units
/// (another node's clock may be ahead of ours), in one statement. Called
/// with the units' locks held (taken by an earlier statement, so this
/// statement's snapshot sees every event their previous holders
/// committed): ids increase in commit order per unit.
async fn lock_receivers_and_raise_floor(
    ctx: &mut WriteCtx<'_>,
    receivers: &[String],
    units: &[&Unit],
) -> StoreResult<()> {
    let mut cols: [Vec<&str>; 5] = Default::default();
    for u in units {
        cols[0].push(u.name.as_str());
        cols[1].push(u.version.as_str());
        cols[2].push(u.release.as_str());
        cols[3].push(u.platform_id.as_str());
        cols[4].push(u.package.as_str());
    }
    let [names, versions, releases, platforms, packages] = cols;
    let context = "locking receivers and reading the units' newest event ids";
    let row = query(
        "WITH r AS (SELECT id FROM receivers WHERE id = ANY($6) ORDER BY id FOR SHARE)
         SELECT max(m.id), (SELECT count(*) FROM r)
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
              AS u(n, v, r, p, k)
         CROSS JOIN LATERAL (
             SELECT max(id) AS id FROM events
             WHERE name = u.n AND version = u.v AND release = u.r AND platform_id = u.p
               AND package = u.k) AS m",
    )
    .bind(names)
    .bind(versions)
    .bind(releases)
    .bind(platforms)
    .bind(packages)
    .bind(receivers)
    .fetch_one(&mut *ctx.conn)
    .await
    .map_err(db(context))?;
    let max: Option<String> = row.try_get(0).map_err(db(context))?;
    if let Some(max) = max {
        let floor = Ulid::from_string(&max).map_err(|e| {
            StoreError::Internal(format!("stored event id {max:?} is not a ULID: {e}"))
        })?;
        ctx.observe(floor);
    }
    Ok(())
}

async fn write_message(ctx: &mut WriteCtx<'_>, msg: &Message) -> StoreResult<()> {
    query(
        "INSERT INTO outbox (id, type, ordering_key, message, created_at, traceparent)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(msg.id.to_string())
    .bind(msg.type_.as_str())
    .bind(msg.ordering_key.as_str())
    .bind(msg.json.as_str())
    .bind(msg.time.micros())
    .bind(msg.trace.as_ref().map(TraceParent::as_str))
    .execute(&mut *ctx.conn)
    .await
    .map_err(db("writing an outbox message"))?;
    Ok(())
}

pub async fn insert_receiver(
    ctx: &mut WriteCtx<'_>,
    new: NewReceiver,
) -> StoreResult<Arc<Receiver>> {
    let new_trace = new.trace;
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
        owner: new.owner,
    };
    query(
        "INSERT INTO receivers
             (id, name, type, version, description, schema, fingerprint, created_at, owner)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(receiver.id.to_string())
    .bind(receiver.name.as_str())
    .bind(receiver.type_.as_str())
    .bind(receiver.version.as_str())
    .bind(receiver.description.as_str())
    .bind(receiver.schema.text().as_str())
    .bind(receiver.fingerprint.as_str())
    .bind(now.micros())
    .bind(receiver.owner.as_deref())
    .execute(&mut *ctx.conn)
    .await
    .map_err(db("inserting a receiver"))?;
    let id = ctx.next_message_id();
    write_message(
        ctx,
        &message::receiver_created(id, &receiver, new_trace.as_ref()),
    )
    .await?;
    Ok(Arc::new(receiver))
}

/// The enabled groups containing each of `receivers`, locked `FOR SHARE`
/// (all of them in id order) so that a concurrent change of any of them
/// waits for this transaction, or this one for it. Disabled groups are
/// filtered only after the lock.
async fn groups_of(
    ctx: &mut WriteCtx<'_>,
    receivers: &[String],
) -> StoreResult<HashMap<ReceiverId, Vec<Group>>> {
    let mut of: HashMap<ReceiverId, Vec<Group>> = HashMap::new();
    if receivers.is_empty() {
        return Ok(of);
    }
    let found = query(
        "SELECT g.id, g.name, g.type, g.version, g.description, g.enabled, g.created_at,
                g.updated_at, g.owner, gr.receiver_id
         FROM groups g JOIN group_receivers gr ON gr.group_id = g.id
         WHERE gr.receiver_id = ANY($1)
         ORDER BY g.id
         FOR SHARE OF g",
    )
    .bind(receivers)
    .fetch_all(&mut *ctx.conn)
    .await
    .map_err(db("reading the groups of receivers"))?;
    let mut filled: HashMap<GroupId, Group> = HashMap::new();
    for row in &found {
        let group = rows::group_row(row)?;
        if !group.enabled {
            continue;
        }
        let member = rows::receiver_id(row, 9)?;
        let group = match filled.get(&group.id) {
            Some(g) => g.clone(),
            None => {
                let g = rows::fill_receivers(ctx.conn, group).await?;
                filled.insert(g.id, g.clone());
                g
            }
        };
        of.entry(member).or_default().push(group);
    }
    Ok(of)
}

/// Events written but not yet inserted: inserted together, in order, by
/// [`flush`] (one statement for the events and their messages).
#[derive(Default)]
struct Pending<'a> {
    events: Vec<(Event, &'a Arc<Receiver>, MessageId, Option<&'a TraceParent>)>,
}

/// Insert the pending events and their outbox messages (by reference: same
/// id, time and content as [`message::event_created`] renders when the
/// outbox is read), in the order they were written. The events go first,
/// so the transaction has its id before it takes outbox positions
/// (docs/delivery.md), and the messages take positions in event order.
async fn flush(ctx: &mut WriteCtx<'_>, pending: &mut Pending<'_>) -> StoreResult<()> {
    if pending.events.is_empty() {
        return Ok(());
    }
    let n = pending.events.len();
    let mut ids = Vec::with_capacity(n);
    let mut receiver_ids = Vec::with_capacity(n);
    let mut unit_cols: [Vec<&str>; 5] = Default::default();
    let mut descriptions = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    let mut successes = Vec::with_capacity(n);
    let mut times = Vec::with_capacity(n);
    let mut message_ids = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    let mut traces = Vec::with_capacity(n);
    for (event, receiver, message_id, trace) in &pending.events {
        let u = &event.unit;
        ids.push(event.id.to_string());
        receiver_ids.push(event.receiver_id.to_string());
        unit_cols[0].push(u.name.as_str());
        unit_cols[1].push(u.version.as_str());
        unit_cols[2].push(u.release.as_str());
        unit_cols[3].push(u.platform_id.as_str());
        unit_cols[4].push(u.package.as_str());
        descriptions.push(event.description.as_str());
        payloads.push(event.payload.as_str());
        successes.push(event.success);
        times.push(event.created_at.micros());
        message_ids.push(message_id.to_string());
        types.push(receiver.type_.as_str());
        keys.push(message::unit_key(u));
        traces.push(trace.map(TraceParent::as_str));
    }
    let [names, versions, releases, platforms, packages] = unit_cols;
    // One statement: the events (CTE), then their messages. The scalar
    // subquery over `ev` runs once, before the first outbox row is formed,
    // so every event row exists before any message takes its position;
    // the foreign-key checks run at the end of the statement and see them.
    query(
        "WITH ev AS (
             INSERT INTO events (id, receiver_id, name, version, release, platform_id, package,
                                 description, payload, success, created_at)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::text[], $7::text[], $8::text[], $9::text[], $10::bool[],
                                  $11::bigint[])
             RETURNING 1)
         INSERT INTO outbox (id, type, ordering_key, event_id, created_at, traceparent)
         SELECT id, type, k, e, c, tp
         FROM unnest($12::text[], $13::text[], $14::text[], $1::text[], $11::bigint[],
                     $15::text[])
              WITH ORDINALITY AS t(id, type, k, e, c, tp, i)
         WHERE (SELECT count(*) FROM ev) >= 0
         ORDER BY i",
    )
    .bind(&ids)
    .bind(receiver_ids)
    .bind(names)
    .bind(versions)
    .bind(releases)
    .bind(platforms)
    .bind(packages)
    .bind(descriptions)
    .bind(payloads)
    .bind(successes)
    .bind(&times)
    .bind(message_ids)
    .bind(types)
    .bind(keys)
    .bind(traces)
    .execute(&mut *ctx.conn)
    .await
    .map_err(db("inserting events and their outbox messages"))?;
    pending.events.clear();
    Ok(())
}

/// Write the events of several requests in one transaction, in order: the
/// result holds each request's ids. Per unit the effect is that of
/// writing them one at a time: each event that may complete a group is
/// evaluated after every event before it (and none after it) is inserted,
/// and its `.completed` message follows its event's message. Any error
/// leaves the transaction to be rolled back whole.
pub async fn insert_events(
    ctx: &mut WriteCtx<'_>,
    jobs: &[&[CheckedEvent]],
    spans: &[&tracing::Span],
) -> StoreResult<Vec<Vec<EventId>>> {
    let all = || jobs.iter().flat_map(|j| j.iter());
    let mut units: Vec<&Unit> = Vec::new();
    for c in all() {
        let u = &c.event().unit;
        if !units.contains(&u) {
            units.push(u);
        }
    }
    lock_units(ctx, &units).await?;
    let receivers: Vec<String> = all()
        .map(|c| c.event().receiver_id.to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    lock_receivers_and_raise_floor(ctx, &receivers, &units).await?;
    // Only receivers of events that may complete a group need their groups.
    let completing: Vec<String> = all()
        .filter(|c| completion::may_complete(c.event().success))
        .map(|c| c.event().receiver_id.to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let groups = groups_of(ctx, &completing).await?;

    let mut pending = Pending::default();
    let mut ids = Vec::with_capacity(jobs.len());
    let mut completions = 0u64;
    for (j, job) in jobs.iter().enumerate() {
        // Completion checks of this request join its trace.
        let job_span = spans
            .get(j)
            .map(|s| (*s).clone())
            .unwrap_or_else(tracing::Span::none);
        let mut job_ids = Vec::with_capacity(job.len());
        for checked in job.iter() {
            let (now, ulid) = ctx.next();
            let event = checked.to_event(EventId::new(ulid), now);
            let receiver = checked.receiver();
            let trace = checked.trace();
            let message_id = ctx.next_message_id();
            job_ids.push(event.id);
            let of_receiver = if completion::may_complete(event.success) {
                groups.get(&event.receiver_id).filter(|g| !g.is_empty())
            } else {
                None
            };
            match of_receiver {
                None => pending.events.push((event, receiver, message_id, trace)),
                Some(of_receiver) => {
                    pending
                        .events
                        .push((event.clone(), receiver, message_id, trace));
                    flush(ctx, &mut pending).await?;
                    for group in of_receiver {
                        if evaluate(ctx, group, &event.unit, Some((&event, receiver)), trace)
                            .instrument(job_span.clone())
                            .await?
                        {
                            completions += 1;
                        }
                    }
                }
            }
        }
        ids.push(job_ids);
    }
    flush(ctx, &mut pending).await?;
    metrics::counter!("cairn_completions_recorded_total").increment(completions);
    Ok(ids)
}

/// Apply the completion rule for one group and unit, recording the
/// completion (and its message) when it newly holds. `trigger` is the event
/// just written, if any, to avoid reading it back; `trace` the context it
/// was written in, for the completion message.
async fn evaluate(
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
    let done = evaluate_in(ctx, group, unit, trigger, trace)
        .instrument(span.clone())
        .await;
    if let Ok(done) = &done {
        span.record("completed", *done);
    }
    done
}

async fn evaluate_in(
    ctx: &mut WriteCtx<'_>,
    group: &Group,
    unit: &Unit,
    trigger: Option<(&Event, &Arc<Receiver>)>,
    trace: Option<&TraceParent>,
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
        &message::group_completed(msg_id, now, group, &event, &receiver, trace),
    )
    .await?;
    Ok(true)
}

/// Re-evaluate every unit that has events for the group's receivers.
/// A unit can only be complete if it has an event for every receiver, so
/// the units of the first receiver are the candidates.
async fn reevaluate(
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
        if evaluate(ctx, group, unit, None, trace).await? {
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
    let trace = new.trace;
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
        owner: new.owner,
    };
    query(
        "INSERT INTO groups
             (id, name, type, version, description, enabled, created_at, updated_at, owner)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)",
    )
    .bind(group.id.to_string())
    .bind(group.name.as_str())
    .bind(group.type_.as_str())
    .bind(group.version.as_str())
    .bind(group.description.as_str())
    .bind(group.enabled)
    .bind(now.micros())
    .bind(group.owner.as_deref())
    .execute(&mut *ctx.conn)
    .await
    .map_err(db("inserting a group"))?;
    insert_memberships(ctx, group.id, &group.receiver_ids, 0).await?;
    let msg_id = ctx.next_message_id();
    write_message(
        ctx,
        &message::group_changed(msg_id, &group, true, trace.as_ref()),
    )
    .await?;
    reevaluate(ctx, &group, trace.as_ref()).await?;
    Ok(group)
}

/// Persist a changed group's fields, bump `updated_at`, write the
/// `.modified` message and re-evaluate completions. The group row is
/// already locked `FOR UPDATE`. `trace`: the context of the change, for
/// the messages.
async fn save_changed(
    ctx: &mut WriteCtx<'_>,
    mut group: Group,
    trace: Option<&TraceParent>,
) -> StoreResult<Group> {
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
    write_message(ctx, &message::group_changed(msg_id, &group, false, trace)).await?;
    reevaluate(ctx, &group, trace).await?;
    Ok(group)
}

pub async fn update_group(
    ctx: &mut WriteCtx<'_>,
    id: GroupId,
    patch: GroupPatch,
    trace: Option<TraceParent>,
) -> StoreResult<Group> {
    let mut group = rows::require_group(ctx.conn, id, Lock::Update).await?;
    group.apply(&patch);
    save_changed(ctx, group, trace.as_ref()).await
}

pub async fn add_receivers(
    ctx: &mut WriteCtx<'_>,
    id: GroupId,
    ids: Vec<ReceiverId>,
    trace: Option<TraceParent>,
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
    save_changed(ctx, group, trace.as_ref()).await
}

pub async fn remove_receiver(
    ctx: &mut WriteCtx<'_>,
    id: GroupId,
    receiver: ReceiverId,
    trace: Option<TraceParent>,
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
    save_changed(ctx, group, trace.as_ref()).await
}
