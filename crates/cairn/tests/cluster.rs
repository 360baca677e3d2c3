//! Two real `cairn serve` processes on one PostgreSQL database, delivering
//! to a real broker, with a consumer counting what arrives while the
//! broker is killed and restarted and one node is killed outright.
//!
//! Checked: every event acknowledged by either node reaches the consumer
//! at least once; by id, nothing is delivered that was not acknowledged;
//! each unit's events stand in the broker (first copies, in stream or
//! partition order) in the order they were acknowledged, though
//! consecutive events of a unit were written through different nodes;
//! each (group, unit) completion arrives under exactly one message id,
//! matches the completions the API lists, and follows the event that
//! completed it; requests never waited for the broker.
//!
//! Run once with NATS JetStream (its own `nats-server`, file storage, so
//! the restart keeps the stream) and once with Kafka (its own tansu broker,
//! `CAIRN_TEST_TANSU_BIN`). tansu keeps nothing over a restart (memory
//! storage only), so before each kill the test waits until the consumer has
//! read every event acknowledged so far (what a durable broker would have
//! kept anyway), and after the restart the topic is made again and the
//! consumer reads it afresh from the start.
//!
//! Needs `CAIRN_TEST_DATABASE_URL` (a PostgreSQL server to create a
//! database on) and the broker's server binary; skips with a reason when
//! either is missing. `.ci/run` provides them all.

mod support;

use async_nats::jetstream;
use cairn_testkit::{
    NATS_SERVER, create_tansu_topic, free_port, start_nats, start_tansu, tansu_bin,
};
use futures_util::StreamExt;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Server, get_json, post_json};
use tokio::task::JoinHandle;

/// Units written concurrently; each unit's events are written one after
/// another, alternating between the nodes.
const UNITS: usize = 12;
/// Events per unit in each of the three phases.
const ROUNDS: usize = 20;
/// No request may take this long: the request path never waits for a broker.
const SLOW: Duration = Duration::from_secs(2);

/// Messages as the consumer received them (parsed JSON), each with its
/// position in the broker: the JetStream stream sequence, or for Kafka the
/// broker generation (restarts) and the offset, which orders one unit's
/// messages since they share a partition.
type Received = Arc<Mutex<Vec<(u64, Value)>>>;

/// A broker the test runs itself, so it can kill it.
trait Broker {
    /// The inline TOML table of the sink that delivers to it.
    fn sink(&self) -> String;
    async fn kill(&mut self);
    async fn restart(&mut self);
    /// A consumer that keeps reading (reconnecting through outages) and
    /// pushes every message it receives.
    fn spawn_consumer(&self, received: Received) -> JoinHandle<()>;
    /// For a failure message: where the broker holds messages of these
    /// events, if it can tell.
    async fn find(&self, event_ids: &[String]) -> String;
}

fn skip(reason: &str) {
    // Straight to stderr: libtest would capture eprintln!.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipping: {reason}");
}

/// Retry and breaker settings that make an outage short in test time.
const FAST_RETRY: &str = "retry={base_ms=5,max_ms=200,max_attempts=4294967295,batch_size=64,poll_ms=10},\
                          breaker={failures=3,open_ms=300}";

// ---- NATS JetStream ------------------------------------------------------------

struct Nats {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<tokio::process::Child>,
    stream: String,
}

