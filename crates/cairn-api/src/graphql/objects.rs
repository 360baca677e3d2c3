//! Output types: the REST resources with the same snake_case field names.

use super::loader::Receivers;
use super::scalars::{Json, Time};
use super::{OrGql, store};
use crate::error::ApiError;
use async_graphql::{Context, ID, Object, Result, SimpleObject};
use cairn_domain::{Event, Group, Receiver, ReceiverId};
use cairn_store::{Completion, GroupStatus};
use std::sync::Arc;

/// A kind of thing that happens in a pipeline.
pub struct EventReceiver(pub Arc<Receiver>);

#[Object(rename_fields = "snake_case", rename_args = "snake_case")]
impl EventReceiver {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn name(&self) -> &str {
        self.0.name.as_str()
    }
    #[graphql(name = "type")]
    async fn type_(&self) -> &str {
        self.0.type_.as_str()
    }
    async fn version(&self) -> &str {
        self.0.version.as_str()
    }
    async fn description(&self) -> &str {
        self.0.description.as_str()
    }
    /// The JSON Schema exactly as submitted.
    async fn schema(&self) -> Json {
        Json(self.0.schema.text().clone())
    }
    async fn fingerprint(&self) -> &str {
        &self.0.fingerprint
    }
    async fn created_at(&self) -> Time {
        Time(self.0.created_at)
    }
}

/// Load receivers through the request's DataLoader (batched: one store
/// call for all the receivers a response needs), or directly when there
/// is none.
pub async fn load_receivers(ctx: &Context<'_>, ids: &[ReceiverId]) -> Result<Vec<EventReceiver>> {
    let found: std::collections::HashMap<ReceiverId, Arc<Receiver>> =
        match ctx.data_opt::<Receivers>() {
            Some(loader) => loader
                .load_many(ids.iter().copied())
                .await
                .map_err(|e| super::errors::to_gql(ctx, ApiError::from(e)))?,
            None => store(ctx)?
                .receivers(ids.to_vec())
                .await
                .or_gql(ctx)?
                .into_iter()
                .map(|r| (r.id, r))
                .collect(),
        };
    ids.iter()
        .map(|id| {
            found.get(id).cloned().map(EventReceiver).ok_or_else(|| {
                super::errors::to_gql(
                    ctx,
                    ApiError::Internal(format!("event receiver {id} is missing")),
                )
            })
        })
        .collect()
}

/// Before resolving a list's items, load all the receivers they will ask
/// for in one batched call (when the selection asks for them at all), so
/// the items' own loads are answered from the request's cache.
pub async fn prime_receivers(
    ctx: &Context<'_>,
    field: &str,
    ids: impl IntoIterator<Item = ReceiverId>,
) -> Result<()> {
    if !ctx.look_ahead().field(field).exists() {
        return Ok(());
    }
    let mut ids: Vec<ReceiverId> = ids.into_iter().collect();
    ids.sort();
    ids.dedup();
    if let Some(loader) = ctx.data_opt::<Receivers>() {
        loader
            .load_many(ids)
            .await
            .map_err(|e| super::errors::to_gql(ctx, ApiError::from(e)))?;
    }
    Ok(())
}

/// The record that some action on a unit happened.
pub struct EventObject(pub Event);

#[Object(
    name = "Event",
    rename_fields = "snake_case",
    rename_args = "snake_case"
)]
impl EventObject {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn name(&self) -> &str {
        self.0.unit.name.as_str()
    }
    async fn version(&self) -> &str {
        self.0.unit.version.as_str()
    }
    async fn release(&self) -> &str {
        self.0.unit.release.as_str()
    }
    async fn platform_id(&self) -> &str {
        self.0.unit.platform_id.as_str()
    }
    async fn package(&self) -> &str {
        self.0.unit.package.as_str()
    }
    async fn description(&self) -> &str {
        self.0.description.as_str()
    }
    /// The payload exactly as submitted.
    async fn payload(&self) -> Json {
        Json(self.0.payload.clone())
    }
    async fn success(&self) -> bool {
        self.0.success
    }
    async fn created_at(&self) -> Time {
        Time(self.0.created_at)
    }
    async fn event_receiver_id(&self) -> ID {
        ID(self.0.receiver_id.to_string())
    }
    /// The event's receiver (batch-loaded).
    async fn event_receiver(&self, ctx: &Context<'_>) -> Result<EventReceiver> {
        let mut found = load_receivers(ctx, &[self.0.receiver_id]).await?;
        found
            .pop()
            .ok_or_else(|| "event receiver is missing".into())
    }
}

