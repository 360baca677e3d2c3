//! Events: the immutable record that some action on a unit happened.

use crate::error::FieldErrors;
use crate::id::{EventId, ReceiverId};
use crate::json::JsonText;
use crate::receiver::{Receiver, ReceiverSchema};
use crate::text::{Text, optional_bool, optional_text, required_text};
use crate::time::Timestamp;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// The unit an event is about: the five identifying fields.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Unit {
    pub name: Text,
    pub version: Text,
    pub release: Text,
    pub platform_id: Text,
    pub package: Text,
}

/// Field names of a unit, in wire order.
pub const UNIT_FIELDS: [&str; 5] = ["name", "version", "release", "platform_id", "package"];

impl Unit {
    /// Parse a unit from a lookup returning each named field (e.g. a query).
    pub fn parse_fields<'a>(
        get: impl Fn(&str) -> Option<&'a str>,
        errors: &mut FieldErrors,
    ) -> Option<Self> {
        let mut parts: Vec<Option<Text>> = Vec::with_capacity(5);
        for field in UNIT_FIELDS {
            let value = get(field).map(|s| Value::String(s.to_owned()));
            parts.push(required_text(field, value.as_ref(), errors));
        }
        let mut it = parts.into_iter();
        match (it.next()?, it.next()?, it.next()?, it.next()?, it.next()?) {
            (Some(name), Some(version), Some(release), Some(platform_id), Some(package)) => {
                Some(Self {
                    name,
                    version,
                    release,
                    platform_id,
                    package,
                })
            }
            _ => None,
        }
    }
}

/// The event fields as they arrive; checked by [`CheckedEvent::parse`].
#[derive(Debug, Default, Deserialize)]
pub struct EventInput {
    pub name: Option<Value>,
    pub version: Option<Value>,
    pub release: Option<Value>,
    pub platform_id: Option<Value>,
    pub package: Option<Value>,
    pub description: Option<Value>,
    pub payload: Option<Box<RawValue>>,
    pub success: Option<Value>,
    pub event_receiver_id: Option<Value>,
}

/// An event whose fields are well-formed. Its payload still has to satisfy
/// its receiver's schema: see [`CheckedEvent::parse`].
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub unit: Unit,
    pub description: Text,
    pub payload: JsonText,
    pub payload_value: Value,
    pub success: bool,
    pub receiver_id: ReceiverId,
}

/// The parts of an event input that parsed; each `None` was reported.
struct Parts {
    name: Option<Text>,
    version: Option<Text>,
    release: Option<Text>,
    platform_id: Option<Text>,
    package: Option<Text>,
    description: Option<Text>,
    payload: Option<(JsonText, Value)>,
    success: Option<bool>,
    receiver_id: Option<ReceiverId>,
}

impl Parts {
    fn parse(input: EventInput, errors: &mut FieldErrors) -> Self {
        let name = required_text("name", input.name.as_ref(), errors);
        let version = required_text("version", input.version.as_ref(), errors);
        let release = required_text("release", input.release.as_ref(), errors);
        let platform_id = required_text("platform_id", input.platform_id.as_ref(), errors);
        let package = required_text("package", input.package.as_ref(), errors);
        let description = required_text("description", input.description.as_ref(), errors);
        let payload = match input.payload {
            None => {
                errors.push("payload", "is required");
                None
            }
            Some(raw) => {
                let text = JsonText::from_raw(&raw);
                if text.is_null() {
                    errors.push("payload", "is required");
                    None
                } else {
                    match text.to_value() {
                        Ok(v) => Some((text, v)),
                        Err(e) => {
                            errors.push("payload", format!("is not valid JSON: {e}"));
                            None
                        }
                    }
                }
            }
        };
        let success = optional_bool("success", input.success.as_ref(), errors);
        let receiver_id = match input.event_receiver_id.as_ref() {
            None | Some(Value::Null) => {
                errors.push("event_receiver_id", "is required");
                None
            }
            some => optional_text("event_receiver_id", some, errors).and_then(|text| {
                let id = ReceiverId::parse(text.as_str());
                if id.is_none() {
                    errors.push(
                        "event_receiver_id",
                        format!("no event receiver with id {:?}", text.as_str()),
                    );
                }
                id
            }),
        };
        Self {
            name,
            version,
            release,
            platform_id,
            package,
            description,
            payload,
            success,
            receiver_id,
        }
    }

