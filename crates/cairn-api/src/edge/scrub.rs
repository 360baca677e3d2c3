//! Keeping secrets out of logs: every place that logs headers or a JSON
//! body goes through a [`Scrubber`]; single values that must never be
//! printed are wrapped in [`Redacted`].

use axum::http::HeaderMap;
use serde_json::Value;
use std::fmt;

/// What replaces a scrubbed value.
pub const REDACTED: &str = "[redacted]";

/// Header names whose value is always replaced.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];
/// Header names containing one of these are replaced too.
const SECRET_HEADER_PARTS: &[&str] = &[
    "token",
    "secret",
    "password",
    "passwd",
    "api-key",
    "apikey",
    "auth",
    "cookie",
    "session",
    "signature",
];

/// The default `log_scrub_fields`: JSON object keys whose values are
/// replaced wherever a body is logged.
pub const DEFAULT_FIELDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "private_key",
    "credential",
];

/// Replaces secret header values and configured JSON fields.
#[derive(Debug, Clone)]
pub struct Scrubber {
    /// Lower-case key fragments: a JSON key containing one (compared
    /// case-insensitively) has its value replaced.
    fields: Vec<String>,
}

impl Default for Scrubber {
    fn default() -> Self {
        Self::new(DEFAULT_FIELDS.iter().map(|s| (*s).to_owned()))
    }
}

impl Scrubber {
    pub fn new(fields: impl IntoIterator<Item = String>) -> Self {
        Self {
            fields: fields
                .into_iter()
                .map(|f| f.to_ascii_lowercase())
                .filter(|f| !f.is_empty())
                .collect(),
        }
    }

    fn secret_field(&self, key: &str) -> bool {
        let key = key.to_ascii_lowercase();
        self.fields.iter().any(|f| key.contains(f.as_str()))
    }

    fn secret_header(&self, name: &str) -> bool {
        SECRET_HEADERS.contains(&name)
            || SECRET_HEADER_PARTS.iter().any(|p| name.contains(p))
            || self.secret_field(name)
    }

    /// The headers as a JSON object for a log line, secrets replaced.
    pub fn headers(&self, headers: &HeaderMap) -> String {
        let mut out = serde_json::Map::new();
        for (name, value) in headers {
            let shown = if self.secret_header(name.as_str()) {
                REDACTED.to_owned()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            match out.get_mut(name.as_str()) {
                Some(Value::String(s)) => {
                    s.push_str(", ");
                    s.push_str(&shown);
                }
                _ => {
                    out.insert(name.as_str().to_owned(), Value::String(shown));
                }
            }
        }
        Value::Object(out).to_string()
    }

    /// A copy of `value` with the value of every configured key replaced,
    /// at any depth.
    pub fn json(&self, value: &Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let v = if self.secret_field(k) {
                            Value::String(REDACTED.to_owned())
                        } else {
                            self.json(v)
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.json(v)).collect()),
            other => other.clone(),
        }
    }

    /// Parse `text` as JSON and scrub it; text that is not JSON is not
    /// shown at all (it could hold anything).
    pub fn json_text(&self, text: &str) -> String {
        match serde_json::from_str::<Value>(text) {
            Ok(v) => self.json(&v).to_string(),
            Err(_) => format!("{REDACTED} (not JSON, {} bytes)", text.len()),
        }
    }
}

static GLOBAL: std::sync::RwLock<Option<std::sync::Arc<Scrubber>>> = std::sync::RwLock::new(None);

/// Make `scrubber` the one that code without the app's state (the service
/// layer) uses; set when the `AppState` is made (the last one wins: one
/// process, one configuration).
pub fn install(scrubber: std::sync::Arc<Scrubber>) {
    if let Ok(mut g) = GLOBAL.write() {
        *g = Some(scrubber);
    }
}

/// The installed scrubber (the default one before any is installed).
pub fn global() -> std::sync::Arc<Scrubber> {
    GLOBAL
        .read()
        .ok()
        .and_then(|g| g.clone())
        .unwrap_or_else(|| std::sync::Arc::new(Scrubber::default()))
}

/// A value that prints as `[redacted]`, whatever it is.
pub struct Redacted<T>(pub T);

impl<T> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde_json::json;

    #[test]
    fn secret_headers_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer s3cr3t"));
        h.insert("cookie", HeaderValue::from_static("sid=abc"));
        h.insert("x-refresh-token", HeaderValue::from_static("rt"));
        h.insert("accept", HeaderValue::from_static("application/json"));
        let shown = Scrubber::default().headers(&h);
        for secret in ["s3cr3t", "sid=abc", "\"rt\""] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("application/json"), "{shown}");
    }

    #[test]
    fn configured_fields_are_replaced_at_any_depth() {
        let s = Scrubber::new(["password".to_owned(), "ssn".to_owned()]);
        let v = json!({"user": {"Password": "p", "name": "n"}, "list": [{"customer_ssn": 1}]});
        assert_eq!(
            s.json(&v),
            json!({"user": {"Password": REDACTED, "name": "n"}, "list": [{"customer_ssn": REDACTED}]})
        );
        assert!(!s.json_text("not json password=p").contains("password=p"));
        assert_eq!(Redacted("x").to_string(), REDACTED);
    }
}
