//! `Query` and `Mutation`: CONTRACT section 7's names (EPR's), plus
//! paging, group status and completions, and group membership changes.

use super::objects::{
    EventObject, EventReceiver, EventReceiverGroup, GroupCompletion, GroupStatusObject,
    prime_receivers,
};
use super::scalars::{Json, Time};
use super::{Limits, NextCursors, OrGql, store};
use crate::error::ApiError;
use crate::page::Page;
use crate::service;
use async_graphql::{Context, ID, InputObject, Object, Result};
use cairn_domain::access::{Action, Resource};
use cairn_domain::group::{GroupPatchInput, ReceiverIdsInput};
use cairn_domain::{
    EventId, EventInput, GroupId, GroupInput, ReceiverId, ReceiverInput, Timestamp,
};
use cairn_store::{EventFilter, GroupFilter, ReceiverFilter};
use serde_json::Value;
use serde_json::value::RawValue;

fn page(
    ctx: &Context<'_>,
    limit: Option<i64>,
    cursor: Option<&str>,
    errors: &mut Vec<String>,
) -> Page {
    let max = ctx
        .data::<Limits>()
        .map(|l| l.max_list)
        .unwrap_or(crate::page::MAX_LIMIT);
    Page::from_args(limit, cursor, max, errors)
}

/// Record the next page's cursor under this field's response key.
fn next_cursor(ctx: &Context<'_>, next: Option<String>) {
    if let (Some(next), Ok(cursors)) = (next, ctx.data::<NextCursors>()) {
        cursors.insert(ctx.item.node.response_key().node.to_string(), next);
    }
}

fn group_id(id: &str) -> Result<GroupId, ApiError> {
    GroupId::parse(id).ok_or_else(|| ApiError::NotFound(format!("no group with id {id:?}")))
}

fn text(v: Option<String>) -> Option<Value> {
    v.map(Value::String)
}

fn raw(v: Option<Json>) -> Option<Box<RawValue>> {
    v.and_then(|j| RawValue::from_string(j.0.as_str().to_owned()).ok())
}

fn invalid(errors: Vec<String>) -> Result<(), ApiError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid(errors))
    }
}

#[derive(InputObject, Default)]
#[graphql(rename_fields = "snake_case")]
pub struct FindEventInput {
    pub id: Option<ID>,
    pub name: Option<String>,
    pub version: Option<String>,
    pub release: Option<String>,
    pub platform_id: Option<String>,
    pub package: Option<String>,
    pub success: Option<bool>,
    pub event_receiver_id: Option<ID>,
    /// Beyond EPR: `created_at` at or after this instant.
    pub since: Option<Time>,
    /// Beyond EPR: `created_at` before this instant.
    pub until: Option<Time>,
}

#[derive(InputObject, Default)]
#[graphql(rename_fields = "snake_case")]
pub struct FindEventReceiverInput {
    pub id: Option<ID>,
    pub name: Option<String>,
    #[graphql(name = "type")]
    pub type_: Option<String>,
    pub version: Option<String>,
}

#[derive(InputObject, Default)]
#[graphql(rename_fields = "snake_case")]
pub struct FindEventReceiverGroupInput {
    pub id: Option<ID>,
    pub name: Option<String>,
    #[graphql(name = "type")]
    pub type_: Option<String>,
    pub version: Option<String>,
    /// Beyond EPR.
    pub enabled: Option<bool>,
}

/// Every field is checked by the same rules as REST (so all are optional
/// here, and a missing one is reported as `field: is required`).
#[derive(InputObject)]
#[graphql(rename_fields = "snake_case")]
pub struct CreateEventInput {
    pub name: Option<String>,
    pub version: Option<String>,
    pub release: Option<String>,
    pub platform_id: Option<String>,
    pub package: Option<String>,
    pub description: Option<String>,
    pub payload: Option<Json>,
    pub success: Option<bool>,
    pub event_receiver_id: Option<ID>,
}

