//! Required strings: non-blank after trimming, stored exactly as given.

use crate::error::FieldErrors;
use serde_json::Value;
use std::fmt;

/// A string that is not blank after trimming. Stored as given (untrimmed).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Text(String);

/// Longest accepted string field, in bytes; longer input is refused rather
/// than silently stored.
pub const MAX_TEXT_BYTES: usize = 4096;

impl Text {
    pub fn parse(s: impl Into<String>) -> Result<Self, &'static str> {
        let s = s.into();
        if s.trim().is_empty() {
            Err("must not be blank")
        } else if s.len() > MAX_TEXT_BYTES {
            Err("must be at most 4096 bytes")
        } else if s.contains('\0') {
            Err("must not contain NUL characters")
        } else {
            Ok(Self(s))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Rebuild from storage, where only valid values were ever written.
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Parse a required text field out of a JSON input field.
pub(crate) fn required_text(
    field: &str,
    value: Option<&Value>,
    errors: &mut FieldErrors,
) -> Option<Text> {
    match value {
        None | Some(Value::Null) => {
            errors.push(field, "is required");
            None
        }
        Some(Value::String(s)) => match Text::parse(s.as_str()) {
            Ok(t) => Some(t),
            Err(msg) => {
                errors.push(field, msg);
                None
            }
        },
        Some(_) => {
            errors.push(field, "must be a string");
            None
        }
    }
}

/// Parse an optional text field: absent is fine, present must be valid.
pub(crate) fn optional_text(
    field: &str,
    value: Option<&Value>,
    errors: &mut FieldErrors,
) -> Option<Text> {
    match value {
        None | Some(Value::Null) => None,
        some => required_text(field, some, errors),
    }
}

/// Parse an optional boolean field.
pub(crate) fn optional_bool(
    field: &str,
    value: Option<&Value>,
    errors: &mut FieldErrors,
) -> Option<bool> {
    match value {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            errors.push(field, "must be a boolean");
            None
        }
    }
}
