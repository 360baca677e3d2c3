//! Event receivers: a kind of thing that happens in a pipeline.

use crate::error::FieldErrors;
use crate::id::ReceiverId;
use crate::json::JsonText;
use crate::text::{Text, required_text};
use crate::time::Timestamp;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;

/// How many schema violations one rejected payload reports at most.
pub const MAX_REPORTED_VIOLATIONS: usize = 20;

/// The receiver fields as they arrive; checked by [`NewReceiver::parse`].
#[derive(Debug, Default, Deserialize)]
pub struct ReceiverInput {
    pub name: Option<Value>,
    #[serde(rename = "type")]
    pub type_: Option<Value>,
    pub version: Option<Value>,
    pub description: Option<Value>,
    pub schema: Option<Box<RawValue>>,
}

/// A JSON Schema that compiled, with its text kept exactly as submitted.
#[derive(Clone)]
pub struct ReceiverSchema {
    text: JsonText,
    validator: Arc<jsonschema::Validator>,
}

impl ReceiverSchema {
    /// Compile a schema. The draft comes from `$schema` (4, 6, 7, 2019-09,
    /// 2020-12; 2020-12 when absent). Remote references are never fetched:
    /// a `$ref` outside the document makes the schema invalid.
    pub fn compile(text: JsonText) -> Result<Self, String> {
        let value = text.to_value().map_err(|e| e.to_string())?;
        match &value {
            Value::Object(_) | Value::Bool(_) => {}
            _ => return Err("must be a JSON object or boolean".to_owned()),
        }
        let draft = match value.get("$schema") {
            None => jsonschema::Draft::Draft202012,
            Some(declared) => declared
                .as_str()
                .and_then(|uri| {
                    DRAFTS
                        .iter()
                        .find(|(known, _)| *known == uri.trim_end_matches('#'))
                })
                .map(|(_, draft)| *draft)
                .ok_or_else(|| {
                    format!("unsupported $schema {declared}; use draft 4, 6, 7, 2019-09 or 2020-12")
                })?,
        };
        let validator = jsonschema::options()
            .with_draft(draft)
            .build(&value)
            .map_err(|e| format!("is not a valid JSON Schema: {e}"))?;
        Ok(Self {
            text,
            validator: Arc::new(validator),
        })
    }

    pub fn text(&self) -> &JsonText {
        &self.text
    }

    /// Check a payload; on failure, one message per violation (capped),
    /// each naming the JSON pointer of the offending part of the payload.
    pub fn check(&self, payload: &Value) -> Result<(), Vec<String>> {
        if self.validator.is_valid(payload) {
            return Ok(());
        }
        let violations: Vec<String> = self
            .validator
            .iter_errors(payload)
            .take(MAX_REPORTED_VIOLATIONS)
            .map(|e| {
                let path = e.instance_path().to_string();
                format!("payload{path}: {e}")
            })
            .collect();
        Err(violations)
    }
}

/// The `$schema` URIs Cairn accepts (a trailing `#` is ignored), and the
/// draft each selects.
const DRAFTS: [(&str, jsonschema::Draft); 5] = [
    (
        "http://json-schema.org/draft-04/schema",
        jsonschema::Draft::Draft4,
    ),
    (
        "http://json-schema.org/draft-06/schema",
        jsonschema::Draft::Draft6,
    ),
    (
        "http://json-schema.org/draft-07/schema",
        jsonschema::Draft::Draft7,
    ),
    (
        "https://json-schema.org/draft/2019-09/schema",
        jsonschema::Draft::Draft201909,
    ),
    (
        "https://json-schema.org/draft/2020-12/schema",
        jsonschema::Draft::Draft202012,
    ),
];

impl fmt::Debug for ReceiverSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReceiverSchema({:?})", self.text)
    }
}

/// A receiver that passed every check and is ready to be stored.
#[derive(Debug, Clone)]
pub struct NewReceiver {
    pub name: Text,
    pub type_: Text,
    pub version: Text,
    pub description: Text,
    pub schema: ReceiverSchema,
    /// The principal creating it (`user:<name>`, `key:<id>`...), stored as
    /// its owner; `None` when authentication is off.
    pub owner: Option<String>,
    /// The trace context of the request creating it, which its message
    /// carries (`traceparent`).
    pub trace: Option<crate::TraceParent>,
}