#[derive(InputObject)]
#[graphql(rename_fields = "snake_case")]
pub struct CreateEventReceiverInput {
    pub name: Option<String>,
    #[graphql(name = "type")]
    pub type_: Option<String>,
    pub version: Option<String>,
    pub description: Option<String>,
    pub schema: Option<Json>,
}

#[derive(InputObject)]
#[graphql(rename_fields = "snake_case")]
pub struct CreateEventReceiverGroupInput {
    pub name: Option<String>,
    #[graphql(name = "type")]
    pub type_: Option<String>,
    pub version: Option<String>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    pub event_receiver_ids: Option<Vec<ID>>,
}

fn ids_value(ids: Option<Vec<ID>>) -> Option<Value> {
    ids.map(|ids| Value::Array(ids.into_iter().map(|id| Value::String(id.0)).collect()))
}

pub struct QueryRoot;

#[Object(rename_fields = "snake_case", rename_args = "snake_case")]
impl QueryRoot {
    /// The event with this id: a one-element list, or empty if none.
    async fn events_by_id(&self, ctx: &Context<'_>, id: ID) -> Result<Vec<EventObject>> {
        super::require(ctx, Resource::Events, Action::Read).await?;
        let Some(eid) = EventId::parse(&id) else {
            return Ok(Vec::new());
        };
        let found = store(ctx)?.event(eid).await.or_gql(ctx)?;
        Ok(found.map(EventObject).into_iter().collect())
    }

    async fn event_receivers_by_id(&self, ctx: &Context<'_>, id: ID) -> Result<Vec<EventReceiver>> {
        super::require(ctx, Resource::Receivers, Action::Read).await?;
        let Some(rid) = ReceiverId::parse(&id) else {
            return Ok(Vec::new());
        };
        let found = store(ctx)?.receiver(rid).await.or_gql(ctx)?;
        Ok(found.map(EventReceiver).into_iter().collect())
    }

