//! Whether the server's outbox relay keeps up with the creates: samples
//! the server's `/metrics` (`cairn_outbox_head`, the highest outbox
//! position written, and `cairn_sink_cursor{sink}`, the position each sink
//! has acknowledged) during a create scenario, then until every sink has
//! caught up with the head as it stood when the load stopped.

use crate::BoxError;
use crate::load::error_chain;
use reqwest::Client;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often `/metrics` is read.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// One reading of `/metrics`.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub head: f64,
    /// Cursor per sink.
    pub cursors: BTreeMap<String, f64>,
}

/// The value of an unlabelled gauge and of every `sink`-labelled series of
/// `cursor_metric` in a Prometheus text exposition.
pub fn parse(text: &str, at: Instant) -> Option<Sample> {
    let mut head = None;
    let mut cursors = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        if series == "cairn_outbox_head" {
            head = Some(value);
        } else if let Some(labels) = series.strip_prefix("cairn_sink_cursor{") {
            let sink = labels
                .split(',')
                .find_map(|l| l.strip_prefix("sink=\""))
                .and_then(|l| l.strip_suffix("\"}").or_else(|| l.strip_suffix('"')));
            if let Some(sink) = sink {
                cursors.insert(sink.to_owned(), value);
            }
        }
    }
    Some(Sample {
        at,
        head: head?,
        cursors,
    })
}

