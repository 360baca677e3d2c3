//! A view of the store that makes one tracing span per call
//! (`store.<operation>`, at debug level, with `db.system`), so that store
//! calls show up in a request's trace. When no layer wants debug spans the
//! cost is a disabled-callsite check per call; for a request whose trace
//! the exporter does not sample, no span is made (`edge::trace::quiet`).

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
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tracing::Instrument;

/// The span of one store call, `store.<operation>` (the operation as a
/// string literal, or as the method's name).
macro_rules! store_span {
    ($store:ident, $operation:literal) => {
        $store.span(concat!("store.", $operation), $operation)
    };
    ($store:ident, $operation:ident) => {
        $store.span(
            concat!("store.", stringify!($operation)),
            stringify!($operation),
        )
    };
}

/// A store call with its span, as a method whose future is boxed only
/// when the span is made (`store.<operation>`); when it is not (the
/// request's trace is not exported, or no layer wants debug spans), the
/// inner store's own future is returned as it is.
macro_rules! passthrough {
    ($operation:ident($($arg:ident: $ty:ty),*) -> $out:ty) => {
        fn $operation<'life0, 'async_trait>(
            &'life0 self,
            $($arg: $ty),*
        ) -> Pin<Box<dyn Future<Output = StoreResult<$out>> + Send + 'async_trait>>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            let span = store_span!(self, $operation);
            let call = self.inner.$operation($($arg),*);
            if span.is_none() {
                call
            } else {
                Box::pin(call.instrument(span))
            }
        }
    };
}

pub struct TracedStore {
    inner: Arc<dyn Store>,
}

impl TracedStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self { inner }
    }

    /// `name` is `store.<operation>`, made at compile time by
    /// [`store_span!`] so that the exporter is handed a ready string, not a
    /// format to run per call.
    fn span(&self, name: &'static str, operation: &'static str) -> tracing::Span {
        if crate::edge::trace::quiet() {
            return tracing::Span::none();
        }
        tracing::debug_span!(
            "store",
            otel.name = name,
            otel.kind = "client",
            db.system = self.inner.kind(),
            db.operation = operation,
        )
    }
}