    async fn event_receiver_groups_by_id(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<Vec<EventReceiverGroup>> {
        super::require(ctx, Resource::Groups, Action::Read).await?;
        let Some(gid) = GroupId::parse(&id) else {
            return Ok(Vec::new());
        };
        let found = store(ctx)?.group(gid).await.or_gql(ctx)?;
        Ok(found.map(EventReceiverGroup).into_iter().collect())
    }

    /// Events matching every given field, oldest first.
    /// Complexity: `limit` (default 100) times the selection of one item.
    #[graphql(
        complexity = "(limit.unwrap_or(100).clamp(1, 1_000_000) as usize).saturating_mul(child_complexity).saturating_add(1)"
    )]
    async fn events(
        &self,
        ctx: &Context<'_>,
        event: Option<FindEventInput>,
        limit: Option<i64>,
        cursor: Option<String>,
    ) -> Result<Vec<EventObject>> {
        super::require(ctx, Resource::Events, Action::Read).await?;
        let f = event.unwrap_or_default();
        let mut errors = Vec::new();
        let page = page(ctx, limit, cursor.as_deref(), &mut errors);
        let receiver_id = f.event_receiver_id.as_ref().and_then(|s| {
            let id = ReceiverId::parse(s);
            if id.is_none() {
                errors.push(format!(
                    "event_receiver_id: is not an event receiver id: {:?}",
                    s.as_str()
                ));
            }
            id
        });
        invalid(errors).or_gql(ctx)?;
        let filter = EventFilter {
            name: f.name,
            version: f.version,
            release: f.release,
            platform_id: f.platform_id,
            package: f.package,
            success: f.success,
            receiver_id,
            since: f.since.map(|t| t.0),
            until: f.until.map(|t| t.0),
        };
        let store = store(ctx)?;
        let mut rows = match &f.id {
            Some(id) => match EventId::parse(id) {
                Some(eid) => store
                    .event(eid)
                    .await
                    .or_gql(ctx)?
                    .filter(|e| {
                        event_matches(e, &filter)
                            && page
                                .after
                                .as_deref()
                                .is_none_or(|a| e.id.to_string().as_str() > a)
                    })
                    .into_iter()
                    .collect(),
                None => Vec::new(),
            },
            None => store
                .list_events(filter, page.request())
                .await
                .or_gql(ctx)?,
        };
        next_cursor(ctx, page.finish(&mut rows, |e| e.id.to_string()));
        prime_receivers(ctx, "event_receiver", rows.iter().map(|e| e.receiver_id)).await?;
        Ok(rows.into_iter().map(EventObject).collect())
    }

    /// Receivers matching every given field, oldest first.
    /// Complexity: `limit` (default 100) times the selection of one item.
    #[graphql(
        complexity = "(limit.unwrap_or(100).clamp(1, 1_000_000) as usize).saturating_mul(child_complexity).saturating_add(1)"
    )]
    async fn event_receivers(
        &self,
        ctx: &Context<'_>,
        event_receiver: Option<FindEventReceiverInput>,
        limit: Option<i64>,
        cursor: Option<String>,
    ) -> Result<Vec<EventReceiver>> {
        super::require(ctx, Resource::Receivers, Action::Read).await?;
        let f = event_receiver.unwrap_or_default();
        let mut errors = Vec::new();
        let page = page(ctx, limit, cursor.as_deref(), &mut errors);
        invalid(errors).or_gql(ctx)?;
        let store = store(ctx)?;
        let mut rows = match &f.id {
            Some(id) => match ReceiverId::parse(id) {
                Some(rid) => store
                    .receiver(rid)
                    .await
                    .or_gql(ctx)?
                    .filter(|r| {
                        eq(&f.name, r.name.as_str())
                            && eq(&f.type_, r.type_.as_str())
                            && eq(&f.version, r.version.as_str())
                            && page
                                .after
                                .as_deref()
                                .is_none_or(|a| r.id.to_string().as_str() > a)
                    })
                    .into_iter()
                    .collect(),
                None => Vec::new(),
            },
            None => {
                let filter = ReceiverFilter {
                    name: f.name,
                    type_: f.type_,
                    version: f.version,
                };
                store
                    .list_receivers(filter, page.request())
                    .await
                    .or_gql(ctx)?
            }
        };
        next_cursor(ctx, page.finish(&mut rows, |r| r.id.to_string()));
        Ok(rows.into_iter().map(EventReceiver).collect())
    }

    /// Groups matching every given field, oldest first.
    /// Complexity: `limit` (default 100) times the selection of one item.
    #[graphql(
        complexity = "(limit.unwrap_or(100).clamp(1, 1_000_000) as usize).saturating_mul(child_complexity).saturating_add(1)"
    )]
    async fn event_receiver_groups(
        &self,
        ctx: &Context<'_>,
        event_receiver_group: Option<FindEventReceiverGroupInput>,
        limit: Option<i64>,
        cursor: Option<String>,
    ) -> Result<Vec<EventReceiverGroup>> {
        super::require(ctx, Resource::Groups, Action::Read).await?;
        let f = event_receiver_group.unwrap_or_default();
        let mut errors = Vec::new();
        let page = page(ctx, limit, cursor.as_deref(), &mut errors);
        invalid(errors).or_gql(ctx)?;
        let store = store(ctx)?;
        let mut rows = match &f.id {
            Some(id) => match GroupId::parse(id) {
                Some(gid) => store
                    .group(gid)
                    .await
                    .or_gql(ctx)?
                    .filter(|g| {
                        eq(&f.name, g.name.as_str())
                            && eq(&f.type_, g.type_.as_str())
                            && eq(&f.version, g.version.as_str())
                            && f.enabled.is_none_or(|e| e == g.enabled)
                            && page
                                .after
                                .as_deref()
                                .is_none_or(|a| g.id.to_string().as_str() > a)
                    })
                    .into_iter()
                    .collect(),
                None => Vec::new(),
            },
            None => {
                let filter = GroupFilter {
                    name: f.name,
                    type_: f.type_,
                    version: f.version,
                    enabled: f.enabled,
                };
                store
                    .list_groups(filter, page.request())
                    .await
                    .or_gql(ctx)?
            }
        };
        next_cursor(ctx, page.finish(&mut rows, |g| g.id.to_string()));
        prime_receivers(
            ctx,
            "event_receivers",
            rows.iter().flat_map(|g| g.receiver_ids.iter().copied()),
        )
        .await?;
        Ok(rows.into_iter().map(EventReceiverGroup).collect())
    }

    /// A group's status for one unit (beyond EPR; as REST's `/status`).
    #[allow(clippy::too_many_arguments)] // the group and the unit's five fields
    async fn group_status(
        &self,
        ctx: &Context<'_>,
        id: ID,
        name: Option<String>,
        version: Option<String>,
        release: Option<String>,
        platform_id: Option<String>,
        package: Option<String>,
    ) -> Result<GroupStatusObject> {
        let gid = group_id(&id).or_gql(ctx)?;
        let get = |f: &str| -> Option<&str> {
            match f {
                "name" => name.as_deref(),
                "version" => version.as_deref(),
                "release" => release.as_deref(),
                "platform_id" => platform_id.as_deref(),
                "package" => package.as_deref(),
                _ => None,
            }
        };
        let status = service::group_status(store(ctx)?, super::caller(ctx)?, gid, get)
            .await
            .or_gql(ctx)?;
        Ok(status.into())
    }

    /// A group's recorded completions, oldest first (beyond EPR).
    /// Complexity: `limit` (default 100) times the selection of one item.
    #[graphql(
        complexity = "(limit.unwrap_or(100).clamp(1, 1_000_000) as usize).saturating_mul(child_complexity).saturating_add(1)"
    )]
    async fn group_completions(
        &self,
        ctx: &Context<'_>,
        id: ID,
        limit: Option<i64>,
        cursor: Option<String>,
    ) -> Result<Vec<GroupCompletion>> {
        super::require(ctx, Resource::Groups, Action::Read).await?;
        let gid = group_id(&id).or_gql(ctx)?;
        let mut errors = Vec::new();
        let page = page(ctx, limit, cursor.as_deref(), &mut errors);
        invalid(errors).or_gql(ctx)?;
        let mut rows = store(ctx)?
            .list_completions(gid, page.request())
            .await
            .or_gql(ctx)?;
        next_cursor(ctx, page.finish(&mut rows, |c| c.id.to_string()));
        Ok(rows
            .into_iter()
            .map(|c| GroupCompletion::new(gid, c))
            .collect())
    }
}

