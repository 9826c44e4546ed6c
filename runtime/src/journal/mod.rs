//! The execution journal: every execution, step, attempt, approval and
//! decision, in SQLite under the data directory.
//!
//! Each write is its own transaction, so a runner killed at any point
//! leaves a journal that `resume` can replay. Several drydock processes
//! share the file (WAL mode, busy timeout).

mod approvals;
mod calendars;
mod executions;
mod parameters;
mod repl;
pub mod rules;
mod schedules;
mod steps;
pub mod stream;
mod tokens;
mod windows;

use std::path::{Path, PathBuf};

use rusqlite::Connection;

pub use approvals::{ApprovalRecord, ApprovalState, Decision, DecisionOutcome, NewApproval};
pub use calendars::{CalendarEvent, CalendarRecord};
pub use executions::{ExecutionFilter, ExecutionRecord, NewExecution};
pub use parameters::{check_name as check_parameter_name, ParameterRecord, Selector};
pub use repl::{ReplEntryRecord, ReplSessionRecord};
pub use schedules::{MissedPolicy, ScheduleRecord, SlotRecord};
pub use steps::{AttemptRecord, EventRecord, StepKind, StepRecord};
pub use tokens::{TokenAuth, TokenRecord, TokenScope, TOKEN_LIFETIME_DEFAULT, TOKEN_LIFETIME_MAX};
pub use windows::{WindowRecord, WindowRun, WindowTask, WindowTaskRun};

/// Errors from the journal, named for what failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot open the journal at {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("journal database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("no execution matches `{0}`; list them with `drydock executions`")]
    UnknownExecution(String),
    #[error("`{prefix}` matches several executions ({matches}); give more characters")]
    AmbiguousExecution { prefix: String, matches: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Fenced(String),
}

/// How hard each journal write is pushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync on every commit: survives power loss.
    Full,
    /// WAL without fsync per commit: survives a killed process, not power loss.
    Normal,
}

/// An open journal.
pub struct Journal {
    conn: Connection,
    path: PathBuf,
    /// Secrets masked out of every text this handle writes.
    masker: Option<crate::secrets::Secrets>,
    /// The execution and claim this handle writes for: a write after
    /// another runner claimed the execution is refused.
    fence: Option<(String, i64)>,
}

