//! Starting, watching and stopping the `cairn` server under test, and reading
//! its resource use from `/proc`.

use crate::BoxError;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How many of the server's last log lines are kept for error reports.
const LOG_TAIL_LINES: usize = 40;
/// The marker the server logs once it has bound its listener.
const LISTENING_MARKER: &str = "listening on http://";

/// A server process started by the bench. Dropping it terminates the server
/// (SIGTERM, then SIGKILL after a grace period) and removes its data dir.
pub struct SpawnedServer {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub pid: u32,
    log: Arc<Mutex<LogState>>,
    // Declared last so it is removed after the process has been stopped.
    data_dir: tempfile::TempDir,
}

impl SpawnedServer {
    /// Start `bin serve` on 127.0.0.1 with an ephemeral port and a fresh data
    /// dir, and wait until it logs the address it listens on.
    pub fn start(
        bin: &Path,
        data_parent: Option<&Path>,
        log_file: Option<&Path>,
        startup_timeout: Duration,
        env: &[(String, String)],
    ) -> Result<Self, BoxError> {
        if !bin.is_file() {
            return Err(format!(
                "server binary not found at {}; build it with `cargo build --release -p cairn` \
                 or pass --server-bin",
                bin.display()
            )
            .into());
        }
        let parent = match data_parent {
            Some(p) => p.to_owned(),
            None => std::env::temp_dir(),
        };
        let data_dir = tempfile::Builder::new()
            .prefix("cairn-bench-")
            .tempdir_in(&parent)
            .map_err(|e| format!("creating a temporary data dir in {}: {e}", parent.display()))?;
        let data_path = data_dir.path().join("data");
        std::fs::create_dir(&data_path)
            .map_err(|e| format!("creating {}: {e}", data_path.display()))?;

        let listen = "127.0.0.1:0";
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(&data_path)
            // Same values through the environment, in case the server reads
            // it in preference to (or instead of) the flags.
            .env("CAIRN_LISTEN", listen)
            .env("CAIRN_DATA_DIR", &data_path)
            .env("NO_COLOR", "1")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            // Run inside the temp dir so no stray config file in the
            // caller's working directory is picked up.
            .current_dir(data_dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let pid = child.id();

        let file = match log_file {
            Some(path) => match std::fs::File::create(path) {
                Ok(f) => Some(f),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("creating server log {}: {e}", path.display()).into());
                }
            },
            None => None,
        };
        let log = Arc::new(Mutex::new(LogState {
            tail: VecDeque::with_capacity(LOG_TAIL_LINES),
            file,
            warnings: 0,
            errors: 0,
            first_problem: None,
        }));
        let (tx, rx) = mpsc::channel::<String>();
        if let Some(out) = child.stdout.take() {
            drain_log(out, tx.clone(), Arc::clone(&log));
        }
        if let Some(err) = child.stderr.take() {
            drain_log(err, tx, Arc::clone(&log));
        }

        // From here on the guard owns the child, so every error path below
        // terminates it.
        let mut server = Self {
            child: Some(child),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            pid,
            log,
            data_dir,
        };

