//! Load benchmark for the Cairn server.
//!
//! Starts the real `cairn` server on 127.0.0.1 (or attaches to a running one
//! with `--url`), drives it over HTTP/1.1 with a closed-loop load generator
//! and prints throughput, latency percentiles, errors and the server's
//! memory use. With `--compare` it instead starts one server per stack
//! and compares them in paired, interleaved slices (see `compare`). See
//! docs/PERFORMANCE.md.

mod compare;
mod delivery;
mod load;
mod server;
mod stack;

use bytes::Bytes;
use clap::Parser;
use load::{Outcome, Plan, Work, error_chain, percentile};
use reqwest::Client;
use serde_json::{Value, json};
use server::{LogSummary, SpawnedServer};
use stack::{OtlpSink, Stack};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Distinct pre-serialized event bodies cycled through by the create scenarios.
const BODY_POOL: usize = 4096;

#[derive(Parser, Debug)]
#[command(
    name = "cairn-bench",
    about = "Load benchmark for the Cairn server (loopback only)"
)]
struct Args {
    /// Path of the `cairn` server binary to start. Default: `cairn` next to
    /// this executable.
    #[arg(long, conflicts_with = "url")]
    server_bin: Option<PathBuf>,

    /// Directory in which the spawned server's temporary data dir is
    /// created (default: the system temp dir). Create latency depends on
    /// its filesystem, since every create is fsynced.
    #[arg(long, conflicts_with = "url")]
    data_parent: Option<PathBuf>,

    /// Write everything the spawned server logs to this file.
    #[arg(long, conflicts_with = "url")]
    server_log: Option<PathBuf>,

    /// Attach to a server already running at this URL (must be
    /// http://127.0.0.1:PORT) instead of starting one.
    #[arg(long)]
    url: Option<String>,

    /// Bearer token (API key) for an attached server with authentication
    /// on (env CAIRN_BENCH_TOKEN). A spawned server's first-start admin key
    /// is read from its data dir.
    #[arg(long, env = "CAIRN_BENCH_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Process id of the attached server, to report its memory and CPU use.
    #[arg(long, requires = "url")]
    pid: Option<u32>,

    /// Measured duration of each scenario, in seconds.
    #[arg(long, default_value_t = 10, conflicts_with = "compare")]
    duration_secs: u64,

    /// Warm-up before each scenario's measurement starts, in seconds.
    #[arg(long, default_value_t = 1.0, conflicts_with = "compare")]
    warmup_secs: f64,

    /// Concurrency levels of the event-create scenarios [default: 1,16,64;
    /// with --compare: 64, and only the first level is used].
    #[arg(long, value_delimiter = ',')]
    concurrency: Vec<usize>,

    /// Concurrency of the get-event-by-id scenario.
    #[arg(long, default_value_t = 64)]
    get_concurrency: usize,

    /// Concurrency of the list-events-by-name scenario.
    #[arg(long, default_value_t = 16)]
    list_concurrency: usize,

    /// Upper bound on the requests of one scenario, warm-up included.
    #[arg(long, default_value_t = 1_000_000)]
    max_requests: u64,

    /// How many distinct unit names the created events cycle through.
    #[arg(long, default_value_t = 300)]
    names: usize,

    /// Per-request timeout, in seconds.
    #[arg(long, default_value_t = 30)]
    request_timeout_secs: u64,

    /// Which optional layers a spawned server runs: `as-is` (its
    /// defaults and the environment), `bare` (every issue-6 layer off) or
    /// `full` (all on, spans exported to an OTLP sink the bench runs).
    #[arg(long, value_enum, default_value = "as-is", conflicts_with = "url")]
    stack: Stack,