impl NewReceiver {
    pub fn parse(input: ReceiverInput) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::default();
        let name = required_text("name", input.name.as_ref(), &mut errors);
        let type_ = required_text("type", input.type_.as_ref(), &mut errors);
        let version = required_text("version", input.version.as_ref(), &mut errors);
        let description = required_text("description", input.description.as_ref(), &mut errors);
        let schema = match input.schema {
            None => {
                errors.push("schema", "is required");
                None
            }
            Some(raw) => {
                let text = JsonText::from_raw(&raw);
                if text.is_null() {
                    errors.push("schema", "is required");
                    None
                } else {
                    match ReceiverSchema::compile(text) {
                        Ok(s) => Some(s),
                        Err(msg) => {
                            errors.push("schema", msg);
                            None
                        }
                    }
                }
            }
        };
        match (name, type_, version, description, schema) {
            (Some(name), Some(type_), Some(version), Some(description), Some(schema))
                if errors.is_empty() =>
            {
                Ok(Self {
                    name,
                    type_,
                    version,
                    description,
                    schema,
                    owner: None,
                    trace: None,
                })
            }
            _ => Err(errors),
        }
    }

    /// Lowercase hex SHA-256 of `"v1 <type> <description> <name> <version>"`.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.type_, &self.description, &self.name, &self.version)
    }
}

pub fn fingerprint(type_: &Text, description: &Text, name: &Text, version: &Text) -> String {
    let mut hasher = Sha256::new();
    hasher.update(format!("v1 {type_} {description} {name} {version}").as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A stored receiver. Receivers are immutable once created.
#[derive(Debug, Clone)]
pub struct Receiver {
    pub id: ReceiverId,
    pub name: Text,
    pub type_: Text,
    pub version: Text,
    pub description: Text,
    pub schema: ReceiverSchema,
    pub fingerprint: String,
    pub created_at: Timestamp,
    /// The principal that created it (not part of the EPR wire shape).
    pub owner: Option<String>,
}

impl serde::Serialize for Receiver {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Receiver", 8)?;
        st.serialize_field("id", &self.id)?;
        st.serialize_field("name", self.name.as_str())?;
        st.serialize_field("type", self.type_.as_str())?;
        st.serialize_field("version", self.version.as_str())?;
        st.serialize_field("description", self.description.as_str())?;
        st.serialize_field("schema", self.schema.text())?;
        st.serialize_field("fingerprint", &self.fingerprint)?;
        st.serialize_field("created_at", &self.created_at)?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(v: Value) -> ReceiverInput {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn reports_every_problem() {
        let err = NewReceiver::parse(input(json!({"name": " ", "type": 3}))).unwrap_err();
        assert_eq!(
            err.messages(),
            vec![
                "name: must not be blank",
                "type: must be a string",
                "version: is required",
                "description: is required",
                "schema: is required"
            ]
        );
    }

    #[test]
    fn fingerprint_matches_contract() {
        let r = NewReceiver::parse(input(json!({
            "name": "n", "type": "t", "version": "1", "description": "d", "schema": {}
        })))
        .unwrap();
        // sha256("v1 t d n 1")
        let mut h = Sha256::new();
        h.update(b"v1 t d n 1");
        let expected: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(r.fingerprint(), expected);
    }

    #[test]
    fn schema_drafts_and_refs() {
        let ok = |v: Value| ReceiverSchema::compile(JsonText::parse(&v.to_string()).unwrap());
        assert!(ok(json!({})).is_ok());
        assert!(ok(json!(true)).is_ok());
        assert!(
            ok(json!({"$schema": "http://json-schema.org/draft-04/schema#", "type": "object"}))
                .is_ok()
        );
        assert!(ok(json!({"$schema": "http://json-schema.org/draft-07/schema#"})).is_ok());
        assert!(ok(json!({"$schema": "https://json-schema.org/draft/2019-09/schema"})).is_ok());
        assert!(ok(json!({"$schema": "https://example.com/my-schema"})).is_err());
        assert!(ok(json!({"type": "no-such-type"})).is_err());
        assert!(ok(json!(5)).is_err());
        assert!(ok(json!({"$ref": "https://example.com/remote.json"})).is_err());
        assert!(ok(json!({"$defs": {"a": {"type": "string"}}, "$ref": "#/$defs/a"})).is_ok());
    }

    #[test]
    fn payload_violations_name_the_path() {
        let s = ReceiverSchema::compile(
            JsonText::parse(
                r#"{"type":"object","properties":{"n":{"type":"string"}},"required":["m"]}"#,
            )
            .unwrap(),
        )
        .unwrap();
        assert!(s.check(&json!({"n": "x", "m": 1})).is_ok());
        let errs = s.check(&json!({"n": 1})).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs.iter().any(|e| e.starts_with("payload/n: ")),
            "{errs:?}"
        );
    }
}
