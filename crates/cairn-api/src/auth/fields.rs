//! Loose JSON object bodies of the identity routes, read field by field so
//! every problem is reported with its field's name.

use crate::error::ApiError;
use crate::extract::Body;
use cairn_domain::Timestamp;
use serde_json::{Map, Value};

/// A JSON object body.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct Fields(pub Map<String, Value>);

impl Body for Fields {
    const SHAPE: &'static str = "must be a JSON object";
}

/// Reads fields, collecting one message per problem.
pub struct Reader<'a> {
    map: &'a Map<String, Value>,
    known: Vec<&'static str>,
    pub errors: Vec<String>,
}

impl<'a> Reader<'a> {
    pub fn new(fields: &'a Fields) -> Self {
        Self {
            map: &fields.0,
            known: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn get(&mut self, name: &'static str) -> Option<&'a Value> {
        self.known.push(name);
        self.map.get(name).filter(|v| !v.is_null())
    }

    pub fn string(&mut self, name: &'static str, required: bool) -> Option<String> {
        match self.get(name) {
            None if required => {
                self.errors.push(format!("{name}: is required"));
                None
            }
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.errors.push(format!("{name}: must be a string"));
                None
            }
        }
    }

    pub fn strings(&mut self, name: &'static str) -> Option<Vec<String>> {
        match self.get(name) {
            None => None,
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, v) in items.iter().enumerate() {
                    match v {
                        Value::String(s) => out.push(s.clone()),
                        _ => self.errors.push(format!("{name}[{i}]: must be a string")),
                    }
                }
                Some(out)
            }
            Some(_) => {
                self.errors
                    .push(format!("{name}: must be an array of strings"));
                None
            }
        }
    }

    pub fn boolean(&mut self, name: &'static str) -> Option<bool> {
        match self.get(name) {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                self.errors.push(format!("{name}: must be true or false"));
                None
            }
        }
    }

    pub fn positive_int(&mut self, name: &'static str) -> Option<i64> {
        match self.get(name) {
            None => None,
            Some(Value::Number(n)) => match n.as_i64() {
                Some(v) if v > 0 => Some(v),
                _ => {
                    self.errors
                        .push(format!("{name}: must be a positive whole number"));
                    None
                }
            },
            Some(_) => {
                self.errors
                    .push(format!("{name}: must be a positive whole number"));
                None
            }
        }
    }

    pub fn timestamp(&mut self, name: &'static str) -> Option<Timestamp> {
        let s = self.string(name, false)?;
        match Timestamp::parse_rfc3339(&s) {
            Some(t) => Some(t),
            None => {
                self.errors
                    .push(format!("{name}: must be an RFC 3339 date-time, got {s:?}"));
                None
            }
        }
    }

    /// Fail with every problem seen, including fields nobody asked for.
    pub fn finish(mut self) -> Result<(), ApiError> {
        let mut unknown: Vec<&String> = self
            .map
            .keys()
            .filter(|k| !self.known.contains(&k.as_str()))
            .collect();
        unknown.sort();
        for k in unknown {
            self.errors.push(format!("{k}: is not a known field"));
        }
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Invalid(self.errors))
        }
    }
}
