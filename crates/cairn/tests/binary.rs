//! Tests that drive the real `cairn` binary as a separate process: crash
//! durability (every create acknowledged with 200 before a SIGKILL is still
//! there after a restart), schema compilation counted on the process's own
//! /metrics, and a clean stop on SIGTERM.

mod support;

use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Server, client, get_json, listening_address, post_json};

const WRITERS: usize = 8;
const MAX_PER_WRITER: usize = 20_000;
const RUN_BEFORE_KILL: Duration = Duration::from_millis(1500);

#[derive(Default)]
struct Tally {
    acked: Mutex<Vec<(String, Value)>>,
    /// Failures (transport errors or non-200) observed before the kill.
    unexpected: Mutex<Vec<String>>,
    errors_after_kill: AtomicUsize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_events_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let client = server.client();

    let (status, body) = post_json(
        &client,
        &server.url("/api/v1/receivers"),
        &json!({"name": "dur", "type": "t", "version": "1", "description": "d",
                "schema": {"type": "object", "required": ["writer", "seq"]}}),
    )
    .await
    .expect("create receiver");
    assert_eq!(status, 200, "{body}\n{}", server.log());
    let rid = body["data"].as_str().unwrap().to_owned();

    let killed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (client, url, rid) = (client.clone(), server.url("/api/v1/events"), rid.clone());
        let (killed, stop, tally) = (Arc::clone(&killed), Arc::clone(&stop), Arc::clone(&tally));
        writers.push(tokio::spawn(async move {
            for seq in 0..MAX_PER_WRITER {
                if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                    break;
                }
                let body = json!({
                    "name": format!("writer-{w}"),
                    "version": format!("{seq}"),
                    "release": "r",
                    "platform_id": "p",
                    "package": "k",
                    "description": format!("event {seq} of writer {w}"),
                    "payload": {"writer": w, "seq": seq, "pad": "x".repeat(seq % 50)},
                    "success": seq % 2 == 0,
                    "event_receiver_id": rid,
                });
                let outcome = post_json(&client, &url, &body).await;
                let was_killed = killed.load(Ordering::SeqCst);
                match outcome {
                    Ok((200, res)) => {
                        let id = res["data"].as_str().map(str::to_owned);
                        match id {
                            Some(id) => tally.acked.lock().unwrap().push((id, body)),
                            None => tally
                                .unexpected
                                .lock()
                                .unwrap()
                                .push(format!("200 without an id: {res}")),
                        }
                    }
                    Ok((status, res)) if !was_killed => tally
                        .unexpected
                        .lock()
                        .unwrap()
                        .push(format!("{status}: {res}")),
                    Err(e) if !was_killed => tally
                        .unexpected
                        .lock()
                        .unwrap()
                        .push(format!("transport: {e}")),
                    Ok(_) | Err(_) => {
                        tally.errors_after_kill.fetch_add(1, Ordering::SeqCst);
                        // After the kill the server is gone; stop writing.
                        break;
                    }
                }
            }
        }));
    }

    tokio::time::sleep(RUN_BEFORE_KILL).await;
    let log_before_kill = server.log();
    killed.store(true, Ordering::SeqCst);
    server.kill(); // SIGKILL while creates are in flight
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("a writer did not stop")
            .expect("a writer panicked");
    }

    let acked = std::mem::take(&mut *tally.acked.lock().unwrap());
    let unexpected = tally.unexpected.lock().unwrap().clone();
    eprintln!(
        "acknowledged {} events before the kill; {} requests failed after it",
        acked.len(),
        tally.errors_after_kill.load(Ordering::SeqCst)
    );
    assert!(
        unexpected.is_empty(),
        "{} requests failed before the kill, e.g. {:?}\nlog:\n{log_before_kill}",
        unexpected.len(),
        &unexpected[..unexpected.len().min(5)]
    );
    assert!(
        acked.len() > 100,
        "only {} events were acknowledged in {RUN_BEFORE_KILL:?}",
        acked.len()
    );
    assert!(
        tally.errors_after_kill.load(Ordering::SeqCst) > 0,
        "the kill interrupted requests in flight"
    );

    // Restart on the same data dir.
    let server = Server::start(dir.path());
    let (status, body) = post_json(
        &client,
        &server.url("/api/v1/events"),
        &json!({"name": "after", "version": "1", "release": "r", "platform_id": "p",
                "package": "k", "description": "d", "payload": {"writer": 0, "seq": 0},
                "event_receiver_id": rid}),
    )
    .await
    .expect("create after restart");
    assert_eq!(
        status, 200,
        "the receiver survived and the store is writable: {body}"
    );

    // Every acknowledged id is found, with the submitted fields.
    let acked = Arc::new(acked);
    let missing = Arc::new(Mutex::new(Vec::<String>::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..WRITERS {
        let (client, acked, missing, next) = (
            client.clone(),
            Arc::clone(&acked),
            Arc::clone(&missing),
            Arc::clone(&next),
        );
        let base = server.url("/api/v1/events/");
        readers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((id, body)) = acked.get(i) else {
                    break;
                };
                let res = client
                    .get(format!("{base}{id}"))
                    .send()
                    .await
                    .expect("GET after restart");
                let status = res.status().as_u16();
                let got: Value = res.json().await.unwrap_or(Value::Null);
                if status != 200 {
                    missing
                        .lock()
                        .unwrap()
                        .push(format!("{id}: {status} {got}"));
                    continue;
                }
                let e = &got["data"][0];
                for field in [
                    "name",
                    "version",
                    "release",
                    "platform_id",
                    "package",
                    "description",
                    "payload",
                    "success",
                    "event_receiver_id",
                ] {
                    if e[field] != body[field] {
                        missing.lock().unwrap().push(format!(
                            "{id}: {field} is {} but {} was submitted",
                            e[field], body[field]
                        ));
                    }
                }
                if e["id"] != json!(id) {
                    missing
                        .lock()
                        .unwrap()
                        .push(format!("{id}: GET returned {}", e["id"]));
                }
            }
        }));
    }
    for r in readers {
        r.await.expect("a reader panicked");
    }
    let missing = missing.lock().unwrap().clone();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events were lost or changed, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );

    // Ids are unique, and each writer's acknowledged events are in its order.
    let mut ids: Vec<&String> = acked.iter().map(|(id, _)| id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), acked.len(), "acknowledged ids are unique");
    for w in 0..WRITERS {
        let mine: Vec<&String> = acked
            .iter()
            .filter(|(_, b)| b["payload"]["writer"] == json!(w))
            .map(|(id, _)| id)
            .collect();
        assert!(
            mine.windows(2).all(|p| p[0] < p[1]),
            "writer {w}'s ids increase in creation order"
        );
    }
}