        let deadline = Instant::now() + startup_timeout;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(addr_text) => {
                    let addr: SocketAddr = addr_text.parse().map_err(|e| {
                        format!("server logged an unparsable listen address {addr_text:?}: {e}")
                    })?;
                    if addr.ip() != Ipv4Addr::LOCALHOST {
                        return Err(format!(
                            "server listens on {addr}, not on 127.0.0.1; refusing to load it"
                        )
                        .into());
                    }
                    server.addr = addr;
                    return Ok(server);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Both output streams closed without the marker: the
                    // process has (almost certainly) exited.
                    thread::sleep(Duration::from_millis(200));
                    return Err(format!(
                        "server closed its output without logging {LISTENING_MARKER:?} ({})\n{}",
                        server.exit_description(),
                        server.log_tail_text()
                    )
                    .into());
                }
            }
            if let Some(status) = server.try_status() {
                return Err(format!(
                    "server exited during startup ({status})\n{}",
                    server.log_tail_text()
                )
                .into());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "server did not log {LISTENING_MARKER:?} within {startup_timeout:?}\n{}",
                    server.log_tail_text()
                )
                .into());
            }
        }
    }

    /// Where the server writes its first-start admin key.
    pub fn admin_key_file(&self) -> std::path::PathBuf {
        self.data_dir.path().join("data").join("admin.key")
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// `Some(description)` if the server process has exited.
    pub fn try_status(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(describe_status(status)),
            Ok(None) => None,
            Err(e) => Some(format!("cannot query process status: {e}")),
        }
    }

    fn exit_description(&mut self) -> String {
        self.try_status()
            .unwrap_or_else(|| "still running".to_owned())
    }

    /// The last lines the server logged, for error reports.
    pub fn log_tail_text(&self) -> String {
        let lines: Vec<String> = lock(&self.log).tail.iter().cloned().collect();
        if lines.is_empty() {
            "(server logged nothing)".to_owned()
        } else {
            format!("last server log lines:\n  {}", lines.join("\n  "))
        }
    }

    /// Stop the server: SIGTERM, wait up to `grace`, then SIGKILL. Returns a
    /// description of how it ended.
    pub fn stop(&mut self, grace: Duration) -> String {
        let Some(mut child) = self.child.take() else {
            return "already stopped".to_owned();
        };
        if let Ok(Some(status)) = child.try_wait() {
            return format!("had already exited ({})", describe_status(status));
        }
        let term = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if matches!(term, Ok(s) if s.success()) {
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        return format!("stopped on SIGTERM ({})", describe_status(status));
                    }
                    Ok(None) => thread::sleep(Duration::from_millis(20)),
                    Err(_) => break,
                }
            }
        }
        let _ = child.kill();
        match child.wait() {
            Ok(status) => format!(
                "did not stop within {grace:?} of SIGTERM; killed ({})",
                describe_status(status)
            ),
            Err(e) => format!("killed; waiting for it failed: {e}"),
        }
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            let how = self.stop(Duration::from_secs(10));
            eprintln!("cairn-bench: server {} {how}", self.pid);
        }
    }
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

/// What the bench keeps of the server's output.
struct LogState {
    tail: VecDeque<String>,
    file: Option<std::fs::File>,
    warnings: u64,
    errors: u64,
    first_problem: Option<String>,
}

/// Counts of WARN and ERROR lines the server logged, and the first of them.
pub struct LogSummary {
    pub warnings: u64,
    pub errors: u64,
    pub first_problem: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl SpawnedServer {
    pub fn log_summary(&self) -> LogSummary {
        let log = lock(&self.log);
        LogSummary {
            warnings: log.warnings,
            errors: log.errors,
            first_problem: log.first_problem.clone(),
        }
    }
}

/// The level of a log line in tracing's text or JSON format, if it is
/// WARN or ERROR.
fn problem_level(line: &str) -> Option<&'static str> {
    if line.contains(" ERROR ") || line.contains(r#""level":"ERROR""#) {
        Some("ERROR")
    } else if line.contains(" WARN ") || line.contains(r#""level":"WARN""#) {
        Some("WARN")
    } else {
        None
    }
}

