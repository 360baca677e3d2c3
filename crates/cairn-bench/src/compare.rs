//! Paired comparison of stacks (`--compare bare,as-is,full`).
//!
//! One server per stack runs at once. Every scenario is measured in rounds;
//! a round gives each stack one short slice of load, in an order that
//! changes from round to round. Whatever the VM does meanwhile (other
//! tenants, CPU frequency, the page cache) moves the slices of one round
//! alike, so the ratio of a stack's throughput to the baseline's (the
//! first stack) *in the same round* is much steadier than a comparison of
//! separate runs. Reported per scenario and stack: the median req/s over
//! the rounds and the median, extremes and quartiles of those ratios.
//!
//! Each slice also reads the CPU time the stack's server and the bench
//! itself used over its measured window (`/proc/<pid>/stat`), per request.
//! On a machine where the two share the cores, throughput is the cores
//! divided by the CPU a request costs both, so the ratio of that cost to
//! the baseline's is a second view of the same difference, one that does
//! not move with how the scheduler happened to interleave them.

use crate::load::{self, Outcome, Plan};
use crate::server::SpawnedServer;
use crate::stack::{OtlpSink, Stack};
use crate::{Args, BoxError, Machine, Which};
use bytes::Bytes;
use reqwest::Client;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Warm-up of every slice before its measured part starts.
const SLICE_WARMUP: Duration = Duration::from_millis(300);

/// One server under comparison.
struct Side {
    /// The stack's name, made unique if a stack is listed twice.
    label: String,
    stack: Stack,
    server: SpawnedServer,
    sink: Option<OtlpSink>,
}

/// What the load needs to reach one server, once it is set up.
struct Endpoint {
    client: Client,
    base: String,
    bodies: Arc<Vec<Bytes>>,
    /// Ids of the events the create slices made on this server.
    ids: Arc<Vec<String>>,
}

/// One stack's slice of one round.
#[derive(Debug, Clone)]
struct Slice {
    round: usize,
    /// The stack's index in `--compare`.
    side: usize,
    /// Where the slice ran in its round (0 = first).
    position: usize,
    requests: usize,
    window: Duration,
    rps: Option<f64>,
    errors: u64,
    first_error: Option<String>,
    /// CPU time per request over the measured window, in µs: the server's
    /// and the bench's (`None` when `/proc` could not be read).
    server_cpu_us: Option<f64>,
    bench_cpu_us: Option<f64>,
}

/// Every slice of one scenario.
struct Measured {
    name: &'static str,
    concurrency: usize,
    slices: Vec<Slice>,
}

/// Minimum, quartiles and maximum of a sample; quartiles interpolate
/// linearly between the sorted values (numpy's default), so the median of
/// an even count is the mean of the middle two.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Quantiles {
    min: f64,
    q1: f64,
    median: f64,
    q3: f64,
    max: f64,
}

/// Check the `--compare` options.
pub fn validate(args: &Args) -> Result<(), BoxError> {
    if args.compare.len() < 2 {
        return Err("--compare needs at least two stacks, e.g. bare,as-is".into());
    }
    if args.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    if !(args.slice_secs.is_finite() && args.slice_secs > 0.0) {
        return Err("--slice-secs must be a positive number".into());
    }
    Ok(())
}