    /// Compare these stacks instead of benchmarking one server, e.g.
    /// `bare,as-is,full`: one server per stack runs at once and every
    /// scenario is measured in rounds of short slices, one per stack, in
    /// an order that rotates from round to round. The first stack is the
    /// baseline; each other one is reported as its per-round throughput
    /// ratio to it. `--server-log F` then writes F.STACK per server.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        conflicts_with_all = ["url", "stack", "drain_timeout_secs"]
    )]
    compare: Vec<Stack>,

    /// With `--compare`: rounds per scenario (each measures every stack
    /// once).
    #[arg(long, default_value_t = 15, requires = "compare")]
    rounds: usize,

    /// With `--compare`: measured seconds of each slice (one stack's turn
    /// in a round), after a short warm-up.
    #[arg(long, default_value_t = 2.0, requires = "compare")]
    slice_secs: f64,

    /// With `--stack full` (or `full` in `--compare`): the share of new
    /// traces the server samples and exports to the OTLP sink (its
    /// `otlp_sampling_ratio`).
    #[arg(long, default_value_t = 1.0)]
    otlp_sampling_ratio: f64,

    /// Send a fresh Idempotency-Key with every create (the server stores
    /// each response).
    #[arg(long)]
    idempotency_keys: bool,

    /// Before the last scenario starts, wait until this file exists. A tool
    /// that attaches to the server first (`callgrind.sh` switches its
    /// instruction count on) makes the file once it is ready, so that the
    /// count covers every request of that scenario and no other.
    #[arg(long, conflicts_with = "compare")]
    start_gate: Option<PathBuf>,

    /// Which scenarios run, in this order: `create` (at each
    /// `--concurrency`), `get` (fetches the events the creates made, so it
    /// needs `create`) and `list`.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "create,get,list"
    )]
    scenarios: Vec<Which>,

    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,

    /// When the server runs outbox relays (sinks configured, e.g. through
    /// CAIRN_SINKS): how long to wait after each create scenario for every
    /// sink to catch up before reporting it as not drained.
    #[arg(long, default_value_t = 120)]
    drain_timeout_secs: u64,
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.concurrency.is_empty() {
        args.concurrency = if args.compare.is_empty() {
            vec![1, 16, 64]
        } else {
            vec![64]
        };
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A scenario `--scenarios` can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Which {
    Create,
    Get,
    List,
}

/// Where the server under test is and whether we own it.
struct Target {
    base: String,
    pid: Option<u32>,
    spawned: Option<SpawnedServer>,
}

fn run(args: Args) -> Result<(), BoxError> {
    validate(&args)?;
    let started = Instant::now();
    let machine = Machine::detect();
    machine.print_header();
    if !args.compare.is_empty() {
        return compare::run(&args, &machine, started);
    }

    let mut otlp_sink: Option<OtlpSink> = None;
    // The guard inside `target` stops a spawned server on every return path.
    let mut target = match &args.url {
        Some(url) => Target {
            base: loopback_base(url)?,
            pid: args.pid,
            spawned: None,
        },
        None => {
            let bin = server_bin(&args)?;
            let (server, sink) = start_server(&args, &bin, args.stack, args.server_log.as_deref())?;
            otlp_sink = sink;
            Target {
                base: format!("http://{}", server.addr),
                pid: Some(server.pid),
                spawned: Some(server),
            }
        }
    };
    if target.spawned.is_none() {
        println!(
            "server: attached to {} (pid {})",
            target.base,
            target
                .pid
                .map(|p| p.to_string())
                .unwrap_or_else(|| "unknown; pass --pid for memory figures".to_owned())
        );
    }

    let outcome = runtime()?.block_on(bench(&args, &mut target, &machine));

    // Memory is read before the server is stopped. If the server is gone,
    // fall back to the last sample taken after a scenario.
    let memory = target.pid.map(|pid| {
        server::read_memory(pid)
            .map(|m| (m, ""))
            .or_else(|e| match &outcome {
                Ok(Results {
                    last_memory: Some(m),
                    ..
                }) => Ok((*m, " (last sample, taken after the last scenario)")),
                _ => Err(e),
            })
    });
    let data_size = target
        .spawned
        .as_ref()
        .map(|s| server::dir_size(s.data_dir()));
    let stop = target
        .spawned
        .as_mut()
        .map(|s| s.stop(Duration::from_secs(15)));
    let results = outcome?;

    print_table(&results.scenarios);
    println!();
    if let Some(sink) = &otlp_sink {
        println!("otlp sink: {}", otlp_summary(sink));
    }
    match &memory {
        Some(Ok((m, note))) => {
            println!(
                "server memory: peak RSS (VmHWM) {:.1} MiB, current RSS (VmRSS) {:.1} MiB{note}",
                mib(m.peak_rss_kib),
                mib(m.rss_kib)
            );
            if let (Some(anon), Some(file), Some(shmem)) =
                (m.rss_anon_kib, m.rss_file_kib, m.rss_shmem_kib)
            {
                println!(
                    "  current RSS = {:.1} MiB anonymous (heap, stacks) + {:.1} MiB file-backed \
                     (mapped files, e.g. mmap'd database) + {:.1} MiB shared memory",
                    mib(anon),
                    mib(file),
                    mib(shmem)
                );
            }
        }
        Some(Err(e)) => println!("server memory: unavailable ({e})"),
        None => println!("server memory: unavailable (server pid unknown; pass --pid)"),
    }
    if let Some(bytes) = data_size {
        println!(
            "server data dir: {:.1} MiB after {} created events",
            bytes as f64 / 1024.0 / 1024.0,
            results.total_created
        );
    }
    let log_summary = target.spawned.as_ref().map(SpawnedServer::log_summary);
    if let Some(log) = &log_summary {
        println!("server log: {}", log_text(log));
    }
    if let Some(how) = &stop {
        println!("server: {how}");
    }
    println!("total bench time: {:.1} s", started.elapsed().as_secs_f64());

    if let Some(path) = &args.json {
        let mem = memory
            .as_ref()
            .and_then(|m| m.as_ref().ok())
            .map(|(m, _)| *m);
        let doc = json!({
            "machine": machine.to_json(),
            "config": {
                "server": if target.spawned.is_some() { "spawned" } else { "attached" },
                "stack": format!("{:?}", args.stack).to_ascii_lowercase(),
                "idempotency_keys": args.idempotency_keys,
                "otlp_sampling_ratio": args.otlp_sampling_ratio,
                "duration_secs": args.duration_secs,
                "warmup_secs": args.warmup_secs,
                "max_requests": args.max_requests,
                "names": args.names,
            },
            "scenarios": results.scenarios.iter().map(Scenario::to_json).collect::<Vec<_>>(),
            "server": {
                "pid": target.pid,
                "peak_rss_mib": mem.map(|m| mib(m.peak_rss_kib)),
                "rss_mib": mem.map(|m| mib(m.rss_kib)),
                "rss_anon_mib": mem.and_then(|m| m.rss_anon_kib.map(mib)),
                "rss_file_mib": mem.and_then(|m| m.rss_file_kib.map(mib)),
                "rss_shmem_mib": mem.and_then(|m| m.rss_shmem_kib.map(mib)),
                "data_dir_bytes": data_size,
                "created_events": results.total_created,
                "stop": stop,
                "log_errors": log_summary.as_ref().map(|l| l.errors),
                "log_warnings": log_summary.as_ref().map(|l| l.warnings),
                "log_first_problem": log_summary.as_ref().and_then(|l| l.first_problem.clone()),
            },
        });
        write_json(path, &doc)?;
    }
    match results.aborted {
        Some(why) => Err(why.into()),
        None => Ok(()),
    }
}

fn validate(args: &Args) -> Result<(), BoxError> {
    if args.duration_secs == 0 {
        return Err("--duration-secs must be at least 1".into());
    }
    if !(0.0..=1.0).contains(&args.otlp_sampling_ratio) {
        return Err("--otlp-sampling-ratio must be from 0 to 1".into());
    }
    if !(args.warmup_secs.is_finite() && args.warmup_secs >= 0.0) {
        return Err("--warmup-secs must be a non-negative number".into());
    }
    let all = args
        .concurrency
        .iter()
        .chain([&args.get_concurrency, &args.list_concurrency]);
    for &c in all {
        if c == 0 || c > 4096 {
            return Err(format!("concurrency {c} is out of range 1..=4096").into());
        }
    }
    if args.names == 0 {
        return Err("--names must be at least 1".into());
    }
    if args.max_requests == 0 {
        return Err("--max-requests must be at least 1".into());
    }
    if args.scenarios.contains(&Which::Get) && !args.scenarios.contains(&Which::Create) {
        return Err("--scenarios: get fetches the events create makes, so it needs create".into());
    }
    if !args.compare.is_empty() {
        compare::validate(args)?;
    }
    Ok(())
}

/// `http://127.0.0.1:PORT` from a user-supplied URL; anything that is not
/// plain HTTP on 127.0.0.1 is refused.
fn loopback_base(url: &str) -> Result<String, BoxError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("--url {url:?}: {e}"))?;
    let host_ok = parsed.host_str() == Some(&Ipv4Addr::LOCALHOST.to_string());
    if parsed.scheme() != "http" || !host_ok {
        return Err(
            format!("--url must be http://127.0.0.1:PORT (loopback only), got {url:?}").into(),
        );
    }
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| format!("--url {url:?} has no port"))?;
    Ok(format!("http://127.0.0.1:{port}"))
}