/// A set of receivers that together gate a unit.
pub struct EventReceiverGroup(pub Group);

#[Object(rename_fields = "snake_case", rename_args = "snake_case")]
impl EventReceiverGroup {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn name(&self) -> &str {
        self.0.name.as_str()
    }
    #[graphql(name = "type")]
    async fn type_(&self) -> &str {
        self.0.type_.as_str()
    }
    async fn version(&self) -> &str {
        self.0.version.as_str()
    }
    async fn description(&self) -> &str {
        self.0.description.as_str()
    }
    async fn enabled(&self) -> bool {
        self.0.enabled
    }
    /// Member receivers' ids, in insertion order.
    async fn event_receiver_ids(&self) -> Vec<ID> {
        self.0
            .receiver_ids
            .iter()
            .map(|id| ID(id.to_string()))
            .collect()
    }
    /// The member receivers themselves (beyond EPR; batch-loaded).
    #[graphql(complexity = "10 * child_complexity + 1")]
    async fn event_receivers(&self, ctx: &Context<'_>) -> Result<Vec<EventReceiver>> {
        load_receivers(ctx, &self.0.receiver_ids).await
    }
    async fn created_at(&self) -> Time {
        Time(self.0.created_at)
    }
    async fn updated_at(&self) -> Time {
        Time(self.0.updated_at)
    }
}

/// The latest event of one group receiver for a unit.
#[derive(SimpleObject)]
#[graphql(rename_fields = "snake_case")]
pub struct ReceiverStatus {
    pub event_receiver_id: ID,
    pub event_id: Option<ID>,
    pub success: Option<bool>,
}

/// A group's status for one unit (as `GET /api/v1/groups/{id}/status`).
#[derive(SimpleObject)]
#[graphql(name = "GroupStatus", rename_fields = "snake_case")]
pub struct GroupStatusObject {
    pub complete: bool,
    pub enabled: bool,
    pub receivers: Vec<ReceiverStatus>,
}

impl From<GroupStatus> for GroupStatusObject {
    fn from(s: GroupStatus) -> Self {
        Self {
            complete: s.complete,
            enabled: s.enabled,
            receivers: s
                .receivers
                .into_iter()
                .map(|r| ReceiverStatus {
                    event_receiver_id: ID(r.receiver_id.to_string()),
                    event_id: r.latest.map(|l| ID(l.event_id.to_string())),
                    success: r.latest.map(|l| l.success),
                })
                .collect(),
        }
    }
}

/// A recorded completion of a group for a unit.
pub struct GroupCompletion {
    pub group_id: cairn_domain::GroupId,
    pub unit: cairn_domain::Unit,
    pub completed_at: cairn_domain::Timestamp,
    pub event_id: cairn_domain::EventId,
}

impl GroupCompletion {
    pub fn new(group_id: cairn_domain::GroupId, c: Completion) -> Self {
        Self {
            group_id,
            unit: c.unit,
            completed_at: c.completed_at,
            event_id: c.event_id,
        }
    }
}

#[Object(rename_fields = "snake_case", rename_args = "snake_case")]
impl GroupCompletion {
    async fn event_receiver_group_id(&self) -> ID {
        ID(self.group_id.to_string())
    }
    async fn name(&self) -> &str {
        self.unit.name.as_str()
    }
    async fn version(&self) -> &str {
        self.unit.version.as_str()
    }
    async fn release(&self) -> &str {
        self.unit.release.as_str()
    }
    async fn platform_id(&self) -> &str {
        self.unit.platform_id.as_str()
    }
    async fn package(&self) -> &str {
        self.unit.package.as_str()
    }
    async fn completed_at(&self) -> Time {
        Time(self.completed_at)
    }
    /// The completing event: the newest of the latest events of the
    /// group's receivers for the unit.
    async fn event_id(&self) -> ID {
        ID(self.event_id.to_string())
    }
}
