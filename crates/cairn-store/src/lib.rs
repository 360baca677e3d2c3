//! Storage behind one trait. The embedded SQLite implementation lives in
//! [`sqlite`]; every implementation gives the same guarantees:
//!
//! - a successful write is committed and durable before it returns;
//! - a failed write leaves nothing behind;
//! - each change writes its outbox messages in the same transaction;
//! - completions are evaluated in the transaction that could cause them.

pub mod access;
pub mod cache;
pub(crate) mod clock;
pub mod idempotency;
pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;
use cairn_domain::TraceParent;
use cairn_domain::group::GroupPatch;
use cairn_domain::{
    CheckedEvent, Event, EventId, FieldErrors, Group, GroupId, NewGroup, NewReceiver, Receiver,
    ReceiverId, Timestamp, Unit,
};
use std::sync::Arc;

pub use cache::{ReceiverCache, ReceiverRow};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(FieldErrors),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store failure: {0}")]
    Internal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl From<cairn_domain::group::MembershipError> for StoreError {
    fn from(e: cairn_domain::group::MembershipError) -> Self {
        match e {
            cairn_domain::group::MembershipError::NotMember(m) => Self::NotFound(m),
            cairn_domain::group::MembershipError::Invalid(f) => Self::Invalid(f),
        }
    }
}

/// A page of a list: at most `limit` rows with ids after `after`.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub limit: u32,
    pub after: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ReceiverFilter {
    pub name: Option<String>,
    pub type_: Option<String>,
    pub version: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub name: Option<String>,
    pub version: Option<String>,
    pub release: Option<String>,
    pub platform_id: Option<String>,
    pub package: Option<String>,
    pub success: Option<bool>,
    pub receiver_id: Option<ReceiverId>,
    /// Inclusive lower bound on `created_at`.
    pub since: Option<Timestamp>,
    /// Exclusive upper bound on `created_at`.
    pub until: Option<Timestamp>,
}

#[derive(Debug, Clone, Default)]
pub struct GroupFilter {
    pub name: Option<String>,
    pub type_: Option<String>,
    pub version: Option<String>,
    pub enabled: Option<bool>,
}

/// The latest event of one group receiver for one unit.
#[derive(Debug, Clone)]
pub struct ReceiverStatus {
    pub receiver_id: ReceiverId,
    pub latest: Option<cairn_domain::completion::Latest>,
}

#[derive(Debug, Clone)]
pub struct GroupStatus {
    pub enabled: bool,
    pub complete: bool,
    pub receivers: Vec<ReceiverStatus>,
}

/// One outbox message, rendered (CONTRACT section 5).
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    /// Position in the outbox: commit order.
    pub seq: u64,
    pub id: cairn_domain::MessageId,
    pub type_: String,
    /// Messages with equal keys must be delivered in `seq` order.
    pub ordering_key: String,
    /// When the change was committed (the message's `time`).
    pub created_at: Timestamp,
    /// The trace context of the request whose write caused the message
    /// (also the `traceparent` attribute of `json`); `None` for writes
    /// made without one.
    pub trace: Option<cairn_domain::TraceParent>,
    pub json: String,
}

/// An outbox row's stored `traceparent`, checked: only this store writes
/// the column, so a value that does not parse is a corrupt row.
fn outbox_trace(seq: i64, stored: Option<&str>) -> StoreResult<Option<cairn_domain::TraceParent>> {
    stored
        .map(|text| {
            cairn_domain::TraceParent::parse(text).ok_or_else(|| {
                StoreError::Internal(format!(
                    "outbox row {seq} has a malformed traceparent {text:?}"
                ))
            })
        })
        .transpose()
}

/// An outbox row with neither a stored message nor an event (the schema's
/// CHECK forbids it): a corrupt row.
fn empty_outbox_row(seq: i64) -> StoreError {
    StoreError::Internal(format!("outbox row {seq} has no content"))
}

/// A message a sink gave up on after its last attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub sink: String,
    /// The message's outbox position.
    pub seq: u64,
    pub message_id: cairn_domain::MessageId,
    pub attempts: u32,
    pub last_error: String,
    pub failed_at: Timestamp,
}

/// A recorded completion of a group for a unit.
#[derive(Debug, Clone)]
pub struct Completion {
    pub id: cairn_domain::CompletionId,
    pub unit: Unit,
    pub completed_at: Timestamp,
    pub event_id: EventId,
}

/// The exclusive right of one relay to deliver for one sink, held until
/// dropped (docs/delivery.md).
#[async_trait]
pub trait SinkLease: Send + Sync {
    /// Whether the lease still holds (PostgreSQL: its session is alive).
    async fn held(&mut self) -> bool;
}

