//! WAL checkpoints run here, on their own connection and thread, so the
//! writer never stalls copying pages into the database file.
//!
//! PASSIVE checkpoints never block anyone, but under a steady stream of
//! writes they always trail the writer, and SQLite only starts the WAL over
//! once every frame has been copied back. So when the WAL has grown past a
//! threshold, the checkpointer asks the writer (through `restart_wanted`) to
//! run a RESTART checkpoint between two batches: with no lock to contend
//! for, it only copies the frames written since the last PASSIVE one, and
//! the writer's next commit starts the WAL from the beginning. (A RESTART
//! from this thread would starve: the writer retakes the write lock as soon
//! as it lets go of it.) The WAL stays bounded.

use rusqlite::Connection;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// When and how hard to checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointPolicy {
    pub interval: Duration,
    /// WAL frames (pages) beyond which a RESTART checkpoint follows.
    pub restart_frames: i64,
}

pub struct Checkpointer {
    pub restart_wanted: Arc<AtomicBool>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    alive: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    pub fn start(path: &Path, policy: CheckpointPolicy) -> std::io::Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let alive = Arc::new(AtomicBool::new(true));
        let restart_wanted = Arc::new(AtomicBool::new(false));
        let path = path.to_owned();
        let (stop2, alive2, wanted2) = (stop.clone(), alive.clone(), restart_wanted.clone());
        let thread = std::thread::Builder::new()
            .name("cairn-sqlite-checkpoint".into())
            .spawn(move || {
                run(&path, &stop2, policy, &wanted2);
                alive2.store(false, Ordering::Release);
            })?;
        Ok(Self {
            restart_wanted,
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

pub fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<(i64, i64, i64)> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
}

fn run(
    path: &Path,
    stop: &(Mutex<bool>, Condvar),
    policy: CheckpointPolicy,
    restart_wanted: &AtomicBool,
) {
    let conn = match Connection::open(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "checkpointer cannot open the database; WAL checkpoints stop");
            return;
        }
    };
    if let Err(e) = conn.busy_timeout(Duration::from_secs(2)) {
        tracing::warn!(error = %e, "checkpointer busy timeout");
    }
    let (lock, cvar) = stop;
    loop {
        {
            let Ok(stopped) = lock.lock() else { return };
            if *stopped {
                return;
            }
            let Ok((stopped, _)) = cvar.wait_timeout(stopped, policy.interval) else {
                return;
            };
            if *stopped {
                return;
            }
        }
        let result = checkpoint(&conn, "PASSIVE");
        if let Ok((_, log, _)) = result
            && log > policy.restart_frames
        {
            restart_wanted.store(true, Ordering::Release);
        }
        match result {
            Ok((busy, log, done)) => {
                if busy != 0 {
                    tracing::debug!(log, done, "WAL checkpoint could not finish; will retry");
                }
                metrics::gauge!("cairn_store_wal_frames").set(log as f64);
                metrics::gauge!("cairn_store_wal_frames_checkpointed").set(done as f64);
            }
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; will retry"),
        }
    }
}
