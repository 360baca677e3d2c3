//! `Subscription`: events and group completions as they are committed, on
//! any node, from this node's live feed (`cairn_delivery::live`). Each
//! outbox message is decoded from its CloudEvents JSON; a subscriber that
//! falls behind the feed gets one error and its stream ends.

use super::objects::{EventObject, GroupCompletion};
use super::{OrGql, store};
use crate::error::ApiError;
use async_graphql::{Context, ID, InputObject, Result, Subscription};
use cairn_delivery::OutboxMessage;
use cairn_delivery::live::LiveHandle;
use cairn_domain::access::{Action, Resource};
use cairn_domain::message::{GROUP_CREATED, GROUP_MODIFIED};
use cairn_domain::{Event, EventId, GroupId, JsonText, ReceiverId, Text, Timestamp, Unit};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::HashSet;
use tokio::sync::broadcast::error::RecvError;

/// Which changes a subscription wants; every given field must match.
#[derive(InputObject, Default, Clone)]
#[graphql(rename_fields = "snake_case")]
pub struct LiveFilter {
    /// Events of this receiver; completions of groups holding it.
    pub event_receiver_id: Option<ID>,
    /// Events of this group's (current) receivers; this group's completions.
    pub event_receiver_group_id: Option<ID>,
    pub name: Option<String>,
    pub version: Option<String>,
    pub release: Option<String>,
    pub platform_id: Option<String>,
    pub package: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    source: String,
    #[serde(rename = "type")]
    type_: String,
    time: String,
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    events: Option<Vec<MessageEvent>>,
    event_receiver_groups: Option<Vec<MessageGroup>>,
}

#[derive(Deserialize)]
struct MessageEvent {
    id: String,
    name: String,
    version: String,
    release: String,
    platform_id: String,
    package: String,
    description: String,
    payload: Box<RawValue>,
    success: bool,
    created_at: String,
    event_receiver_id: String,
}

#[derive(Deserialize)]
struct MessageGroup {
    id: String,
    event_receiver_ids: Vec<String>,
}

enum Change {
    Event(Event),
    Completion(GroupCompletion, HashSet<ReceiverId>),
    Group(GroupId, HashSet<ReceiverId>),
    Other,
}

fn bad(what: &str) -> String {
    format!("outbox message with a malformed {what}")
}

impl MessageEvent {
    fn into_event(self) -> Result<Event, String> {
        Ok(Event {
            id: EventId::parse(&self.id).ok_or_else(|| bad("event id"))?,
            unit: Unit {
                name: Text::from_stored(self.name),
                version: Text::from_stored(self.version),
                release: Text::from_stored(self.release),
                platform_id: Text::from_stored(self.platform_id),
                package: Text::from_stored(self.package),
            },
            description: Text::from_stored(self.description),
            payload: JsonText::from_raw(&self.payload),
            success: self.success,
            receiver_id: ReceiverId::parse(&self.event_receiver_id)
                .ok_or_else(|| bad("receiver id"))?,
            created_at: Timestamp::parse_rfc3339(&self.created_at)
                .ok_or_else(|| bad("created_at"))?,
        })
    }
}

fn members(g: &MessageGroup) -> HashSet<ReceiverId> {
    g.event_receiver_ids
        .iter()
        .filter_map(|s| ReceiverId::parse(s))
        .collect()
}

fn decode(m: &OutboxMessage) -> Result<Change, String> {
    let msg: Message = serde_json::from_str(&m.json).map_err(|e| bad(&format!("body ({e})")))?;
    let first_event = |d: Data| d.events.and_then(|e| e.into_iter().next());
    if msg.source.starts_with("cairn/receivers/") {
        let e = first_event(msg.data).ok_or_else(|| bad("event"))?;
        return Ok(Change::Event(e.into_event()?));
    }
    if msg.source.starts_with("cairn/groups/") {
        let group = msg
            .data
            .event_receiver_groups
            .as_ref()
            .and_then(|g| g.first())
            .ok_or_else(|| bad("group"))?;
        let group_id = GroupId::parse(&group.id).ok_or_else(|| bad("group id"))?;
        let ids = members(group);
        let event = first_event(msg.data)
            .ok_or_else(|| bad("event"))?
            .into_event()?;
        let completed_at = Timestamp::parse_rfc3339(&msg.time).ok_or_else(|| bad("time"))?;
        return Ok(Change::Completion(
            GroupCompletion {
                group_id,
                unit: event.unit,
                completed_at,
                event_id: event.id,
            },
            ids,
        ));
    }
    if (msg.type_ == GROUP_CREATED || msg.type_ == GROUP_MODIFIED)
        && let Some(g) = msg
            .data
            .event_receiver_groups
            .as_ref()
            .and_then(|g| g.first())
    {
        let id = GroupId::parse(&g.id).ok_or_else(|| bad("group id"))?;
        return Ok(Change::Group(id, members(g)));
    }
    Ok(Change::Other)
}

/// A filter with its ids parsed, and the group's members as last seen.
struct Matcher {
    receiver: Option<ReceiverId>,
    group: Option<(GroupId, HashSet<ReceiverId>)>,
    unit: [Option<String>; 5],
}