/// How busy the store's connections and writer queue are, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Most connections the pool may hold.
    pub max: usize,
    /// Connections open and waiting for work.
    pub idle: usize,
    /// Connections (SQLite: read slots) in use now.
    pub in_use: usize,
    /// Write requests queued for the writer(s).
    pub write_queue: usize,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which implementation this is, for logs and health output.
    fn kind(&self) -> &'static str;
    /// Connection pool use and writer queue depth: a cheap snapshot, no I/O.
    fn pool_stats(&self) -> PoolStats {
        PoolStats::default()
    }

    /// The receiver if this process already holds it (receivers are
    /// immutable, so a held one is current): no I/O. A view over a store
    /// uses it to tell a memory hit from a storage read (`TracedStore`
    /// makes no span for a hit). `None`: not held, or no cache.
    fn cached_receiver(&self, id: ReceiverId) -> Option<Arc<Receiver>> {
        let _ = id;
        None
    }

    async fn create_receiver(&self, receiver: NewReceiver) -> StoreResult<Arc<Receiver>>;
    async fn receiver(&self, id: ReceiverId) -> StoreResult<Option<Arc<Receiver>>>;
    /// The stored receivers among `ids` (unknown ones are left out), in no
    /// particular order: one read for all of them, for batched lookups.
    async fn receivers(&self, ids: Vec<ReceiverId>) -> StoreResult<Vec<Arc<Receiver>>>;
    async fn list_receivers(
        &self,
        filter: ReceiverFilter,
        page: PageRequest,
    ) -> StoreResult<Vec<Arc<Receiver>>>;

    /// Store events all-or-nothing; ids come back in input order.
    async fn create_events(&self, events: Vec<CheckedEvent>) -> StoreResult<Vec<EventId>>;
    async fn event(&self, id: EventId) -> StoreResult<Option<Event>>;
    async fn list_events(&self, filter: EventFilter, page: PageRequest) -> StoreResult<Vec<Event>>;

    /// Fails with `Invalid` naming `event_receiver_ids[i]` for unknown receivers.
    async fn create_group(&self, group: NewGroup) -> StoreResult<Group>;
    async fn group(&self, id: GroupId) -> StoreResult<Option<Group>>;
    async fn list_groups(&self, filter: GroupFilter, page: PageRequest) -> StoreResult<Vec<Group>>;
    /// The three group changes: `trace` is the context of the request
    /// making the change, which its message and the completions it finds
    /// carry (`NewReceiver::trace`, `NewGroup::trace` and
    /// `CheckedEvent::with_trace` do the same for creations).
    async fn update_group(
        &self,
        id: GroupId,
        patch: GroupPatch,
        trace: Option<TraceParent>,
    ) -> StoreResult<Group>;
    async fn add_group_receivers(
        &self,
        id: GroupId,
        ids: Vec<ReceiverId>,
        trace: Option<TraceParent>,
    ) -> StoreResult<Group>;
    async fn remove_group_receiver(
        &self,
        id: GroupId,
        receiver: ReceiverId,
        trace: Option<TraceParent>,
    ) -> StoreResult<Group>;
    async fn group_status(&self, id: GroupId, unit: Unit) -> StoreResult<GroupStatus>;
    async fn list_completions(
        &self,
        id: GroupId,
        page: PageRequest,
    ) -> StoreResult<Vec<Completion>>;

    /// The highest outbox position written so far (0 when empty). Each
    /// sink's backlog is this minus its cursor (the relay reports that).
    async fn outbox_head(&self) -> StoreResult<u64>;
    /// Outbox messages after position `after_seq`, oldest first, rendered.
    async fn outbox_after(&self, after_seq: u64, limit: u32) -> StoreResult<Vec<OutboxMessage>>;
    /// Outbox messages after `after_seq` that a relay may deliver now:
    /// no message with a lower position can still appear later. On SQLite
    /// (one writer) that is every committed message; on PostgreSQL, where
    /// positions are taken before commit, only positions below those of
    /// transactions still in flight (docs/delivery.md).
    async fn outbox_deliverable(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<OutboxMessage>>;
    /// How many outbox messages lie after position `after_seq`.
    async fn outbox_count_after(&self, after_seq: u64) -> StoreResult<u64>;
    /// Try to become the one relay delivering for `sink`: `None` while
    /// another relay (on another node) holds it. The embedded store has one
    /// process per data directory, so it always grants it.
    async fn lease_sink(&self, sink: &str) -> StoreResult<Option<Box<dyn SinkLease>>>;
    /// The position up to which `sink` has delivered (0: nothing yet).
    async fn sink_cursor(&self, sink: &str) -> StoreResult<u64>;
    /// Record that `sink` delivered everything up to `seq`. Never moves a
    /// cursor back.
    async fn advance_sink_cursor(&self, sink: &str, seq: u64) -> StoreResult<()>;
    /// Record a dead letter and, in the same transaction, move the sink's
    /// cursor past it and drop it from the sink's replay queue.
    async fn record_dead_letter(&self, letter: DeadLetter) -> StoreResult<()>;
    /// Dead letters, of one sink or all, oldest position first.
    async fn dead_letters(&self, sink: Option<String>, limit: u32) -> StoreResult<Vec<DeadLetter>>;
    /// Move a dead letter to its sink's replay queue, which the relay
    /// drains before new messages. `NotFound` if there is no such letter.
    async fn replay_dead_letter(&self, sink: &str, seq: u64) -> StoreResult<()>;
    /// Messages queued for replay to `sink`, rendered, oldest first.
    async fn sink_replays(&self, sink: &str, limit: u32) -> StoreResult<Vec<OutboxMessage>>;
    /// Drop a delivered message from `sink`'s replay queue.
    async fn finish_replay(&self, sink: &str, seq: u64) -> StoreResult<()>;
    /// A cheap round trip proving the store can serve reads and writes.
    async fn check(&self) -> StoreResult<()>;
    /// Finish queued writes, flush and release the store.
    async fn close(&self);
}
