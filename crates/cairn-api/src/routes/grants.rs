//! `/api/v1/grants`: permissions on single receivers and groups.

use crate::AppState;
use crate::auth::fields::Fields;
use crate::auth::{Caller, accounts};
use crate::error::{ApiError, envelope, ok};
use crate::extract::{Json, PathArgs, QueryMap};
use crate::page::Page;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<Fields>,
) -> Result<Response, ApiError> {
    let grant =
        accounts::create_grant_from(&state.auth, state.store.as_ref(), &caller, body).await?;
    Ok(envelope(StatusCode::CREATED, grant, &[], None))
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    q: QueryMap,
) -> Result<Response, ApiError> {
    let page = Page::from_query(&q)?;
    let filter = accounts::grant_filter(
        q.text("principal"),
        q.text("receiver_id"),
        q.text("group_id"),
    );
    let mut rows = accounts::list_grants(
        &state.auth,
        &caller,
        filter,
        page.limit + 1,
        page.after.clone(),
    )
    .await?;
    let next = page.finish(&mut rows, |g| g.id.clone());
    Ok(envelope(StatusCode::OK, rows, &[], next.as_deref()))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(id): PathArgs<String>,
) -> Result<Response, ApiError> {
    Ok(ok(accounts::delete_grant(&state.auth, &caller, &id).await?))
}