#[test]
fn parses_the_listening_line() {
    assert_eq!(
        listening_address("2024-01-01T00:00:00Z  INFO cairn: listening on http://127.0.0.1:43210"),
        Some("http://127.0.0.1:43210".to_owned())
    );
    assert_eq!(
        listening_address(r#"{"fields":{"message":"listening on http://127.0.0.1:5 (pid 3)"}}"#),
        Some("http://127.0.0.1:5".to_owned())
    );
    assert_eq!(listening_address("listening on http://127.0.0.1:0"), None);
    assert_eq!(listening_address("starting"), None);
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn scrape(client: &reqwest::Client, server: &Server) -> String {
    client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A receiver's schema is compiled once when it is created, never per
/// event; after a restart it is compiled once more, on first use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_compile_once_per_receiver_not_per_event() {
    let dir = tempfile::tempdir().unwrap();
    // The first start writes the admin key; later starts keep using it.
    let client;
    let event = |rid: &str, i: usize| {
        json!({"name": "n", "version": "1", "release": "r", "platform_id": "p",
               "package": "k", "description": "d", "payload": {"i": i},
               "event_receiver_id": rid})
    };
    let rid = {
        let server = Server::start(dir.path());
        client = server.client();
        let (status, body) = post_json(
            &client,
            &server.url("/api/v1/receivers"),
            &json!({"name": "c", "type": "t", "version": "1", "description": "d",
                    "schema": {"type": "object", "properties": {"i": {"type": "integer"}}}}),
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{body}");
        let rid = body["data"].as_str().unwrap().to_owned();
        for i in 0..200 {
            let (status, body) = post_json(&client, &server.url("/api/v1/events"), &event(&rid, i))
                .await
                .unwrap();
            assert_eq!(status, 200, "{body}");
        }
        let text = scrape(&client, &server).await;
        assert_eq!(
            metric(&text, "cairn_schema_compilations_total"),
            1.0,
            "{text}"
        );
        assert_eq!(metric(&text, "cairn_events_created_total"), 200.0, "{text}");
        // One message per change: the receiver and its 200 events.
        assert_eq!(metric(&text, "cairn_outbox_head"), 201.0, "{text}");
        rid
    };
    // Restarted: nothing compiled until the receiver is needed, then once.
    let server = Server::start(dir.path());
    let text = scrape(&client, &server).await;
    assert_eq!(
        metric(&text, "cairn_schema_compilations_total"),
        0.0,
        "{text}"
    );
    for i in 0..50 {
        let (status, body) = post_json(&client, &server.url("/api/v1/events"), &event(&rid, i))
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let text = scrape(&client, &server).await;
    assert_eq!(
        metric(&text, "cairn_schema_compilations_total"),
        1.0,
        "{text}"
    );
}

/// SIGTERM: the process stops on its own, exits 0 and logs the store closing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let pid = server.child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "still running 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        exit.success(),
        "exit status {exit:?}; log:\n{}",
        server.log()
    );
    // The reader thread may still be draining the last lines.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        server.log().contains("store closed"),
        "log:\n{}",
        server.log()
    );
}

/// A client that sends part of a request head and then nothing is
/// disconnected once `header_read_timeout_ms` has passed (1 s here; 30 s
/// by default), instead of holding its connection (and a file descriptor)
/// for ever; a whole request on another connection is answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_that_never_ends_is_cut_off() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[], &[("CAIRN_HEADER_READ_TIMEOUT_MS", "1000")]);
    let address = server.url("").trim_start_matches("http://").to_owned();
    let mut slow = std::net::TcpStream::connect(&address).unwrap();
    slow.write_all(b"GET /healthz/liveness HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    let res = server
        .client()
        .get(server.url("/healthz/liveness"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    let mut buf = [0u8; 256];
    let read = tokio::task::spawn_blocking(move || slow.read(&mut buf).map(|n| (n, buf)))
        .await
        .unwrap();
    let waited = started.elapsed();
    match read {
        // Closed, possibly after hyper's 408.
        Ok((n, buf)) => {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
        }
        Err(e) => assert_ne!(
            e.kind(),
            std::io::ErrorKind::WouldBlock,
            "still open after 20 s"
        ),
    }
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "cut off after {waited:?}"
    );
}

/// The soft and hard "Max open files" of a running process.
fn open_files_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

/// Started with a soft open-files limit far below its hard one (as a
/// login shell's 1024 often is), the server raises it to the hard limit,
/// so a flood of connections is accepted and shed with 503s rather than
/// left waiting on `EMFILE`; and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_files_limit_is_raised_to_the_hard_limit() {
    let (_, hard) = open_files_limits(std::process::id());
    if hard <= 256 {
        eprintln!("skipping: the hard open-files limit here is {hard}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_after_shell(dir.path(), "ulimit -Sn 256");
    let (soft, server_hard) = open_files_limits(server.pid());
    assert_eq!(server_hard, hard, "the hard limit is inherited");
    assert_eq!(soft, hard.min(1 << 20), "raised to the hard limit");
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("open-files limit raised") && l.contains("from=256")),
        "log:\n{log}"
    );
}

/// A PostgreSQL server that cannot be reached stops start-up with an error
/// naming the setting, instead of falling back to the embedded store.
#[test]
fn an_unreachable_database_url_stops_start_up_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        // Port 1 on loopback: nothing listens there.
        .args(["--database-url", "postgres://cairn@127.0.0.1:1/cairn"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("failed to run the cairn binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it must not start: {stderr}");
    assert!(stderr.contains("database_url"), "{stderr}");
    assert!(stderr.contains("127.0.0.1:1/cairn"), "{stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");
}

/// Secure by default: the first start writes an admin key to
/// `<data-dir>/admin.key` (0600), logs where it is but never the key, and
/// every `/api/v1` request needs credentials. A restart keeps the key and
/// makes no new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_writes_the_admin_key_once_and_never_logs_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let key_file = dir.path().join("admin.key");
    let key = server.admin_key().expect("admin.key written").to_owned();
    assert!(key.starts_with("cairn_"), "{key}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "admin.key must be readable by its owner only");
    }
    let log = server.log();
    assert!(log.contains("admin.key"), "the log says where: {log}");
    assert!(!log.contains(&key), "the key itself is never logged");
    let (status, body) = get_json(&client(), &server.url("/api/v1/receivers"))
        .await
        .unwrap();
    assert_eq!(status, 401, "{body}");
    let (status, body) = get_json(&server.client(), &server.url("/api/v1/auth/whoami"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["roles"], json!(["admin"]), "{body}");
    // Health stays open.
    let (status, _) = get_json(&client(), &server.url("/healthz/liveness"))
        .await
        .unwrap();
    assert_eq!(status, 200);

    server.kill();
    let server = Server::start(dir.path());
    assert_eq!(
        server.admin_key(),
        Some(key.as_str()),
        "the key file is kept"
    );
    assert!(!server.log().contains("admin.key"), "no second key is made");
    let (status, body) = get_json(&server.client(), &server.url("/api/v1/auth/whoami"))
        .await
        .unwrap();
    assert_eq!(status, 200, "the key still works after a restart: {body}");
}

/// `--auth off`: a loud warning, no key file, everything open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_off_warns_and_writes_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--auth", "off"], &[]);
    assert!(server.admin_key().is_none());
    assert!(!dir.path().join("admin.key").exists());
    assert!(
        server.log().contains("AUTHENTICATION IS OFF"),
        "log:\n{}",
        server.log()
    );
    let (status, body) = post_json(
        &client(),
        &server.url("/api/v1/receivers"),
        &json!({"name": "c", "type": "t", "version": "1", "description": "d", "schema": {}}),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    // CAIRN_AUTH=off does the same.
    let dir2 = tempfile::tempdir().unwrap();
    let server2 = Server::start_with(dir2.path(), &[], &[("CAIRN_AUTH", "off")]);
    let (status, _) = get_json(&client(), &server2.url("/api/v1/receivers"))
        .await
        .unwrap();
    assert_eq!(status, 200);
}