fn eq(want: &Option<String>, have: &str) -> bool {
    want.as_deref().is_none_or(|w| w == have)
}

fn event_matches(e: &cairn_domain::Event, f: &EventFilter) -> bool {
    let u = &e.unit;
    eq(&f.name, u.name.as_str())
        && eq(&f.version, u.version.as_str())
        && eq(&f.release, u.release.as_str())
        && eq(&f.platform_id, u.platform_id.as_str())
        && eq(&f.package, u.package.as_str())
        && f.success.is_none_or(|s| s == e.success)
        && f.receiver_id.is_none_or(|r| r == e.receiver_id)
        && f.since.is_none_or(|t: Timestamp| e.created_at >= t)
        && f.until.is_none_or(|t: Timestamp| e.created_at < t)
}

pub struct MutationRoot;

#[Object(rename_fields = "snake_case", rename_args = "snake_case")]
impl MutationRoot {
    /// Record an event; its payload must satisfy its receiver's schema.
    async fn create_event(&self, ctx: &Context<'_>, event: CreateEventInput) -> Result<ID> {
        let input = EventInput {
            name: text(event.name),
            version: text(event.version),
            release: text(event.release),
            platform_id: text(event.platform_id),
            package: text(event.package),
            description: text(event.description),
            payload: raw(event.payload),
            success: event.success.map(Value::Bool),
            event_receiver_id: event.event_receiver_id.map(|id| Value::String(id.0)),
        };
        let id = service::create_event(store(ctx)?, super::caller(ctx)?, input)
            .await
            .or_gql(ctx)?;
        Ok(ID(id.to_string()))
    }

