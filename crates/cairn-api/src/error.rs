//! One error type for every handler, rendered as the `/api/v1` envelope.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_domain::FieldErrors;
use cairn_store::StoreError;
use serde::Serialize;

#[derive(Debug)]
pub enum ApiError {
    /// 400, one message per problem.
    Invalid(Vec<String>),
    NotFound(String),
    MethodNotAllowed(String),
    PayloadTooLarge(String),
    UnsupportedMediaType(String),
    Unavailable(String),
    /// 401: no credentials, an `Authorization` header that is not a
    /// bearer token, or a failed login.
    Unauthorized(String),
    /// 401 for a bearer token that was sent and does not hold (unknown,
    /// expired, revoked, badly signed): its challenge says
    /// `error="invalid_token"` (RFC 6750 section 3.1).
    InvalidToken(String),
    /// 403: authenticated, but not allowed.
    Forbidden(String),
    /// 409: the change conflicts with what is stored.
    Conflict(String),
    /// 429, with `Retry-After` in seconds.
    TooManyRequests {
        message: String,
        retry_after: u64,
    },
    /// 500; the detail is logged, never sent.
    Internal(String),
}

impl ApiError {
    pub fn field(field: &str, message: impl std::fmt::Display) -> Self {
        Self::Invalid(vec![format!("{field}: {message}")])
    }

    /// The message a client is told (internal details are not).
    pub fn message(&self) -> String {
        match self {
            Self::Invalid(msgs) => msgs.join("; "),
            Self::Internal(_) => "internal error; see the server log".to_owned(),
            Self::Unavailable(m) => format!("service unavailable: {m}"),
            Self::NotFound(m)
            | Self::MethodNotAllowed(m)
            | Self::PayloadTooLarge(m)
            | Self::UnsupportedMediaType(m)
            | Self::Unauthorized(m)
            | Self::InvalidToken(m)
            | Self::Forbidden(m)
            | Self::Conflict(m) => m.clone(),
            Self::TooManyRequests { message, .. } => message.clone(),
        }
    }

    /// The `WWW-Authenticate` challenge of a 401 (RFC 6750): `None` for
    /// every other answer.
    pub(crate) fn challenge(&self) -> Option<HeaderValue> {
        match self {
            Self::Unauthorized(_) => Some(HeaderValue::from_static("Bearer realm=\"cairn\"")),
            Self::InvalidToken(_) => Some(HeaderValue::from_static(
                "Bearer realm=\"cairn\", error=\"invalid_token\"",
            )),
            _ => None,
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unauthorized(_) | Self::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<FieldErrors> for ApiError {
    fn from(e: FieldErrors) -> Self {
        Self::Invalid(e.messages())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => Self::NotFound(m),
            StoreError::Invalid(f) => f.into(),
            StoreError::Unavailable(m) => Self::Unavailable(m),
            StoreError::Internal(m) => Self::Internal(m),
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    data: T,
    errors: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<&'a str>,
}

/// Render `{"data": ..., "errors": [...]}` with the given status.
pub fn envelope<T: Serialize>(
    status: StatusCode,
    data: T,
    errors: &[String],
    next_cursor: Option<&str>,
) -> Response {
    match serde_json::to_vec(&Envelope {
        data,
        errors,
        next_cursor,
    }) {
        Ok(body) => json_response(status, body),
        Err(e) => {
            tracing::error!(error = %e, "serialising a response");
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                br#"{"data":null,"errors":["internal error"]}"#.to_vec(),
            )
        }
    }
}

pub fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut res = (status, body).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// A successful envelope.
pub fn ok<T: Serialize>(data: T) -> Response {
    envelope(StatusCode::OK, data, &[], None)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut extra: Option<(header::HeaderName, HeaderValue)> =
            self.challenge().map(|v| (header::WWW_AUTHENTICATE, v));
        let errors = match self {
            Self::TooManyRequests {
                message,
                retry_after,
            } => {
                extra = Some((header::RETRY_AFTER, HeaderValue::from(retry_after)));
                vec![message]
            }
            Self::Invalid(msgs) => msgs,
            Self::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                vec!["internal error; see the server log".to_owned()]
            }
            Self::Unavailable(m) => {
                tracing::warn!(detail = %m, "service unavailable");
                vec![format!("service unavailable: {m}")]
            }
            Self::NotFound(m)
            | Self::MethodNotAllowed(m)
            | Self::PayloadTooLarge(m)
            | Self::UnsupportedMediaType(m)
            | Self::Unauthorized(m)
            | Self::InvalidToken(m)
            | Self::Forbidden(m)
            | Self::Conflict(m) => vec![m],
        };
        let mut res = envelope(status, (), &errors, None);
        if let Some((name, value)) = extra {
            res.headers_mut().insert(name, value);
        }
        res
    }
}