    fn assemble(self) -> Option<NewEvent> {
        let (payload, payload_value) = self.payload?;
        Some(NewEvent {
            unit: Unit {
                name: self.name?,
                version: self.version?,
                release: self.release?,
                platform_id: self.platform_id?,
                package: self.package?,
            },
            description: self.description?,
            payload,
            payload_value,
            success: self.success.unwrap_or(false),
            receiver_id: self.receiver_id?,
        })
    }
}

impl EventInput {
    /// The receiver this input names, when it names a well-formed id: the
    /// one to look up before [`CheckedEvent::parse`].
    pub fn receiver_hint(&self) -> Option<ReceiverId> {
        self.event_receiver_id
            .as_ref()?
            .as_str()
            .and_then(ReceiverId::parse)
    }
}

impl NewEvent {
    /// Check the fields alone (no schema): every problem is reported.
    pub fn parse(input: EventInput) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::default();
        let parts = Parts::parse(input, &mut errors);
        match parts.assemble() {
            Some(event) if errors.is_empty() => Ok(event),
            _ => Err(errors),
        }
    }
}

fn check_payload(payload: &Value, schema: &ReceiverSchema) -> Result<(), FieldErrors> {
    schema.check(payload).map_err(|violations| {
        FieldErrors(
            violations
                .into_iter()
                .map(|v| match v.split_once(": ") {
                    Some((field, msg)) => crate::FieldError::new(field, msg),
                    None => crate::FieldError::new("payload", v),
                })
                .collect(),
        )
    })
}

/// A stored event. Events are immutable.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: EventId,
    pub unit: Unit,
    pub description: Text,
    pub payload: JsonText,
    pub success: bool,
    pub receiver_id: ReceiverId,
    pub created_at: Timestamp,
}

/// The wire form of an event: its fields plus its receiver object.
pub struct EventView<'a> {
    pub event: &'a Event,
    pub receiver: &'a Receiver,
}