impl Nats {
    async fn start() -> Self {
        let mut nats = Self {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            stream: "CLUSTER".into(),
        };
        nats.restart().await;
        // The consumer's durable state lives in the stream, so make it
        // before anything is published (the sink would create the same).
        let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        js.get_or_create_stream(jetstream::stream::Config {
            name: nats.stream.clone(),
            subjects: vec!["cluster.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
        nats
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Broker for Nats {
    fn sink(&self) -> String {
        format!(
            "{{name=\"nats\",kind=\"nats\",url=\"{}\",stream=\"{}\",subject_prefix=\"cluster\",\
             timeout_ms=500,{FAST_RETRY}}}",
            self.url(),
            self.stream
        )
    }

    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    async fn restart(&mut self) {
        self.child = Some(start_nats(self.port, self.dir.path()).await);
    }

    async fn find(&self, event_ids: &[String]) -> String {
        let Ok(client) = async_nats::connect(self.url()).await else {
            return "(broker unreachable)".into();
        };
        let js = jetstream::new(client);
        let Ok(mut stream) = js.get_stream(&self.stream).await else {
            return "(no stream)".into();
        };
        let Ok(info) = stream.info().await else {
            return "(no stream info)".into();
        };
        let last = info.state.last_sequence;
        let mut found = Vec::new();
        for seq in 1..=last {
            let Ok(m) = stream.get_raw_message(seq).await else {
                continue;
            };
            let body: Value = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
            if let Some(id) = body["data"]["events"][0]["id"].as_str()
                && event_ids.iter().any(|e| e == id)
                && body["source"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("cairn/receivers/"))
            {
                found.push(format!("{id} at stream seq {seq} of {last}"));
            }
        }
        format!("in the stream: {found:?}")
    }

    fn spawn_consumer(&self, received: Received) -> JoinHandle<()> {
        let (url, stream) = (self.url(), self.stream.clone());
        tokio::spawn(async move {
            let client = async_nats::connect(url.as_str()).await.unwrap();
            let js = jetstream::new(client);
            loop {
                // (Re)attach to the durable consumer; through an outage every
                // step may fail for a while.
                let consumer = async {
                    let s = js.get_stream(&stream).await.ok()?;
                    s.get_or_create_consumer::<jetstream::consumer::pull::Config>(
                        "counter",
                        jetstream::consumer::pull::Config {
                            durable_name: Some("counter".into()),
                            ack_policy: jetstream::consumer::AckPolicy::Explicit,
                            ..Default::default()
                        },
                    )
                    .await
                    .ok()
                }
                .await;
                let Some(consumer) = consumer else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let Ok(mut messages) = consumer.messages().await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                while let Some(Ok(m)) = messages.next().await {
                    let body: Value = serde_json::from_slice(&m.payload).unwrap();
                    let position = m.info().map(|i| i.stream_sequence).unwrap();
                    received.lock().unwrap().push((position, body));
                    // A lost ack means a redelivery: the check dedups by id.
                    let _ = m.ack().await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }
}

// ---- Kafka (tansu) ---------------------------------------------------------------

const PARTITIONS: i32 = 3;

struct Tansu {
    bin: String,
    port: u16,
    topic: String,
    child: Option<tokio::process::Child>,
    /// Bumped on every restart: the consumer then starts over on the new
    /// (empty) topic.
    generation: Arc<AtomicU64>,
}

impl Tansu {
    async fn start(bin: String) -> Self {
        let port = free_port();
        let mut tansu = Self {
            bin,
            port,
            topic: format!("cluster-{port}"),
            child: None,
            generation: Arc::default(),
        };
        tansu.launch().await;
        tansu
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Start the broker and create the topic (tansu does not auto-create).
    async fn launch(&mut self) {
        self.child = Some(start_tansu(&self.bin, self.port).await);
        create_tansu_topic(&self.bin, self.port, &self.topic, PARTITIONS).await;
    }
}

impl Broker for Tansu {
    fn sink(&self) -> String {
        format!(
            "{{name=\"kafka\",kind=\"kafka\",brokers=\"{}\",topic=\"{}\",timeout_ms=1000,{FAST_RETRY}}}",
            self.brokers(),
            self.topic
        )
    }

    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    async fn restart(&mut self) {
        self.launch().await;
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    async fn find(&self, _event_ids: &[String]) -> String {
        "(tansu: not inspected)".into()
    }

    fn spawn_consumer(&self, received: Received) -> JoinHandle<()> {
        let (brokers, topic) = (self.brokers(), self.topic.clone());
        let generation = Arc::clone(&self.generation);
        tokio::spawn(async move {
            loop {
                let current = generation.load(Ordering::SeqCst);
                let consumer: StreamConsumer = ClientConfig::new()
                    .set("bootstrap.servers", &brokers)
                    .set("group.id", format!("cluster-{current}"))
                    .set("enable.auto.commit", "false")
                    .set("auto.offset.reset", "earliest")
                    .create()
                    .unwrap();
                let mut partitions = TopicPartitionList::new();
                for p in 0..PARTITIONS {
                    partitions
                        .add_partition_offset(&topic, p, Offset::Beginning)
                        .unwrap();
                }
                consumer.assign(&partitions).unwrap();
                while generation.load(Ordering::SeqCst) == current {
                    // Errors (the broker going away) are the client's to retry.
                    let Ok(Ok(m)) =
                        tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await
                    else {
                        continue;
                    };
                    let body: Value =
                        serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
                    let offset = u64::try_from(m.offset()).unwrap();
                    received
                        .lock()
                        .unwrap()
                        .push(((current << 40) | offset, body));
                }
            }
        })
    }
}

// ---- the run ---------------------------------------------------------------------

/// A database made for this run and dropped after it.
struct Database {
    server: String,
    name: String,
    url: String,
}

impl Database {
    async fn create(server: &str, prefix: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("cairn_{prefix}_{}_{nanos}", std::process::id());
        cairn_store::postgres::create_database(server, &name)
            .await
            .unwrap();
        let url = cairn_store::postgres::database_url(server, &name).unwrap();
        Self {
            server: server.to_owned(),
            name,
            url,
        }
    }

    async fn drop(self) {
        if let Err(e) = cairn_store::postgres::drop_database(&self.server, &self.name).await {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

struct Node {
    server: Server,
    _data_dir: tempfile::TempDir,
}

fn start_node(database_url: &str, sinks: &str) -> Node {
    let data_dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        data_dir.path(),
        &["--database-url", database_url],
        &[("CAIRN_SINKS", sinks)],
    );
    Node {
        server,
        _data_dir: data_dir,
    }
}

fn unit_of(i: usize) -> Value {
    json!({"name": format!("svc-{i}"), "version": "1.0.0", "release": "r1",
           "platform_id": "linux", "package": "oci"})
}

/// Acknowledged event ids, by unit name, in acknowledgement order.
type Acked = Arc<Mutex<HashMap<String, Vec<String>>>>;

/// Each unit's writer posts `ROUNDS` events one after another, the k-th
/// through `nodes[(unit + k) % len]`, alternating receivers, a few of them
/// failures. Every request must succeed quickly.
async fn ingest(
    client: &reqwest::Client,
    nodes: &[String],
    receivers: &[String; 2],
    phase: usize,
    acked: &Acked,
) {
    let mut writers = Vec::new();
    for u in 0..UNITS {
        let (client, nodes, receivers, acked) = (
            client.clone(),
            nodes.to_vec(),
            receivers.clone(),
            Arc::clone(acked),
        );
        writers.push(tokio::spawn(async move {
            let unit = unit_of(u);
            let name = unit["name"].as_str().unwrap().to_owned();
            for k in 0..ROUNDS {
                let seq = phase * ROUNDS + k;
                let mut body = unit.clone();
                body["description"] = json!(format!("event {seq} of {name}"));
                body["payload"] = json!({"seq": seq});
                body["success"] = json!(seq % 7 != 3);
                body["event_receiver_id"] = json!(receivers[seq % 2]);
                let node = &nodes[(u + k) % nodes.len()];
                let start = Instant::now();
                let (status, res) = post_json(&client, &format!("{node}/api/v1/events"), &body)
                    .await
                    .unwrap_or_else(|e| panic!("posting to {node}: {e}"));
                assert_eq!(status, 200, "{res}");
                assert!(
                    start.elapsed() < SLOW,
                    "a create took {:?}: the request path waited",
                    start.elapsed()
                );
                let id = res["data"].as_str().unwrap().to_owned();
                acked
                    .lock()
                    .unwrap()
                    .entry(name.clone())
                    .or_default()
                    .push(id);
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
}

/// Wait until every event in `acked` has reached the consumer; the ids
/// still missing when `timeout` is up.
async fn wait_for_events(
    received: &Received,
    acked: &HashMap<String, Vec<String>>,
    timeout: Duration,
) -> Result<(), Vec<String>> {
    let start = Instant::now();
    loop {
        let got: HashSet<String> = received
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, m)| m["data"]["events"][0]["id"].as_str().map(str::to_owned))
            .collect();
        let missing: Vec<String> = acked
            .values()
            .flatten()
            .filter(|id| !got.contains(*id))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(missing);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fail, saying which events are missing and what the broker holds of them.
async fn missing<B: Broker>(
    broker: &B,
    database_url: &str,
    acked: usize,
    missing: Vec<String>,
    logs: String,
) -> ! {
    let mut found = broker.find(&missing).await;
    // What the outbox says of them (psql, when it is installed).
    let ids = missing
        .iter()
        .map(|i| format!("'{i}'"))
        .collect::<Vec<_>>()
        .join(",");
    let sql = format!(
        "SELECT o.seq, o.id, o.type, o.event_id, o.created_at FROM outbox o WHERE o.event_id IN ({ids}); \
         SELECT * FROM outbox_cursors; SELECT count(*) AS outbox_rows, max(seq) FROM outbox"
    );
    if let Ok(out) = std::process::Command::new("psql")
        .args([database_url, "-c", &sql])
        .output()
    {
        found.push_str(&format!(
            "\noutbox:\n{}",
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    panic!(
        "{} of {acked} acknowledged events never reached the consumer: {missing:?}; {found}\n{logs}",
        missing.len()
    );
}

async fn create(client: &reqwest::Client, url: &str, body: Value) -> String {
    let (status, res) = post_json(client, url, &body).await.unwrap();
    assert_eq!(status, 200, "{res}");
    res["data"].as_str().unwrap().to_owned()
}

/// Every completion the API lists for `group`.
async fn listed_completions(client: &reqwest::Client, node: &str, group: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{node}/api/v1/groups/{group}/completions?limit=100");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let (status, body) = get_json(client, &url).await.unwrap();
        assert_eq!(status, 200, "{body}");
        all.extend(body["data"].as_array().cloned().unwrap_or_default());
        let next = body["next_cursor"].as_str().map(str::to_owned);
        match next {
            Some(c) if !c.is_empty() => cursor = Some(c),
            _ => return all,
        }
    }
}

async fn run<B: Broker>(mut broker: B, db_server: &str, label: &str) {
    let db = Database::create(db_server, label).await;
    let sinks = format!("[{}]", broker.sink());
    let mut a = start_node(&db.url, &sinks);
    let b = start_node(&db.url, &sinks);
    // Node a started first on the fresh database and wrote the admin key;
    // both nodes accept it (one database).
    assert!(
        b.server.admin_key().is_none(),
        "only the first node writes a key"
    );
    let client = a.server.client();
    let (url_a, url_b) = (a.server.url(""), b.server.url(""));

    let schema = json!({"type": "object", "required": ["seq"]});
    let r1 = create(
        &client,
        &format!("{url_a}/api/v1/receivers"),
        json!({"name": "build", "type": "ci.build", "version": "1", "description": "d", "schema": schema}),
    )
    .await;
    let r2 = create(
        &client,
        &format!("{url_b}/api/v1/receivers"),
        json!({"name": "scan", "type": "ci.scan", "version": "1", "description": "d", "schema": schema}),
    )
    .await;
    let group = create(
        &client,
        &format!("{url_b}/api/v1/groups"),
        json!({"name": "gate", "type": "release.ready", "version": "1", "description": "d",
               "enabled": true, "event_receiver_ids": [r1, r2]}),
    )
    .await;
    let receivers = [r1.clone(), r2.clone()];

    let received: Received = Arc::default();
    let consumer = broker.spawn_consumer(Arc::clone(&received));
    let acked: Acked = Arc::default();
    let both = [url_a.clone(), url_b.clone()];

    // 1. Both nodes, broker up.
    ingest(&client, &both, &receivers, 0, &acked).await;
    // Everything acknowledged so far is delivered before the broker dies.
    let so_far = acked.lock().unwrap().clone();
    if let Err(ids) = wait_for_events(&received, &so_far, Duration::from_secs(30)).await {
        let logs = format!("node a:\n{}\nnode b:\n{}", a.server.log(), b.server.log());
        missing(
            &broker,
            &db.url,
            so_far.values().map(Vec::len).sum(),
            ids,
            logs,
        )
        .await;
    }
    // 2. Broker killed; both nodes keep taking events.
    broker.kill().await;
    let outage = Instant::now();
    ingest(&client, &both, &receivers, 1, &acked).await;
    eprintln!(
        "{label}: {} creates during the outage took {:?}",
        UNITS * ROUNDS,
        outage.elapsed()
    );
    // 3. Broker back; node a killed outright; node b alone carries on, and
    //    its relay takes over whatever node a was delivering.
    broker.restart().await;
    a.server.kill();
    ingest(&client, std::slice::from_ref(&url_b), &receivers, 2, &acked).await;

    let acked = acked.lock().unwrap().clone();
    if let Err(ids) = wait_for_events(&received, &acked, Duration::from_secs(90)).await {
        let logs = format!("node b:\n{}", b.server.log());
        missing(
            &broker,
            &db.url,
            acked.values().map(Vec::len).sum(),
            ids,
            logs,
        )
        .await;
    }
    let expected = acked.values().map(Vec::len).sum::<usize>();
    // Let any completion still in flight arrive too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    consumer.abort();
    let mut received = received.lock().unwrap().clone();
    // In broker order (what the sink was given, in the order it kept it);
    // a consumer's redeliveries may arrive out of it.
    received.sort_by_key(|(position, _)| *position);

    // Dedup by message id, keeping each message's first copy.
    let mut ids = HashSet::new();
    let mut duplicates = 0;
    let mut first: Vec<&Value> = Vec::new();
    for (_, m) in &received {
        let id = m["id"].as_str().expect("every message has an id");
        if ids.insert(id) {
            first.push(m);
        } else {
            duplicates += 1;
        }
    }
    let group_source = format!("cairn/groups/{group}");
    let mut events_by_unit: HashMap<String, Vec<String>> = HashMap::new();
    let mut completions: HashMap<String, Vec<String>> = HashMap::new();
    for m in &first {
        let unit = m["name"].as_str().unwrap_or_default().to_owned();
        if m["source"] == json!(group_source) {
            // The completing event came first in this unit's sequence.
            let completing = m["data"]["events"][0]["id"].as_str().unwrap();
            assert!(
                events_by_unit
                    .get(&unit)
                    .is_some_and(|seen| seen.iter().any(|e| e == completing)),
                "the completion of {unit} arrived before the event that completed it"
            );
            completions
                .entry(unit)
                .or_default()
                .push(m["id"].as_str().unwrap().to_owned());
        } else if m["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("cairn/receivers/"))
        {
            let event = m["data"]["events"][0]["id"].as_str().unwrap().to_owned();
            events_by_unit.entry(unit).or_default().push(event);
        }
    }
    eprintln!(
        "{label}: {} messages received, {} distinct, {duplicates} redelivered; {expected} events acked",
        received.len(),
        first.len(),
    );
    // Exactly the acknowledged events, each unit's in acknowledgement order.
    assert_eq!(events_by_unit, acked, "events per unit, in arrival order");
    // One completion message per unit, matching what the API lists.
    let listed = listed_completions(&client, &url_b, &group).await;
    let listed_units: HashSet<String> = listed
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed.len(), listed_units.len(), "one completion per unit");
    assert!(
        !listed.is_empty(),
        "the run completed the group for some unit"
    );
    for (unit, messages) in &completions {
        assert_eq!(messages.len(), 1, "{unit} completed under several ids");
    }
    let delivered_units: HashSet<String> = completions.keys().cloned().collect();
    assert_eq!(
        delivered_units, listed_units,
        "completions delivered = listed"
    );
    // The receivers and the group were announced too.
    for (type_, n) in [
        ("cairn.event.receiver.created", 2),
        ("cairn.event.receiver.group.created", 1),
    ] {
        let count = first.iter().filter(|m| m["type"] == json!(type_)).count();
        assert_eq!(count, n, "{type_} messages");
    }
    let (status, _) = get_json(&client, &b.server.url("/healthz/readiness"))
        .await
        .unwrap();
    assert_eq!(status, 200, "node b is ready after the run");
    drop(b);
    drop(a);
    db.drop().await;
}

fn database_server() -> Option<String> {
    match std::env::var("CAIRN_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            skip(
                "CAIRN_TEST_DATABASE_URL is unset (e.g. postgres://postgres@127.0.0.1:5432/postgres; .ci/run sets it)",
            );
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_deliver_everything_through_a_nats_outage_and_a_node_kill() {
    let Some(db) = database_server() else { return };
    if !Path::new(NATS_SERVER).exists() {
        return skip(&format!("no {NATS_SERVER}"));
    }
    run(Nats::start().await, &db, "cluster_nats").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_deliver_everything_through_a_kafka_outage_and_a_node_kill() {
    let Some(db) = database_server() else { return };
    let Some(bin) =
        tansu_bin("two_nodes_deliver_everything_through_a_kafka_outage_and_a_node_kill")
    else {
        return;
    };
    run(Tansu::start(bin).await, &db, "cluster_kafka").await;
}
