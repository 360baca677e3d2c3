//! Operator routes: the outbox relay's dead letters.

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ok};
use crate::extract::{PathArgs, QueryMap};
use crate::service;
use axum::extract::State;
use axum::response::Response;
use cairn_domain::access::{Action, Resource};
use serde::Serialize;

#[derive(Serialize)]
struct DeadLetterView {
    sink: String,
    seq: u64,
    message_id: String,
    attempts: u32,
    last_error: String,
    failed_at: String,
}

/// `GET /api/v1/admin/dead-letters?sink=&limit=`: oldest position first.
pub async fn dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    q: QueryMap,
) -> Result<Response, ApiError> {
    service::require(&caller, Resource::DeadLetters, Action::Read).await?;
    let limit = match q.get("limit") {
        None => 100,
        Some(s) => match s.parse::<u32>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return Err(ApiError::field(
                    "limit",
                    "must be an integer from 1 to 1000",
                ));
            }
        },
    };
    let letters = state.store.dead_letters(q.text("sink"), limit).await?;
    let views: Vec<DeadLetterView> = letters
        .into_iter()
        .map(|l| DeadLetterView {
            sink: l.sink,
            seq: l.seq,
            message_id: l.message_id.to_string(),
            attempts: l.attempts,
            last_error: l.last_error,
            failed_at: l.failed_at.to_string(),
        })
        .collect();
    Ok(ok(views))
}

/// `POST /api/v1/admin/dead-letters/{sink}/{seq}/replay`: queue the message
/// to be delivered to that sink again (before its new messages).
pub async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs((sink, seq)): PathArgs<(String, String)>,
) -> Result<Response, ApiError> {
    service::require(&caller, Resource::DeadLetters, Action::Update).await?;
    let seq: u64 = seq
        .parse()
        .map_err(|_| ApiError::NotFound(format!("no dead letter at position {seq:?}")))?;
    state.store.replay_dead_letter(&sink, seq).await?;
    Ok(ok(
        serde_json::json!({"sink": sink, "seq": seq, "queued": true}),
    ))
}