const SCHEMA_VERSION: i64 = 15;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS executions (
    id               TEXT PRIMARY KEY,
    runbook          TEXT NOT NULL,
    origin           TEXT NOT NULL,
    source_sha256    TEXT NOT NULL,
    params           TEXT NOT NULL,
    state            TEXT NOT NULL,
    parent_id        TEXT,
    parent_step      TEXT,
    auto_approve     INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    runner_pid       INTEGER,
    runner_token     TEXT,
    output           TEXT,
    error            TEXT,
    requested_by     TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    ended_at         INTEGER,
    requester_uid    INTEGER,
    auto_approve_by  TEXT,
    region           TEXT,
    profile          TEXT,
    runner_epoch     INTEGER NOT NULL DEFAULT 0,
    gate             TEXT,
    fleet            TEXT,
    run_by           TEXT,
    runbook_owner    TEXT,
    gate_approvers   TEXT
);
CREATE INDEX IF NOT EXISTS executions_by_state ON executions(state);
CREATE TABLE IF NOT EXISTS steps (
    execution_id     TEXT NOT NULL,
    path             TEXT NOT NULL,
    seq              INTEGER NOT NULL,
    name             TEXT NOT NULL,
    kind             TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    output           TEXT,
    error            TEXT,
    child_execution  TEXT,
    started_at       INTEGER NOT NULL,
    ended_at         INTEGER,
    PRIMARY KEY (execution_id, path)
);
CREATE TABLE IF NOT EXISTS attempts (
    execution_id     TEXT NOT NULL,
    path             TEXT NOT NULL,
    attempt          INTEGER NOT NULL,
    started_at       INTEGER NOT NULL,
    ended_at         INTEGER,
    error            TEXT,
    PRIMARY KEY (execution_id, path, attempt)
);
CREATE TABLE IF NOT EXISTS approvals (
    execution_id     TEXT NOT NULL,
    path             TEXT NOT NULL,
    message          TEXT NOT NULL,
    approvers        TEXT NOT NULL,
    min_approvals    INTEGER NOT NULL,
    deadline_at      INTEGER NOT NULL,
    state            TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    resolved_at      INTEGER,
    source_sha256    TEXT NOT NULL DEFAULT '',
    allow_self       INTEGER NOT NULL DEFAULT 0,
    auto_allowed     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (execution_id, path)
);
CREATE TABLE IF NOT EXISTS decisions (
    execution_id     TEXT NOT NULL,
    path             TEXT NOT NULL,
    approver         TEXT NOT NULL,
    approve          INTEGER NOT NULL,
    comment          TEXT NOT NULL,
    auto             INTEGER NOT NULL,
    decided_at       INTEGER NOT NULL,
    approver_uid     INTEGER,
    PRIMARY KEY (execution_id, path, approver)
);
CREATE TABLE IF NOT EXISTS events (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id     TEXT NOT NULL,
    at               INTEGER NOT NULL,
    kind             TEXT NOT NULL,
    message          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_execution ON events(execution_id);
CREATE TABLE IF NOT EXISTS event_stream (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    at               INTEGER NOT NULL,
    kind             TEXT NOT NULL,
    instance         TEXT,
    execution        TEXT,
    region           TEXT,
    detail           TEXT NOT NULL,
    data             TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS event_stream_by_instance ON event_stream(instance);
CREATE INDEX IF NOT EXISTS event_stream_by_time ON event_stream(at);
CREATE TABLE IF NOT EXISTS stream_sources (
    source           TEXT PRIMARY KEY,
    seq              INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rules (
    name             TEXT PRIMARY KEY,
    event_type       TEXT NOT NULL,
    matches          TEXT NOT NULL,
    console_pattern  TEXT,
    runbook          TEXT NOT NULL,
    params           TEXT NOT NULL,
    approvers        TEXT NOT NULL,
    max_per_hour     INTEGER NOT NULL,
    created_by       TEXT NOT NULL,
    created_by_uid   INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    starts_after     INTEGER NOT NULL,
    webhook          TEXT,
    webhook_secret   TEXT,
    webhook_private  INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS rule_firings (
    rule             TEXT NOT NULL,
    event_seq        INTEGER NOT NULL,
    at               INTEGER NOT NULL,
    outcome          TEXT NOT NULL,
    execution_id     TEXT,
    PRIMARY KEY (rule, event_seq)
);
CREATE TABLE IF NOT EXISTS rules_cursor (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    seq              INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS console_watch (
    instance         TEXT NOT NULL,
    boot             INTEGER NOT NULL,
    offset           INTEGER NOT NULL,
    fired            TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (instance, boot)
);
CREATE TABLE IF NOT EXISTS parameters (
    name             TEXT NOT NULL,
    version          INTEGER NOT NULL,
    secure           INTEGER NOT NULL,
    value            TEXT NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    labels           TEXT NOT NULL DEFAULT '[]',
    created_by       TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    deleted          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS schedules (
    name             TEXT PRIMARY KEY,
    runbook          TEXT NOT NULL,
    expression       TEXT NOT NULL,
    timezone         TEXT NOT NULL,
    params           TEXT NOT NULL,
    start_at         INTEGER,
    end_at           INTEGER,
    paused           INTEGER NOT NULL DEFAULT 0,
    missed           TEXT NOT NULL,
    max_lateness_ms  INTEGER NOT NULL,
    calendar         TEXT,
    created_by       TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    source           TEXT NOT NULL,
    last_slot_at     INTEGER,
    fleet            TEXT,
    runbook_sha256   TEXT,
    created_by_uid   INTEGER
);
CREATE TABLE IF NOT EXISTS schedule_slots (
    schedule         TEXT NOT NULL,
    slot_at          INTEGER NOT NULL,
    state            TEXT NOT NULL,
    execution_id     TEXT,
    reason           TEXT,
    recorded_at      INTEGER NOT NULL,
    PRIMARY KEY (schedule, slot_at)
);
CREATE TABLE IF NOT EXISTS calendars (
    name             TEXT PRIMARY KEY,
    default_state    TEXT NOT NULL,
    on_closed        TEXT NOT NULL,
    created_by       TEXT NOT NULL,
    created_at       INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS calendar_events (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    calendar         TEXT NOT NULL,
    starts_at        INTEGER NOT NULL,
    ends_at          INTEGER NOT NULL,
    summary          TEXT NOT NULL,
    created_at       INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS windows (
    name             TEXT PRIMARY KEY,
    expression       TEXT NOT NULL,
    timezone         TEXT NOT NULL,
    duration_ms      INTEGER NOT NULL,
    cutoff_ms        INTEGER NOT NULL,
    cutoff_behavior  TEXT NOT NULL,
    created_by       TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    last_slot_at     INTEGER
);
CREATE TABLE IF NOT EXISTS window_tasks (
    window           TEXT NOT NULL,
    name             TEXT NOT NULL,
    runbook          TEXT NOT NULL,
    params           TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    created_by       TEXT,
    created_by_uid   INTEGER,
    runbook_sha256   TEXT,
    PRIMARY KEY (window, name)
);
CREATE TABLE IF NOT EXISTS window_runs (
    window           TEXT NOT NULL,
    slot_at          INTEGER NOT NULL,
    ends_at          INTEGER NOT NULL,
    state            TEXT NOT NULL,
    recorded_at      INTEGER NOT NULL,
    PRIMARY KEY (window, slot_at)
);
CREATE TABLE IF NOT EXISTS window_task_runs (
    window           TEXT NOT NULL,
    slot_at          INTEGER NOT NULL,
    task             TEXT NOT NULL,
    state            TEXT NOT NULL,
    execution_id     TEXT,
    reason           TEXT,
    PRIMARY KEY (window, slot_at, task)
);
CREATE TABLE IF NOT EXISTS tokens (
    id               TEXT PRIMARY KEY,
    digest           TEXT NOT NULL UNIQUE,
    account          TEXT NOT NULL,
    uid              INTEGER NOT NULL,
    label            TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER,
    last_used_at     INTEGER,
    scope            TEXT NOT NULL DEFAULT 'read'
);
CREATE TABLE IF NOT EXISTS repl_sessions (
    id               TEXT PRIMARY KEY,
    started_by       TEXT NOT NULL,
    region           TEXT NOT NULL,
    profile          TEXT NOT NULL,
    started_at       INTEGER NOT NULL,
    ended_at         INTEGER
);
CREATE TABLE IF NOT EXISTS repl_entries (
    session_id       TEXT NOT NULL,
    seq              INTEGER NOT NULL,
    at               INTEGER NOT NULL,
    input            TEXT NOT NULL,
    ok               INTEGER NOT NULL,
    output           TEXT,
    error            TEXT,
    duration_ms      INTEGER NOT NULL,
    PRIMARY KEY (session_id, seq)
);
"#;

/// Columns added by schema 2 to a journal created by schema 1.
const MIGRATE_1_TO_2: &str = r#"
ALTER TABLE executions ADD COLUMN requester_uid INTEGER;
ALTER TABLE executions ADD COLUMN auto_approve_by TEXT;
ALTER TABLE approvals ADD COLUMN source_sha256 TEXT NOT NULL DEFAULT '';
ALTER TABLE approvals ADD COLUMN allow_self INTEGER NOT NULL DEFAULT 0;
ALTER TABLE approvals ADD COLUMN auto_allowed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE decisions ADD COLUMN approver_uid INTEGER;
"#;

/// Columns added by schema 3: where an execution acts.
const MIGRATE_2_TO_3: &str = r#"
ALTER TABLE executions ADD COLUMN region TEXT;
ALTER TABLE executions ADD COLUMN profile TEXT;
ALTER TABLE executions ADD COLUMN runner_epoch INTEGER NOT NULL DEFAULT 0;
"#;

impl Journal {
    /// Opens (creating if needed) the journal in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, JournalError> {
        Self::open_with(data_dir, Durability::Full)
    }

    /// Opens the journal with an explicit durability level.
    pub fn open_with(data_dir: &Path, durability: Durability) -> Result<Self, JournalError> {
        std::fs::create_dir_all(data_dir).map_err(|source| JournalError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join("journal.sqlite3");
        let sync = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        // The schema version another process wrote, if newer than ours.
        let newer = std::cell::Cell::new(None);
        let conn = crate::sqlite::open_shared(&path, sync, |c| {
            let version: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if version < SCHEMA_VERSION {
                if version == 1 {
                    c.execute_batch(MIGRATE_1_TO_2)?;
                }
                if (1..=2).contains(&version) {
                    c.execute_batch(MIGRATE_2_TO_3)?;
                }
                if (1..=5).contains(&version) {
                    c.execute_batch("ALTER TABLE executions ADD COLUMN gate TEXT;")?;
                }
                if (1..=8).contains(&version) {
                    c.execute_batch("ALTER TABLE executions ADD COLUMN fleet TEXT;")?;
                }
                // Schedules exist from schema 5 on; older journals get the
                // table, with the column, from the schema below.
                if (5..=9).contains(&version) {
                    c.execute_batch("ALTER TABLE schedules ADD COLUMN fleet TEXT;")?;
                }
                // Schema 11: who runs an execution besides who asked for it,
                // the runbook file's owner; a schedule's pinned runbook.
                if (1..=10).contains(&version) {
                    c.execute_batch(
                        "ALTER TABLE executions ADD COLUMN run_by TEXT;
                         ALTER TABLE executions ADD COLUMN runbook_owner TEXT;",
                    )?;
                }
                if (5..=10).contains(&version) {
                    c.execute_batch(
                        "ALTER TABLE schedules ADD COLUMN runbook_sha256 TEXT;
                         ALTER TABLE schedules ADD COLUMN created_by_uid INTEGER;",
                    )?;
                }
                // Schema 12: tokens expire and record their last use. Tokens
                // of an older drydock (which never expired) get the default
                // lifetime from the upgrade on, not a lockout.
                if (8..=11).contains(&version) {
                    c.execute_batch(
                        "ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
                         ALTER TABLE tokens ADD COLUMN last_used_at INTEGER;",
                    )?;
                    c.execute(
                        "UPDATE tokens SET expires_at = ?1 WHERE expires_at IS NULL",
                        [now_ms() + tokens::TOKEN_LIFETIME_DEFAULT.as_millis() as i64],
                    )?;
                }
                // Schema 12: a window task's executions are requested by
                // whoever added or last changed it (windows from schema 7).
                if (7..=11).contains(&version) {
                    c.execute_batch(
                        "ALTER TABLE window_tasks ADD COLUMN created_by TEXT;
                         ALTER TABLE window_tasks ADD COLUMN created_by_uid INTEGER;
                         ALTER TABLE window_tasks ADD COLUMN runbook_sha256 TEXT;",
                    )?;
                }
                // Schema 13: who approves an execution's gate (an event
                // rule's approvers).
                if (1..=12).contains(&version) {
                    c.execute_batch("ALTER TABLE executions ADD COLUMN gate_approvers TEXT;")?;
                }
                // Schema 14: the event stream's sources (outboxes of other
                // databases) and time index — tables, made by SCHEMA below.
                // Schema 15: tokens have a scope. Tokens made before could
                // read and approve, and keep exactly that (`approve`), not
                // more. Keyed on the column, not the version number, so
                // the step holds wherever it lands in the numbering.
                if version >= 8 && !has_column(c, "tokens", "scope")? {
                    c.execute_batch(
                        "ALTER TABLE tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'read';
                         UPDATE tokens SET scope = 'approve';",
                    )?;
                }
                c.execute_batch(SCHEMA)?;
                c.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            } else if version > SCHEMA_VERSION {
                newer.set(Some(version));
            }
            Ok(())
        })
        .map_err(|source| JournalError::Open {
            path: path.clone(),
            source,
        })?;
        if let Some(version) = newer.get() {
            return Err(JournalError::Conflict(format!(
                "the journal at {} was written by a newer drydock (schema {version}, this one knows {SCHEMA_VERSION}); upgrade drydock",
                path.display()
            )));
        }
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(Self {
            conn,
            path,
            masker: None,
            fence: None,
        })
    }

    /// Makes every write of this handle for `execution` conditional on
    /// the execution still being claimed with `epoch` (a fencing token).
    pub fn set_fence(&mut self, execution: &str, epoch: i64) {
        self.fence = Some((execution.to_string(), epoch));
    }

    /// Refuses the write when another runner has claimed `execution`
    /// since this handle's claim.
    fn check_fence(
        conn: &Connection,
        fence: &Option<(String, i64)>,
        execution: &str,
    ) -> Result<(), JournalError> {
        let Some((id, epoch)) = fence else {
            return Ok(());
        };
        if id != execution {
            return Ok(());
        }
        let now: i64 = conn.query_row(
            "SELECT runner_epoch FROM executions WHERE id = ?1",
            [id],
            |r| r.get(0),
        )?;
        if now != *epoch {
            return Err(JournalError::Fenced(format!(
                "execution {id} was claimed by another runner (claim {now}, this runner holds claim {epoch}); this runner stops without writing"
            )));
        }
        Ok(())
    }

    fn fenced(&self, execution: &str) -> Result<(), JournalError> {
        Self::check_fence(&self.conn, &self.fence, execution)
    }

    /// Masks these secrets out of every output, error, message and event
    /// written through this handle from now on.
    pub fn set_masker(&mut self, secrets: crate::secrets::Secrets) {
        self.masker = Some(secrets);
    }

    fn masked<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        match &self.masker {
            Some(m) if m.contains_secret(text) => std::borrow::Cow::Owned(m.mask(text)),
            _ => std::borrow::Cow::Borrowed(text),
        }
    }

    fn masked_json(&self, value: &serde_json::Value) -> String {
        match &self.masker {
            Some(m) => m.mask_json(value).to_string(),
            None => value.to_string(),
        }
    }

    /// Changes whenever another connection commits (SQLite's
    /// `data_version`): a cheap way to know cached reads are stale.
    pub fn data_version(&self) -> Result<i64, JournalError> {
        Ok(self
            .conn
            .pragma_query_value(None, "data_version", |r| r.get(0))?)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

pub use crate::ids::now_ms;

/// Whether `table` has a column `column` (for migrations).
fn has_column(c: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    let mut stmt = c.prepare(&format!("PRAGMA table_info({table})"))?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(names.iter().any(|n| n == column))
}

fn json_or_null(text: Option<String>) -> serde_json::Value {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema drydock wrote before identities and the parameter store.
    const SCHEMA_V1: &str = r#"
    CREATE TABLE IF NOT EXISTS executions (
        id               TEXT PRIMARY KEY,
        runbook          TEXT NOT NULL,
        origin           TEXT NOT NULL,
        source_sha256    TEXT NOT NULL,
        params           TEXT NOT NULL,
        state            TEXT NOT NULL,
        parent_id        TEXT,
        parent_step      TEXT,
        auto_approve     INTEGER NOT NULL DEFAULT 0,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        runner_pid       INTEGER,
        runner_token     TEXT,
        output           TEXT,
        error            TEXT,
        requested_by     TEXT NOT NULL,
        created_at       INTEGER NOT NULL,
        started_at       INTEGER,
        ended_at         INTEGER
    );
    CREATE INDEX IF NOT EXISTS executions_by_state ON executions(state);
    CREATE TABLE IF NOT EXISTS steps (
        execution_id     TEXT NOT NULL,
        path             TEXT NOT NULL,
        seq              INTEGER NOT NULL,
        name             TEXT NOT NULL,
        kind             TEXT NOT NULL,
        state            TEXT NOT NULL,
        attempts         INTEGER NOT NULL DEFAULT 0,
        output           TEXT,
        error            TEXT,
        child_execution  TEXT,
        started_at       INTEGER NOT NULL,
        ended_at         INTEGER,
        PRIMARY KEY (execution_id, path)
    );
    CREATE TABLE IF NOT EXISTS attempts (
        execution_id     TEXT NOT NULL,
        path             TEXT NOT NULL,
        attempt          INTEGER NOT NULL,
        started_at       INTEGER NOT NULL,
        ended_at         INTEGER,
        error            TEXT,
        PRIMARY KEY (execution_id, path, attempt)
    );
    CREATE TABLE IF NOT EXISTS approvals (
        execution_id     TEXT NOT NULL,
        path             TEXT NOT NULL,
        message          TEXT NOT NULL,
        approvers        TEXT NOT NULL,
        min_approvals    INTEGER NOT NULL,
        deadline_at      INTEGER NOT NULL,
        state            TEXT NOT NULL,
        created_at       INTEGER NOT NULL,
        resolved_at      INTEGER,
        PRIMARY KEY (execution_id, path)
    );
    CREATE TABLE IF NOT EXISTS decisions (
        execution_id     TEXT NOT NULL,
        path             TEXT NOT NULL,
        approver         TEXT NOT NULL,
        approve          INTEGER NOT NULL,
        comment          TEXT NOT NULL,
        auto             INTEGER NOT NULL,
        decided_at       INTEGER NOT NULL,
        PRIMARY KEY (execution_id, path, approver)
    );
    CREATE TABLE IF NOT EXISTS events (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        execution_id     TEXT NOT NULL,
        at               INTEGER NOT NULL,
        kind             TEXT NOT NULL,
        message          TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS events_by_execution ON events(execution_id);
    "#;

    #[test]
    fn a_schema_1_journal_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = Connection::open(dir.path().join("journal.sqlite3")).unwrap();
            c.execute_batch(SCHEMA_V1).unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
            c.execute(
                "INSERT INTO executions (id, runbook, origin, source_sha256, params, state,
                    requested_by, created_at) VALUES ('ex-old', 'rb', 'o', 's', '{}', 'Success', 'alice', 1)",
                [],
            )
            .unwrap();
        }
        let mut j = Journal::open(dir.path()).unwrap();
        let old = j.execution("ex-old").unwrap();
        assert_eq!(old.requested_by, "alice");
        assert_eq!(old.requester_uid, None);
        j.put_parameter("p", "v", false, "", "root").unwrap();
        let version: i64 = j
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        drop(j);
        // Opening again is a no-op.
        Journal::open(dir.path()).unwrap();
    }

    #[test]
    fn tokens_of_a_schema_11_journal_get_an_expiry() {
        let dir = tempfile::tempdir().unwrap();
        // A schema 11 journal: today's, without the columns of 12 and 13.
        drop(Journal::open(dir.path()).unwrap());
        {
            let c = Connection::open(dir.path().join("journal.sqlite3")).unwrap();
            c.execute_batch(
                "INSERT INTO tokens (id, digest, account, uid, label, created_at)
                    VALUES ('tok-old', 'd', 'alice', 1001, '', 1);
                 ALTER TABLE tokens DROP COLUMN expires_at;
                 ALTER TABLE tokens DROP COLUMN last_used_at;
                 ALTER TABLE tokens DROP COLUMN scope;
                 ALTER TABLE window_tasks DROP COLUMN created_by;
                 ALTER TABLE window_tasks DROP COLUMN created_by_uid;
                 ALTER TABLE window_tasks DROP COLUMN runbook_sha256;
                 ALTER TABLE executions DROP COLUMN gate_approvers;",
            )
            .unwrap();
            c.pragma_update(None, "user_version", 11).unwrap();
        }
        let j = Journal::open(dir.path()).unwrap();
        let t = &j.tokens(None).unwrap()[0];
        let days = (t.expires_at.unwrap() - now_ms()) / 86_400_000;
        assert!((89..=90).contains(&days), "{t:?}");
        assert!(!t.expired && t.last_used_at.is_none());
        assert_eq!(t.scope, TokenScope::Approve);
    }

    #[test]
    fn tokens_of_a_schema_13_journal_keep_read_and_approve_and_no_more() {
        let dir = tempfile::tempdir().unwrap();
        drop(Journal::open(dir.path()).unwrap());
        {
            // A schema 13 journal: tokens without a scope.
            let c = Connection::open(dir.path().join("journal.sqlite3")).unwrap();
            c.execute_batch(&format!(
                "INSERT INTO tokens (id, digest, account, uid, label, created_at, expires_at)
                    VALUES ('tok-old', 'd', 'alice', 1001, '', 1, {});
                 ALTER TABLE tokens DROP COLUMN scope;",
                now_ms() + 86_400_000
            ))
            .unwrap();
            c.pragma_update(None, "user_version", 13).unwrap();
        }
        let mut j = Journal::open(dir.path()).unwrap();
        let old = &j.tokens(None).unwrap()[0];
        assert_eq!(old.scope, TokenScope::Approve);
        assert!(old.scope.allows(TokenScope::Approve) && !old.scope.allows(TokenScope::Run));
        // New tokens get the scope they are made with.
        j.create_token("bob", 1002, "", TOKEN_LIFETIME_DEFAULT, TokenScope::Read)
            .unwrap();
        assert_eq!(j.tokens(Some("bob")).unwrap()[0].scope, TokenScope::Read);
        let version: i64 = j
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        drop(j);
        // Opening again changes nothing.
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(
            j.tokens(Some("alice")).unwrap()[0].scope,
            TokenScope::Approve
        );
    }
}
