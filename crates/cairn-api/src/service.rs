//! The operations behind both API surfaces (REST routes and GraphQL
//! resolvers): parse loose input into domain types with every rule of the
//! domain, then call the store. Neither surface validates anything itself,
//! so both report the same field errors and a refused write stores nothing.
//!
//! Every operation takes the [`Caller`] and asks it for the permission it
//! needs (`cairn_domain::access::decide` through [`Caller::require`]),
//! with the receiver or group acted on as the target where there is one,
//! so REST and GraphQL enforce one policy.

use crate::auth::Caller;
use crate::error::ApiError;
use cairn_domain::access::{Action, ObjectRef, Permission, Resource, Target};
use cairn_domain::group::{GroupPatch, GroupPatchInput, ReceiverIdsInput};
use cairn_domain::{
    CheckedEvent, EventId, EventInput, FieldErrors, Group, GroupId, GroupInput, NewGroup,
    NewReceiver, Receiver, ReceiverId, ReceiverInput, Unit,
};
use cairn_store::{GroupStatus, Store};
use std::collections::HashSet;
use std::sync::Arc;

/// The caller must hold `resource:action` everywhere (reads, creating
/// receivers and groups).
pub async fn require(caller: &Caller, resource: Resource, action: Action) -> Result<(), ApiError> {
    caller
        .require(Permission::new(resource, action), None)
        .await
}

pub async fn create_receiver(
    store: &dyn Store,
    caller: &Caller,
    input: ReceiverInput,
) -> Result<ReceiverId, ApiError> {
    require(caller, Resource::Receivers, Action::Create).await?;
    let mut receiver = NewReceiver::parse(input)?;
    receiver.owner = caller.owner();
    receiver.trace = caller.trace;
    Ok(store.create_receiver(receiver).await?.id)
}

/// Apply every event rule at once (fields, receiver, schema), then the
/// caller must hold `events:create` on the event's receiver (everywhere,
/// as its owner, or by a grant).
pub async fn check_event(
    store: &dyn Store,
    caller: &Caller,
    input: EventInput,
) -> Result<CheckedEvent, ApiError> {
    caller
        .require_somewhere(Permission::new(Resource::Events, Action::Create))
        .await?;
    let receiver = match input.receiver_hint() {
        Some(id) => store.receiver(id).await?,
        None => None,
    };
    let type_ = receiver.as_ref().map(|r| r.type_.as_str().to_owned());
    // Kept only when it will be logged (scrubbed) on refusal.
    let payload = tracing::enabled!(tracing::Level::DEBUG)
        .then(|| input.payload.as_ref().map(|p| p.get().to_owned()))
        .flatten();
    let checked = match CheckedEvent::parse(input, receiver) {
        Ok(c) => c,
        Err(errors) => {
            crate::metrics::events_ingested(type_.as_deref(), "invalid", 1);
            if let Some(payload) = payload {
                tracing::debug!(
                    receiver_type = type_.as_deref().unwrap_or("unknown"),
                    payload = %crate::edge::scrub::global().json_text(&payload),
                    "event refused: invalid input"
                );
            }
            return Err(errors.into());
        }
    };
    let receiver = checked.receiver();
    let allowed = caller
        .require(
            Permission::new(Resource::Events, Action::Create),
            Some(Target {
                object: ObjectRef::Receiver(receiver.id),
                owner: receiver.owner.as_deref(),
            }),
        )
        .await;
    if let Err(e) = allowed {
        crate::metrics::events_ingested(type_.as_deref(), "refused", 1);
        return Err(e);
    }
    // Its message (and a completion it causes) names the request's span.
    Ok(checked.with_trace(caller.trace))
}

/// Store checked events, counting them by receiver type and outcome.
pub async fn store_events(
    store: &dyn Store,
    events: Vec<CheckedEvent>,
) -> Result<Vec<EventId>, ApiError> {
    let mut types: Vec<(String, u64)> = Vec::new();
    for e in &events {
        let t = e.receiver().type_.as_str();
        match types.iter_mut().find(|(k, _)| k == t) {
            Some((_, n)) => *n += 1,
            None => types.push((t.to_owned(), 1)),
        }
    }
    let result = store.create_events(events).await;
    let outcome = if result.is_ok() { "accepted" } else { "failed" };
    for (t, n) in &types {
        crate::metrics::events_ingested(Some(t), outcome, *n);
    }
    Ok(result?)
}

