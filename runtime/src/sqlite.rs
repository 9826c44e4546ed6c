//! Opening a SQLite database that several drydock processes share: WAL
//! mode, a busy timeout, and schema set-up that survives many processes
//! opening a fresh file at the same moment.
//!
//! The busy timeout alone does not cover that moment: switching a new file
//! to WAL and a read that turns into a write can fail with "database is
//! locked" at once (SQLite does not wait where waiting could deadlock). So
//! the set-up is retried while the database is busy, and schema changes run
//! in an IMMEDIATE transaction, which takes the write lock up front (and
//! does wait).

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, TransactionBehavior};

/// How long a process waits for others before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked)
    )
}

/// Runs `f` until it does not fail with "busy", for up to [`BUSY_TIMEOUT`].
pub fn retry_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        match f() {
            Err(e) if is_busy(&e) && start.elapsed() < BUSY_TIMEOUT => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// Opens `path` in WAL mode with the given `synchronous` level, then runs
/// `setup` (schema creation, migrations) in an IMMEDIATE transaction.
pub fn open_shared(
    path: &Path,
    synchronous: &str,
    setup: impl Fn(&Connection) -> rusqlite::Result<()>,
) -> rusqlite::Result<Connection> {
    // SQLite creates its files 0644 & ~umask and gives the -wal and -shm
    // files the database file's mode: create it first with 0666 & ~umask,
    // so a sharing group (umask 007) can write it and others never read it.
    //
    // Only when it does not exist yet (O_EXCL): opening and closing an
    // existing database file here would drop every POSIX lock this process
    // holds on it (fcntl locks belong to the process, and any close of the
    // file releases them), including the SHARED lock each open WAL-mode
    // connection keeps. Another process closing its connection then
    // believes it is the last one, checkpoints and deletes the -wal and
    // -shm files, and this process's connections go on with the deleted
    // wal-index while others use new files: stale reads, a serve that
    // never sees a new schedule, "database disk image is malformed".
    {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .mode(0o666)
            .open(path);
    }
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    retry_busy(|| conn.pragma_update(None, "journal_mode", "WAL"))?;
    conn.pragma_update(None, "synchronous", synchronous)?;
    retry_busy(|| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        setup(&tx)?;
        tx.commit()
    })?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_threads_open_a_fresh_database_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.sqlite3");
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let conn = open_shared(&path, "FULL", |c| {
                        c.execute_batch(
                            "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, who INTEGER);",
                        )
                    })
                    .unwrap();
                    retry_busy(|| conn.execute("INSERT INTO t (who) VALUES (?1)", [i])).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let conn = Connection::open(&path).unwrap();
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 16);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn other_errors_are_not_retried() {
        let mut calls = 0;
        let r: rusqlite::Result<()> = retry_busy(|| {
            calls += 1;
            Err(rusqlite::Error::InvalidQuery)
        });
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }
}