/// Run the comparison and report it.
pub fn run(args: &Args, machine: &Machine, started: Instant) -> Result<(), BoxError> {
    let bin = crate::server_bin(args)?;
    let mut sides = Vec::new();
    for (label, &stack) in labels(&args.compare).into_iter().zip(&args.compare) {
        println!("compare: starting the {label} server");
        let log = args.server_log.as_ref().map(|p| {
            let mut path = p.as_os_str().to_owned();
            path.push(format!(".{label}"));
            std::path::PathBuf::from(path)
        });
        let (server, sink) = crate::start_server(args, &bin, stack, log.as_deref())
            .map_err(|e| format!("starting the {label} server: {e}"))?;
        sides.push(Side {
            label,
            stack,
            server,
            sink,
        });
    }
    println!(
        "compare: {} rounds per scenario; each round runs one slice per stack ({} s measured \
         after {} s warm-up), starting at the next stack each round and reversing the order \
         every other cycle; baseline: {}",
        args.rounds,
        args.slice_secs,
        SLICE_WARMUP.as_secs_f64(),
        sides[0].label
    );

    let runtime = crate::runtime()?;
    let (measured, aborted) = runtime.block_on(async {
        let mut ends = setup(args, &sides).await?;
        Ok::<_, BoxError>(measure(args, machine.clock_ticks, &mut sides, &mut ends).await)
    })?;

    let owned: Vec<String> = sides.iter().map(|s| s.label.clone()).collect();
    let labels: Vec<&str> = owned.iter().map(String::as_str).collect();
    print_table(&measured, &labels);
    let mut servers = Vec::new();
    for side in &mut sides {
        let log = side.server.log_summary();
        let stop = side.server.stop(Duration::from_secs(15));
        println!(
            "server {}: {stop}; log: {}",
            side.label,
            crate::log_text(&log)
        );
        if let Some(sink) = &side.sink {
            println!("otlp sink of {}: {}", side.label, crate::otlp_summary(sink));
        }
        servers.push(json!({
            "stack": side.label,
            "pid": side.server.pid,
            "stop": stop,
            "log_errors": log.errors,
            "log_warnings": log.warnings,
            "log_first_problem": log.first_problem,
        }));
    }
    println!("total bench time: {:.1} s", started.elapsed().as_secs_f64());

    if let Some(path) = &args.json {
        let doc = json!({
            "machine": machine.to_json(),
            "config": {
                "mode": "compare",
                "stacks": labels,
                "baseline": labels[0],
                "rounds": args.rounds,
                "slice_secs": args.slice_secs,
                "slice_warmup_secs": SLICE_WARMUP.as_secs_f64(),
                "idempotency_keys": args.idempotency_keys,
                "otlp_sampling_ratio": args.otlp_sampling_ratio,
                "max_requests": args.max_requests,
                "names": args.names,
            },
            "scenarios": measured.iter().map(|m| m.to_json(&labels)).collect::<Vec<_>>(),
            "servers": servers,
        });
        crate::write_json(path, &doc)?;
    }
    if let Some(why) = aborted {
        return Err(why.into());
    }
    let failed = measured
        .iter()
        .flat_map(|m| &m.slices)
        .filter(|s| s.problem().is_some())
        .count();
    if failed > 0 {
        return Err(format!(
            "{failed} slices had failed requests or no measured request (see the ERROR lines \
             above); the comparison is not valid"
        )
        .into());
    }
    Ok(())
}

/// The stacks' names, with `#2`, `#3`, ... added to repeats (listing a
/// stack twice measures the noise floor of the comparison).
fn labels(stacks: &[Stack]) -> Vec<String> {
    stacks
        .iter()
        .enumerate()
        .map(
            |(i, s)| match stacks[..i].iter().filter(|t| *t == s).count() {
                0 => s.name().to_owned(),
                n => format!("{}#{}", s.name(), n + 1),
            },
        )
        .collect()
}

/// Per server: the client (its own API key, the stack's headers), a
/// receiver and the event bodies pointing at it.
async fn setup(args: &Args, sides: &[Side]) -> Result<Vec<Endpoint>, BoxError> {
    let max_conc = [args.get_concurrency, args.list_concurrency]
        .into_iter()
        .chain(args.concurrency.first().copied())
        .max()
        .unwrap_or(1);
    let names = crate::unit_names(args.names);
    let mut ends = Vec::new();
    for side in sides {
        let token = crate::api_key(args, Some(&side.server));
        let client = crate::build_client(args, side.stack, token.as_deref(), max_conc)
            .map_err(|e| format!("the {} server: {e}", side.label))?;
        let base = format!("http://{}", side.server.addr);
        let receiver = crate::create_receiver(&client, &base)
            .await
            .map_err(|e| format!("the {} server: {e}", side.label))?;
        println!(
            "setup: {} server at {base}: receiver {receiver}, {}",
            side.label,
            if token.is_some() {
                "requests carry its API key"
            } else {
                "requests carry no credentials (the server must run with auth off)"
            }
        );
        ends.push(Endpoint {
            client,
            bodies: Arc::new(crate::event_bodies(&names, &receiver)?),
            base,
            ids: Arc::new(Vec::new()),
        });
    }
    Ok(ends)
}