    async fn create_event_receiver(
        &self,
        ctx: &Context<'_>,
        event_receiver: CreateEventReceiverInput,
    ) -> Result<ID> {
        let r = event_receiver;
        let input = ReceiverInput {
            name: text(r.name),
            type_: text(r.type_),
            version: text(r.version),
            description: text(r.description),
            schema: raw(r.schema),
        };
        let id = service::create_receiver(store(ctx)?, super::caller(ctx)?, input)
            .await
            .or_gql(ctx)?;
        Ok(ID(id.to_string()))
    }

    async fn create_event_receiver_group(
        &self,
        ctx: &Context<'_>,
        event_receiver_group: CreateEventReceiverGroupInput,
    ) -> Result<ID> {
        let g = event_receiver_group;
        let input = GroupInput {
            name: text(g.name),
            type_: text(g.type_),
            version: text(g.version),
            description: text(g.description),
            enabled: g.enabled.map(Value::Bool),
            event_receiver_ids: ids_value(g.event_receiver_ids),
        };
        let id = service::create_group(store(ctx)?, super::caller(ctx)?, input)
            .await
            .or_gql(ctx)?;
        Ok(ID(id.to_string()))
    }

    async fn set_event_receiver_group_enabled(&self, ctx: &Context<'_>, id: ID) -> Result<ID> {
        set_enabled(ctx, &id, true).await
    }

    async fn set_event_receiver_group_disabled(&self, ctx: &Context<'_>, id: ID) -> Result<ID> {
        set_enabled(ctx, &id, false).await
    }

    /// Add receivers to a group (beyond EPR; as REST's
    /// `POST /api/v1/groups/{id}/receivers`): ids already in it are
    /// ignored, new ones appended in the order given.
    async fn add_event_receiver_group_receivers(
        &self,
        ctx: &Context<'_>,
        id: ID,
        event_receiver_ids: Option<Vec<ID>>,
    ) -> Result<EventReceiverGroup> {
        let gid = group_id(&id).or_gql(ctx)?;
        let input = ReceiverIdsInput {
            event_receiver_ids: ids_value(event_receiver_ids),
        };
        let group = service::add_group_receivers(store(ctx)?, super::caller(ctx)?, gid, input)
            .await
            .or_gql(ctx)?;
        Ok(EventReceiverGroup(group))
    }

    /// Remove one receiver from a group (beyond EPR); refused if it is not
    /// a member or is the last one.
    async fn remove_event_receiver_group_receiver(
        &self,
        ctx: &Context<'_>,
        id: ID,
        event_receiver_id: ID,
    ) -> Result<EventReceiverGroup> {
        let gid = group_id(&id).or_gql(ctx)?;
        let rid = ReceiverId::parse(&event_receiver_id)
            .ok_or_else(|| {
                ApiError::NotFound(format!(
                    "event receiver {:?} is not in group {}",
                    event_receiver_id.as_str(),
                    id.as_str()
                ))
            })
            .or_gql(ctx)?;
        let group = service::remove_group_receiver(store(ctx)?, super::caller(ctx)?, gid, rid)
            .await
            .or_gql(ctx)?;
        Ok(EventReceiverGroup(group))
    }
}

async fn set_enabled(ctx: &Context<'_>, id: &ID, enabled: bool) -> Result<ID> {
    let gid = group_id(id).or_gql(ctx)?;
    let input = GroupPatchInput {
        enabled: Some(Value::Bool(enabled)),
        ..GroupPatchInput::default()
    };
    let group = service::patch_group(store(ctx)?, super::caller(ctx)?, gid, input)
        .await
        .or_gql(ctx)?;
    Ok(ID(group.id.to_string()))
}
