//! A small pool of read-only connections. WAL mode lets readers run beside
//! the writer; each read runs on the blocking thread pool.

use crate::{StoreError, StoreResult};
use rusqlite::{Connection, OpenFlags};
use std::path::PathBuf;
use std::sync::Mutex;
use tokio::sync::Semaphore;

pub struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
    size: usize,
}

impl ReaderPool {
    pub fn new(path: PathBuf, size: usize) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Semaphore::new(size.max(1)),
            size: size.max(1),
        }
    }

    /// (most readers, idle connections, reads running).
    pub fn stats(&self) -> (usize, usize, usize) {
        let idle = self.idle.lock().map(|v| v.len()).unwrap_or(0);
        let running = self.size.saturating_sub(self.permits.available_permits());
        (self.size, idle, running)
    }

    pub fn open(path: &PathBuf) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // No mmap: each mapping would count the database file again in the
        // process's RSS; the OS page cache serves reads just as well.
        conn.execute_batch(
            "PRAGMA query_only = ON; PRAGMA cache_size = -8192; PRAGMA mmap_size = 0;",
        )?;
        Ok(conn)
    }

    /// Run `f` on an idle connection (opening one if none is idle).
    pub async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("reader pool closed".into()))?;
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        let path = self.path.clone();
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let conn = match idle {
                Some(c) => c,
                None => match Self::open(&path) {
                    Ok(c) => c,
                    Err(e) => {
                        return (
                            None,
                            Err(StoreError::Internal(format!(
                                "opening a read connection: {e}"
                            ))),
                        );
                    }
                },
            };
            let result = f(&conn);
            (Some(conn), result)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("read task failed: {e}")))?;
        if let Some(conn) = conn
            && let Ok(mut idle) = self.idle.lock()
        {
            idle.push(conn);
        }
        result
    }

    /// Drop every idle connection and refuse new reads.
    pub fn close(&self) {
        self.permits.close();
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }
}
