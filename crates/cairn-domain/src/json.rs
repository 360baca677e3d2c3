//! JSON documents kept exactly as submitted: same keys, same key order, same
//! number text. Only insignificant whitespace between tokens is removed.

use serde_json::value::RawValue;
use std::fmt;

/// Valid JSON text, compacted, otherwise byte-for-byte as the client sent it.
#[derive(Clone, PartialEq, Eq)]
pub struct JsonText(String);

impl JsonText {
    /// From text that serde_json already accepted as one JSON value.
    pub fn from_raw(raw: &RawValue) -> Self {
        Self(compact(raw.get()))
    }

    /// Parse untrusted text; `None` unless it is exactly one JSON value.
    pub fn parse(text: &str) -> Option<Self> {
        let raw: Box<RawValue> = serde_json::from_str(text).ok()?;
        Some(Self::from_raw(&raw))
    }

    /// Rebuild from storage, where only valid JSON was ever written.
    pub fn from_stored(text: String) -> Self {
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The document as a tree, for validation. Numbers beyond f64 lose
    /// precision here, never in the stored text.
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.0)
    }

    pub fn as_raw(&self) -> &RawValue {
        // The text is valid JSON by construction; a failure here would be a
        // bug, and is rendered as `null` rather than panicking.
        match serde_json::from_str::<&RawValue>(&self.0) {
            Ok(raw) => raw,
            Err(_) => null_raw(),
        }
    }

    pub fn is_null(&self) -> bool {
        self.0 == "null"
    }
}

fn null_raw() -> &'static RawValue {
    static NULL: std::sync::OnceLock<Box<RawValue>> = std::sync::OnceLock::new();
    NULL.get_or_init(|| RawValue::from_string("null".to_owned()).unwrap_or_default())
}

impl fmt::Debug for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for JsonText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.as_raw().serialize(s)
    }
}

/// Remove whitespace outside strings from valid JSON text.
fn compact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keeps_order_numbers_and_string_whitespace() {
        let t = JsonText::parse(" { \"z\" : 1.10 , \"a\" : [ \"x y\\\" \" , 1e400 ] } ").unwrap();
        assert_eq!(t.as_str(), r#"{"z":1.10,"a":["x y\" ",1e400]}"#);
    }

    #[test]
    fn rejects_non_json() {
        assert!(JsonText::parse("{").is_none());
        assert!(JsonText::parse("1 2").is_none());
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|n| serde_json::json!(n)),
            "[ a-z\"\\\\\n\t]{0,8}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::vec(("[a-z ]{0,4}", inner), 0..4)
                    .prop_map(|kv| { serde_json::Value::Object(kv.into_iter().collect()) }),
            ]
        })
    }

    proptest! {
        #[test]
        fn compacting_pretty_json_gives_compact_json(v in arb_json()) {
            let pretty = serde_json::to_string_pretty(&v).unwrap();
            let compact = serde_json::to_string(&v).unwrap();
            let t = JsonText::parse(&pretty).unwrap();
            prop_assert_eq!(t.as_str(), compact.as_str());
            prop_assert_eq!(t.to_value().unwrap(), v);
        }
    }
}