impl serde::Serialize for EventView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let e = self.event;
        let mut st = s.serialize_struct("Event", 12)?;
        st.serialize_field("id", &e.id)?;
        st.serialize_field("name", e.unit.name.as_str())?;
        st.serialize_field("version", e.unit.version.as_str())?;
        st.serialize_field("release", e.unit.release.as_str())?;
        st.serialize_field("platform_id", e.unit.platform_id.as_str())?;
        st.serialize_field("package", e.unit.package.as_str())?;
        st.serialize_field("description", e.description.as_str())?;
        st.serialize_field("payload", &e.payload)?;
        st.serialize_field("success", &e.success)?;
        st.serialize_field("created_at", &e.created_at)?;
        st.serialize_field("event_receiver_id", &e.receiver_id)?;
        st.serialize_field("event_receiver", self.receiver)?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<NewEvent, FieldErrors> {
        NewEvent::parse(serde_json::from_str(&v.to_string()).unwrap())
    }

    fn valid() -> Value {
        json!({
            "name": "app", "version": "1.0.0", "release": "2024", "platform_id": "linux",
            "package": "oci", "description": "built", "payload": {"b": 1, "a": 2},
            "event_receiver_id": "01HZX3J8J4M7Q9V6T2B5N1C0DE"
        })
    }

    #[test]
    fn parses_a_valid_event() {
        let text = valid()
            .to_string()
            .replace(r#"{"a":2,"b":1}"#, r#"{"b": 1, "a": 2}"#);
        let e = NewEvent::parse(serde_json::from_str(&text).unwrap()).unwrap();
        assert!(!e.success);
        assert_eq!(e.payload.as_str(), r#"{"b":1,"a":2}"#);
    }

    #[test]
    fn reports_every_problem() {
        let err =
            parse(json!({"name": "", "success": "yes", "payload": null, "event_receiver_id": "x"}))
                .unwrap_err();
        assert_eq!(
            err.messages(),
            vec![
                "name: must not be blank",
                "version: is required",
                "release: is required",
                "platform_id: is required",
                "package: is required",
                "description: is required",
                "payload: is required",
                "success: must be a boolean",
                "event_receiver_id: no event receiver with id \"x\"",
            ]
        );
    }

    proptest! {
        // Any single required string field set to whitespace is reported by name,
        // and nothing else is.
        #[test]
        fn blank_fields_are_named(idx in 0usize..6, blank in "[ \t\n]{0,5}") {
            let fields = ["name", "version", "release", "platform_id", "package", "description"];
            let mut v = valid();
            v[fields[idx]] = Value::String(blank);
            let err = parse(v).unwrap_err();
            prop_assert_eq!(err.messages(), vec![format!("{}: must not be blank", fields[idx])]);
        }

        // Non-blank strings are stored exactly as given, surrounding spaces included.
        #[test]
        fn text_is_kept_as_given(s in "[ ]{0,2}[a-zA-Z0-9.-]{1,12}[ ]{0,2}") {
            let mut v = valid();
            v["name"] = Value::String(s.clone());
            let e = parse(v).unwrap();
            prop_assert_eq!(e.unit.name.as_str(), s.as_str());
        }
    }
}

/// An event whose payload satisfied its receiver's schema: the only kind of
/// event a store accepts.
#[derive(Debug, Clone)]
pub struct CheckedEvent {
    event: NewEvent,
    receiver: std::sync::Arc<Receiver>,
    trace: Option<crate::TraceParent>,
}

impl CheckedEvent {
    /// Apply every rule at once: the fields, the receiver's existence
    /// (`receiver` is what the store found for [`EventInput::receiver_hint`])
    /// and the payload against the receiver's schema. Every problem is
    /// reported, not just the first.
    pub fn parse(
        input: EventInput,
        receiver: Option<std::sync::Arc<Receiver>>,
    ) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::default();
        let parts = Parts::parse(input, &mut errors);
        let receiver = match (parts.receiver_id, receiver) {
            (Some(id), Some(r)) if r.id == id => Some(r),
            (Some(id), _) => {
                errors.push(
                    "event_receiver_id",
                    format!("no event receiver with id \"{id}\""),
                );
                None
            }
            (None, _) => None,
        };
        if let (Some(r), Some((_, payload))) = (&receiver, &parts.payload)
            && let Err(violations) = check_payload(payload, &r.schema)
        {
            errors.extend(violations);
        }
        match (parts.assemble(), receiver) {
            (Some(event), Some(receiver)) if errors.is_empty() => Ok(Self {
                event,
                receiver,
                trace: None,
            }),
            _ => Err(errors),
        }
    }

    /// The stored event this becomes under the id and time the store gives it.
    pub fn to_event(&self, id: EventId, created_at: Timestamp) -> Event {
        let new = &self.event;
        Event {
            id,
            unit: new.unit.clone(),
            description: new.description.clone(),
            payload: new.payload.clone(),
            success: new.success,
            receiver_id: new.receiver_id,
            created_at,
        }
    }

    pub fn event(&self) -> &NewEvent {
        &self.event
    }

    pub fn receiver(&self) -> &std::sync::Arc<Receiver> {
        &self.receiver
    }

    /// The same event, written in the trace context `trace` (the span of
    /// the request that records it): its message, and a completion
    /// message it causes, carry that `traceparent`.
    pub fn with_trace(mut self, trace: Option<crate::TraceParent>) -> Self {
        self.trace = trace;
        self
    }

    /// The trace context the event is written in, if any.
    pub fn trace(&self) -> Option<&crate::TraceParent> {
        self.trace.as_ref()
    }
}
