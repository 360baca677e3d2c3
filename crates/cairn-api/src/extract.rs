//! Extractors for cross-cutting request concerns: JSON bodies (content type,
//! size limit, syntax errors with their position) and query strings.

use crate::AppState;
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use std::collections::HashMap;

/// A request body type, with what it must look like for error messages.
pub trait Body: DeserializeOwned {
    const SHAPE: &'static str;
}

impl Body for cairn_domain::ReceiverInput {
    const SHAPE: &'static str = "must be a JSON object";
}
impl Body for cairn_domain::EventInput {
    const SHAPE: &'static str = "must be a JSON object";
}
impl Body for cairn_domain::GroupInput {
    const SHAPE: &'static str = "must be a JSON object";
}
impl Body for cairn_domain::GroupPatchInput {
    const SHAPE: &'static str = "must be a JSON object";
}
impl Body for cairn_domain::group::ReceiverIdsInput {
    const SHAPE: &'static str = "must be a JSON object";
}
impl Body for Vec<Box<serde_json::value::RawValue>> {
    const SHAPE: &'static str = "must be a JSON array of events";
}

/// A JSON request body, checked for content type and size.
pub struct Json<T>(pub T);

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<T: Body> FromRequest<AppState> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !is_json(content_type) {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type: expected application/json, got {:?}",
                content_type
            )));
        }
        let limit = state.config.max_body_bytes;
        let too_large =
            || ApiError::PayloadTooLarge(format!("body: larger than the limit of {limit} bytes"));
        if let Some(len) = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && len > limit as u64
        {
            return Err(too_large());
        }
        let body = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|e| {
                let is_limit = std::error::Error::source(&e)
                    .map(|s| s.is::<http_body_util::LengthLimitError>())
                    .unwrap_or(false);
                if is_limit {
                    too_large()
                } else {
                    ApiError::field("body", format!("could not be read: {e}"))
                }
            })?;
        parse::<T>(&body).map(Json)
    }
}

/// Parse a JSON body, naming where malformed JSON breaks.
pub fn parse<T: Body>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice::<T>(body).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof => ApiError::field(
                "body",
                format!(
                    "invalid JSON at line {} column {}: {}",
                    e.line(),
                    e.column(),
                    strip_position(&e.to_string())
                ),
            ),
            Category::Data | Category::Io => {
                let msg = strip_position(&e.to_string()).to_owned();
                if msg.starts_with("duplicate field") {
                    ApiError::field("body", msg)
                } else {
                    ApiError::field("body", T::SHAPE)
                }
            }
        }
    })
}

fn strip_position(msg: &str) -> &str {
    msg.rsplit_once(" at line ").map_or(msg, |(head, _)| head)
}

/// The query string as name → value (the last of repeated names wins).
pub struct QueryMap(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryMap {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        Ok(Self(
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    }
}

impl QueryMap {
    pub fn text(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// `true` / `false`, or a 400 naming the parameter.
    pub fn bool(&self, name: &str, errors: &mut Vec<String>) -> Option<bool> {
        match self.get(name)? {
            "true" => Some(true),
            "false" => Some(false),
            other => {
                errors.push(format!("{name}: must be true or false, got {other:?}"));
                None
            }
        }
    }
}

/// Path parameters whose rejection (e.g. invalid percent-encoding) is the
/// envelope's 404: no resource can have such an id.
pub struct PathArgs<T>(pub T);

impl<S, T> FromRequestParts<S> for PathArgs<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(e) => Err(ApiError::NotFound(format!(
                "no resource at {}: {}",
                parts.uri.path(),
                e.body_text()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/cloudevents+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
    }
}
