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
use cairn_domain::group::{GroupPatchInput, ReceiverIdsInput};
use cairn_domain::{GroupId, GroupInput, ReceiverId};
use cairn_store::{Completion, GroupFilter};
use serde::Serialize;

fn group_id(id: &str) -> Result<GroupId, ApiError> {
    GroupId::parse(id).ok_or_else(|| ApiError::NotFound(format!("no group with id {id:?}")))
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(input): Json<GroupInput>,
) -> Result<Response, ApiError> {
    let id = service::create_group(state.store.as_ref(), &caller, input).await?;
    Ok(ok(id))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(id): PathArgs<String>,
) -> Result<Response, ApiError> {
    service::require(&caller, Resource::Groups, Action::Read).await?;
    let gid = group_id(&id)?;
    let group = state
        .store
        .group(gid)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no group with id {id:?}")))?;
    Ok(ok([group]))
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    q: QueryMap,
) -> Result<Response, ApiError> {
    service::require(&caller, Resource::Groups, Action::Read).await?;
    let mut errors = Vec::new();
    let page = Page::parse(&q, &mut errors);
    let enabled = q.bool("enabled", &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let filter = GroupFilter {
        name: q.text("name"),
        type_: q.text("type"),
        version: q.text("version"),
        enabled,
    };
    let mut rows = state.store.list_groups(filter, page.request()).await?;
    let next = page.finish(&mut rows, |g| g.id.to_string());
    Ok(envelope(StatusCode::OK, rows, &[], next.as_deref()))
}

pub async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(id): PathArgs<String>,
    Json(input): Json<GroupPatchInput>,
) -> Result<Response, ApiError> {
    let gid = group_id(&id)?;
    let group = service::patch_group(state.store.as_ref(), &caller, gid, input).await?;
    Ok(ok(group.id))
}

pub async fn add_receivers(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(id): PathArgs<String>,
    Json(input): Json<ReceiverIdsInput>,
) -> Result<Response, ApiError> {
    let gid = group_id(&id)?;
    let group = service::add_group_receivers(state.store.as_ref(), &caller, gid, input).await?;
    Ok(ok(group))
}

pub async fn remove_receiver(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs((id, receiver_id)): PathArgs<(String, String)>,
) -> Result<Response, ApiError> {
    let gid = group_id(&id)?;
    let rid = ReceiverId::parse(&receiver_id).ok_or_else(|| {
        ApiError::NotFound(format!(
            "event receiver {receiver_id:?} is not in group {id}"
        ))
    })?;
    let group = service::remove_group_receiver(state.store.as_ref(), &caller, gid, rid).await?;
    Ok(ok(group))
}

#[derive(Serialize)]
struct StatusView {
    complete: bool,
    enabled: bool,
    receivers: Vec<ReceiverStatusView>,
}

#[derive(Serialize)]
struct ReceiverStatusView {
    event_receiver_id: ReceiverId,
    event_id: Option<cairn_domain::EventId>,
    success: Option<bool>,
}

pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(id): PathArgs<String>,
    q: QueryMap,
) -> Result<Response, ApiError> {
    let gid = group_id(&id)?;
    let status = service::group_status(state.store.as_ref(), &caller, gid, |f| q.get(f)).await?;
    Ok(ok(StatusView {
        complete: status.complete,
        enabled: status.enabled,
        receivers: status
            .receivers
            .into_iter()
            .map(|r| ReceiverStatusView {
                event_receiver_id: r.receiver_id,
                event_id: r.latest.map(|l| l.event_id),
                success: r.latest.map(|l| l.success),
            })
            .collect(),
    }))
}

#[derive(Serialize)]
struct CompletionView<'a> {
    name: &'a str,
    version: &'a str,
    release: &'a str,
    platform_id: &'a str,
    package: &'a str,
    completed_at: cairn_domain::Timestamp,
    event_id: cairn_domain::EventId,
}

impl<'a> From<&'a Completion> for CompletionView<'a> {
    fn from(c: &'a Completion) -> Self {
        Self {
            name: c.unit.name.as_str(),
            version: c.unit.version.as_str(),
            release: c.unit.release.as_str(),
            platform_id: c.unit.platform_id.as_str(),
            package: c.unit.package.as_str(),
            completed_at: c.completed_at,
            event_id: c.event_id,
        }
    }
}

pub async fn completions(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(id): PathArgs<String>,
    q: QueryMap,
) -> Result<Response, ApiError> {
    service::require(&caller, Resource::Groups, Action::Read).await?;
    let gid = group_id(&id)?;
    let mut errors = Vec::new();
    let page = Page::parse(&q, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let mut rows = state.store.list_completions(gid, page.request()).await?;
    let next = page.finish(&mut rows, |c| c.id.to_string());
    let views: Vec<CompletionView<'_>> = rows.iter().map(CompletionView::from).collect();
    Ok(envelope(StatusCode::OK, views, &[], next.as_deref()))
}
