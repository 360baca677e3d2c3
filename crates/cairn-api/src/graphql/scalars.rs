//! The `JSON` and `Time` scalars of CONTRACT section 7, and the conversion
//! of JSON text to GraphQL values that keeps key order and number text.

use async_graphql::{InputValueError, InputValueResult, Name, Number, Scalar, ScalarType, Value};
use cairn_domain::{JsonText, Timestamp};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// A JSON document. As input it is either a string holding JSON text (what
/// EPR clients send) or any GraphQL value (an object, a list, ...); as
/// output it is the document exactly as stored.
#[derive(Debug)]
pub struct Json(pub JsonText);

#[Scalar(name = "JSON")]
impl ScalarType for Json {
    fn parse(value: Value) -> InputValueResult<Self> {
        match value {
            Value::String(s) => match JsonText::parse(&s) {
                Some(text) => Ok(Self(text)),
                None => Err(InputValueError::custom(format!(
                    "a string given as JSON must hold JSON text: {}",
                    json_error(&s)
                ))),
            },
            other => {
                let text = serde_json::to_string(&other).map_err(InputValueError::custom)?;
                JsonText::parse(&text)
                    .map(Self)
                    .ok_or_else(|| InputValueError::custom("is not a JSON value"))
            }
        }
    }

    fn to_value(&self) -> Value {
        json_to_value(self.0.as_str()).unwrap_or(Value::Null)
    }
}

fn json_error(s: &str) -> String {
    match serde_json::from_str::<serde::de::IgnoredAny>(s) {
        Ok(_) => "not a single JSON value".to_owned(),
        Err(e) => e.to_string(),
    }
}

/// An instant: RFC 3339 in UTC with a `Z` suffix and microseconds.
#[derive(Debug)]
pub struct Time(pub Timestamp);

#[Scalar(name = "Time")]
impl ScalarType for Time {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => Timestamp::parse_rfc3339(s).map(Self).ok_or_else(|| {
                InputValueError::custom(format!("must be an RFC 3339 timestamp, got {s:?}"))
            }),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_string())
    }
}

/// serde_json's private marker for numbers kept as text
/// (`arbitrary_precision`, on in this workspace): a number arrives at a
/// generic visitor as a one-entry map under this key.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// Parse JSON text into a GraphQL value, keeping object key order and the
/// exact text of every number.
pub fn json_to_value(text: &str) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let v = Seed.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// The same, for an already-parsed raw JSON value (GraphQL variables).
pub fn raw_to_value(raw: &serde_json::value::RawValue) -> Result<Value, serde_json::Error> {
    json_to_value(raw.get())
}

struct Seed;

impl<'de> DeserializeSeed<'de> for Seed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Boolean(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(Seed)? {
            items.push(v);
        }
        Ok(Value::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = async_graphql::indexmap::IndexMap::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.is_empty() && key == NUMBER_TOKEN {
                let text: String = map.next_value()?;
                let n: Number = text.parse().map_err(serde::de::Error::custom)?;
                return Ok(Value::Number(n));
            }
            let v = map.next_value_seed(Seed)?;
            out.insert(Name::new(key), v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_key_order_and_number_text() {
        let text =
            r#"{"z":1.10,"a":[2.5e+3,-3,123456789012345678901234567890],"m":{"b":null,"a":"x"}}"#;
        let v = json_to_value(text).unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), text);
        let back = Json::parse(v).unwrap();
        assert_eq!(back.0.as_str(), text);
        // Every digit is kept; serde_json writes an exponent with its sign.
        let v = json_to_value("[1e400]").unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "[1e+400]");
    }

    #[test]
    fn strings_hold_json_text() {
        let j = Json::parse(Value::String(r#"{"b": 1, "a": 2}"#.into())).unwrap();
        assert_eq!(j.0.as_str(), r#"{"b":1,"a":2}"#);
        assert!(Json::parse(Value::String("not json".into())).is_err());
    }
}
