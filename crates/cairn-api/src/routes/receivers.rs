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
use cairn_domain::{ReceiverId, ReceiverInput};
use cairn_store::ReceiverFilter;

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(input): Json<ReceiverInput>,
) -> Result<Response, ApiError> {
    let id = service::create_receiver(state.store.as_ref(), &caller, input).await?;
    Ok(ok(id))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(id): PathArgs<String>,
) -> Result<Response, ApiError> {
    service::require(&caller, Resource::Receivers, Action::Read).await?;
    let not_found = || ApiError::NotFound(format!("no event receiver with id {id:?}"));
    let rid = ReceiverId::parse(&id).ok_or_else(not_found)?;
    let receiver = state.store.receiver(rid).await?.ok_or_else(not_found)?;
    Ok(ok([receiver]))
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    q: QueryMap,
) -> Result<Response, ApiError> {
    service::require(&caller, Resource::Receivers, Action::Read).await?;
    let mut errors = Vec::new();
    let page = Page::parse(&q, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let filter = ReceiverFilter {
        name: q.text("name"),
        type_: q.text("type"),
        version: q.text("version"),
    };
    let mut rows = state.store.list_receivers(filter, page.request()).await?;
    let next = page.finish(&mut rows, |r| r.id.to_string());
    Ok(envelope(StatusCode::OK, rows, &[], next.as_deref()))
}
