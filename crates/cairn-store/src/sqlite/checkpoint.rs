//! WAL checkpoints run here, on their own connection and thread, so the
//! writer never stalls copying pages into the database file. PASSIVE
//! checkpoints never block the writer or readers; once one completes, the
//! writer's next commit starts the WAL from the beginning again.

use rusqlite::Connection;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How often to checkpoint.
const INTERVAL: Duration = Duration::from_millis(200);

pub struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    alive: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    pub fn start(path: &Path) -> std::io::Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let alive = Arc::new(AtomicBool::new(true));
        let path = path.to_owned();
        let (stop2, alive2) = (stop.clone(), alive.clone());
        let thread = std::thread::Builder::new()
            .name("cairn-sqlite-checkpoint".into())
            .spawn(move || {
                run(&path, &stop2);
                alive2.store(false, Ordering::Release);
            })?;
        Ok(Self {
            stop,
            alive,
            thread: Some(thread),
        })
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    pub fn stop(&mut self) {
        let (lock, cvar) = &*self.stop;
        if let Ok(mut stopped) = lock.lock() {
            *stopped = true;
            cvar.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(path: &Path, stop: &(Mutex<bool>, Condvar)) {
    let conn = match Connection::open(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "checkpointer cannot open the database; WAL checkpoints stop");
            return;
        }
    };
    if let Err(e) = conn.busy_timeout(Duration::from_secs(1)) {
        tracing::warn!(error = %e, "checkpointer busy timeout");
    }
    let (lock, cvar) = stop;
    loop {
        {
            let Ok(stopped) = lock.lock() else { return };
            if *stopped {
                return;
            }
            let Ok((stopped, _)) = cvar.wait_timeout(stopped, INTERVAL) else {
                return;
            };
            if *stopped {
                return;
            }
        }
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        }) {
            Ok((_, log, done)) => {
                metrics::gauge!("cairn_store_wal_frames").set(log as f64);
                metrics::gauge!("cairn_store_wal_frames_checkpointed").set(done as f64);
            }
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; will retry"),
        }
    }
}
