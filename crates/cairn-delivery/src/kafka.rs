//! Kafka sink (`rdkafka`, librdkafka built from its bundled source): each
//! message is produced to one topic with
//!
//! - **key** = the message's ordering key: for event and completion
//!   messages the unit (its five fields joined by U+001F), for receiver and
//!   group messages `cairn/receivers/<id>` / `cairn/groups/<id>`. With the
//!   `murmur2_random` partitioner (the Java client's) one key always lands
//!   in one partition, so one unit's messages stay in one partition;
//! - **value** = the CloudEvents JSON document (structured mode), as the
//!   other sinks send it;
//! - **headers** `content-type: application/cloudevents+json;
//!   charset=utf-8` and copies of the envelope's attributes (`ce_id` = the
//!   message id, `ce_specversion`, `ce_type`, `ce_source`, `ce_time`,
//!   `ce_subject`, and `ce_traceparent` when the message has one), so a
//!   consumer can deduplicate, route and join the writer's trace without
//!   parsing the value;
//! - **timestamp** = the message's `time` (commit time of the change).
//!
//! The producer is idempotent (`enable.idempotence`, `acks=all`, at most 5
//! requests in flight), so librdkafka's own retries neither duplicate nor
//! reorder. A message counts only once its delivery report came back
//! successful, and every wait is bounded by `timeout_ms`
//! (`message.timeout.ms`, `request.timeout.ms`), so a dead broker fails
//! the batch instead of hanging it.
//!
//! A timed-out message can still leave a gap that later messages of the
//! same partition fill (librdkafka documents this for its idempotent
//! producer). So that a retry never puts an earlier message of a unit after
//! a later one, a batch is produced in **waves**: a key's n-th message of
//! the batch goes out in wave n, only once wave n-1 was acknowledged
//! whole. Different units are pipelined; one unit's messages are not.

use crate::{OutboxMessage, Sink, SinkError};
use async_trait::async_trait;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;

/// The `content-type` of a value: CloudEvents structured mode, JSON.
pub const CONTENT_TYPE: &str = "application/cloudevents+json; charset=utf-8";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers: `host:port[,host:port...]`.
    pub brokers: String,
    /// The topic every message goes to. Cairn does not create it.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Longest wait for one message's acknowledgement, for a request to a
    /// broker, and for the health check's metadata (milliseconds).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Connect over TLS (librdkafka's `security.protocol = ssl`, on the
    /// system's OpenSSL), checking each broker's certificate and name
    /// against the system's roots or `ca_file`. Setting `ca_file` or a
    /// client certificate implies it.
    #[serde(default)]
    pub tls: bool,
    /// PEM file of the CAs the brokers' certificates must chain to,
    /// instead of the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain presented to brokers that ask for one (mutual
    /// TLS); set with `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// The private key of `client_cert_file` (PEM).
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

fn default_topic() -> String {
    "cairn".into()
}
fn default_timeout_ms() -> u64 {
    5_000
}

/// librdkafka's bounds on `message.timeout.ms` we accept (0 would mean
/// "never time out").
const MIN_TIMEOUT_MS: u64 = 10;
const MAX_TIMEOUT_MS: u64 = 900_000;

/// Check `brokers` and return them normalised (entries trimmed, joined by
/// `,`), or say what is wrong, naming the field.
pub fn parse_brokers(brokers: &str) -> Result<String, String> {
    let entries: Vec<&str> = brokers
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if entries.is_empty() {
        return Err(format!(
            "kafka brokers {brokers:?}: list at least one host:port"
        ));
    }
    for entry in &entries {
        if entry.contains("://") {
            return Err(format!(
                "kafka brokers entry {entry:?}: give host:port without a scheme \
                 (tls = true for TLS)"
            ));
        }
        let Some((host, port)) = entry.rsplit_once(':') else {
            return Err(format!("kafka brokers entry {entry:?}: expected host:port"));
        };
        if host.is_empty() || host.chars().any(char::is_whitespace) {
            return Err(format!(
                "kafka brokers entry {entry:?}: the host is missing"
            ));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => {
                return Err(format!(
                    "kafka brokers entry {entry:?}: the port must be a number from 1 to 65535"
                ));
            }
        }
    }
    Ok(entries.join(","))
}