fn default_server_bin() -> Result<PathBuf, BoxError> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("locating this executable to find `cairn` next to it: {e}"))?;
    let dir = exe
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", exe.display()))?;
    Ok(dir.join("cairn"))
}

/// The server binary to start: `--server-bin`, or `cairn` next to this
/// executable.
fn server_bin(args: &Args) -> Result<PathBuf, BoxError> {
    match &args.server_bin {
        Some(p) => Ok(p.clone()),
        None => default_server_bin(),
    }
}

/// Start `bin` with `stack`'s layers (for `full`, with the OTLP sink its
/// spans are exported to, which is returned too) and say where it listens.
fn start_server(
    args: &Args,
    bin: &Path,
    stack: Stack,
    log: Option<&Path>,
) -> Result<(SpawnedServer, Option<OtlpSink>), BoxError> {
    println!(
        "server: starting {} serve --listen 127.0.0.1:0",
        bin.display()
    );
    let sink = match stack {
        Stack::Full => {
            let sink = OtlpSink::start().map_err(|e| format!("starting the OTLP sink: {e}"))?;
            println!(
                "stack: full, spans exported to the OTLP sink at {}",
                sink.url
            );
            Some(sink)
        }
        Stack::Bare => {
            println!("stack: bare (every issue-6 layer switched off)");
            None
        }
        Stack::AsIs => None,
    };
    let env = stack.env(
        sink.as_ref().map(|s| s.url.as_str()),
        args.otlp_sampling_ratio,
    );
    let server = SpawnedServer::start(
        bin,
        args.data_parent.as_deref(),
        log,
        Duration::from_secs(60),
        &env,
    )?;
    println!(
        "server: pid {} listening on http://{} data dir {}",
        server.pid,
        server.addr,
        server.data_dir().display()
    );
    Ok((server, sink))
}

