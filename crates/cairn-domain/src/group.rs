//! Event receiver groups: a set of receivers that together gate a unit.

use crate::error::FieldErrors;
use crate::id::{GroupId, ReceiverId};
use crate::text::{Text, optional_bool, optional_text, required_text};
use crate::time::Timestamp;
use serde::Deserialize;
use serde_json::Value;

/// Most receivers one group may hold.
pub const MAX_GROUP_RECEIVERS: usize = 1000;

#[derive(Debug, Default, Deserialize)]
pub struct GroupInput {
    pub name: Option<Value>,
    #[serde(rename = "type")]
    pub type_: Option<Value>,
    pub version: Option<Value>,
    pub description: Option<Value>,
    pub enabled: Option<Value>,
    pub event_receiver_ids: Option<Value>,
}

/// A group that passed every check except that its receivers exist, which
/// needs the store and is checked where the store is at hand.
#[derive(Debug, Clone)]
pub struct NewGroup {
    pub name: Text,
    pub type_: Text,
    pub version: Text,
    pub description: Text,
    pub enabled: bool,
    pub receiver_ids: Vec<ReceiverId>,
    /// The principal creating it, stored as its owner; `None` when
    /// authentication is off.
    pub owner: Option<String>,
    /// The trace context of the request creating it, which its message
    /// carries (`traceparent`).
    pub trace: Option<crate::TraceParent>,
}

impl GroupInput {
    /// The well-formed receiver ids this input names: the ones to look up
    /// before [`NewGroup::parse`].
    pub fn receiver_hints(&self) -> Vec<ReceiverId> {
        receiver_hints(self.event_receiver_ids.as_ref())
    }
}

fn receiver_hints(value: Option<&Value>) -> Vec<ReceiverId> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().and_then(ReceiverId::parse))
            .collect(),
        _ => Vec::new(),
    }
}

impl NewGroup {
    /// Check every field; `known` tells which receiver ids exist, so that
    /// unknown ones are reported by their index with the other problems.
    pub fn parse(
        input: GroupInput,
        known: impl Fn(ReceiverId) -> bool,
    ) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::default();
        let name = required_text("name", input.name.as_ref(), &mut errors);
        let type_ = required_text("type", input.type_.as_ref(), &mut errors);
        let version = required_text("version", input.version.as_ref(), &mut errors);
        let description = required_text("description", input.description.as_ref(), &mut errors);
        let enabled = optional_bool("enabled", input.enabled.as_ref(), &mut errors);
        let receiver_ids =
            parse_receiver_ids(input.event_receiver_ids.as_ref(), &mut errors, known);
        match (name, type_, version, description, receiver_ids) {
            (Some(name), Some(type_), Some(version), Some(description), Some(receiver_ids))
                if errors.is_empty() =>
            {
                Ok(Self {
                    name,
                    type_,
                    version,
                    description,
                    enabled: enabled.unwrap_or(false),
                    receiver_ids,
                    owner: None,
                    trace: None,
                })
            }
            _ => Err(errors),
        }
    }
}

/// `{"event_receiver_ids": [...]}`, the body that adds receivers to a group.
#[derive(Debug, Default, Deserialize)]
pub struct ReceiverIdsInput {
    pub event_receiver_ids: Option<Value>,
}

impl ReceiverIdsInput {
    pub fn receiver_hints(&self) -> Vec<ReceiverId> {
        receiver_hints(self.event_receiver_ids.as_ref())
    }

    pub fn parse(self, known: impl Fn(ReceiverId) -> bool) -> Result<Vec<ReceiverId>, FieldErrors> {
        let mut errors = FieldErrors::default();
        let ids = parse_receiver_ids(self.event_receiver_ids.as_ref(), &mut errors, known);
        match ids {
            Some(ids) if errors.is_empty() => Ok(ids),
            _ => Err(errors),
        }
    }
}