/// Kafka's rules for a topic name: 1 to 249 characters of `[A-Za-z0-9._-]`,
/// not `.` or `..`.
pub fn check_topic(topic: &str) -> Result<(), String> {
    let legal = topic
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if topic.is_empty() || topic.len() > 249 || !legal || topic == "." || topic == ".." {
        return Err(format!(
            "kafka topic {topic:?}: a topic name is 1 to 249 characters of \
             letters, digits, '.', '_' and '-' (not \".\" or \"..\")"
        ));
    }
    Ok(())
}

/// librdkafka's TLS settings for `config`, its files checked as every
/// component's are (errors name the field).
fn tls_settings(config: &KafkaConfig, client_config: &mut ClientConfig) -> Result<(), String> {
    let identity = cairn_http::Identity::from_files(
        config.client_cert_file.as_deref(),
        config.client_key_file.as_deref(),
    )
    .map_err(|e| format!("kafka {e}"))?;
    if !(config.tls || config.ca_file.is_some() || identity.is_some()) {
        return Ok(());
    }
    client_config
        .set("security.protocol", "ssl")
        .set("ssl.endpoint.identification.algorithm", "https");
    match &config.ca_file {
        Some(file) => {
            cairn_http::load_ca_file(file).map_err(|e| format!("kafka {e}"))?;
            client_config.set("ssl.ca.location", path_text(file, "ca_file")?);
        }
        // The standard locations of the system's CA bundle.
        None => {
            client_config.set("ssl.ca.location", "probe");
        }
    }
    if let Some(identity) = identity {
        identity.load().map_err(|e| format!("kafka {e}"))?;
        client_config
            .set(
                "ssl.certificate.location",
                path_text(identity.cert_file, "client_cert_file")?,
            )
            .set(
                "ssl.key.location",
                path_text(identity.key_file, "client_key_file")?,
            );
    }
    Ok(())
}

/// A path as librdkafka takes it: text.
fn path_text<'a>(path: &'a std::path::Path, field: &str) -> Result<&'a str, String> {
    path.to_str()
        .ok_or_else(|| format!("kafka {field} {}: not UTF-8", path.display()))
}

pub struct KafkaSink {
    name: String,
    topic: String,
    brokers: String,
    timeout: Duration,
    client_config: ClientConfig,
    /// Made on first use; re-made after failures (see `retire`).
    producer: Mutex<Option<Arc<Client>>>,
}

impl KafkaSink {
    pub fn new(name: &str, config: &KafkaConfig) -> Result<Self, String> {
        let brokers = parse_brokers(&config.brokers)?;
        check_topic(&config.topic)?;
        if !(MIN_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(&config.timeout_ms) {
            return Err(format!(
                "kafka timeout_ms {}: must be from {MIN_TIMEOUT_MS} to {MAX_TIMEOUT_MS} \
                 (a delivery must be bounded)",
                config.timeout_ms
            ));
        }
        let timeout_ms = config.timeout_ms.to_string();
        let mut client_config = ClientConfig::new();
        client_config
            .set("bootstrap.servers", &brokers)
            .set("client.id", format!("cairn-{name}"))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "5")
            .set("message.timeout.ms", &timeout_ms)
            .set("request.timeout.ms", &timeout_ms)
            .set(
                "socket.connection.setup.timeout.ms",
                config.timeout_ms.max(1_000).to_string(),
            )
            .set("linger.ms", "1")
            .set("partitioner", "murmur2_random")
            .set("allow.auto.create.topics", "false");
        tls_settings(config, &mut client_config)?;
        // Checks every property now; the producer itself is made on first
        // use (building a sink to validate settings starts no client).
        client_config
            .create_native_config()
            .map_err(|e| format!("kafka client configuration: {e}"))?;
        Ok(Self {
            name: name.to_owned(),
            topic: config.topic.clone(),
            brokers,
            timeout: Duration::from_millis(config.timeout_ms),
            client_config,
            producer: Mutex::new(None),
        })
    }

