//! The relay: one task per sink, delivering the outbox in order.

use crate::breaker::{Breaker, BreakerState};
use crate::config::{BreakerConfig, RetryConfig};
use crate::{OutboxMessage, Sink, SinkError};
use cairn_domain::Timestamp;
use cairn_store::{DeadLetter, SinkLease, Store, StoreError};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

/// What readiness and metrics know about one sink.
#[derive(Debug, Clone)]
pub struct SinkStatus {
    pub required: bool,
    pub breaker: BreakerState,
    pub last_error: Option<String>,
    /// Another node's relay delivers for this sink; this one waits to
    /// take over.
    pub standby: bool,
}

impl SinkStatus {
    /// Down means the breaker is open: deliveries are not even tried.
    pub fn is_down(&self) -> bool {
        self.breaker == BreakerState::Open
    }
}

/// One sink and how to drive it.
pub struct RelaySink {
    pub sink: Arc<dyn Sink>,
    pub required: bool,
    pub retry: RetryConfig,
    pub breaker: BreakerConfig,
}

type Statuses = Arc<Mutex<BTreeMap<String, SinkStatus>>>;

/// The running relay tasks.
pub struct Relay {
    statuses: Statuses,
    wake: Arc<Notify>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Start one task per sink. `wake` may be notified after local commits
    /// to deliver without waiting for the next poll.
    pub fn start(store: Arc<dyn Store>, sinks: Vec<RelaySink>, wake: Arc<Notify>) -> Self {
        let statuses: Statuses = Arc::new(Mutex::new(BTreeMap::new()));
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::with_capacity(sinks.len());
        for s in sinks {
            let status = SinkStatus {
                required: s.required,
                breaker: BreakerState::Closed,
                last_error: None,
                standby: false,
            };
            if let Ok(mut map) = statuses.lock() {
                map.insert(s.sink.name().to_owned(), status);
            }
            metrics::gauge!("cairn_sink_breaker_state", "sink" => s.sink.name().to_owned())
                .set(0.0);
            // Counters exist from the start, at zero, for dashboards and alerts.
            for outcome in ["delivered", "failed"] {
                metrics::counter!("cairn_sink_deliveries_total", "sink" => s.sink.name().to_owned(), "outcome" => outcome)
                    .increment(0);
            }
            metrics::counter!("cairn_dead_letters_total", "sink" => s.sink.name().to_owned())
                .increment(0);
            let worker = Worker {
                store: store.clone(),
                breaker: Breaker::new(s.breaker.failures, Duration::from_millis(s.breaker.open_ms)),
                sink: s.sink,
                retry: s.retry,
                statuses: statuses.clone(),
                wake: wake.clone(),
                stop: stop_rx.clone(),
                cursor: None,
                attempts: 0,
                lease: None,
                lease_checked: Instant::now(),
            };
            tasks.push(tokio::spawn(worker.run()));
        }
        Self {
            statuses,
            wake,
            stop,
            tasks,
        }
    }