/// The multi-threaded tokio runtime the load runs on.
fn runtime() -> Result<tokio::runtime::Runtime, BoxError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("building the tokio runtime: {e}").into())
}

/// "N export requests, X MiB of spans received".
fn otlp_summary(sink: &OtlpSink) -> String {
    use std::sync::atomic::Ordering;
    format!(
        "{} export requests, {:.1} MiB of spans received",
        sink.counts.requests.load(Ordering::Relaxed),
        sink.counts.bytes.load(Ordering::Relaxed) as f64 / 1024.0 / 1024.0
    )
}

/// "N ERROR and M WARN lines; first: ...".
fn log_text(log: &LogSummary) -> String {
    format!(
        "{} ERROR and {} WARN lines{}",
        log.errors,
        log.warnings,
        log.first_problem
            .as_ref()
            .map(|l| format!("; first: {l}"))
            .unwrap_or_default()
    )
}

/// How long `--start-gate` waits for its file.
const GATE_TIMEOUT: Duration = Duration::from_secs(600);

/// Wait until `gate` exists (`--start-gate`), checking every 10 ms; an
/// error after `timeout`.
async fn wait_for(gate: &Path, timeout: Duration) -> Result<(), BoxError> {
    let deadline = Instant::now() + timeout;
    while !gate.exists() {
        if Instant::now() >= deadline {
            return Err(format!(
                "--start-gate: {} did not appear within {} s",
                gate.display(),
                timeout.as_secs()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Write `doc` as pretty-printed JSON to `path`.
fn write_json(path: &Path, doc: &Value) -> Result<(), BoxError> {
    let text = serde_json::to_string_pretty(doc)
        .map_err(|e| format!("serializing the JSON results: {e}"))?;
    std::fs::write(path, text + "\n").map_err(|e| format!("writing {}: {e}", path.display()))?;
    println!("results written to {}", path.display());
    Ok(())
}

struct Machine {
    nproc: usize,
    cpu_model: Option<String>,
    mem_total_kib: Option<u64>,
    clock_ticks: f64,
}

impl Machine {
    fn detect() -> Self {
        let nproc = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        });
        let mem_total_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        });
        Self {
            nproc,
            cpu_model,
            mem_total_kib,
            clock_ticks: server::clock_ticks_per_sec(),
        }
    }

    /// The lines that open every report.
    fn print_header(&self) {
        println!("cairn-bench");
        println!(
            "machine: nproc={} cpu={} memory={} (MemTotal)",
            self.nproc,
            self.cpu_model.as_deref().unwrap_or("unknown"),
            self.mem_total_kib
                .map(|k| format!("{:.1} GiB", k as f64 / 1024.0 / 1024.0))
                .unwrap_or_else(|| "unknown".to_owned())
        );
        println!(
            "load generator runs on the same machine as the server (they share all {} cores)",
            self.nproc
        );
    }

    fn to_json(&self) -> Value {
        json!({
            "nproc": self.nproc,
            "cpu_model": self.cpu_model,
            "mem_total_mib": self.mem_total_kib.map(mib),
            "load_generator_on_same_machine": true,
        })
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The figures reported for one scenario.
struct Scenario {
    name: String,
    concurrency: usize,
    outcome: Option<Outcome>,
    note: Option<String>,
    server_cpu_pct: Option<f64>,
    bench_cpu_pct: Option<f64>,
    server_rss_kib: Option<u64>,
    /// Per sink, whether delivery kept up (create scenarios with sinks).
    delivery: Vec<delivery::SinkReport>,
}

impl Scenario {
    fn requests(&self) -> usize {
        self.outcome.as_ref().map_or(0, |o| o.latencies_us.len())
    }

    fn rps(&self) -> Option<f64> {
        self.outcome.as_ref()?.rps()
    }

    fn latency_ms(&self, p: f64) -> Option<f64> {
        let o = self.outcome.as_ref()?;
        percentile(&o.latencies_us, p).map(|us| us as f64 / 1000.0)
    }

    fn errors(&self) -> u64 {
        self.outcome.as_ref().map_or(0, |o| o.errors)
    }

    fn to_json(&self) -> Value {
        let o = self.outcome.as_ref();
        json!({
            "scenario": self.name,
            "concurrency": self.concurrency,
            "requests": self.requests(),
            "requests_sent_incl_warmup": o.map(|o| o.sent),
            "window_secs": o.map(|o| o.window.as_secs_f64()),
            "requests_per_sec": self.rps(),
            "latency_ms": {
                "p50": self.latency_ms(50.0),
                "p95": self.latency_ms(95.0),
                "p99": self.latency_ms(99.0),
                "max": self.latency_ms(100.0),
            },
            "errors": self.errors(),
            "first_error": o.and_then(|o| o.first_error.clone()),
            "note": self.note,
            "server_cpu_percent": self.server_cpu_pct,
            "bench_cpu_percent": self.bench_cpu_pct,
            "server_rss_mib_after": self.server_rss_kib.map(mib),
            "delivery": self.delivery.iter().map(delivery::SinkReport::to_json).collect::<Vec<_>>(),
        })
    }
}

struct Results {
    scenarios: Vec<Scenario>,
    total_created: usize,
    /// Why the run stopped early, if it did.
    aborted: Option<String>,
    /// Server memory sampled after the most recent scenario.
    last_memory: Option<server::Memory>,
}

async fn bench(args: &Args, target: &mut Target, machine: &Machine) -> Result<Results, BoxError> {
    let max_conc = args
        .concurrency
        .iter()
        .chain([&args.get_concurrency, &args.list_concurrency])
        .copied()
        .max()
        .unwrap_or(1);
    let token = api_key(args, target.spawned.as_ref());
    if token.is_some() {
        println!("auth: requests carry an API key (authentication on)");
    } else {
        println!("auth: requests carry no credentials (the server must run with auth off)");
    }
    let client = build_client(args, args.stack, token.as_deref(), max_conc)?;

    let base = target.base.clone();
    let receiver_id = create_receiver(&client, &base).await?;
    println!("setup: created receiver {receiver_id}");
    let metrics_url = format!("{base}/metrics");
    let sinks = delivery::sinks(&delivery::fetch(&client, &metrics_url).await?);
    if sinks.is_empty() {
        println!("delivery: the server runs no outbox relay (no sink configured)");
    } else {
        println!(
            "delivery: the server relays the outbox to {}; each create scenario also reports \
             whether delivery kept up",
            sinks.join(", ")
        );
    }

    let names = unit_names(args.names);
    let bodies = Arc::new(event_bodies(&names, &receiver_id)?);
    let plan = |concurrency| Plan {
        warmup: Duration::from_secs_f64(args.warmup_secs),
        duration: Duration::from_secs(args.duration_secs),
        concurrency,
        max_requests: args.max_requests,
    };
    println!(
        "scenarios: {} s measured each, after {} s warm-up",
        args.duration_secs, args.warmup_secs
    );

    let mut scenarios = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    let mut aborted = None;
    let mut last_memory = None;

    let wanted = |w| args.scenarios.contains(&w);
    let mut steps: Vec<(String, usize)> = Vec::new();
    if wanted(Which::Create) {
        steps.extend(
            args.concurrency
                .iter()
                .map(|&c| ("create event".to_owned(), c)),
        );
    }
    if wanted(Which::Get) {
        steps.push(("get event by id".to_owned(), args.get_concurrency));
    }
    if wanted(Which::List) {
        steps.push(("list events by name".to_owned(), args.list_concurrency));
    }

    let last = steps.len().saturating_sub(1);
    for (step, (name, concurrency)) in steps.into_iter().enumerate() {
        let work = match name.as_str() {
            "create event" => create_work(&base, &bodies, args.idempotency_keys, concurrency),
            "get event by id" if ids.is_empty() => {
                scenarios.push(skipped(&name, concurrency, "no event was created"));
                continue;
            }
            "get event by id" => get_work(&base, Arc::new(ids.clone())),
            _ => list_work(&base, &names),
        };
        eprintln!("running: {name} at concurrency {concurrency} ...");
        if step == last
            && let Some(gate) = &args.start_gate
        {
            wait_for(gate, GATE_TIMEOUT).await?;
        }
        let pid = target.pid;
        let ticks = machine.clock_ticks;
        let mut cpu_start = None;
        let mut measure_start = Instant::now();
        let watch_delivery = !sinks.is_empty() && name == "create event";
        let (stop_sampling, stop_rx) = tokio::sync::watch::channel(false);
        let sampler = watch_delivery.then(|| {
            tokio::spawn(delivery::sample_until(
                client.clone(),
                metrics_url.clone(),
                stop_rx,
            ))
        });
        let outcome = load::run(&client, work, &plan(concurrency), || {
            measure_start = Instant::now();
            cpu_start = Some((
                pid.and_then(|p| server::read_cpu_seconds(Some(p), ticks)),
                server::read_cpu_seconds(None, ticks),
            ));
        })
        .await;
        let load_end = Instant::now();
        let cpu_end = (
            pid.and_then(|p| server::read_cpu_seconds(Some(p), ticks)),
            server::read_cpu_seconds(None, ticks),
        );
        let window = outcome.window.as_secs_f64();
        let pct = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if window > 0.0 => Some((b - a) / window * 100.0),
            _ => None,
        };
        let (srv0, bench0) = cpu_start.unwrap_or((None, None));
        let memory = pid.and_then(|p| server::read_memory(p).ok());
        if memory.is_some() {
            last_memory = memory;
        }
        ids.extend(outcome.created_ids.iter().cloned());
        let mut delivery_reports = Vec::new();
        if let Some(sampler) = sampler {
            let _ = stop_sampling.send(true);
            let during = sampler.await.unwrap_or_default();
            let after = drain(&client, &metrics_url, &sinks, args.drain_timeout_secs).await;
            let final_head = after.first().map_or(0.0, |s| s.head);
            let window = (measure_start, measure_start + outcome.window);
            delivery_reports = sinks
                .iter()
                .map(|sink| delivery::report(sink, &during, &after, window, load_end, final_head))
                .collect();
        }
        let scenario = Scenario {
            name,
            concurrency,
            server_cpu_pct: pct(srv0, cpu_end.0),
            bench_cpu_pct: pct(bench0, cpu_end.1),
            server_rss_kib: memory.map(|m| m.rss_kib),
            outcome: Some(outcome),
            note: None,
            delivery: delivery_reports,
        };
        eprintln!(
            "  done: {} requests, {:.1} req/s, {} errors",
            scenario.requests(),
            scenario.rps().unwrap_or(0.0),
            scenario.errors()
        );
        scenarios.push(scenario);

        if let Some(server) = target.spawned.as_mut()
            && let Some(status) = server.try_status()
        {
            aborted = Some(format!(
                "the server exited during the run ({status})\n{}",
                server.log_tail_text()
            ));
            break;
        }
    }
    Ok(Results {
        scenarios,
        total_created: ids.len(),
        aborted,
        last_memory,
    })
}

/// The API key requests carry: `--token`, else a spawned server's
/// first-start admin key from its data dir, else none.
fn api_key(args: &Args, spawned: Option<&SpawnedServer>) -> Option<String> {
    match (&args.token, spawned) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(server)) => std::fs::read_to_string(server.admin_key_file())
            .ok()
            .map(|k| k.trim().to_owned()),
        (None, None) => None,
    }
}