/// Every receiver among `ids` (duplicates dropped, as `Store::receivers`
/// answers) when the process holds them all; else `None`.
fn all_held(store: &dyn Store, ids: &[ReceiverId]) -> Option<Vec<Arc<Receiver>>> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter()
        .map(|id| store.cached_receiver(id))
        .collect()
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
            .instrument(store_span!(self, "create_receiver"))
            .await
    }
    fn cached_receiver(&self, id: ReceiverId) -> Option<Arc<Receiver>> {
        self.inner.cached_receiver(id)
    }
    /// A receiver this process holds is no store call and gets no span
    /// (an exported span costs about 18,000 instructions to build and
    /// send, docs/PERFORMANCE.md; a get's receiver is nearly always held).
    async fn receiver(&self, id: ReceiverId) -> StoreResult<Option<Arc<Receiver>>> {
        if let Some(held) = self.inner.cached_receiver(id) {
            return Ok(Some(held));
        }
        self.inner
            .receiver(id)
            .instrument(store_span!(self, "receiver"))
            .await
    }
    /// As `receiver`: no span when every one asked for is held.
    async fn receivers(&self, ids: Vec<ReceiverId>) -> StoreResult<Vec<Arc<Receiver>>> {
        if let Some(held) = all_held(self.inner.as_ref(), &ids) {
            return Ok(held);
        }
        self.inner
            .receivers(ids)
            .instrument(store_span!(self, "receivers"))
            .await
    }
    async fn list_receivers(
        &self,
        filter: ReceiverFilter,
        page: PageRequest,
    ) -> StoreResult<Vec<Arc<Receiver>>> {
        self.inner
            .list_receivers(filter, page)
            .instrument(store_span!(self, "list_receivers"))
            .await
    }
    // The three calls of the event routes, written out with the signature
    // `async_trait` gives them: a call that makes no span hands back the
    // inner store's (already boxed) future instead of boxing a second one
    // around it.
    passthrough!(create_events(events: Vec<CheckedEvent>) -> Vec<EventId>);
    passthrough!(event(id: EventId) -> Option<Event>);
    passthrough!(list_events(filter: EventFilter, page: PageRequest) -> Vec<Event>);
    async fn create_group(&self, group: NewGroup) -> StoreResult<Group> {
        self.inner
            .create_group(group)
            .instrument(store_span!(self, "create_group"))
            .await
    }
    async fn group(&self, id: GroupId) -> StoreResult<Option<Group>> {
        self.inner
            .group(id)
            .instrument(store_span!(self, "group"))
            .await
    }
    async fn list_groups(&self, filter: GroupFilter, page: PageRequest) -> StoreResult<Vec<Group>> {
        self.inner
            .list_groups(filter, page)
            .instrument(store_span!(self, "list_groups"))
            .await
    }
    async fn update_group(
        &self,
        id: GroupId,
        patch: GroupPatch,
        trace: Option<TraceParent>,
    ) -> StoreResult<Group> {
        self.inner
            .update_group(id, patch, trace)
            .instrument(store_span!(self, "update_group"))
            .await
    }
    async fn add_group_receivers(
        &self,
        id: GroupId,
        ids: Vec<ReceiverId>,
        trace: Option<TraceParent>,
    ) -> StoreResult<Group> {
        self.inner
            .add_group_receivers(id, ids, trace)
            .instrument(store_span!(self, "add_group_receivers"))
            .await
    }
    async fn remove_group_receiver(
        &self,
        id: GroupId,
        receiver: ReceiverId,
        trace: Option<TraceParent>,
    ) -> StoreResult<Group> {
        self.inner
            .remove_group_receiver(id, receiver, trace)
            .instrument(store_span!(self, "remove_group_receiver"))
            .await
    }
    async fn group_status(&self, id: GroupId, unit: Unit) -> StoreResult<GroupStatus> {
        self.inner
            .group_status(id, unit)
            .instrument(store_span!(self, "group_status"))
            .await
    }
    async fn list_completions(
        &self,
        id: GroupId,
        page: PageRequest,
    ) -> StoreResult<Vec<Completion>> {
        self.inner
            .list_completions(id, page)
            .instrument(store_span!(self, "list_completions"))
            .await
    }
    async fn outbox_head(&self) -> StoreResult<u64> {
        self.inner
            .outbox_head()
            .instrument(store_span!(self, "outbox_head"))
            .await
    }
    async fn outbox_after(&self, after_seq: u64, limit: u32) -> StoreResult<Vec<OutboxMessage>> {
        self.inner
            .outbox_after(after_seq, limit)
            .instrument(store_span!(self, "outbox_after"))
            .await
    }
    async fn outbox_deliverable(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<OutboxMessage>> {
        self.inner
            .outbox_deliverable(after_seq, limit)
            .instrument(store_span!(self, "outbox_deliverable"))
            .await
    }
    async fn outbox_count_after(&self, after_seq: u64) -> StoreResult<u64> {
        self.inner
            .outbox_count_after(after_seq)
            .instrument(store_span!(self, "outbox_count_after"))
            .await
    }
    async fn lease_sink(&self, sink: &str) -> StoreResult<Option<Box<dyn SinkLease>>> {
        self.inner
            .lease_sink(sink)
            .instrument(store_span!(self, "lease_sink"))
            .await
    }
    async fn sink_cursor(&self, sink: &str) -> StoreResult<u64> {
        self.inner
            .sink_cursor(sink)
            .instrument(store_span!(self, "sink_cursor"))
            .await
    }
    async fn advance_sink_cursor(&self, sink: &str, seq: u64) -> StoreResult<()> {
        self.inner
            .advance_sink_cursor(sink, seq)
            .instrument(store_span!(self, "advance_sink_cursor"))
            .await
    }
    async fn record_dead_letter(&self, letter: DeadLetter) -> StoreResult<()> {
        self.inner
            .record_dead_letter(letter)
            .instrument(store_span!(self, "record_dead_letter"))
            .await
    }
    async fn dead_letters(&self, sink: Option<String>, limit: u32) -> StoreResult<Vec<DeadLetter>> {
        self.inner
            .dead_letters(sink, limit)
            .instrument(store_span!(self, "dead_letters"))
            .await
    }
    async fn replay_dead_letter(&self, sink: &str, seq: u64) -> StoreResult<()> {
        self.inner
            .replay_dead_letter(sink, seq)
            .instrument(store_span!(self, "replay_dead_letter"))
            .await
    }
    async fn sink_replays(&self, sink: &str, limit: u32) -> StoreResult<Vec<OutboxMessage>> {
        self.inner
            .sink_replays(sink, limit)
            .instrument(store_span!(self, "sink_replays"))
            .await
    }
    async fn finish_replay(&self, sink: &str, seq: u64) -> StoreResult<()> {
        self.inner
            .finish_replay(sink, seq)
            .instrument(store_span!(self, "finish_replay"))
            .await
    }
    async fn check(&self) -> StoreResult<()> {
        self.inner
            .check()
            .instrument(store_span!(self, "check"))
            .await
    }
    async fn close(&self) {
        self.inner.close().await
    }
}
