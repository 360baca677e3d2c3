//! Process metrics in the standard Prometheus names, read from `/proc` at
//! scrape time (Linux; elsewhere they are absent). No background task: a
//! scrape costs a few small file reads.

use std::sync::OnceLock;

/// Linux's `USER_HZ`, the unit of the CPU times in `/proc/self/stat`: 100
/// on every architecture the kernel supports for user space ABI purposes.
const TICKS_PER_SECOND: f64 = 100.0;

pub fn describe() {
    metrics::describe_gauge!(
        "process_resident_memory_bytes",
        "Resident set size of this process"
    );
    metrics::describe_gauge!(
        "process_virtual_memory_bytes",
        "Virtual memory size of this process"
    );
    metrics::describe_gauge!(
        "process_cpu_seconds_total",
        "User and system CPU time this process has used (monotonic; use rate())"
    );
    metrics::describe_gauge!("process_open_fds", "Open file descriptors");
    metrics::describe_gauge!("process_max_fds", "Limit of open file descriptors");
    metrics::describe_gauge!("process_threads", "Threads of this process");
    metrics::describe_gauge!(
        "process_start_time_seconds",
        "Start time of this process, in seconds since the Unix epoch"
    );
}

/// Read `/proc/self` and set the gauges. Whatever cannot be read is left
/// unset (and logged at debug level).
pub fn sample() {
    match std::fs::read_to_string("/proc/self/stat") {
        Ok(stat) => from_stat(&stat),
        Err(e) => tracing::debug!(error = %e, "reading /proc/self/stat"),
    }
    // VmRSS is in KiB (the stat file counts pages of a size not read here).
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(kib) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    {
        metrics::gauge!("process_resident_memory_bytes").set(kib * 1024.0);
    }
    match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => metrics::gauge!("process_open_fds").set(dir.count() as f64),
        Err(e) => tracing::debug!(error = %e, "reading /proc/self/fd"),
    }
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits")
        && let Some(max) = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<f64>().ok())
    {
        metrics::gauge!("process_max_fds").set(max);
    }
}

fn boot_time() -> Option<f64> {
    static BOOT: OnceLock<Option<f64>> = OnceLock::new();
    *BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    })
}

/// Fields of `/proc/self/stat` after the command name (which may contain
/// spaces and parentheses, so split after its last `)`).
fn from_stat(stat: &str) {
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return;
    };
    // rest starts at field 3 (state); field n is at index n - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    if let (Some(utime), Some(stime)) = (get(14), get(15)) {
        metrics::gauge!("process_cpu_seconds_total").set((utime + stime) / TICKS_PER_SECOND);
    }
    if let Some(threads) = get(20) {
        metrics::gauge!("process_threads").set(threads);
    }
    if let (Some(start), Some(boot)) = (get(22), boot_time()) {
        metrics::gauge!("process_start_time_seconds").set(boot + start / TICKS_PER_SECOND);
    }
    if let Some(vsize) = get(23) {
        metrics::gauge!("process_virtual_memory_bytes").set(vsize);
    }
}
