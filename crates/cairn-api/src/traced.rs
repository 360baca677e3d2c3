//! A view of the store that makes one tracing span per call
//! (`store.<operation>`, at debug level, with `db.system`), so that store
//! calls show up in a request's trace. When no layer wants debug spans the
//! cost is a disabled-callsite check per call; for a request whose trace
//! the exporter does not sample, no span is made (`edge::trace::quiet`).

use async_trait::async_trait;
use cairn_domain::group::GroupPatch;
use cairn_domain::{
    CheckedEvent, Event, EventId, Group, GroupId, NewGroup, NewReceiver, Receiver, ReceiverId, Unit,
};
use cairn_store::{
    Completion, DeadLetter, EventFilter, GroupFilter, GroupStatus, OutboxMessage, PageRequest,
    ReceiverFilter, SinkLease, Store, StoreResult,
};
use std::sync::Arc;
use tracing::Instrument;

pub struct TracedStore {
    inner: Arc<dyn Store>,
}

impl TracedStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self { inner }
    }

    fn span(&self, operation: &'static str) -> tracing::Span {
        if crate::edge::trace::quiet() {
            return tracing::Span::none();
        }
        tracing::debug_span!(
            "store",
            otel.name = %format_args!("store.{operation}"),
            otel.kind = "client",
            db.system = self.inner.kind(),
            db.operation = operation,
        )
    }
}

#[async_trait]
impl Store for TracedStore {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn pool_stats(&self) -> cairn_store::PoolStats {
        self.inner.pool_stats()
    }
    async fn create_receiver(&self, receiver: NewReceiver) -> StoreResult<Arc<Receiver>> {
        self.inner
            .create_receiver(receiver)
            .instrument(self.span("create_receiver"))
            .await
    }
    async fn receiver(&self, id: ReceiverId) -> StoreResult<Option<Arc<Receiver>>> {
        self.inner
            .receiver(id)
            .instrument(self.span("receiver"))
            .await
    }
    async fn receivers(&self, ids: Vec<ReceiverId>) -> StoreResult<Vec<Arc<Receiver>>> {
        self.inner
            .receivers(ids)
            .instrument(self.span("receivers"))
            .await
    }
    async fn list_receivers(
        &self,
        filter: ReceiverFilter,
        page: PageRequest,
    ) -> StoreResult<Vec<Arc<Receiver>>> {
        self.inner
            .list_receivers(filter, page)
            .instrument(self.span("list_receivers"))
            .await
    }
    async fn create_events(&self, events: Vec<CheckedEvent>) -> StoreResult<Vec<EventId>> {
        self.inner
            .create_events(events)
            .instrument(self.span("create_events"))
            .await
    }
    async fn event(&self, id: EventId) -> StoreResult<Option<Event>> {
        self.inner.event(id).instrument(self.span("event")).await
    }
    async fn list_events(&self, filter: EventFilter, page: PageRequest) -> StoreResult<Vec<Event>> {
        self.inner
            .list_events(filter, page)
            .instrument(self.span("list_events"))
            .await
    }
    async fn create_group(&self, group: NewGroup) -> StoreResult<Group> {
        self.inner
            .create_group(group)
            .instrument(self.span("create_group"))
            .await
    }
    async fn group(&self, id: GroupId) -> StoreResult<Option<Group>> {
        self.inner.group(id).instrument(self.span("group")).await
    }
    async fn list_groups(&self, filter: GroupFilter, page: PageRequest) -> StoreResult<Vec<Group>> {
        self.inner
            .list_groups(filter, page)
            .instrument(self.span("list_groups"))
            .await
    }
    async fn update_group(&self, id: GroupId, patch: GroupPatch) -> StoreResult<Group> {
        self.inner
            .update_group(id, patch)
            .instrument(self.span("update_group"))
            .await
    }
    async fn add_group_receivers(&self, id: GroupId, ids: Vec<ReceiverId>) -> StoreResult<Group> {
        self.inner
            .add_group_receivers(id, ids)
            .instrument(self.span("add_group_receivers"))
            .await
    }
    async fn remove_group_receiver(&self, id: GroupId, receiver: ReceiverId) -> StoreResult<Group> {
        self.inner
            .remove_group_receiver(id, receiver)
            .instrument(self.span("remove_group_receiver"))
            .await
    }
    async fn group_status(&self, id: GroupId, unit: Unit) -> StoreResult<GroupStatus> {
        self.inner
            .group_status(id, unit)
            .instrument(self.span("group_status"))
            .await
    }
    async fn list_completions(
        &self,
        id: GroupId,
        page: PageRequest,
    ) -> StoreResult<Vec<Completion>> {
        self.inner
            .list_completions(id, page)
            .instrument(self.span("list_completions"))
            .await
    }
    async fn outbox_head(&self) -> StoreResult<u64> {
        self.inner
            .outbox_head()
            .instrument(self.span("outbox_head"))
            .await
    }
    async fn outbox_after(&self, after_seq: u64, limit: u32) -> StoreResult<Vec<OutboxMessage>> {
        self.inner
            .outbox_after(after_seq, limit)
            .instrument(self.span("outbox_after"))
            .await
    }
    async fn outbox_deliverable(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<OutboxMessage>> {
        self.inner
            .outbox_deliverable(after_seq, limit)
            .instrument(self.span("outbox_deliverable"))
            .await
    }
    async fn outbox_count_after(&self, after_seq: u64) -> StoreResult<u64> {
        self.inner
            .outbox_count_after(after_seq)
            .instrument(self.span("outbox_count_after"))
            .await
    }
    async fn lease_sink(&self, sink: &str) -> StoreResult<Option<Box<dyn SinkLease>>> {
        self.inner
            .lease_sink(sink)
            .instrument(self.span("lease_sink"))
            .await
    }
    async fn sink_cursor(&self, sink: &str) -> StoreResult<u64> {
        self.inner
            .sink_cursor(sink)
            .instrument(self.span("sink_cursor"))
            .await
    }
    async fn advance_sink_cursor(&self, sink: &str, seq: u64) -> StoreResult<()> {
        self.inner
            .advance_sink_cursor(sink, seq)
            .instrument(self.span("advance_sink_cursor"))
            .await
    }
    async fn record_dead_letter(&self, letter: DeadLetter) -> StoreResult<()> {
        self.inner
            .record_dead_letter(letter)
            .instrument(self.span("record_dead_letter"))
            .await
    }
    async fn dead_letters(&self, sink: Option<String>, limit: u32) -> StoreResult<Vec<DeadLetter>> {
        self.inner
            .dead_letters(sink, limit)
            .instrument(self.span("dead_letters"))
            .await
    }
    async fn replay_dead_letter(&self, sink: &str, seq: u64) -> StoreResult<()> {
        self.inner
            .replay_dead_letter(sink, seq)
            .instrument(self.span("replay_dead_letter"))
            .await
    }
    async fn sink_replays(&self, sink: &str, limit: u32) -> StoreResult<Vec<OutboxMessage>> {
        self.inner
            .sink_replays(sink, limit)
            .instrument(self.span("sink_replays"))
            .await
    }
    async fn finish_replay(&self, sink: &str, seq: u64) -> StoreResult<()> {
        self.inner
            .finish_replay(sink, seq)
            .instrument(self.span("finish_replay"))
            .await
    }
    async fn check(&self) -> StoreResult<()> {
        self.inner.check().instrument(self.span("check")).await
    }
    async fn close(&self) {
        self.inner.close().await
    }
}
