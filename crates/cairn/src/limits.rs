//! Process limits the server sets for itself at start.
//!
//! Every connection is a file descriptor, and a soft open-files limit of
//! 1024 (a common default for login shells and containers) is reached long
//! before the concurrency limit sheds: past it, `accept` fails with
//! `EMFILE`, axum's server logs an error and pauses accepting for a
//! second, and clients wait instead of getting a 503. So `serve` raises the
//! soft limit to the hard one, as Go's runtime and most servers do.

/// The most the soft limit is raised to when the hard one is unlimited
/// (Linux's default `fs.nr_open`).
const UNLIMITED_CAP: u64 = 1 << 20;

/// What [`raise_open_files`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raised {
    /// From the first soft limit to the second.
    To(u64, u64),
    /// The soft limit already was the hard one.
    Already(u64),
}

/// Raise the soft open-files limit to the hard limit (capped at 2^20 when
/// unlimited). The error says why it could not.
#[cfg(unix)]
pub fn raise_open_files() -> Result<Raised, String> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(UNLIMITED_CAP);
    let soft = limit.current.unwrap_or(UNLIMITED_CAP);
    if soft >= hard {
        return Ok(Raised::Already(soft));
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard),
            maximum: limit.maximum,
        },
    )
    .map_err(|e| format!("raising the open-files limit from {soft} to {hard}: {e}"))?;
    Ok(Raised::To(soft, hard))
}

/// Elsewhere the limit is left as it is.
#[cfg(not(unix))]
pub fn raise_open_files() -> Result<Raised, String> {
    Err("not raised on this platform".into())
}
