use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, envelope, ok};
use crate::extract::{Json, PathArgs, QueryMap};
use crate::page::Page;
use crate::service;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use cairn_domain::access::{Action, Resource};
use cairn_domain::{EventId, EventInput, EventView, ReceiverId, Timestamp};
use cairn_store::EventFilter;
use serde_json::value::RawValue;

/// Most events one batch may carry.
pub const MAX_BATCH: usize = 1000;

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(input): Json<EventInput>,
) -> Result<Response, ApiError> {
    let id = service::create_event(state.store.as_ref(), &caller, input).await?;
    Ok(ok(id))
}

/// All-or-nothing: every item is checked first, and any problem refuses the
/// whole batch with errors prefixed `[i].`.
pub async fn batch(
    State(state): State<AppState>,
    caller: Caller,
    Json(items): Json<Vec<Box<RawValue>>>,
) -> Result<Response, ApiError> {
    if items.is_empty() {
        return Err(ApiError::field("body", "must contain at least one event"));
    }
    if items.len() > MAX_BATCH {
        return Err(ApiError::field(
            "body",
            format!(
                "must contain at most {MAX_BATCH} events, got {}",
                items.len()
            ),
        ));
    }
    let mut checked = Vec::with_capacity(items.len());
    let mut errors: Vec<String> = Vec::new();
    for (i, raw) in items.iter().enumerate() {
        let input: EventInput = match serde_json::from_str(raw.get()) {
            Ok(input) => input,
            Err(_) => {
                errors.push(format!("[{i}]: must be a JSON object"));
                continue;
            }
        };
        match service::check_event(state.store.as_ref(), &caller, input).await {
            Ok(c) => checked.push(c),
            Err(ApiError::Invalid(msgs)) => {
                errors.extend(msgs.into_iter().map(|m| format!("[{i}].{m}")));
            }
            Err(other) => return Err(other),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let ids = service::store_events(state.store.as_ref(), checked).await?;
    Ok(ok(ids))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(id): PathArgs<String>,
) -> Result<Response, ApiError> {
    service::require(&caller, Resource::Events, Action::Read).await?;
    let not_found = || ApiError::NotFound(format!("no event with id {id:?}"));
    let eid = EventId::parse(&id).ok_or_else(not_found)?;
    let event = state.store.event(eid).await?.ok_or_else(not_found)?;
    let receiver = state
        .store
        .receiver(event.receiver_id)
        .await?
        .ok_or_else(|| {
            ApiError::Internal(format!(
                "receiver {} of event {id} is missing",
                event.receiver_id
            ))
        })?;
    Ok(ok([EventView {
        event: &event,
        receiver: &receiver,
    }]))
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    q: QueryMap,
) -> Result<Response, ApiError> {
    service::require(&caller, Resource::Events, Action::Read).await?;
    let mut errors = Vec::new();
    let page = Page::parse(&q, &mut errors);
    let success = q.bool("success", &mut errors);
    let mut time = |name: &str| {
        q.get(name).and_then(|s| {
            let t = Timestamp::parse_rfc3339(s);
            if t.is_none() {
                errors.push(format!("{name}: must be an RFC 3339 timestamp, got {s:?}"));
            }
            t
        })
    };
    let since = time("since");
    let until = time("until");
    let receiver_id = match q.get("event_receiver_id") {
        None => None,
        Some(s) => match ReceiverId::parse(s) {
            Some(id) => Some(id),
            None => {
                errors.push(format!(
                    "event_receiver_id: is not an event receiver id: {s:?}"
                ));
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let filter = EventFilter {
        name: q.text("name"),
        version: q.text("version"),
        release: q.text("release"),
        platform_id: q.text("platform_id"),
        package: q.text("package"),
        success,
        receiver_id,
        since,
        until,
    };
    let mut rows = state.store.list_events(filter, page.request()).await?;
    let next = page.finish(&mut rows, |e| e.id.to_string());
    let receivers = service::receivers_of(state.store.as_ref(), &rows).await?;
    let views: Vec<EventView<'_>> = rows
        .iter()
        .zip(receivers.iter())
        .map(|(event, receiver)| EventView { event, receiver })
        .collect();
    Ok(envelope(StatusCode::OK, views, &[], next.as_deref()))
}