/// A non-empty list of ids of existing receivers, duplicates collapsed, in
/// first-seen order. Problems are named by their index in the input.
fn parse_receiver_ids(
    value: Option<&Value>,
    errors: &mut FieldErrors,
    known: impl Fn(ReceiverId) -> bool,
) -> Option<Vec<ReceiverId>> {
    const FIELD: &str = "event_receiver_ids";
    let items = match value {
        None | Some(Value::Null) => {
            errors.push(FIELD, "is required");
            return None;
        }
        Some(Value::Array(items)) => items,
        Some(_) => {
            errors.push(FIELD, "must be an array of event receiver ids");
            return None;
        }
    };
    if items.is_empty() {
        errors.push(FIELD, "must name at least one event receiver");
        return None;
    }
    if items.len() > MAX_GROUP_RECEIVERS {
        errors.push(
            FIELD,
            format!("must name at most {MAX_GROUP_RECEIVERS} event receivers"),
        );
        return None;
    }
    let before = errors.0.len();
    let mut ids: Vec<ReceiverId> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item.as_str() {
            Some(s) => match ReceiverId::parse(s) {
                Some(id) if known(id) => {
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
                Some(id) => errors.push(
                    format!("{FIELD}[{i}]"),
                    format!("no event receiver with id \"{id}\""),
                ),
                None => errors.push(
                    format!("{FIELD}[{i}]"),
                    format!("no event receiver with id {s:?}"),
                ),
            },
            None => errors.push(format!("{FIELD}[{i}]"), "must be a string"),
        }
    }
    (errors.0.len() == before).then_some(ids)
}

/// The fields a PATCH may change.
#[derive(Debug, Default, Deserialize)]
pub struct GroupPatchInput {
    pub name: Option<Value>,
    #[serde(rename = "type")]
    pub type_: Option<Value>,
    pub version: Option<Value>,
    pub description: Option<Value>,
    pub enabled: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupPatch {
    pub name: Option<Text>,
    pub type_: Option<Text>,
    pub version: Option<Text>,
    pub description: Option<Text>,
    pub enabled: Option<bool>,
}

impl GroupPatch {
    pub fn parse(input: GroupPatchInput) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::default();
        let patch = Self {
            name: optional_text("name", input.name.as_ref(), &mut errors),
            type_: optional_text("type", input.type_.as_ref(), &mut errors),
            version: optional_text("version", input.version.as_ref(), &mut errors),
            description: optional_text("description", input.description.as_ref(), &mut errors),
            enabled: optional_bool("enabled", input.enabled.as_ref(), &mut errors),
        };
        if errors.is_empty() && patch == Self::default() {
            errors.push(
                "body",
                "must set at least one of enabled, name, type, version, description",
            );
        }
        errors.into_result(|| patch)
    }
}

/// A stored group.
#[derive(Debug, Clone)]
pub struct Group {
    pub id: GroupId,
    pub name: Text,
    pub type_: Text,
    pub version: Text,
    pub description: Text,
    pub enabled: bool,
    pub receiver_ids: Vec<ReceiverId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The principal that created it (not part of the EPR wire shape).
    pub owner: Option<String>,
}

/// Why a change of a group's receivers is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipError {
    /// The receiver is not in the group (a missing resource: 404).
    NotMember(String),
    /// The change would break a rule of the group (bad input: 400).
    Invalid(FieldErrors),
}

impl Group {
    /// The receivers of `ids` that are not yet members, in the order given:
    /// what adding them changes (nothing, when empty). Refused if the group
    /// would hold more than [`MAX_GROUP_RECEIVERS`].
    pub fn additions(&self, ids: Vec<ReceiverId>) -> Result<Vec<ReceiverId>, MembershipError> {
        let fresh: Vec<ReceiverId> = ids
            .into_iter()
            .filter(|r| !self.receiver_ids.contains(r))
            .collect();
        if fresh.len() + self.receiver_ids.len() > MAX_GROUP_RECEIVERS {
            let mut e = FieldErrors::default();
            e.push(
                "event_receiver_ids",
                format!("a group may hold at most {MAX_GROUP_RECEIVERS} event receivers"),
            );
            return Err(MembershipError::Invalid(e));
        }
        Ok(fresh)
    }