/// Read one output stream of the server line by line: keep a tail of it
/// (and optionally all of it in a file), count warnings and errors, and send
/// the listen address (once) when the startup line shows up.
fn drain_log(
    stream: impl Read + Send + 'static,
    tx: mpsc::Sender<String>,
    log: Arc<Mutex<LogState>>,
) {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        let mut sent = false;
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = strip_ansi(&String::from_utf8_lossy(&buf));
            let line = line.trim_end().to_owned();
            if !sent && let Some(addr) = parse_listen_addr(&line) {
                sent = tx.send(addr).is_ok();
            }
            let mut log = lock(&log);
            if let Some(file) = log.file.as_mut() {
                // Losing the log copy must not stop the drain (the server
                // would block on a full pipe); drop the file instead.
                if writeln!(file, "{line}").is_err() {
                    log.file = None;
                }
            }
            match problem_level(&line) {
                Some("ERROR") => log.errors += 1,
                Some(_) => log.warnings += 1,
                None => {}
            }
            if problem_level(&line).is_some() && log.first_problem.is_none() {
                log.first_problem = Some(line.clone());
            }
            if log.tail.len() == LOG_TAIL_LINES {
                log.tail.pop_front();
            }
            log.tail.push_back(line);
        }
    });
}

/// The `ip:port` following "listening on http://" in a log line.
pub fn parse_listen_addr(line: &str) -> Option<String> {
    let start = line.find(LISTENING_MARKER)? + LISTENING_MARKER.len();
    let addr: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    (!addr.is_empty()).then_some(addr)
}

/// Remove ANSI escape sequences (colours) from a log line.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Memory figures of a process, from `/proc/<pid>/status`, in KiB.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub peak_rss_kib: u64,
    pub rss_kib: u64,
    /// Parts of the current RSS: anonymous (heap, stacks), file-backed
    /// (e.g. memory-mapped database files) and shared memory.
    pub rss_anon_kib: Option<u64>,
    pub rss_file_kib: Option<u64>,
    pub rss_shmem_kib: Option<u64>,
}

pub fn read_memory(pid: u32) -> Result<Memory, BoxError> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    let field = |name: &str| -> Result<u64, BoxError> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("{path} has no readable {name} line").into())
    };
    Ok(Memory {
        peak_rss_kib: field("VmHWM:")?,
        rss_kib: field("VmRSS:")?,
        rss_anon_kib: field("RssAnon:").ok(),
        rss_file_kib: field("RssFile:").ok(),
        rss_shmem_kib: field("RssShmem:").ok(),
    })
}

/// User + system CPU time a process has used so far, in seconds.
pub fn read_cpu_seconds(pid: Option<u32>, ticks_per_sec: f64) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may contain spaces; fields after the last
    // ')' are well-formed. utime and stime are fields 14 and 15.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_sec)
}

/// Clock ticks per second for `/proc/*/stat` times.
pub fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// Total size of the regular files under `dir`, in bytes.
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack: Vec<PathBuf> = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) if m.is_file() => total += m.len(),
                _ => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_listen_address() {
        let line = "2026-05-01T10:00:00Z  INFO cairn: listening on http://127.0.0.1:43117";
        assert_eq!(parse_listen_addr(line).as_deref(), Some("127.0.0.1:43117"));
        let json = r#"{"fields":{"message":"listening on http://127.0.0.1:8080"}}"#;
        assert_eq!(parse_listen_addr(json).as_deref(), Some("127.0.0.1:8080"));
        let coloured = strip_ansi("\u{1b}[32m INFO\u{1b}[0m listening on http://127.0.0.1:9/");
        assert_eq!(parse_listen_addr(&coloured).as_deref(), Some("127.0.0.1:9"));
        assert_eq!(parse_listen_addr("starting up"), None);
        assert_eq!(
            problem_level("2026-01-01T00:00:00Z  WARN cairn: slow"),
            Some("WARN")
        );
        assert_eq!(
            problem_level(r#"{"level":"ERROR","msg":"x"}"#),
            Some("ERROR")
        );
        assert_eq!(
            problem_level("2026-01-01T00:00:00Z  INFO cairn: WARNING"),
            None
        );
    }

    #[test]
    fn reads_own_memory_and_cpu() {
        let mem = read_memory(std::process::id()).unwrap();
        assert!(mem.peak_rss_kib >= mem.rss_kib && mem.rss_kib > 0);
        assert!(read_cpu_seconds(None, clock_ticks_per_sec()).is_some());
    }
}
