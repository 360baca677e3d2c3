//! The operations behind both API surfaces (REST routes and GraphQL
//! resolvers): parse loose input into domain types with every rule of the
//! domain, then call the store. Neither surface validates anything itself,
//! so both report the same field errors and a refused write stores nothing.

use crate::error::ApiError;
use cairn_domain::group::{GroupPatch, GroupPatchInput, ReceiverIdsInput};
use cairn_domain::{
    CheckedEvent, EventId, EventInput, FieldErrors, Group, GroupId, GroupInput, NewGroup,
    NewReceiver, Receiver, ReceiverId, ReceiverInput, Unit,
};
use cairn_store::{GroupStatus, Store};
use std::collections::HashSet;
use std::sync::Arc;

pub async fn create_receiver(
    store: &dyn Store,
    input: ReceiverInput,
) -> Result<ReceiverId, ApiError> {
    let receiver = NewReceiver::parse(input)?;
    Ok(store.create_receiver(receiver).await?.id)
}

/// Apply every event rule at once (fields, receiver, schema).
pub async fn check_event(store: &dyn Store, input: EventInput) -> Result<CheckedEvent, ApiError> {
    let receiver = match input.receiver_hint() {
        Some(id) => store.receiver(id).await?,
        None => None,
    };
    Ok(CheckedEvent::parse(input, receiver)?)
}

pub async fn create_event(store: &dyn Store, input: EventInput) -> Result<EventId, ApiError> {
    let checked = check_event(store, input).await?;
    let ids = store.create_events(vec![checked]).await?;
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

pub async fn create_group(store: &dyn Store, input: GroupInput) -> Result<GroupId, ApiError> {
    let known = existing(store, input.receiver_hints()).await?;
    let group = NewGroup::parse(input, |id| known.contains(&id))?;
    Ok(store.create_group(group).await?.id)
}

pub async fn patch_group(
    store: &dyn Store,
    id: GroupId,
    input: GroupPatchInput,
) -> Result<Group, ApiError> {
    let patch = GroupPatch::parse(input)?;
    Ok(store.update_group(id, patch).await?)
}

pub async fn add_group_receivers(
    store: &dyn Store,
    id: GroupId,
    input: ReceiverIdsInput,
) -> Result<Group, ApiError> {
    let known = existing(store, input.receiver_hints()).await?;
    let ids = input.parse(|id| known.contains(&id))?;
    Ok(store.add_group_receivers(id, ids).await?)
}

pub async fn remove_group_receiver(
    store: &dyn Store,
    id: GroupId,
    receiver: ReceiverId,
) -> Result<Group, ApiError> {
    Ok(store.remove_group_receiver(id, receiver).await?)
}

/// A group's status for one unit; the unit's five fields come from `get`.
pub async fn group_status<'a>(
    store: &dyn Store,
    id: GroupId,
    get: impl Fn(&str) -> Option<&'a str>,
) -> Result<GroupStatus, ApiError> {
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