/// The selected scenarios in the order they run, with their concurrency.
fn scenarios(args: &Args) -> Vec<(Which, &'static str, usize)> {
    let create = args.concurrency.first().copied().unwrap_or(1);
    [
        (Which::Create, "create event", create),
        (Which::Get, "get event by id", args.get_concurrency),
        (Which::List, "list events by name", args.list_concurrency),
    ]
    .into_iter()
    .filter(|(w, _, _)| args.scenarios.contains(w))
    .collect()
}

/// Run every scenario's rounds. Stops early, with the reason, if a server
/// exits (or has nothing to get); what was measured so far is returned.
async fn measure(
    args: &Args,
    ticks: f64,
    sides: &mut [Side],
    ends: &mut [Endpoint],
) -> (Vec<Measured>, Option<String>) {
    let names = crate::unit_names(args.names);
    let mut done = Vec::new();
    for (which, name, concurrency) in scenarios(args) {
        if which == Which::Get
            && let Some(i) = ends.iter().position(|e| e.ids.is_empty())
        {
            let why = format!(
                "{name}: no event was created on the {} server",
                sides[i].label
            );
            return (done, Some(why));
        }
        eprintln!(
            "running: {name} at concurrency {concurrency}, {} rounds ...",
            args.rounds
        );
        let plan = Plan {
            warmup: SLICE_WARMUP,
            duration: Duration::from_secs_f64(args.slice_secs),
            concurrency,
            max_requests: args.max_requests,
        };
        let mut measured = Measured {
            name,
            concurrency,
            slices: Vec::new(),
        };
        for round in 0..args.rounds {
            for (position, i) in order(round, sides.len()).into_iter().enumerate() {
                let end = &mut ends[i];
                let work = match which {
                    Which::Create => crate::create_work(
                        &end.base,
                        &end.bodies,
                        args.idempotency_keys,
                        concurrency,
                    ),
                    Which::Get => crate::get_work(&end.base, Arc::clone(&end.ids)),
                    Which::List => crate::list_work(&end.base, &names),
                };
                let pid = sides[i].server.pid;
                let cpu = || {
                    (
                        crate::server::read_cpu_seconds(Some(pid), ticks),
                        crate::server::read_cpu_seconds(None, ticks),
                    )
                };
                let mut cpu_start = (None, None);
                let mut outcome = load::run(&end.client, work, &plan, || cpu_start = cpu()).await;
                let cpu_end = cpu();
                Arc::make_mut(&mut end.ids).append(&mut outcome.created_ids);
                let mut slice = Slice::new(round, i, position, &outcome);
                let per_request = |a: Option<f64>, b: Option<f64>| {
                    let n = slice.requests as f64;
                    Some((b? - a?) * 1e6 / n).filter(|v| n > 0.0 && *v >= 0.0)
                };
                slice.server_cpu_us = per_request(cpu_start.0, cpu_end.0);
                slice.bench_cpu_us = per_request(cpu_start.1, cpu_end.1);
                if let Some(problem) = slice.problem() {
                    eprintln!(
                        "  ERROR: {name}, round {}, {} server: {problem}",
                        round + 1,
                        sides[i].label
                    );
                }
                measured.slices.push(slice);
                if let Some(why) = exited(sides) {
                    done.push(measured);
                    return (done, Some(why));
                }
            }
            eprintln!(
                "  round {}/{}: {}",
                round + 1,
                args.rounds,
                measured.round_text(round, sides)
            );
        }
        done.push(measured);
    }
    (done, None)
}