impl Matcher {
    async fn new(ctx: &Context<'_>, f: LiveFilter) -> Result<Self> {
        let mut errors = Vec::new();
        let receiver = f.event_receiver_id.as_ref().and_then(|s| {
            let id = ReceiverId::parse(s);
            if id.is_none() {
                errors.push(format!(
                    "event_receiver_id: is not an event receiver id: {:?}",
                    s.as_str()
                ));
            }
            id
        });
        let group_id = f.event_receiver_group_id.as_ref().and_then(|s| {
            let id = GroupId::parse(s);
            if id.is_none() {
                errors.push(format!(
                    "event_receiver_group_id: no group with id {:?}",
                    s.as_str()
                ));
            }
            id
        });
        if !errors.is_empty() {
            return Err(ApiError::Invalid(errors)).or_gql(ctx);
        }
        let group = match group_id {
            None => None,
            Some(gid) => {
                let g = store(ctx)?.group(gid).await.or_gql(ctx)?.ok_or_else(|| {
                    ApiError::Invalid(vec![format!(
                        "event_receiver_group_id: no group with id \"{gid}\""
                    )])
                });
                let g = g.or_gql(ctx)?;
                Some((gid, g.receiver_ids.into_iter().collect()))
            }
        };
        Ok(Self {
            receiver,
            group,
            unit: [f.name, f.version, f.release, f.platform_id, f.package],
        })
    }

    fn unit(&self, u: &Unit) -> bool {
        let have = [&u.name, &u.version, &u.release, &u.platform_id, &u.package];
        self.unit
            .iter()
            .zip(have)
            .all(|(want, have)| want.as_deref().is_none_or(|w| w == have.as_str()))
    }

    fn event(&self, e: &Event) -> bool {
        self.receiver.is_none_or(|r| r == e.receiver_id)
            && self
                .group
                .as_ref()
                .is_none_or(|(_, members)| members.contains(&e.receiver_id))
            && self.unit(&e.unit)
    }

    fn completion(&self, c: &GroupCompletion, members: &HashSet<ReceiverId>) -> bool {
        self.receiver.is_none_or(|r| members.contains(&r))
            && self.group.as_ref().is_none_or(|(g, _)| *g == c.group_id)
            && self.unit(&c.unit)
    }

    /// Keep the watched group's members current as its changes stream by.
    fn observe(&mut self, id: GroupId, now: HashSet<ReceiverId>) {
        if let Some((g, members)) = &mut self.group
            && *g == id
        {
            *members = now;
        }
    }
}

fn lagged(n: u64) -> async_graphql::Error {
    let mut e = async_graphql::Error::new(format!(
        "subscription: fell {n} messages behind the live feed and was closed; \
         subscribe again and read what was missed with the list queries"
    ));
    let mut ext = async_graphql::ErrorExtensionValues::default();
    ext.set("code", "SUBSCRIPTION_LAGGED");
    e.extensions = Some(ext);
    e
}

fn live(ctx: &Context<'_>) -> Result<LiveHandle> {
    ctx.data::<LiveHandle>()
        .cloned()
        .map_err(|_| "subscriptions are not available on this node".into())
}

/// Turn the feed into a stream of the items `pick` keeps; a lag ends it
/// with an error.
fn stream<T: Send + 'static>(
    live: LiveHandle,
    mut matcher: Matcher,
    mut pick: impl FnMut(&mut Matcher, Change) -> Option<T> + Send + 'static,
) -> impl Stream<Item = Result<T>> {
    let mut rx = live.subscribe();
    async_stream(move |yielder| async move {
        loop {
            match rx.recv().await {
                Ok(m) => match decode(&m) {
                    Ok(Change::Group(id, members)) => matcher.observe(id, members),
                    Ok(change) => {
                        if let Some(item) = pick(&mut matcher, change)
                            && yielder.send(Ok(item)).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(seq = m.seq, error = %e, "live feed: skipping a message")
                    }
                },
                Err(RecvError::Lagged(n)) => {
                    let _ = yielder.send(Err(lagged(n))).await;
                    return;
                }
                Err(RecvError::Closed) => return,
            }
        }
    })
}

/// A minimal generator: the body sends items into a bounded channel that
/// the returned stream drains (dropped subscription = closed channel).
fn async_stream<T, F, Fut>(body: F) -> impl Stream<Item = T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let task = tokio::spawn(body(tx));
    futures_util::stream::unfold((rx, AbortOnDrop(task)), |(mut rx, guard)| async move {
        rx.recv().await.map(|item| (item, (rx, guard)))
    })
}

/// Ends the producing task when the stream is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub struct SubscriptionRoot;

#[Subscription(rename_fields = "snake_case", rename_args = "snake_case")]
impl SubscriptionRoot {
    /// Events as they are created (on any node), filtered.
    async fn events_created(
        &self,
        ctx: &Context<'_>,
        filter: Option<LiveFilter>,
    ) -> Result<impl Stream<Item = Result<EventObject>>> {
        super::require(ctx, Resource::Events, Action::Read).await?;
        let live = live(ctx)?;
        let matcher = Matcher::new(ctx, filter.unwrap_or_default()).await?;
        Ok(stream(live, matcher, |m, change| match change {
            Change::Event(e) if m.event(&e) => Some(EventObject(e)),
            _ => None,
        }))
    }

    /// Group completions as they are recorded (on any node), filtered.
    async fn group_completions(
        &self,
        ctx: &Context<'_>,
        filter: Option<LiveFilter>,
    ) -> Result<impl Stream<Item = Result<GroupCompletion>>> {
        super::require(ctx, Resource::Groups, Action::Read).await?;
        let live = live(ctx)?;
        let matcher = Matcher::new(ctx, filter.unwrap_or_default()).await?;
        Ok(stream(live, matcher, |m, change| match change {
            Change::Completion(c, members) if m.completion(&c, &members) => Some(c),
            _ => None,
        }))
    }
}