/// The bench's HTTP/1.1 client for a server running `stack`: up to
/// `max_conc` kept-alive connections, the API key on every request and,
/// for `full`, a browser-like Origin the stack allows (so CORS answers).
fn build_client(
    args: &Args,
    stack: Stack,
    token: Option<&str>,
    max_conc: usize,
) -> Result<Client, BoxError> {
    let mut headers = reqwest::header::HeaderMap::new();
    if stack == Stack::Full {
        headers.insert(
            reqwest::header::ORIGIN,
            reqwest::header::HeaderValue::from_static(stack::ORIGIN),
        );
    }
    if let Some(token) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}")
                .parse()
                .map_err(|e| format!("the token is not a valid header value: {e}"))?,
        );
    }
    Client::builder()
        .default_headers(headers)
        .http1_only()
        .no_proxy()
        .pool_max_idle_per_host(max_conc)
        .pool_idle_timeout(Duration::from_secs(300))
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(args.request_timeout_secs))
        .build()
        .map_err(|e| format!("building the HTTP client: {}", error_chain(&e)).into())
}

/// The unit names the created events cycle through (and lists ask for).
fn unit_names(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("bench-unit-{i:04}")).collect()
}

/// Create events on the server at `base`, cycling through `bodies`; with
/// `idempotency_keys`, under a key prefix no earlier scenario used.
fn create_work(
    base: &str,
    bodies: &Arc<Vec<Bytes>>,
    idempotency_keys: bool,
    concurrency: usize,
) -> Work {
    Work::Create {
        url: format!("{base}/api/v1/events"),
        bodies: Arc::clone(bodies),
        idempotency_prefix: idempotency_keys.then(|| {
            format!(
                "bench-{}-{concurrency}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            )
        }),
    }
}

/// Get events by id (`ids` must not be empty) from the server at `base`.
fn get_work(base: &str, ids: Arc<Vec<String>>) -> Work {
    Work::Get {
        prefix: format!("{base}/api/v1/events/"),
        ids,
    }
}

/// List the events of each of `names` (first page of 100) on the server
/// at `base`.
fn list_work(base: &str, names: &[String]) -> Work {
    Work::List {
        urls: Arc::new(
            names
                .iter()
                .map(|n| format!("{base}/api/v1/events?name={n}&limit=100"))
                .collect(),
        ),
    }
}

fn skipped(name: &str, concurrency: usize, why: &str) -> Scenario {
    Scenario {
        name: name.to_owned(),
        concurrency,
        outcome: None,
        note: Some(format!("skipped: {why}")),
        server_cpu_pct: None,
        bench_cpu_pct: None,
        server_rss_kib: None,
        delivery: Vec::new(),
    }
}

/// After a create scenario: sample `/metrics` until every sink's cursor
/// has reached the outbox head as it stands now (no more writes come), or
/// `timeout_secs` passed.
async fn drain(
    client: &Client,
    metrics_url: &str,
    sinks: &[String],
    timeout_secs: u64,
) -> Vec<delivery::Sample> {
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let mut samples: Vec<delivery::Sample> = Vec::new();
    loop {
        if let Ok(text) = delivery::fetch(client, metrics_url).await
            && let Some(s) = delivery::parse(&text, Instant::now())
        {
            let head = samples.first().map_or(s.head, |f| f.head);
            let caught_up = sinks
                .iter()
                .all(|k| s.cursors.get(k).copied().unwrap_or(0.0) >= head);
            samples.push(s);
            if caught_up {
                break;
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    samples
}

/// Create the receiver all bench events point at. Retries connection errors
/// for a few seconds in case the server logged its address before accepting.
async fn create_receiver(client: &Client, base: &str) -> Result<String, BoxError> {
    let body = json!({
        "name": "cairn-bench",
        "type": "bench.build",
        "version": "1.0.0",
        "description": "receiver created by cairn-bench",
        "schema": {
            "type": "object",
            "properties": {
                "build_id": {"type": "integer"},
                "status": {"type": "string"}
            },
            "required": ["build_id"]
        }
    });
    let url = format!("{base}/api/v1/receivers");
    let deadline = Instant::now() + Duration::from_secs(10);
    let resp = loop {
        match client.post(&url).json(&body).send().await {
            Ok(resp) => break resp,
            Err(e) if e.is_connect() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(format!("setup: POST {url}: {}", error_chain(&e)).into()),
        }
    };
    let status = resp.status();
    let text = resp.text().await.map_err(|e| {
        format!(
            "setup: POST {url}: reading the response: {}",
            error_chain(&e)
        )
    })?;
    if !status.is_success() {
        return Err(format!("setup: POST {url} -> HTTP {status}: {text}").into());
    }
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        format!("setup: POST {url} -> HTTP {status} with non-JSON body ({e}): {text}")
    })?;
    value
        .get("data")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("setup: POST {url} -> no receiver id in \"data\": {text}").into())
}

/// Pre-serialized create-event bodies with varied unit fields and a small
/// payload that satisfies the receiver schema.
fn event_bodies(names: &[String], receiver_id: &str) -> Result<Vec<Bytes>, BoxError> {
    const PLATFORMS: [&str; 3] = ["x86_64-linux", "aarch64-linux", "x86_64-darwin"];
    const PACKAGES: [&str; 4] = ["oci", "rpm", "deb", "tarball"];
    (0..BODY_POOL)
        .map(|i| {
            let success = i % 5 != 0;
            let body = json!({
                "name": names[i % names.len()],
                "version": format!("1.{}.{}", i % 7, i % 13),
                "release": format!("2026.{}", i % 4),
                "platform_id": PLATFORMS[i % PLATFORMS.len()],
                "package": PACKAGES[i % PACKAGES.len()],
                "description": "build finished (cairn-bench)",
                "payload": {
                    "build_id": i,
                    "status": if success { "passed" } else { "failed" },
                },
                "success": success,
                "event_receiver_id": receiver_id,
            });
            serde_json::to_vec(&body)
                .map(Bytes::from)
                .map_err(|e| format!("serializing an event body: {e}").into())
        })
        .collect()
}

fn print_table(scenarios: &[Scenario]) {
    let fmt_opt = |v: Option<f64>, prec: usize| match v {
        Some(v) => format!("{v:.prec$}"),
        None => "-".to_owned(),
    };
    println!();
    println!(
        "{:<20} {:>5} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8} {:>10} {:>8}",
        "scenario",
        "conc",
        "requests",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "errors",
        "srv CPU%",
        "bench CPU%",
        "RSS MiB"
    );
    for s in scenarios {
        println!(
            "{:<20} {:>5} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8} {:>10} {:>8}",
            s.name,
            s.concurrency,
            s.requests(),
            fmt_opt(s.rps(), 1),
            fmt_opt(s.latency_ms(50.0), 2),
            fmt_opt(s.latency_ms(95.0), 2),
            fmt_opt(s.latency_ms(99.0), 2),
            fmt_opt(s.latency_ms(100.0), 2),
            s.errors(),
            fmt_opt(s.server_cpu_pct, 0),
            fmt_opt(s.bench_cpu_pct, 0),
            fmt_opt(s.server_rss_kib.map(mib), 1),
        );
    }
    let mut notes = Vec::new();
    for s in scenarios {
        if let Some(note) = &s.note {
            notes.push(format!("{} (c={}): {note}", s.name, s.concurrency));
        }
        if let Some(err) = s.outcome.as_ref().and_then(|o| o.first_error.as_ref()) {
            notes.push(format!(
                "{} (c={}): {} errors; first: {err}",
                s.name,
                s.concurrency,
                s.errors()
            ));
        }
    }
    if !notes.is_empty() {
        println!();
        for n in notes {
            println!("{n}");
        }
    }
    let with_delivery: Vec<&Scenario> = scenarios
        .iter()
        .filter(|s| !s.delivery.is_empty())
        .collect();
    if !with_delivery.is_empty() {
        println!();
        println!(
            "{:<20} {:>5} {:<12} {:>9} {:>12} {:>11} {:>12} {:>10} {:>8}",
            "delivery",
            "conc",
            "sink",
            "creates/s",
            "delivered/s",
            "trend msg/s",
            "max backlog",
            "end backlog",
            "drain s"
        );
        for s in with_delivery {
            for d in &s.delivery {
                println!(
                    "{:<20} {:>5} {:<12} {:>9} {:>12} {:>11} {:>12} {:>10} {:>8}  {}",
                    s.name,
                    s.concurrency,
                    d.sink,
                    fmt_opt(s.rps(), 1),
                    fmt_opt(d.delivered_per_sec, 1),
                    fmt_opt(d.backlog_trend_per_sec, 1),
                    fmt_opt(Some(d.backlog_max), 0),
                    fmt_opt(d.backlog_at_end, 0),
                    d.drain.map_or_else(
                        || "timeout".to_owned(),
                        |t| format!("{:.2}", t.as_secs_f64())
                    ),
                    if d.kept_up() {
                        "kept up"
                    } else {
                        "FELL BEHIND"
                    },
                );
            }
        }
        println!(
            "delivery: from /metrics every {} ms; backlog = cairn_outbox_head - cairn_sink_cursor; \
             trend = least-squares slope of the backlog over the window; drain = time after the \
             load stopped until the cursor reached the head; kept up = trend <= 1% of delivered/s \
             and drained within 5 s",
            delivery::SAMPLE_EVERY.as_millis()
        );
    }
    println!();
    println!(
        "requests/latencies: successful responses completed in the measured window; \
         errors: failed requests incl. warm-up; CPU%: share of one core over the window \
         (100% = one full core); RSS: server RSS after the scenario"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_start_gate_opens_when_its_file_appears_and_not_before() {
        let dir = tempfile::tempdir().unwrap();
        let gate = dir.path().join("gate");
        let absent = wait_for(&gate, Duration::from_millis(50)).await;
        let err = absent.expect_err("no file, no start").to_string();
        assert!(err.contains("did not appear"), "{err}");

        let made = gate.clone();
        let maker = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let before = Instant::now();
            std::fs::write(&made, b"").unwrap();
            before
        });
        wait_for(&gate, Duration::from_secs(10)).await.unwrap();
        let opened = Instant::now();
        let writing = maker.await.unwrap();
        assert!(
            opened >= writing,
            "the gate opened before its file was written"
        );
    }
}