pub async fn create_event(
    store: &dyn Store,
    caller: &Caller,
    input: EventInput,
) -> Result<EventId, ApiError> {
    let checked = check_event(store, caller, input).await?;
    let ids = store_events(store, vec![checked]).await?;
    ids.first()
        .copied()
        .ok_or_else(|| ApiError::Internal("the store returned no id for a created event".into()))
}

/// Which of these well-formed ids name stored receivers (one store call).
async fn existing(
    store: &dyn Store,
    ids: Vec<ReceiverId>,
) -> Result<HashSet<ReceiverId>, ApiError> {
    Ok(store
        .receivers(ids)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect())
}

pub async fn create_group(
    store: &dyn Store,
    caller: &Caller,
    input: GroupInput,
) -> Result<GroupId, ApiError> {
    require(caller, Resource::Groups, Action::Create).await?;
    let known = existing(store, input.receiver_hints()).await?;
    let mut group = NewGroup::parse(input, |id| known.contains(&id))?;
    group.owner = caller.owner();
    group.trace = caller.trace;
    Ok(store.create_group(group).await?.id)
}

/// The caller must hold `groups:update` on this group (everywhere, as its
/// owner, or by a grant); 404 when there is no such group.
async fn may_update_group(store: &dyn Store, caller: &Caller, id: GroupId) -> Result<(), ApiError> {
    let permission = Permission::new(Resource::Groups, Action::Update);
    caller.require_somewhere(permission).await?;
    let group = store
        .group(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no group with id {:?}", id.to_string())))?;
    caller
        .require(
            permission,
            Some(Target {
                object: ObjectRef::Group(id),
                owner: group.owner.as_deref(),
            }),
        )
        .await
}

pub async fn patch_group(
    store: &dyn Store,
    caller: &Caller,
    id: GroupId,
    input: GroupPatchInput,
) -> Result<Group, ApiError> {
    may_update_group(store, caller, id).await?;
    let patch = GroupPatch::parse(input)?;
    Ok(store.update_group(id, patch, caller.trace).await?)
}

pub async fn add_group_receivers(
    store: &dyn Store,
    caller: &Caller,
    id: GroupId,
    input: ReceiverIdsInput,
) -> Result<Group, ApiError> {
    may_update_group(store, caller, id).await?;
    let known = existing(store, input.receiver_hints()).await?;
    let ids = input.parse(|id| known.contains(&id))?;
    Ok(store.add_group_receivers(id, ids, caller.trace).await?)
}

pub async fn remove_group_receiver(
    store: &dyn Store,
    caller: &Caller,
    id: GroupId,
    receiver: ReceiverId,
) -> Result<Group, ApiError> {
    may_update_group(store, caller, id).await?;
    Ok(store
        .remove_group_receiver(id, receiver, caller.trace)
        .await?)
}

/// A group's status for one unit; the unit's five fields come from `get`.
pub async fn group_status<'a>(
    store: &dyn Store,
    caller: &Caller,
    id: GroupId,
    get: impl Fn(&str) -> Option<&'a str>,
) -> Result<GroupStatus, ApiError> {
    require(caller, Resource::Groups, Action::Read).await?;
    let mut errors = FieldErrors::default();
    let Some(unit) = Unit::parse_fields(get, &mut errors) else {
        return Err(errors.into());
    };
    Ok(store.group_status(id, unit).await?)
}

/// The receivers of these events, in the same order (one store call).
pub async fn receivers_of(
    store: &dyn Store,
    events: &[cairn_domain::Event],
) -> Result<Vec<Arc<Receiver>>, ApiError> {
    let mut wanted: Vec<ReceiverId> = events.iter().map(|e| e.receiver_id).collect();
    wanted.sort();
    wanted.dedup();
    let found = store.receivers(wanted).await?;
    let by_id: std::collections::HashMap<ReceiverId, Arc<Receiver>> =
        found.into_iter().map(|r| (r.id, r)).collect();
    events
        .iter()
        .map(|e| {
            by_id.get(&e.receiver_id).cloned().ok_or_else(|| {
                ApiError::Internal(format!(
                    "receiver {} of event {} is missing",
                    e.receiver_id, e.id
                ))
            })
        })
        .collect()
}
