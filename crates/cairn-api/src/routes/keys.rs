//! `/api/v1/keys`: API keys. The key itself appears once, in the answer
//! to its creation.

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
    let key = accounts::create_key_from(&state.auth, &caller, body).await?;
    Ok(envelope(StatusCode::CREATED, key, &[], None))
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    q: QueryMap,
) -> Result<Response, ApiError> {
    let page = Page::named_from_query(&q)?;
    let principal = q.text("principal");
    let mut rows = accounts::list_keys(
        &state.auth,
        &caller,
        principal.as_deref(),
        page.limit + 1,
        page.after.clone(),
    )
    .await?;
    let next = page.finish_named(&mut rows, |k| k.id.clone());
    Ok(envelope(StatusCode::OK, rows, &[], next.as_deref()))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(id): PathArgs<String>,
) -> Result<Response, ApiError> {
    Ok(ok(accounts::get_key(&state.auth, &caller, &id).await?))
}

pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(id): PathArgs<String>,
) -> Result<Response, ApiError> {
    Ok(ok(accounts::revoke_key(&state.auth, &caller, &id).await?))
}
