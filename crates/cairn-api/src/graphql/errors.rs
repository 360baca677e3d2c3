//! API errors as GraphQL errors: the same messages as the REST envelope,
//! one GraphQL error per problem, each with `extensions.code`,
//! `extensions.status` (the HTTP status REST answers) and, for input
//! problems, `extensions.field` (the part before `: `).

use crate::error::ApiError;
use async_graphql::{Context, ErrorExtensionValues, ServerError};

/// Codes in `extensions.code`.
pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";
pub const NOT_FOUND: &str = "NOT_FOUND";
pub const UNAVAILABLE: &str = "UNAVAILABLE";
pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
pub const FORBIDDEN: &str = "FORBIDDEN";
pub const CONFLICT: &str = "CONFLICT";
pub const RATE_LIMITED: &str = "RATE_LIMITED";
pub const INTERNAL: &str = "INTERNAL_SERVER_ERROR";

/// `(message, code, status, field)` for each problem of an API error.
fn parts(e: ApiError) -> Vec<(String, &'static str, u16, Option<String>)> {
    match e {
        ApiError::Invalid(msgs) => msgs
            .into_iter()
            .map(|m| {
                let field = m.split_once(": ").map(|(f, _)| f.to_owned());
                (m, BAD_USER_INPUT, 400, field)
            })
            .collect(),
        ApiError::NotFound(m) => vec![(m, NOT_FOUND, 404, None)],
        ApiError::MethodNotAllowed(m) => vec![(m, BAD_USER_INPUT, 405, None)],
        ApiError::PayloadTooLarge(m) => vec![(m, BAD_USER_INPUT, 413, None)],
        ApiError::UnsupportedMediaType(m) => vec![(m, BAD_USER_INPUT, 415, None)],
        ApiError::Unauthorized(m) | ApiError::InvalidToken(m) => {
            vec![(m, UNAUTHENTICATED, 401, None)]
        }
        ApiError::Forbidden(m) => vec![(m, FORBIDDEN, 403, None)],
        ApiError::Conflict(m) => vec![(m, CONFLICT, 409, None)],
        ApiError::TooManyRequests { message, .. } => vec![(message, RATE_LIMITED, 429, None)],
        ApiError::Unavailable(m) => {
            tracing::warn!(detail = %m, "service unavailable");
            vec![(format!("service unavailable: {m}"), UNAVAILABLE, 503, None)]
        }
        ApiError::Internal(detail) => {
            tracing::error!(%detail, "internal error");
            vec![(
                "internal error; see the server log".to_owned(),
                INTERNAL,
                500,
                None,
            )]
        }
    }
}

fn extensions(code: &str, status: u16, field: Option<String>) -> ErrorExtensionValues {
    let mut ext = ErrorExtensionValues::default();
    ext.set("code", code);
    ext.set("status", i32::from(status));
    if let Some(f) = field {
        ext.set("field", f);
    }
    ext
}

/// Turn an API error into the resolver's error; every problem but the
/// last is added to the response directly (at the same path), so each
/// REST error string becomes one GraphQL error, in the same order.
pub fn to_gql(ctx: &Context<'_>, e: ApiError) -> async_graphql::Error {
    let mut all = parts(e);
    let last = all.pop();
    for (message, code, status, field) in all {
        let mut err = ServerError::new(message, Some(ctx.item.pos));
        err.extensions = Some(extensions(code, status, field));
        ctx.add_error(ctx.set_error_path(err));
    }
    match last {
        Some((message, code, status, field)) => async_graphql::Error {
            message,
            source: None,
            extensions: Some(extensions(code, status, field)),
        },
        None => async_graphql::Error::new("internal error; see the server log"),
    }
}

/// An error not tied to a resolver (request level).
pub fn request_error(message: impl Into<String>, code: &str, status: u16) -> ServerError {
    let mut err = ServerError::new(message, None);
    err.extensions = Some(extensions(code, status, None));
    err
}

/// An API error refused before execution, as GraphQL errors.
pub fn request_errors(e: ApiError) -> Vec<ServerError> {
    parts(e)
        .into_iter()
        .map(|(message, code, status, field)| {
            let mut err = ServerError::new(message, None);
            err.extensions = Some(extensions(code, status, field));
            err
        })
        .collect()
}

/// Shorthand for resolvers: `.map_err(|e| gql(ctx, e))`.
pub trait OrGql<T> {
    fn or_gql(self, ctx: &Context<'_>) -> async_graphql::Result<T>;
}

impl<T, E: Into<ApiError>> OrGql<T> for Result<T, E> {
    fn or_gql(self, ctx: &Context<'_>) -> async_graphql::Result<T> {
        self.map_err(|e| to_gql(ctx, e.into()))
    }
}
