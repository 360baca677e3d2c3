//! `/api/v1/roles`: built-in and custom roles.

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
    let role = accounts::create_role_from(&state.auth, &caller, body).await?;
    Ok(envelope(StatusCode::CREATED, role, &[], None))
}

/// Built-in roles first (on the first page), then custom roles by name.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    q: QueryMap,
) -> Result<Response, ApiError> {
    let page = Page::named_from_query(&q)?;
    let mut rows =
        accounts::list_roles(&state.auth, &caller, page.limit + 1, page.after.clone()).await?;
    let builtin = rows.iter().take_while(|r| r.builtin).count();
    let mut custom = rows.split_off(builtin);
    let next = page.finish_named(&mut custom, |r| r.name.clone());
    rows.extend(custom);
    Ok(envelope(StatusCode::OK, rows, &[], next.as_deref()))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(name): PathArgs<String>,
) -> Result<Response, ApiError> {
    Ok(ok(accounts::get_role(&state.auth, &caller, &name).await?))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(name): PathArgs<String>,
) -> Result<Response, ApiError> {
    accounts::delete_role(&state.auth, &caller, &name).await?;
    Ok(ok(serde_json::json!({ "deleted": name })))
}
