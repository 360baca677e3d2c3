//! `/api/v1/users`: local users.

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
    let user = accounts::create_user(&state.auth, &caller, body).await?;
    Ok(envelope(StatusCode::CREATED, user, &[], None))
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    q: QueryMap,
) -> Result<Response, ApiError> {
    let page = Page::named_from_query(&q)?;
    let mut rows =
        accounts::list_users(&state.auth, &caller, page.limit + 1, page.after.clone()).await?;
    let next = page.finish_named(&mut rows, |u| u.name.clone());
    Ok(envelope(StatusCode::OK, rows, &[], next.as_deref()))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(name): PathArgs<String>,
) -> Result<Response, ApiError> {
    Ok(ok(accounts::get_user(&state.auth, &caller, &name).await?))
}

pub async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(name): PathArgs<String>,
    Json(body): Json<Fields>,
) -> Result<Response, ApiError> {
    Ok(ok(
        accounts::update_user(&state.auth, &caller, &name, body).await?
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(name): PathArgs<String>,
) -> Result<Response, ApiError> {
    accounts::delete_user(&state.auth, &caller, &name).await?;
    Ok(ok(serde_json::json!({ "deleted": name })))
}