    /// The topic messages go to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    async fn producer(&self) -> Result<Arc<Client>, String> {
        let mut slot = self.producer.lock().await;
        if let Some(p) = slot.as_ref() {
            return Ok(p.clone());
        }
        let p = create_producer(&self.name, &self.client_config)?;
        *slot = Some(p.clone());
        Ok(p)
    }

    /// Retire `producer` (the next delivery makes a new one) after a
    /// delivery report said a message failed. A producer keeps its
    /// producer id, epoch and sequence numbers, which a broker that lost
    /// its state (restarted without it, or failed over) may never accept
    /// again: seen with tansu as endless timeouts, or `ProducerFenced`; a
    /// new producer starts clean. Dropping it purges what it still queued and waits
    /// for its threads, so this happens off the runtime, and before the
    /// next delivery starts.
    async fn retire(&self, producer: Arc<Client>) {
        if let Some((code, reason)) = producer.inner.client().fatal_error() {
            tracing::error!(sink = %self.name, ?code, %reason, "fatal Kafka producer error");
        }
        let mut slot = self.producer.lock().await;
        let old = if slot.as_ref().is_some_and(|p| Arc::ptr_eq(p, &producer)) {
            slot.take()
        } else {
            None
        };
        let dropped = tokio::task::spawn_blocking(move || drop((old, producer))).await;
        if let Err(e) = dropped {
            tracing::warn!(sink = %self.name, error = %e, "dropping the Kafka producer failed");
        }
    }

    /// Produce one message; an error is one the client gave at once (queue
    /// full, message too large, ...).
    fn send(
        &self,
        producer: &FutureProducer<SinkContext>,
        m: &OutboxMessage,
    ) -> Result<DeliveryFuture, String> {
        let id = m.id.to_string();
        let time = m.created_at.to_string();
        let source = source_of(&m.json);
        let mut headers = OwnedHeaders::new_with_capacity(8)
            .insert(Header {
                key: "content-type",
                value: Some(CONTENT_TYPE),
            })
            .insert(Header {
                key: "ce_specversion",
                value: Some("1.0"),
            })
            .insert(Header {
                key: "ce_id",
                value: Some(id.as_str()),
            })
            .insert(Header {
                key: "ce_type",
                value: Some(m.type_.as_str()),
            })
            .insert(Header {
                key: "ce_time",
                value: Some(time.as_str()),
            })
            .insert(Header {
                key: "ce_subject",
                value: Some(m.ordering_key.as_str()),
            });
        if let Some(source) = source.as_deref() {
            headers = headers.insert(Header {
                key: "ce_source",
                value: Some(source),
            });
        }
        if let Some(trace) = &m.trace {
            headers = headers.insert(Header {
                key: "ce_traceparent",
                value: Some(trace.as_str()),
            });
        }
        let record = FutureRecord::to(&self.topic)
            .key(m.ordering_key.as_bytes())
            .payload(m.json.as_bytes())
            .headers(headers)
            .timestamp(m.created_at.micros().div_euclid(1_000));
        producer.send_result(record).map_err(|(e, _)| describe(&e))
    }

    /// How long to wait for the delivery reports of one wave beyond the
    /// client's own timeouts, which should always answer first.
    fn report_deadline(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(2)
    }

    /// How long a new producer that was never acknowledged may keep timing
    /// out before it is re-made.
    fn grace(&self) -> Duration {
        (self.timeout * 3).max(Duration::from_secs(5))
    }
}

/// A producer, whether the broker ever acknowledged one of its messages,
/// and when it was made. A producer that was acknowledged, or that is past
/// its grace period, is re-made after timed-out deliveries: it may hold a
/// producer id and sequence numbers a restarted broker never accepts (one
/// made at start-up for the health check and first used after a broker
/// restart times out forever otherwise). A young, never-acknowledged one
/// is kept: it may merely not have connected yet.
struct Client {
    inner: FutureProducer<SinkContext>,
    acked: AtomicBool,
    made: std::time::Instant,
    /// The context's [`LastError`] (librdkafka keeps the context itself).
    last_error: LastError,
}

