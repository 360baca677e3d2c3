//! Helpers for tests that run their own brokers, so they can kill and
//! restart them: a free loopback port, waiting for a port to listen, a
//! `nats-server` with JetStream, a `redis-server` over TLS, and a tansu
//! Kafka broker (memory storage, which creates no topic on use); TLS
//! material and an HTTPS server ([`tls`]). Test code only: these panic on failure.

pub mod tls;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// Where Debian's nats-server package puts the binary.
pub const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

/// Wait (up to 15 s) until something accepts connections on `port`.
pub async fn wait_for_port(port: u16) {
    let start = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "nothing listens on 127.0.0.1:{port} after 15 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Start `nats-server -js` on `port` with its store in `dir` (so a restart
/// on the same dir keeps the streams); killed when the handle drops.
pub async fn start_nats(port: u16, dir: &Path) -> Child {
    spawn_nats(port, dir, &[]).await
}

/// [`start_nats`] with TLS required, on the test certificate
/// ([`tls::dir`]): clients connect with `tls://localhost:PORT`.
pub async fn start_nats_tls(port: u16, dir: &Path) -> Child {
    nats_tls(port, dir, false).await
}

/// [`start_nats_tls`], also requiring a client certificate the test client
/// CA signed ([`tls::client_identity`]).
pub async fn start_nats_mtls(port: u16, dir: &Path) -> Child {
    nats_tls(port, dir, true).await
}

async fn nats_tls(port: u16, dir: &Path, client_auth: bool) -> Child {
    let tls = tls::dir();
    let (cert, key) = (tls.join("server.pem"), tls.join("server.key"));
    let client_ca = tls::client_ca_file();
    let mut args = vec![
        "--tls".as_ref(),
        "--tlscert".as_ref(),
        cert.as_os_str(),
        "--tlskey".as_ref(),
        key.as_os_str(),
    ];
    if client_auth {
        args.extend([
            "--tlsverify".as_ref(),
            "--tlscacert".as_ref(),
            client_ca.as_os_str(),
        ]);
    }
    spawn_nats(port, dir, &args).await
}

async fn spawn_nats(port: u16, dir: &Path, extra: &[&std::ffi::OsStr]) -> Child {
    let child = Command::new(NATS_SERVER)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {NATS_SERVER}: {e}"));
    wait_for_port(port).await;
    child
}

/// Where Debian's redis-server package puts the binary.
pub const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// Start a `redis-server` that speaks only TLS on `port`, on the test
/// certificate ([`tls::dir`]; clients connect with
/// `rediss://localhost:PORT`), keeping nothing on disk; killed when the
/// handle drops.
pub async fn start_redis_tls(port: u16) -> Child {
    redis_tls(port, false).await
}

/// [`start_redis_tls`], also requiring a client certificate the test client
/// CA signed ([`tls::client_identity`]).
pub async fn start_redis_mtls(port: u16) -> Child {
    redis_tls(port, true).await
}

async fn redis_tls(port: u16, client_auth: bool) -> Child {
    let tls = tls::dir();
    let mut command = Command::new(REDIS_SERVER);
    command
        .args([
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--tls-port",
            &port.to_string(),
        ])
        .arg("--tls-cert-file")
        .arg(tls.join("server.pem"))
        .arg("--tls-key-file")
        .arg(tls.join("server.key"))
        .args(["--save", "", "--appendonly", "no"]);
    if client_auth {
        command
            .args(["--tls-auth-clients", "yes", "--tls-ca-cert-file"])
            .arg(tls::client_ca_file());
    } else {
        command.args(["--tls-auth-clients", "no"]);
    }
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {REDIS_SERVER}: {e}"));
    wait_for_port(port).await;
    child
}

/// Start a tansu broker (the binary `bin`) on `port` with memory storage;
/// killed when the handle drops.
pub async fn start_tansu(bin: &str, port: u16) -> Child {
    let url = format!("tcp://127.0.0.1:{port}");
    spawn_tansu(bin, port, &url).await
}

/// [`start_tansu`] behind TLS: tansu 0.6 cannot serve TLS itself (its
/// `--cert` and `--key` exclude each other), so it listens in plain text on
/// a port of its own, advertising `localhost:PORT` (the test certificate's
/// name), and [`tls::proxy`] serves `port` over TLS in front of it, asking
/// for a client certificate when `client_auth`. Every client, admin ones
/// included, then reaches the broker over TLS.
pub async fn start_tansu_tls(bin: &str, port: u16, client_auth: bool) -> Child {
    let plain = free_port();
    let advertised = format!("tcp://localhost:{port}");
    let child = spawn_tansu(bin, plain, &advertised).await;
    tls::proxy(port, plain, client_auth).await;
    child
}

async fn spawn_tansu(bin: &str, port: u16, advertised: &str) -> Child {
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(bin)
        .args(["broker", "--listener-url", &url])
        .args(["--advertised-listener-url", advertised])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting tansu ({bin}): {e}"));
    wait_for_port(port).await;
    child
}

/// Create `topic` with `partitions` partitions on the tansu broker at `port`.
pub async fn create_tansu_topic(bin: &str, port: u16, topic: &str, partitions: i32) {
    let out = Command::new(bin)
        .args(["topic", "create", "--broker"])
        .arg(format!("tcp://127.0.0.1:{port}"))
        .args(["--partitions", &partitions.to_string(), topic])
        .output()
        .await
        .unwrap_or_else(|e| panic!("running tansu topic create: {e}"));
    assert!(
        out.status.success(),
        "tansu topic create {topic}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `CAIRN_TEST_TANSU_BIN`, or `None` after printing why the test skips.
pub fn tansu_bin(test: &str) -> Option<String> {
    match std::env::var("CAIRN_TEST_TANSU_BIN") {
        Ok(bin) if !bin.is_empty() => Some(bin),
        _ => {
            eprintln!("skipping {test}: CAIRN_TEST_TANSU_BIN is not set (.ci/run sets it)");
            None
        }
    }
}
