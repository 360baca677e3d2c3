//! Messages for downstream consumers (CONTRACT section 5): CloudEvents 1.0
//! structured JSON documents that also carry EPR's top-level fields.

use crate::event::{Event, EventView, Unit};
use crate::group::Group;
use crate::id::MessageId;
use crate::receiver::Receiver;
use crate::time::Timestamp;
use crate::trace::TraceParent;
use serde::Serialize;

/// One message, rendered and ready for the outbox.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: MessageId,
    pub type_: String,
    pub source: String,
    /// Messages with the same key must reach a sink in commit order
    /// (the unit for event and completion messages).
    pub ordering_key: String,
    pub time: Timestamp,
    /// The trace context of the write that caused it (the CloudEvents
    /// distributed-tracing extension, also in `json`).
    pub trace: Option<TraceParent>,
    pub json: String,
}

#[derive(Serialize)]
struct Envelope<'a> {
    specversion: &'static str,
    id: MessageId,
    source: &'a str,
    #[serde(rename = "type")]
    type_: &'a str,
    time: Timestamp,
    datacontenttype: &'static str,
    subject: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<&'a TraceParent>,
    success: bool,
    api_version: &'static str,
    name: &'a str,
    version: &'a str,
    release: &'a str,
    platform_id: &'a str,
    package: &'a str,
    data: Data<'a>,
}

#[derive(Serialize)]
struct Data<'a> {
    events: Option<[EventView<'a>; 1]>,
    event_receivers: Option<[&'a Receiver; 1]>,
    event_receiver_groups: Option<[&'a Group; 1]>,
}

pub const RECEIVER_CREATED: &str = "cairn.event.receiver.created";
pub const GROUP_CREATED: &str = "cairn.event.receiver.group.created";
pub const GROUP_MODIFIED: &str = "cairn.event.receiver.group.modified";

/// The unit's ordering key: its five fields, unit-separated.
pub fn unit_key(u: &Unit) -> String {
    format!(
        "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
        u.name, u.version, u.release, u.platform_id, u.package
    )
}

struct Head<'a> {
    type_: &'a str,
    source: String,
    success: bool,
    name: &'a str,
    version: &'a str,
    release: String,
    platform_id: &'a str,
    package: &'a str,
    ordering_key: String,
    trace: Option<&'a TraceParent>,
}

fn render(id: MessageId, time: Timestamp, head: Head<'_>, data: Data<'_>) -> Message {
    let env = Envelope {
        specversion: "1.0",
        id,
        source: &head.source,
        type_: head.type_,
        time,
        datacontenttype: "application/json",
        subject: &head.ordering_key,
        traceparent: head.trace,
        success: head.success,
        api_version: "v1",
        name: head.name,
        version: head.version,
        release: &head.release,
        platform_id: head.platform_id,
        package: head.package,
        data,
    };
    // Serialising these plain structs cannot fail; fall back to a minimal
    // document rather than panic if it ever did.
    let json = serde_json::to_string(&env).unwrap_or_else(|e| {
        format!(
            r#"{{"specversion":"1.0","id":"{id}","error":"{}"}}"#,
            e.to_string().replace('"', "'")
        )
    });
    Message {
        id,
        type_: head.type_.to_owned(),
        source: head.source,
        ordering_key: head.ordering_key,
        time,
        trace: head.trace.copied(),
        json,
    }
}

/// An event was created (`trace`: the context it was written in).
pub fn event_created(
    id: MessageId,
    time: Timestamp,
    event: &Event,
    receiver: &Receiver,
    trace: Option<&TraceParent>,
) -> Message {
    let u = &event.unit;
    render(
        id,
        time,
        Head {
            type_: receiver.type_.as_str(),
            source: format!("cairn/receivers/{}", receiver.id),
            success: event.success,
            name: u.name.as_str(),
            version: u.version.as_str(),
            release: u.release.to_string(),
            platform_id: u.platform_id.as_str(),
            package: u.package.as_str(),
            ordering_key: unit_key(u),
            trace,
        },
        Data {
            events: Some([EventView { event, receiver }]),
            event_receivers: None,
            event_receiver_groups: None,
        },
    )
}

/// A group became complete for the completing event's unit.
pub fn group_completed(
    id: MessageId,
    time: Timestamp,
    group: &Group,
    event: &Event,
    receiver: &Receiver,
    trace: Option<&TraceParent>,
) -> Message {
    let u = &event.unit;
    render(
        id,
        time,
        Head {
            type_: group.type_.as_str(),
            source: format!("cairn/groups/{}", group.id),
            success: true,
            name: u.name.as_str(),
            version: u.version.as_str(),
            release: u.release.to_string(),
            platform_id: u.platform_id.as_str(),
            package: u.package.as_str(),
            ordering_key: unit_key(u),
            trace,
        },
        Data {
            events: Some([EventView { event, receiver }]),
            event_receivers: None,
            event_receiver_groups: Some([group]),
        },
    )
}

/// A receiver was created (`trace`: the context it was created in).
pub fn receiver_created(
    id: MessageId,
    receiver: &Receiver,
    trace: Option<&TraceParent>,
) -> Message {
    render(
        id,
        receiver.created_at,
        Head {
            type_: RECEIVER_CREATED,
            source: "cairn".to_owned(),
            success: true,
            name: receiver.name.as_str(),
            version: receiver.version.as_str(),
            release: receiver.created_at.to_string(),
            platform_id: "",
            package: "",
            ordering_key: format!("cairn/receivers/{}", receiver.id),
            trace,
        },
        Data {
            events: None,
            event_receivers: Some([receiver]),
            event_receiver_groups: None,
        },
    )
}

/// A group was created (`created = true`) or changed (`trace`: the
/// context of the change).
pub fn group_changed(
    id: MessageId,
    group: &Group,
    created: bool,
    trace: Option<&TraceParent>,
) -> Message {
    render(
        id,
        group.updated_at,
        Head {
            type_: if created {
                GROUP_CREATED
            } else {
                GROUP_MODIFIED
            },
            source: "cairn".to_owned(),
            success: true,
            name: group.name.as_str(),
            version: group.version.as_str(),
            release: group.updated_at.to_string(),
            platform_id: "",
            package: "",
            ordering_key: format!("cairn/groups/{}", group.id),
            trace,
        },
        Data {
            events: None,
            event_receivers: None,
            event_receiver_groups: Some([group]),
        },
    )
}