/// Routes librdkafka's log lines and client errors to `tracing`, tagged
/// with the sink. A broker that cannot be reached is the relay's business
/// (it logs each failed delivery), so the client's reports of it are
/// warnings, not errors; librdkafka backs off its reconnects (100 ms
/// doubling to 10 s).
struct SinkContext {
    sink: String,
    last_error: LastError,
}

/// The client's last error (a refused connection, a failed TLS
/// handshake), for the reason of a delivery that timed out, which
/// librdkafka reports without one.
type LastError = Arc<std::sync::Mutex<Option<String>>>;

/// The last client error, taken (each is told once).
fn take_last_error(last: &LastError) -> Option<String> {
    last.lock().ok().and_then(|mut e| e.take())
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let sink = self.sink.as_str();
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                tracing::error!(target: "librdkafka", sink, fac, "{message}")
            }
            RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", sink, fac, "{message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", sink, fac, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", sink, fac, "{message}"),
        }
    }

    /// Client-wide errors repeat what `log` said (a failed connect is a
    /// `FAIL` line there too), so they are logged for debugging only, and
    /// the last one is kept for the next delivery that times out.
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(target: "librdkafka", sink = %self.sink, %error, "{reason}");
        // "n/n brokers are down" follows the error that says why.
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            return;
        }
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(reason.to_owned());
        }
    }
}

fn create_producer(name: &str, config: &ClientConfig) -> Result<Arc<Client>, String> {
    let last_error = LastError::default();
    config
        .create_with_context::<_, FutureProducer<SinkContext>>(SinkContext {
            sink: name.to_owned(),
            last_error: last_error.clone(),
        })
        .map(|inner| {
            Arc::new(Client {
                inner,
                acked: AtomicBool::new(false),
                made: std::time::Instant::now(),
                last_error,
            })
        })
        .map_err(|e| format!("creating the Kafka producer: {e}"))
}

fn describe(e: &KafkaError) -> String {
    match e.rdkafka_error_code() {
        Some(code) => format!("{e} ({code:?})"),
        None => e.to_string(),
    }
}

/// The CloudEvents `source` of a rendered message (`None` if the document
/// has none, which the store never writes).
fn source_of(json: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Envelope {
        source: String,
    }
    serde_json::from_str::<Envelope>(json)
        .ok()
        .map(|e| e.source)
}

/// Split a batch (by index) into waves: a key's n-th message in the batch
/// goes in wave n. Each wave keeps batch order.
pub fn waves(batch: &[OutboxMessage]) -> Vec<Vec<usize>> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut waves: Vec<Vec<usize>> = Vec::new();
    for (i, m) in batch.iter().enumerate() {
        let n = seen.entry(m.ordering_key.as_str()).or_insert(0);
        if waves.len() <= *n {
            waves.push(Vec::new());
        }
        if let Some(w) = waves.get_mut(*n) {
            w.push(i);
        }
        *n += 1;
    }
    waves
}

/// The first failure of a delivery, by batch position.
struct FirstFailure(Option<(usize, String)>);

impl FirstFailure {
    fn note(&mut self, index: usize, reason: String) {
        if self.0.as_ref().is_none_or(|(i, _)| index < *i) {
            self.0 = Some((index, reason));
        }
    }
    fn limit(&self) -> usize {
        self.0.as_ref().map_or(usize::MAX, |(i, _)| *i)
    }
}