    /// The current state of every sink, by name.
    pub fn statuses(&self) -> BTreeMap<String, SinkStatus> {
        self.statuses.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// A handle on the statuses that outlives `&self` (for readiness).
    pub fn status_handle(&self) -> StatusHandle {
        StatusHandle(self.statuses.clone())
    }

    /// What to notify to wake every sink's task (after a local commit).
    pub fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Deliver without waiting for the next poll.
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    /// Stop every task: a waiting task stops at once, one delivering
    /// finishes that delivery first (bounded by the sink's timeout). Its
    /// lease is released, so another node's relay may take over.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Shared read access to the sinks' statuses.
#[derive(Clone, Default)]
pub struct StatusHandle(Statuses);

impl StatusHandle {
    pub fn statuses(&self) -> BTreeMap<String, SinkStatus> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

struct Worker {
    store: Arc<dyn Store>,
    sink: Arc<dyn Sink>,
    retry: RetryConfig,
    breaker: Breaker,
    statuses: Statuses,
    wake: Arc<Notify>,
    stop: watch::Receiver<bool>,
    /// The sink's cursor, once read from the store.
    cursor: Option<u64>,
    /// Failed attempts at the message at the head of the queue.
    attempts: u32,
    /// The right to deliver for this sink (one relay per sink across
    /// nodes), and when it was last confirmed.
    lease: Option<Box<dyn SinkLease>>,
    lease_checked: Instant,
}

/// How often a standby relay tries to take over, and a leader confirms
/// its lease.
const LEASE_INTERVAL: Duration = Duration::from_secs(1);

enum Step {
    /// Nothing to deliver: wait for a wake-up or the poll interval.
    Idle,
    /// Progress made: go again at once.
    Busy,
    /// Wait this long before trying again.
    Wait(Duration),
}

impl Worker {
    fn name(&self) -> &str {
        self.sink.name()
    }

    async fn run(mut self) {
        tracing::info!(sink = self.name(), "relay started");
        let poll = Duration::from_millis(self.retry.poll_ms.max(1));
        loop {
            if *self.stop.borrow() {
                break;
            }
            let step = match self.step().await {
                Ok(step) => step,
                Err(e) => {
                    tracing::warn!(sink = self.name(), error = %e, "relay cannot reach the store");
                    Step::Wait(poll.max(Duration::from_millis(500)))
                }
            };
            let wait = match step {
                Step::Busy => continue,
                Step::Idle => poll,
                Step::Wait(d) => d,
            };
            let wake = self.wake.clone();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = wake.notified(), if matches!(step, Step::Idle) => {}
                _ = self.stop.changed() => {}
            }
        }
        tracing::info!(sink = self.name(), "relay stopped");
    }

    /// One round: replays first, then new messages after the cursor.
    async fn step(&mut self) -> Result<Step, StoreError> {
        if !self.lead().await? {
            return Ok(Step::Wait(LEASE_INTERVAL));
        }
        let now = Instant::now();
        let state = self.breaker.state(now);
        self.publish_breaker(state);
        if state == BreakerState::Open {
            return Ok(Step::Wait(self.breaker.wait(now)));
        }
        let limit = self.retry.batch_size.max(1);
        // Half-open: a single message is the trial.
        let limit = if state == BreakerState::HalfOpen {
            1
        } else {
            limit
        };
        let replays = self.store.sink_replays(self.name(), limit).await?;
        let (batch, replay) = if replays.is_empty() {
            let cursor = match self.cursor {
                Some(c) => c,
                None => {
                    let c = self.store.sink_cursor(self.name()).await?;
                    self.set_cursor(c);
                    c
                }
            };
            (self.store.outbox_deliverable(cursor, limit).await?, false)
        } else {
            (replays, true)
        };
        self.publish_backlog(&batch, limit).await;
        if batch.is_empty() {
            return Ok(Step::Idle);
        }
        // One span per batch, the root of its own trace: delivery is
        // asynchronous and a batch mixes many requests' messages. It links
        // to the span of each request that wrote one of them.
        let span = tracing::debug_span!(
            "outbox.deliver",
            otel.name = %format_args!("outbox.deliver {}", self.name()),
            otel.kind = "producer",
            otel.status_code = tracing::field::Empty,
            sink = self.name(),
            messages = batch.len(),
            first_seq = batch.first().map_or(0, |m| m.seq),
            last_seq = batch.last().map_or(0, |m| m.seq),
            replay,
            delivered = tracing::field::Empty,
        );
        link_writers(&span, &batch);
        let result = self
            .sink
            .deliver(&batch)
            .instrument(tracing::debug_span!(parent: &span, "sink.deliver", sink = self.name()))
            .await;
        let delivered = match &result {
            Ok(()) => batch.len(),
            Err(e) => e.delivered.min(batch.len()),
        };
        span.record("delivered", delivered);
        if result.is_err() {
            span.record("otel.status_code", "error");
        }
        if delivered > 0 {
            self.acknowledge(&batch[..delivered], replay)
                .instrument(span.clone())
                .await?;
            metrics::counter!("cairn_sink_deliveries_total", "sink" => self.name().to_owned(), "outcome" => "delivered")
                .increment(delivered as u64);
        }
        match result {
            Ok(()) => {
                self.attempts = 0;
                self.breaker.success();
                self.set_error(None);
                self.publish_breaker(self.breaker.state(Instant::now()));
                Ok(Step::Busy)
            }
            Err(SinkError { reason, .. }) => {
                if delivered > 0 {
                    self.attempts = 0;
                }
                let Some(failed) = batch.get(delivered) else {
                    return Ok(Step::Busy);
                };
                self.attempts = self.attempts.saturating_add(1);
                metrics::counter!("cairn_sink_deliveries_total", "sink" => self.name().to_owned(), "outcome" => "failed")
                    .increment(1);
                tracing::warn!(
                    sink = self.name(),
                    seq = failed.seq,
                    attempt = self.attempts,
                    error = %reason,
                    "delivery failed"
                );
                self.set_error(Some(reason.clone()));
                self.breaker.failure(Instant::now());
                self.publish_breaker(self.breaker.state(Instant::now()));
                if self.attempts >= self.retry.max_attempts {
                    self.dead_letter(failed, reason).await?;
                    self.attempts = 0;
                    return Ok(Step::Busy);
                }
                Ok(Step::Wait(self.retry.backoff().delay(self.attempts)))
            }
        }
    }

    /// Whether this relay may deliver: take the sink's lease if free,
    /// confirm a held one now and then. A new leader re-reads the cursor
    /// (another node may have moved it).
    async fn lead(&mut self) -> Result<bool, StoreError> {
        if let Some(lease) = self.lease.as_mut() {
            if self.lease_checked.elapsed() < LEASE_INTERVAL {
                return Ok(true);
            }
            if lease.held().await {
                self.lease_checked = Instant::now();
                return Ok(true);
            }
            tracing::warn!(sink = self.name(), "lost the sink's lease");
            self.lease = None;
        }
        match self.store.lease_sink(self.name()).await? {
            Some(lease) => {
                tracing::info!(sink = self.name(), "delivering for this sink");
                self.lease = Some(lease);
                self.lease_checked = Instant::now();
                self.cursor = None;
                self.attempts = 0;
                self.set_standby(false);
                Ok(true)
            }
            None => {
                self.set_standby(true);
                Ok(false)
            }
        }
    }

    fn set_standby(&self, standby: bool) {
        if let Ok(mut map) = self.statuses.lock()
            && let Some(s) = map.get_mut(self.name())
        {
            s.standby = standby;
        }
    }

    async fn acknowledge(
        &mut self,
        done: &[OutboxMessage],
        replay: bool,
    ) -> Result<(), StoreError> {
        if replay {
            for m in done {
                self.store.finish_replay(self.name(), m.seq).await?;
            }
            return Ok(());
        }
        if let Some(last) = done.last() {
            self.store
                .advance_sink_cursor(self.name(), last.seq)
                .await?;
            self.set_cursor(self.cursor.map_or(last.seq, |c| c.max(last.seq)));
        }
        Ok(())
    }

    async fn dead_letter(&mut self, m: &OutboxMessage, reason: String) -> Result<(), StoreError> {
        tracing::error!(
            sink = self.name(),
            seq = m.seq,
            message_id = %m.id,
            attempts = self.attempts,
            "giving up on a message: moved to the dead letters"
        );
        self.store
            .record_dead_letter(DeadLetter {
                sink: self.name().to_owned(),
                seq: m.seq,
                message_id: m.id,
                attempts: self.attempts,
                last_error: reason,
                failed_at: now_ts(),
            })
            .await?;
        self.set_cursor(self.cursor.map_or(m.seq, |c| c.max(m.seq)));
        metrics::counter!("cairn_dead_letters_total", "sink" => self.name().to_owned())
            .increment(1);
        Ok(())
    }

    async fn publish_backlog(&self, batch: &[OutboxMessage], limit: u32) {
        let name = self.name().to_owned();
        let lag = batch.first().map_or(0.0, |m| {
            let age = now_ts().micros().saturating_sub(m.created_at.micros());
            age.max(0) as f64 / 1e6
        });
        metrics::gauge!("cairn_outbox_lag_seconds", "sink" => name.clone()).set(lag);
        // A full batch means there may be more: count them.
        let backlog = if batch.len() as u64 >= u64::from(limit) {
            match self
                .store
                .outbox_count_after(self.cursor.unwrap_or(0))
                .await
            {
                Ok(n) => n,
                Err(_) => batch.len() as u64,
            }
        } else {
            batch.len() as u64
        };
        metrics::gauge!("cairn_outbox_backlog", "sink" => name).set(backlog as f64);
    }

    /// Remember the cursor and publish it (`cairn_sink_cursor`: the last
    /// outbox position this sink acknowledged or gave up on).
    fn set_cursor(&mut self, cursor: u64) {
        self.cursor = Some(cursor);
        metrics::gauge!("cairn_sink_cursor", "sink" => self.name().to_owned()).set(cursor as f64);
    }

    fn publish_breaker(&self, state: BreakerState) {
        metrics::gauge!("cairn_sink_breaker_state", "sink" => self.name().to_owned())
            .set(state.gauge());
        if let Ok(mut map) = self.statuses.lock()
            && let Some(s) = map.get_mut(self.name())
        {
            s.breaker = state;
        }
    }

    fn set_error(&self, error: Option<String>) {
        if let Ok(mut map) = self.statuses.lock()
            && let Some(s) = map.get_mut(self.name())
        {
            s.last_error = error;
        }
    }
}

fn now_ts() -> Timestamp {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Timestamp::from_micros(micros)
}

/// Most links one `outbox.deliver` span gets (the OpenTelemetry SDK's
/// default limit per span): one per message with a writer's trace.
const MAX_LINKS: usize = 128;

/// Link the batch's span to the span of each request that wrote one of its
/// messages (their `traceparent`), so a trace viewer leads from a write to
/// its delivery. Nothing is made when no OpenTelemetry layer takes the span.
fn link_writers(span: &tracing::Span, batch: &[OutboxMessage]) {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if span.is_disabled() {
        return;
    }
    for trace in batch
        .iter()
        .filter_map(|m| m.trace.as_ref())
        .take(MAX_LINKS)
    {
        let (Ok(trace_id), Ok(span_id)) = (
            TraceId::from_hex(trace.trace_id()),
            SpanId::from_hex(trace.span_id()),
        ) else {
            continue;
        };
        let flags = if trace.sampled() {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        span.add_link(SpanContext::new(
            trace_id,
            span_id,
            flags,
            true,
            TraceState::default(),
        ));
    }
}