    /// A receiver may be removed if it is a member and not the last one.
    pub fn check_removal(&self, receiver: ReceiverId) -> Result<(), MembershipError> {
        if !self.receiver_ids.contains(&receiver) {
            return Err(MembershipError::NotMember(format!(
                "event receiver {receiver} is not in group {}",
                self.id
            )));
        }
        if self.receiver_ids.len() == 1 {
            let mut e = FieldErrors::default();
            e.push(
                "event_receiver_ids",
                "a group must keep at least one event receiver",
            );
            return Err(MembershipError::Invalid(e));
        }
        Ok(())
    }

    /// Apply a patch; true when anything changed.
    pub fn apply(&mut self, patch: &GroupPatch) -> bool {
        let before = (
            self.name.clone(),
            self.type_.clone(),
            self.version.clone(),
            self.description.clone(),
            self.enabled,
        );
        if let Some(v) = &patch.name {
            self.name = v.clone();
        }
        if let Some(v) = &patch.type_ {
            self.type_ = v.clone();
        }
        if let Some(v) = &patch.version {
            self.version = v.clone();
        }
        if let Some(v) = &patch.description {
            self.description = v.clone();
        }
        if let Some(v) = patch.enabled {
            self.enabled = v;
        }
        before
            != (
                self.name.clone(),
                self.type_.clone(),
                self.version.clone(),
                self.description.clone(),
                self.enabled,
            )
    }
}

impl serde::Serialize for Group {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Group", 9)?;
        st.serialize_field("id", &self.id)?;
        st.serialize_field("name", self.name.as_str())?;
        st.serialize_field("type", self.type_.as_str())?;
        st.serialize_field("version", self.version.as_str())?;
        st.serialize_field("description", self.description.as_str())?;
        st.serialize_field("enabled", &self.enabled)?;
        st.serialize_field("event_receiver_ids", &self.receiver_ids)?;
        st.serialize_field("created_at", &self.created_at)?;
        st.serialize_field("updated_at", &self.updated_at)?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const A: &str = "01HZX3J8J4M7Q9V6T2B5N1C0DA";
    const B: &str = "01HZX3J8J4M7Q9V6T2B5N1C0DB";

    #[test]
    fn duplicates_collapse_in_first_seen_order() {
        let g = NewGroup::parse(
            serde_json::from_value(json!({
                "name": "g", "type": "t", "version": "1", "description": "d",
                "event_receiver_ids": [B, A, B]
            }))
            .unwrap(),
            |_| true,
        )
        .unwrap();
        assert_eq!(
            g.receiver_ids,
            vec![ReceiverId::parse(B).unwrap(), ReceiverId::parse(A).unwrap()]
        );
        assert!(!g.enabled);
    }

    #[test]
    fn empty_or_bad_receiver_lists_are_refused() {
        let parse = |ids: Value| {
            ReceiverIdsInput {
                event_receiver_ids: Some(ids),
            }
            .parse(|id| id != ReceiverId::parse(B).unwrap())
            .unwrap_err()
            .messages()
        };
        assert_eq!(
            parse(json!([])),
            vec!["event_receiver_ids: must name at least one event receiver"]
        );
        assert_eq!(
            parse(json!([A, 7, "zz", B])),
            vec![
                "event_receiver_ids[1]: must be a string",
                "event_receiver_ids[2]: no event receiver with id \"zz\"",
                format!("event_receiver_ids[3]: no event receiver with id \"{B}\"").as_str(),
            ]
        );
    }

    #[test]
    fn empty_patch_is_refused() {
        let err = GroupPatch::parse(GroupPatchInput::default()).unwrap_err();
        assert_eq!(err.0[0].field, "body");
        let p =
            GroupPatch::parse(serde_json::from_value(json!({"enabled": true})).unwrap()).unwrap();
        assert_eq!(p.enabled, Some(true));
    }
}
