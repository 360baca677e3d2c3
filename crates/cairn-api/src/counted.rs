//! A view of the store that counts the calls made through it: one per
//! GraphQL request, so the number of store round trips a query costs is
//! observable (`extensions.store_calls` in the response, and the
//! `cairn_graphql_store_calls` histogram).

use async_trait::async_trait;
use cairn_domain::TraceParent;
use cairn_domain::group::GroupPatch;
use cairn_domain::{
    CheckedEvent, Event, EventId, Group, GroupId, NewGroup, NewReceiver, Receiver, ReceiverId, Unit,
};
use cairn_store::{
    Completion, DeadLetter, EventFilter, GroupFilter, GroupStatus, OutboxMessage, PageRequest,
    ReceiverFilter, SinkLease, Store, StoreResult,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct CountedStore {
    inner: Arc<dyn Store>,
    calls: AtomicU64,
}

impl CountedStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            calls: AtomicU64::new(0),
        }
    }

    /// Store calls made through this view so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn count(&self) -> &dyn Store {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.as_ref()
    }
}

#[async_trait]
impl Store for CountedStore {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    /// Not counted: a look into memory, not a store call.
    fn cached_receiver(&self, id: ReceiverId) -> Option<Arc<Receiver>> {
        self.inner.cached_receiver(id)
    }
    async fn create_receiver(&self, receiver: NewReceiver) -> StoreResult<Arc<Receiver>> {
        self.count().create_receiver(receiver).await
    }
    async fn receiver(&self, id: ReceiverId) -> StoreResult<Option<Arc<Receiver>>> {
        self.count().receiver(id).await
    }
    async fn receivers(&self, ids: Vec<ReceiverId>) -> StoreResult<Vec<Arc<Receiver>>> {
        self.count().receivers(ids).await
    }
    async fn list_receivers(
        &self,
        filter: ReceiverFilter,
        page: PageRequest,
    ) -> StoreResult<Vec<Arc<Receiver>>> {
        self.count().list_receivers(filter, page).await
    }
    async fn create_events(&self, events: Vec<CheckedEvent>) -> StoreResult<Vec<EventId>> {
        self.count().create_events(events).await
    }
    async fn event(&self, id: EventId) -> StoreResult<Option<Event>> {
        self.count().event(id).await
    }
    async fn list_events(&self, filter: EventFilter, page: PageRequest) -> StoreResult<Vec<Event>> {
        self.count().list_events(filter, page).await
    }
    async fn create_group(&self, group: NewGroup) -> StoreResult<Group> {
        self.count().create_group(group).await
    }
    async fn group(&self, id: GroupId) -> StoreResult<Option<Group>> {
        self.count().group(id).await
    }
    async fn list_groups(&self, filter: GroupFilter, page: PageRequest) -> StoreResult<Vec<Group>> {
        self.count().list_groups(filter, page).await
    }
    async fn update_group(
        &self,
        id: GroupId,
        patch: GroupPatch,
        trace: Option<TraceParent>,
    ) -> StoreResult<Group> {
        self.count().update_group(id, patch, trace).await
    }
    async fn add_group_receivers(
        &self,
        id: GroupId,
        ids: Vec<ReceiverId>,
        trace: Option<TraceParent>,
    ) -> StoreResult<Group> {
        self.count().add_group_receivers(id, ids, trace).await
    }
    async fn remove_group_receiver(
        &self,
        id: GroupId,
        receiver: ReceiverId,
        trace: Option<TraceParent>,
    ) -> StoreResult<Group> {
        self.count()
            .remove_group_receiver(id, receiver, trace)
            .await
    }
    async fn group_status(&self, id: GroupId, unit: Unit) -> StoreResult<GroupStatus> {
        self.count().group_status(id, unit).await
    }
    async fn list_completions(
        &self,
        id: GroupId,
        page: PageRequest,
    ) -> StoreResult<Vec<Completion>> {
        self.count().list_completions(id, page).await
    }
    async fn outbox_head(&self) -> StoreResult<u64> {
        self.count().outbox_head().await
    }
    async fn outbox_after(&self, after_seq: u64, limit: u32) -> StoreResult<Vec<OutboxMessage>> {
        self.count().outbox_after(after_seq, limit).await
    }
    async fn outbox_deliverable(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<OutboxMessage>> {
        self.count().outbox_deliverable(after_seq, limit).await
    }
    async fn outbox_count_after(&self, after_seq: u64) -> StoreResult<u64> {
        self.count().outbox_count_after(after_seq).await
    }
    async fn lease_sink(&self, sink: &str) -> StoreResult<Option<Box<dyn SinkLease>>> {
        self.count().lease_sink(sink).await
    }
    async fn sink_cursor(&self, sink: &str) -> StoreResult<u64> {
        self.count().sink_cursor(sink).await
    }
    async fn advance_sink_cursor(&self, sink: &str, seq: u64) -> StoreResult<()> {
        self.count().advance_sink_cursor(sink, seq).await
    }
    async fn record_dead_letter(&self, letter: DeadLetter) -> StoreResult<()> {
        self.count().record_dead_letter(letter).await
    }
    async fn dead_letters(&self, sink: Option<String>, limit: u32) -> StoreResult<Vec<DeadLetter>> {
        self.count().dead_letters(sink, limit).await
    }
    async fn replay_dead_letter(&self, sink: &str, seq: u64) -> StoreResult<()> {
        self.count().replay_dead_letter(sink, seq).await
    }
    async fn sink_replays(&self, sink: &str, limit: u32) -> StoreResult<Vec<OutboxMessage>> {
        self.count().sink_replays(sink, limit).await
    }
    async fn finish_replay(&self, sink: &str, seq: u64) -> StoreResult<()> {
        self.count().finish_replay(sink, seq).await
    }
    async fn check(&self) -> StoreResult<()> {
        self.count().check().await
    }
    async fn close(&self) {
        self.count().close().await
    }
}
