//! `/api/v1/audit`: the audit log, newest first.

use crate::AppState;
use crate::auth::{Caller, accounts};
use crate::error::{ApiError, envelope};
use crate::extract::QueryMap;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use cairn_domain::Timestamp;
use cairn_store::access::AuditFilter;

/// `?actor=&action=&outcome=&since=<RFC 3339>&limit=&cursor=`; the
/// cursor is the `seq` of the last entry seen (`next_cursor`).
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    q: QueryMap,
) -> Result<Response, ApiError> {
    let mut errors = Vec::new();
    let limit = match q.get("limit") {
        None => crate::page::DEFAULT_LIMIT,
        Some(s) => match s.parse::<u32>() {
            Ok(n) if (1..=crate::page::MAX_LIMIT).contains(&n) => n,
            _ => {
                errors.push(format!(
                    "limit: must be an integer from 1 to {}, got {s:?}",
                    crate::page::MAX_LIMIT
                ));
                0
            }
        },
    };
    let before_seq = match q.get("cursor") {
        None => None,
        Some(s) => match s.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                errors.push(format!(
                    "cursor: must be a position from next_cursor, got {s:?}"
                ));
                None
            }
        },
    };
    let since = match q.get("since") {
        None => None,
        Some(s) => match Timestamp::parse_rfc3339(s) {
            Some(t) => Some(t),
            None => {
                errors.push(format!("since: must be an RFC 3339 date-time, got {s:?}"));
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let filter = AuditFilter {
        actor: q.text("actor"),
        action: q.text("action"),
        outcome: q.text("outcome"),
        since,
        before_seq,
        limit: limit + 1,
    };
    let mut rows = accounts::list_audit(&state.auth, &caller, filter).await?;
    let next = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|r| r.seq.to_string())
    } else {
        None
    };
    Ok(envelope(StatusCode::OK, rows, &[], next.as_deref()))
}