#[async_trait]
impl Sink for KafkaSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// Produce the batch wave by wave and await every delivery report.
    /// After a failure at position `f`, only messages before `f` are still
    /// sent (their keys' earlier messages were all acknowledged), so the
    /// error reports exactly the acknowledged head: everything before `f`.
    async fn deliver(&self, batch: &[OutboxMessage]) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        let producer = self.producer().await.map_err(|e| SinkError::new(0, e))?;
        let mut failure = FirstFailure(None);
        // Delivery reports said messages timed out / failed otherwise (or
        // never came).
        let (mut timed_out, mut broken) = (false, false);
        for wave in waves(batch) {
            let mut pending: Vec<(usize, DeliveryFuture)> = Vec::with_capacity(wave.len());
            for i in wave {
                if i >= failure.limit() {
                    break;
                }
                let Some(m) = batch.get(i) else { break };
                match self.send(&producer.inner, m) {
                    Ok(f) => pending.push((i, f)),
                    Err(e) => {
                        failure.note(i, e);
                        break;
                    }
                }
            }
            let deadline = tokio::time::Instant::now() + self.report_deadline();
            for (i, report) in pending {
                match tokio::time::timeout_at(deadline, report).await {
                    Ok(Ok(Ok(_))) => producer.acked.store(true, Ordering::Relaxed),
                    Ok(Ok(Err((e, _))))
                        if e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageTimedOut) =>
                    {
                        timed_out = true;
                        let last = match take_last_error(&producer.last_error) {
                            Some(reason) => format!("; the client's last error: {reason}"),
                            None => String::new(),
                        };
                        failure.note(
                            i,
                            format!(
                                "{} after timeout_ms = {} (is a broker up, and does the topic exist?){last}",
                                describe(&e),
                                self.timeout.as_millis()
                            ),
                        );
                    }
                    Ok(Ok(Err((e, _)))) => {
                        broken = true;
                        failure.note(i, describe(&e));
                    }
                    Ok(Err(_)) => {
                        broken = true;
                        failure.note(i, "the producer closed before reporting".into());
                    }
                    Err(_) => {
                        broken = true;
                        failure.note(
                            i,
                            format!(
                                "no delivery report within {} ms",
                                self.report_deadline().as_millis()
                            ),
                        );
                    }
                }
            }
        }
        let Some((index, reason)) = failure.0 else {
            return Ok(());
        };
        // Timeouts retire a producer the broker acknowledged before, or one
        // past its grace period; a new one may merely not have connected
        // yet (getting a producer id takes a while), and re-making it would
        // start over.
        let stale =
            producer.acked.load(Ordering::Relaxed) || producer.made.elapsed() > self.grace();
        if broken || (timed_out && stale) || producer.inner.client().fatal_error().is_some() {
            self.retire(producer).await;
        }
        let id = batch
            .get(index)
            .map(|m| m.id.to_string())
            .unwrap_or_default();
        Err(SinkError::new(
            index,
            format!(
                "kafka {} topic {}: message {id}: {reason}",
                self.brokers, self.topic
            ),
        ))
    }

    /// Fetch the topic's metadata (bounded by `timeout_ms`): fails if no
    /// broker answers, or if the topic does not exist.
    async fn health(&self) -> Result<(), SinkError> {
        let producer = self.producer().await.map_err(|e| SinkError::new(0, e))?;
        let topic = self.topic.clone();
        let timeout = self.timeout;
        let fetched = tokio::task::spawn_blocking(move || {
            producer
                .inner
                .client()
                .fetch_metadata(Some(&topic), timeout)
                .map(|md| {
                    md.topics()
                        .iter()
                        .find(|t| t.name() == topic)
                        .map(|t| (t.error(), t.partitions().len()))
                })
        })
        .await
        .map_err(|e| SinkError::new(0, format!("kafka health check stopped: {e}")))?;
        let missing = || {
            SinkError::new(
                0,
                format!(
                    "kafka topic {:?} does not exist on {} (Cairn does not create topics; \
                     create it first)",
                    self.topic, self.brokers
                ),
            )
        };
        match fetched {
            Err(e) => Err(SinkError::new(
                0,
                format!(
                    "kafka {}: fetching metadata of topic {:?}: {}",
                    self.brokers,
                    self.topic,
                    describe(&e)
                ),
            )),
            Ok(None) => Err(missing()),
            Ok(Some((Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART), _))) => {
                Err(missing())
            }
            Ok(Some((Some(code), _))) => Err(SinkError::new(
                0,
                format!("kafka {}: topic {:?}: {code:?}", self.brokers, self.topic),
            )),
            Ok(Some((None, 0))) => Err(missing()),
            Ok(Some((None, _))) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers_are_host_port_lists() {
        assert_eq!(
            parse_brokers(" a:9092, b:19092 ,").unwrap(),
            "a:9092,b:19092"
        );
        assert_eq!(parse_brokers("[::1]:9092").unwrap(), "[::1]:9092");
        for bad in ["", " , ", "a", "a:", ":9092", "a:0", "a:99999", "a:x"] {
            let e = parse_brokers(bad).unwrap_err();
            assert!(e.contains("kafka brokers"), "{bad:?}: {e}");
        }
        let e = parse_brokers("kafka://a:9092").unwrap_err();
        assert!(e.contains("without a scheme"), "{e}");
    }

    #[test]
    fn topics_follow_kafka_rules() {
        assert!(check_topic("cairn").is_ok());
        assert!(check_topic("cairn.events_v1-x").is_ok());
        for bad in ["", ".", "..", "a b", "a/b", "é", &"x".repeat(250)] {
            let e = check_topic(bad).unwrap_err();
            assert!(e.starts_with("kafka topic"), "{bad:?}: {e}");
        }
    }

    fn message(seq: u64, key: &str) -> OutboxMessage {
        OutboxMessage {
            seq,
            id: cairn_domain::MessageId::new(ulid::Ulid::new()),
            type_: "t".into(),
            ordering_key: key.into(),
            created_at: cairn_domain::time::Timestamp::from_micros(1_700_000_000_123_456),
            trace: None,
            json: r#"{"specversion":"1.0","source":"cairn/receivers/x","data":{"a":[1,{"b":2}]}}"#
                .into(),
        }
    }

    #[test]
    fn a_keys_nth_message_goes_in_wave_n() {
        let batch: Vec<_> = ["a", "b", "a", "c", "a", "b"]
            .iter()
            .enumerate()
            .map(|(i, k)| message(i as u64 + 1, k))
            .collect();
        assert_eq!(waves(&batch), vec![vec![0, 1, 3], vec![2, 5], vec![4]]);
        assert!(waves(&[]).is_empty());
    }

    #[test]
    fn the_source_is_read_from_the_document() {
        assert_eq!(
            source_of(&message(1, "k").json).as_deref(),
            Some("cairn/receivers/x")
        );
        assert_eq!(source_of("{}"), None);
    }

    #[test]
    fn bad_config_names_the_field() {
        let config = |brokers: &str, topic: &str, timeout_ms| KafkaConfig {
            brokers: brokers.into(),
            topic: topic.into(),
            timeout_ms,
            tls: false,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
        };
        let err = |c: KafkaConfig| KafkaSink::new("k", &c).err().unwrap_or_default();
        assert!(err(config("", "t", 1000)).contains("kafka brokers"));
        assert!(err(config("a:1", "a b", 1000)).contains("kafka topic"));
        assert!(err(config("a:1", "t", 0)).contains("kafka timeout_ms"));
        assert!(err(config("a:1", "t", 900_001)).contains("kafka timeout_ms"));
        assert!(KafkaSink::new("k", &config("127.0.0.1:1", "t", 1000)).is_ok());
        // TLS: a CA file implies it; its problems and a half client
        // certificate are named.
        let tls = |ca: &str, cert: Option<&str>| KafkaConfig {
            ca_file: Some(ca.into()),
            client_cert_file: cert.map(Into::into),
            ..config("a:1", "t", 1000)
        };
        let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/../cairn-testkit/tls/ca.pem");
        let sink = KafkaSink::new("k", &tls(ca, None)).unwrap();
        assert_eq!(sink.client_config.get("security.protocol"), Some("ssl"));
        assert_eq!(sink.client_config.get("ssl.ca.location"), Some(ca));
        assert!(err(tls("no-such.pem", None)).contains("kafka ca_file no-such.pem"));
        assert!(err(tls(ca, Some("c.pem"))).contains("kafka client_key_file: not set"));
        let plain = KafkaSink::new("k", &config("a:1", "t", 1000)).unwrap();
        assert_eq!(plain.client_config.get("security.protocol"), None);
    }
}