/// The sinks the server runs a relay for: those with a breaker gauge.
pub fn sinks(text: &str) -> Vec<String> {
    let mut found: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("cairn_sink_breaker_state{"))
        .filter_map(|l| {
            l.split(',')
                .find_map(|p| p.strip_prefix("sink=\""))
                .and_then(|p| p.split('"').next())
                .map(str::to_owned)
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

pub async fn fetch(client: &Client, url: &str) -> Result<String, BoxError> {
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| format!("GET {url}: reading the body: {}", error_chain(&e)))?;
    if !status.is_success() {
        return Err(format!("GET {url} -> HTTP {status}").into());
    }
    Ok(text)
}

/// Sample until `stop` turns true; returns the samples.
pub async fn sample_until(
    client: Client,
    url: String,
    mut stop: watch::Receiver<bool>,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    loop {
        if let Ok(text) = fetch(&client, &url).await
            && let Some(s) = parse(&text, Instant::now())
        {
            samples.push(s);
        }
        tokio::select! {
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
            _ = stop.changed() => break,
        }
    }
    samples
}

/// How one sink fared in one create scenario.
#[derive(Debug, Clone)]
pub struct SinkReport {
    pub sink: String,
    /// Messages the sink acknowledged per second over the measured window.
    pub delivered_per_sec: Option<f64>,
    /// Least-squares slope of the backlog over the measured window (msg/s):
    /// about zero when delivery keeps up, positive when it falls behind.
    pub backlog_trend_per_sec: Option<f64>,
    pub backlog_max: f64,
    /// Backlog at the first sample after the load stopped.
    pub backlog_at_end: Option<f64>,
    /// From the end of the load until the cursor reached the head as it
    /// stood then; `None` if it did not within the drain timeout.
    pub drain: Option<Duration>,
}

impl SinkReport {
    /// Kept up: the backlog did not grow by more than 1% of the delivery
    /// rate per second, and it drained within 5 s of the load stopping.
    pub fn kept_up(&self) -> bool {
        let trend_ok = match (self.backlog_trend_per_sec, self.delivered_per_sec) {
            (Some(t), Some(d)) => t <= 0.01 * d.max(1.0),
            _ => false,
        };
        trend_ok && self.drain.is_some_and(|d| d <= Duration::from_secs(5))
    }

    pub fn to_json(&self) -> Value {
        json!({
            "sink": self.sink,
            "delivered_per_sec": self.delivered_per_sec,
            "backlog_trend_per_sec": self.backlog_trend_per_sec,
            "backlog_max": self.backlog_max,
            "backlog_at_end": self.backlog_at_end,
            "drain_secs": self.drain.map(|d| d.as_secs_f64()),
            "kept_up": self.kept_up(),
        })
    }
}

/// Least-squares slope of `points` (seconds, value).
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Summarise the samples of one scenario: `during` were taken while the
/// load ran (`window` is the measured part of it), `after` from the end
/// of the load until the drain finished or timed out; `drained_at` is when
/// every sink's cursor reached `final_head`.
pub fn report(
    sink: &str,
    during: &[Sample],
    after: &[Sample],
    window: (Instant, Instant),
    load_end: Instant,
    final_head: f64,
) -> SinkReport {
    let backlog = |s: &Sample| (s.head - s.cursors.get(sink).copied().unwrap_or(0.0)).max(0.0);
    let in_window: Vec<&Sample> = during
        .iter()
        .filter(|s| s.at >= window.0 && s.at <= window.1)
        .collect();
    let delivered_per_sec = match (in_window.first(), in_window.last()) {
        (Some(a), Some(b)) if b.at > a.at => {
            let ca = a.cursors.get(sink).copied().unwrap_or(0.0);
            let cb = b.cursors.get(sink).copied().unwrap_or(0.0);
            Some((cb - ca) / (b.at - a.at).as_secs_f64())
        }
        _ => None,
    };
    let points: Vec<(f64, f64)> = in_window
        .iter()
        .map(|s| ((s.at - window.0).as_secs_f64(), backlog(s)))
        .collect();
    let drain = after
        .iter()
        .find(|s| s.cursors.get(sink).copied().unwrap_or(0.0) >= final_head)
        .map(|s| s.at.saturating_duration_since(load_end));
    SinkReport {
        sink: sink.to_owned(),
        delivered_per_sec,
        backlog_trend_per_sec: slope(&points),
        backlog_max: during.iter().chain(after).map(backlog).fold(0.0, f64::max),
        backlog_at_end: after.first().map(backlog),
        drain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE cairn_outbox_head gauge\ncairn_outbox_head 120\n\
        cairn_sink_cursor{sink=\"js\"} 100\ncairn_sink_breaker_state{sink=\"js\"} 0\n";

    #[test]
    fn reads_head_cursor_and_sinks() {
        let s = parse(TEXT, Instant::now()).unwrap();
        assert_eq!(s.head, 120.0);
        assert_eq!(s.cursors.get("js"), Some(&100.0));
        assert_eq!(sinks(TEXT), vec!["js".to_owned()]);
        assert!(parse("cairn_sink_cursor{sink=\"js\"} 1\n", Instant::now()).is_none());
    }

    #[test]
    fn a_growing_backlog_is_not_keeping_up() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let sample = |ms, head: f64, cursor: f64| Sample {
            at: at(ms),
            head,
            cursors: [("js".to_owned(), cursor)].into(),
        };
        // Head grows by 1000/s, the cursor by 500/s.
        let during: Vec<Sample> = (0..=8)
            .map(|i| sample(i * 250, i as f64 * 250.0, i as f64 * 125.0))
            .collect();
        let after = vec![sample(2100, 2000.0, 1100.0), sample(4000, 2000.0, 2000.0)];
        let r = report("js", &during, &after, (at(0), at(2000)), at(2000), 2000.0);
        assert!((r.delivered_per_sec.unwrap() - 500.0).abs() < 1e-6);
        assert!((r.backlog_trend_per_sec.unwrap() - 500.0).abs() < 1e-6);
        assert_eq!(r.backlog_max, 1000.0);
        assert_eq!(r.drain, Some(Duration::from_millis(2000)));
        assert!(!r.kept_up());

        // Cursor right behind the head: kept up.
        let during: Vec<Sample> = (0..=8)
            .map(|i| sample(i * 250, i as f64 * 250.0, i as f64 * 250.0 - 20.0))
            .collect();
        let after = vec![sample(2100, 2000.0, 2000.0)];
        let r = report("js", &during, &after, (at(0), at(2000)), at(2000), 2000.0);
        assert!(r.kept_up(), "{r:?}");
    }
}