/// The order in which round `round` runs the `n` stacks: it starts at
/// stack `round % n` and goes up, or (every other cycle of `n` rounds)
/// down, so over `2n` rounds each stack runs first twice and after
/// different stacks, not always after the same one.
fn order(round: usize, n: usize) -> Vec<usize> {
    let start = round % n;
    let down = (round / n) % 2 == 1;
    (0..n)
        .map(|k| {
            if down {
                (start + n - k) % n
            } else {
                (start + k) % n
            }
        })
        .collect()
}

/// Why the run must stop if a server has exited, with its last log lines.
fn exited(sides: &mut [Side]) -> Option<String> {
    sides.iter_mut().find_map(|side| {
        side.server.try_status().map(|status| {
            format!(
                "the {} server exited during the run ({status})\n{}",
                side.label,
                side.server.log_tail_text()
            )
        })
    })
}

impl Slice {
    fn new(round: usize, side: usize, position: usize, outcome: &Outcome) -> Self {
        Self {
            round,
            side,
            position,
            requests: outcome.latencies_us.len(),
            window: outcome.window,
            rps: outcome.rps().filter(|r| *r > 0.0),
            errors: outcome.errors,
            first_error: outcome.first_error.clone(),
            server_cpu_us: None,
            bench_cpu_us: None,
        }
    }

    /// What makes this slice unusable, if anything.
    fn problem(&self) -> Option<String> {
        if self.errors > 0 {
            Some(format!(
                "{} failed requests; first: {}",
                self.errors,
                self.first_error.as_deref().unwrap_or("(not recorded)")
            ))
        } else if self.rps.is_none() {
            Some("no request completed in the measured window".to_owned())
        } else {
            None
        }
    }

    fn to_json(&self, labels: &[&str]) -> Value {
        json!({
            "stack": labels[self.side],
            "position": self.position,
            "requests": self.requests,
            "window_secs": self.window.as_secs_f64(),
            "requests_per_sec": self.rps,
            "errors": self.errors,
            "first_error": self.first_error,
            "server_cpu_us_per_request": self.server_cpu_us,
            "bench_cpu_us_per_request": self.bench_cpu_us,
        })
    }
}

/// Per round in which both ran: `(round, rps(side) / rps(baseline))`.
fn ratios(slices: &[Slice], side: usize, baseline: usize) -> Vec<(usize, f64)> {
    let rps = |round, which| {
        slices
            .iter()
            .find(|s| s.round == round && s.side == which)
            .and_then(|s| s.rps)
    };
    slices
        .iter()
        .filter(|s| s.side == side)
        .filter_map(|s| Some((s.round, s.rps? / rps(s.round, baseline)?)))
        .collect()
}

/// Per round in which both ran: the CPU (server and bench) a request of
/// `side` cost over the baseline's.
fn cpu_ratios(slices: &[Slice], side: usize, baseline: usize) -> Vec<(usize, f64)> {
    let cpu = |s: &Slice| Some(s.server_cpu_us? + s.bench_cpu_us?).filter(|c| *c > 0.0);
    let of = |round, which| {
        slices
            .iter()
            .find(|s| s.round == round && s.side == which)
            .and_then(cpu)
    };
    slices
        .iter()
        .filter(|s| s.side == side)
        .filter_map(|s| Some((s.round, cpu(s)? / of(s.round, baseline)?)))
        .collect()
}

impl Quantiles {
    /// `None` for an empty sample.
    fn of(values: &[f64]) -> Option<Self> {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let at = |p: f64| {
            let pos = p * (v.len() - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
        };
        (!v.is_empty()).then(|| Self {
            min: v[0],
            q1: at(0.25),
            median: at(0.5),
            q3: at(0.75),
            max: v[v.len() - 1],
        })
    }

    fn iqr(self) -> f64 {
        self.q3 - self.q1
    }

    /// The same figures as throughput changes in percent (ratio 0.93 is
    /// -7%).
    fn as_change_pct(self) -> Self {
        let pct = |r: f64| (r - 1.0) * 100.0;
        Self {
            min: pct(self.min),
            q1: pct(self.q1),
            median: pct(self.median),
            q3: pct(self.q3),
            max: pct(self.max),
        }
    }

    fn to_json(self) -> Value {
        json!({
            "min": self.min,
            "q1": self.q1,
            "median": self.median,
            "q3": self.q3,
            "max": self.max,
            "iqr": self.iqr(),
        })
    }
}

impl Measured {
    /// Median req/s of stack `side` over the rounds.
    fn median_rps(&self, side: usize) -> Option<f64> {
        let rps: Vec<f64> = self
            .slices
            .iter()
            .filter(|s| s.side == side)
            .filter_map(|s| s.rps)
            .collect();
        Quantiles::of(&rps).map(|q| q.median)
    }

