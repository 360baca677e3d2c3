//! The metrics recorder keeps every histogram sample it is given until its
//! upkeep, or a scrape, folds the samples into their buckets. A server that
//! nobody scrapes must not grow with every request it answers.
//!
//! This binary counts the bytes its process holds (a counting global
//! allocator), so it holds this one test only.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed to `System` as it is; only the sizes are
// counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn record(samples: u32) {
    for i in 0..samples {
        metrics::histogram!(
            "cairn_http_request_duration_seconds",
            "route" => "/api/v1/events/{id}",
            "method" => "GET",
        )
        .record(f64::from(i) * 1e-6);
    }
}

#[test]
fn histogram_samples_are_drained_without_a_scrape() {
    let every = Duration::from_millis(100);
    assert!(cairn_api::metrics::install_with_upkeep(every).is_some());
    // The metric and its buckets exist, and one upkeep has run since.
    record(1_000);
    std::thread::sleep(every * 3);

    const SAMPLES: u32 = 200_000;
    let before = live();
    record(SAMPLES);
    println!(
        "right after {SAMPLES} samples: {} bytes more held",
        live() - before
    );
    // Pending samples hold 8 bytes each and more: 1.6 MB or more for these.
    // What is left once drained is the buckets' counts, which exist already.
    // Drained blocks are freed once no recording thread can still see them
    // (epoch reclamation, which recording itself moves on): the wait goes
    // on recording a little, as a server answering requests does.
    let bound = 64 * 1024;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let held = live() - before;
        if held < bound {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{held} bytes are still held 10 s after {SAMPLES} histogram samples \
             (no scrape): the samples are not being drained"
        );
        std::thread::sleep(every / 2);
        record(100);
    }
}
