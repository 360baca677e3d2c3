//! `/api/v1/auth`: login, refresh, logout, who am I, the public signing
//! keys and their rotation.

use crate::AppState;
use crate::auth::Anonymous;
use crate::auth::fields::Fields;
use crate::auth::{Caller, accounts};
use crate::error::{ApiError, ok};
use crate::extract::Json;
use axum::extract::State;
use axum::response::Response;

pub async fn login(
    State(state): State<AppState>,
    Anonymous(ctx): Anonymous,
    Json(body): Json<Fields>,
) -> Result<Response, ApiError> {
    Ok(ok(accounts::login(&state.auth, &ctx, body).await?))
}

pub async fn refresh(
    State(state): State<AppState>,
    Anonymous(ctx): Anonymous,
    Json(body): Json<Fields>,
) -> Result<Response, ApiError> {
    Ok(ok(accounts::refresh(&state.auth, &ctx, body).await?))
}

pub async fn logout(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    accounts::logout(&state.auth, &caller).await?;
    Ok(ok(serde_json::json!({"logged_out": true})))
}

pub async fn whoami(caller: Caller) -> Response {
    ok(accounts::whoami(&caller))
}

pub async fn jwks(State(state): State<AppState>) -> Response {
    ok(state.auth.ring().jwks())
}

pub async fn rotate_signing_key(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let kid = accounts::rotate_signing_key(&state.auth, &caller).await?;
    Ok(ok(serde_json::json!({ "kid": kid })))
}