    /// Median CPU µs per request of stack `side`: (server, bench).
    fn median_cpu(&self, side: usize) -> (Option<f64>, Option<f64>) {
        let median = |f: fn(&Slice) -> Option<f64>| {
            let v: Vec<f64> = self
                .slices
                .iter()
                .filter(|s| s.side == side)
                .filter_map(f)
                .collect();
            Quantiles::of(&v).map(|q| q.median)
        };
        (median(|s| s.server_cpu_us), median(|s| s.bench_cpu_us))
    }

    fn errors(&self, side: usize) -> u64 {
        self.slices
            .iter()
            .filter(|s| s.side == side)
            .map(|s| s.errors)
            .sum()
    }

    /// "bare 9876/s, as-is 9123/s (-7.6%)" for the progress log.
    fn round_text(&self, round: usize, sides: &[Side]) -> String {
        let ratio = |side| {
            ratios(&self.slices, side, 0)
                .into_iter()
                .find(|(r, _)| *r == round)
                .map(|(_, v)| v)
        };
        let mut slices: Vec<&Slice> = self.slices.iter().filter(|s| s.round == round).collect();
        slices.sort_by_key(|s| s.side);
        slices
            .iter()
            .map(|s| {
                let change = match ratio(s.side) {
                    Some(r) if s.side > 0 => format!(" ({:+.1}%)", (r - 1.0) * 100.0),
                    _ => String::new(),
                };
                let rps = s.rps.unwrap_or(0.0);
                format!("{} {rps:.0}/s{change}", sides[s.side].label)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn to_json(&self, labels: &[&str]) -> Value {
        let rounds = self
            .slices
            .iter()
            .map(|s| s.round)
            .max()
            .map_or(0, |r| r + 1);
        let per_round: Vec<Value> = (0..rounds)
            .map(|round| {
                let mut slices: Vec<&Slice> =
                    self.slices.iter().filter(|s| s.round == round).collect();
                slices.sort_by_key(|s| s.position);
                json!({
                    "round": round + 1,
                    "order": slices.iter().map(|s| labels[s.side]).collect::<Vec<_>>(),
                    "slices": slices.iter().map(|s| s.to_json(labels)).collect::<Vec<_>>(),
                })
            })
            .collect();
        let stacks: Vec<Value> = (0..labels.len())
            .map(|side| {
                let ratios = (side > 0).then(|| ratios(&self.slices, side, 0));
                json!({
                    "stack": labels[side],
                    "median_requests_per_sec": self.median_rps(side),
                    "median_server_cpu_us_per_request": self.median_cpu(side).0,
                    "median_bench_cpu_us_per_request": self.median_cpu(side).1,
                    "cpu_per_request_vs_baseline": (side > 0).then(|| {
                        let values: Vec<f64> =
                            cpu_ratios(&self.slices, side, 0).iter().map(|(_, v)| *v).collect();
                        Quantiles::of(&values).map(|q| q.as_change_pct().to_json())
                    }),
                    "errors": self.errors(side),
                    "vs_baseline": ratios.map(|r| {
                        let values: Vec<f64> = r.iter().map(|(_, v)| *v).collect();
                        let q = Quantiles::of(&values);
                        json!({
                            "per_round_ratio": r.iter()
                                .map(|(round, v)| json!({"round": round + 1, "ratio": v}))
                                .collect::<Vec<_>>(),
                            "ratio": q.map(|q| q.to_json()),
                            "change_percent": q.map(|q| q.as_change_pct().to_json()),
                        })
                    }),
                })
            })
            .collect();
        json!({
            "scenario": self.name,
            "concurrency": self.concurrency,
            "rounds": per_round,
            "stacks": stacks,
        })
    }
}

fn print_table(measured: &[Measured], labels: &[&str]) {
    let pct = |v: f64| format!("{v:+.1}%");
    println!();
    println!(
        "{:<20} {:>5} {:<8} {:>6} {:>12} {:>9} {:>9} {:>9} {:>19} {:>7} {:>8} {:>8} {:>9}",
        "scenario",
        "conc",
        "stack",
        "rounds",
        "median req/s",
        "change",
        "min",
        "max",
        "IQR (Q1..Q3)",
        "errors",
        "srv µs",
        "bench µs",
        "CPU/req"
    );
    for m in measured {
        for (side, label) in labels.iter().enumerate() {
            let ratios: Vec<f64> = ratios(&m.slices, side, 0)
                .into_iter()
                .map(|(_, r)| r)
                .collect();
            let rounds = m.slices.iter().filter(|s| s.side == side).count();
            let q = (side > 0)
                .then(|| Quantiles::of(&ratios))
                .flatten()
                .map(|q| q.as_change_pct());
            let cell = |f: fn(&Quantiles) -> f64| q.as_ref().map_or("-".to_owned(), |q| pct(f(q)));
            let (server_cpu, bench_cpu) = m.median_cpu(side);
            let us = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
            let cpu_values: Vec<f64> = cpu_ratios(&m.slices, side, 0)
                .into_iter()
                .map(|(_, r)| r)
                .collect();
            let cpu_change = (side > 0)
                .then(|| Quantiles::of(&cpu_values))
                .flatten()
                .map_or("-".to_owned(), |q| pct(q.as_change_pct().median));
            println!(
                "{:<20} {:>5} {:<8} {:>6} {:>12} {:>9} {:>9} {:>9} {:>19} {:>7} {:>8} {:>8} {:>9}",
                m.name,
                m.concurrency,
                label,
                rounds,
                m.median_rps(side)
                    .map_or("-".to_owned(), |r| format!("{r:.1}")),
                cell(|q| q.median),
                cell(|q| q.min),
                cell(|q| q.max),
                q.as_ref().map_or("-".to_owned(), |q| format!(
                    "{} .. {}",
                    pct(q.q1),
                    pct(q.q3)
                )),
                m.errors(side),
                us(server_cpu),
                us(bench_cpu),
                cpu_change,
            );
        }
    }
    println!();
    println!(
        "median req/s: over the rounds; change/min/max/IQR: throughput of the stack relative to \
         {} in the same round, in percent (median, extremes and interquartile range of the \
         per-round ratios); errors: failed requests incl. warm-up; srv µs / bench µs: median CPU \
         time per request of the server and of this bench over the measured windows; CPU/req: \
         median per-round change of their sum against {0} (+10% = each request costs the \
         machine 10% more CPU)",
        labels[0]
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(round: usize, side: usize, rps: Option<f64>) -> Slice {
        Slice {
            round,
            side,
            position: 0,
            requests: 0,
            window: Duration::from_secs(1),
            rps,
            errors: 0,
            first_error: None,
            server_cpu_us: None,
            bench_cpu_us: None,
        }
    }

    #[test]
    fn rounds_rotate_the_start_and_reverse_every_other_cycle() {
        assert_eq!(order(0, 3), [0, 1, 2]);
        assert_eq!(order(1, 3), [1, 2, 0]);
        assert_eq!(order(2, 3), [2, 0, 1]);
        assert_eq!(order(3, 3), [0, 2, 1]);
        assert_eq!(order(4, 3), [1, 0, 2]);
        assert_eq!(order(5, 3), [2, 1, 0]);
        assert_eq!(order(6, 3), [0, 1, 2]);
        // Over 2n rounds: every permutation of three, each stack first twice.
        let mut all: Vec<Vec<usize>> = (0..6).map(|r| order(r, 3)).collect();
        for r in 0..15 {
            assert_eq!(order(r, 3)[0], r % 3);
        }
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 6);
        assert_eq!(order(0, 2), [0, 1]);
        assert_eq!(order(1, 2), [1, 0]);
        assert_eq!(order(2, 2), [0, 1]);
        assert_eq!(order(7, 1), [0]);
    }

    #[test]
    fn quantiles_of_an_odd_count() {
        let q = Quantiles::of(&[5.0, 1.0, 4.0, 2.0, 3.0]).unwrap();
        assert_eq!(
            q,
            Quantiles {
                min: 1.0,
                q1: 2.0,
                median: 3.0,
                q3: 4.0,
                max: 5.0
            }
        );
        assert_eq!(q.iqr(), 2.0);
        let one = Quantiles::of(&[0.9]).unwrap();
        assert_eq!(
            (one.min, one.median, one.max, one.iqr()),
            (0.9, 0.9, 0.9, 0.0)
        );
    }

    #[test]
    fn quantiles_of_an_even_count() {
        let q = Quantiles::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(
            q,
            Quantiles {
                min: 1.0,
                q1: 1.75,
                median: 2.5,
                q3: 3.25,
                max: 4.0
            }
        );
        assert_eq!(q.iqr(), 1.5);
        assert_eq!(Quantiles::of(&[]), None);
    }

    #[test]
    fn ratios_pair_slices_of_the_same_round() {
        let slices = [
            slice(0, 0, Some(100.0)),
            slice(0, 1, Some(90.0)),
            slice(1, 1, Some(120.0)),
            slice(1, 0, Some(100.0)),
            // Round 2: the baseline measured nothing, so no pair.
            slice(2, 0, None),
            slice(2, 1, Some(50.0)),
            slice(3, 0, Some(80.0)),
            slice(3, 1, Some(60.0)),
        ];
        assert_eq!(
            ratios(&slices, 1, 0),
            [(0, 0.9), (1, 1.2), (3, 0.75)].to_vec()
        );
        let values: Vec<f64> = ratios(&slices, 1, 0).iter().map(|(_, r)| *r).collect();
        let change = Quantiles::of(&values).unwrap().as_change_pct();
        assert!((change.median + 10.0).abs() < 1e-9, "{change:?}");
        assert!((change.min + 25.0).abs() < 1e-9, "{change:?}");
        assert!((change.max - 20.0).abs() < 1e-9, "{change:?}");
    }

    #[test]
    fn cpu_ratios_pair_the_sum_of_server_and_bench_cpu_per_round() {
        let with_cpu = |round, side, server, bench| Slice {
            server_cpu_us: Some(server),
            bench_cpu_us: Some(bench),
            ..slice(round, side, Some(1.0))
        };
        let slices = [
            with_cpu(0, 0, 60.0, 40.0),
            with_cpu(0, 1, 70.0, 40.0),
            with_cpu(1, 1, 80.0, 30.0),
            with_cpu(1, 0, 50.0, 30.0),
            // No CPU read for the baseline of round 2: no ratio for it.
            with_cpu(2, 1, 70.0, 40.0),
            slice(2, 0, Some(1.0)),
        ];
        assert_eq!(cpu_ratios(&slices, 1, 0), [(0, 1.1), (1, 1.375)]);
        assert!(cpu_ratios(&slices, 0, 0).iter().all(|(_, r)| *r == 1.0));
    }

    #[test]
    fn repeated_stacks_get_distinct_labels() {
        assert_eq!(
            labels(&[Stack::Bare, Stack::AsIs, Stack::Bare, Stack::Bare]),
            ["bare", "as-is", "bare#2", "bare#3"]
        );
    }

    #[test]
    fn failed_or_empty_slices_are_problems() {
        assert_eq!(slice(0, 0, Some(1.0)).problem(), None);
        assert!(slice(0, 0, None).problem().is_some());
        let mut failed = slice(0, 0, Some(1.0));
        failed.errors = 2;
        failed.first_error = Some("HTTP 500".to_owned());
        let problem = failed.problem().unwrap();
        assert!(problem.contains("2 failed") && problem.contains("HTTP 500"));
    }
}
