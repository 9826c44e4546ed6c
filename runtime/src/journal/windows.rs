//! Maintenance windows (as SSM maintenance windows): a schedule, a
//! duration and a cutoff, with tasks run by priority while it is open.

use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};
use serde::Serialize;

use super::{now_ms, Journal, JournalError};

/// A maintenance window.
#[derive(Debug, Clone, Serialize)]
pub struct WindowRecord {
    pub name: String,
    pub expression: String,
    pub timezone: String,
    pub duration_ms: i64,
    /// No task starts in the last `cutoff_ms` of the window.
    pub cutoff_ms: i64,
    /// At the end: `finish` (running tasks go on) or `cancel` (they are
    /// cancelled at a safe point).
    pub cutoff_behavior: String,
    pub created_by: String,
    pub created_at: i64,
    pub last_slot_at: Option<i64>,
}

/// A task registered to a window.
#[derive(Debug, Clone, Serialize)]
pub struct WindowTask {
    pub window: String,
    pub name: String,
    pub runbook: String,
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Lower runs first; equal priorities run in parallel.
    pub priority: i64,
    /// Who added or last changed the task: its executions are requested
    /// by them (None for a task of an older journal: the window's creator).
    #[serde(default)]
    pub created_by: Option<String>,
    #[serde(default)]
    pub created_by_uid: Option<u32>,
    /// The SHA-256 of the runbook's source when the task was added or last
    /// changed: a window runs only that code.
    #[serde(default)]
    pub runbook_sha256: Option<String>,
}

/// One opening of a window and what its tasks did.
#[derive(Debug, Clone, Serialize)]
pub struct WindowRun {
    pub window: String,
    pub slot_at: i64,
    pub ends_at: i64,
    /// `open` or `closed`.
    pub state: String,
}

/// What one task did in one opening.
#[derive(Debug, Clone, Serialize)]
pub struct WindowTaskRun {
    pub task: String,
    /// `started` or `skipped`.
    pub state: String,
    pub execution_id: Option<String>,
    pub reason: Option<String>,
}

fn window_from_row(r: &Row) -> rusqlite::Result<WindowRecord> {
    Ok(WindowRecord {
        name: r.get("name")?,
        expression: r.get("expression")?,
        timezone: r.get("timezone")?,
        duration_ms: r.get("duration_ms")?,
        cutoff_ms: r.get("cutoff_ms")?,
        cutoff_behavior: r.get("cutoff_behavior")?,
        created_by: r.get("created_by")?,
        created_at: r.get("created_at")?,
        last_slot_at: r.get("last_slot_at")?,
    })
}

impl Journal {
    /// Adds or redefines a window (its tasks and history stay).
    pub fn put_window(&mut self, w: &WindowRecord) -> Result<(), JournalError> {
        self.conn.execute(
            "INSERT INTO windows (name, expression, timezone, duration_ms, cutoff_ms, cutoff_behavior,
                created_by, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT(name) DO UPDATE SET expression = ?2, timezone = ?3, duration_ms = ?4,
                cutoff_ms = ?5, cutoff_behavior = ?6",
            params![
                w.name,
                w.expression,
                w.timezone,
                w.duration_ms,
                w.cutoff_ms,
                w.cutoff_behavior,
                w.created_by,
                w.created_at
            ],
        )?;
        Ok(())
    }

    pub fn windows(&self) -> Result<Vec<WindowRecord>, JournalError> {
        let mut stmt = self.conn.prepare("SELECT * FROM windows ORDER BY name")?;
        let rows = stmt
            .query_map([], window_from_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    pub fn window(&self, name: &str) -> Result<WindowRecord, JournalError> {
        self.conn
            .query_row(
                "SELECT * FROM windows WHERE name = ?1",
                [name],
                window_from_row,
            )
            .optional()?
            .ok_or_else(|| {
                JournalError::Conflict(format!(
                    "no maintenance window named {}; list them with `drydock windows`",
                    crate::display::sanitize(name)
                ))
            })
    }

    /// Removes a window and its tasks (runs stay in the history).
    pub fn remove_window(&mut self, name: &str) -> Result<(), JournalError> {
        self.window(name)?;
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM window_tasks WHERE window = ?1", [name])?;
        tx.execute("DELETE FROM windows WHERE name = ?1", [name])?;
        tx.commit()?;
        Ok(())
    }

    /// Registers (or replaces) a task of a window.
    pub fn put_window_task(&mut self, t: &WindowTask) -> Result<(), JournalError> {
        self.window(&t.window)?;
        self.conn.execute(
            "INSERT INTO window_tasks (window, name, runbook, params, priority, created_by, created_by_uid, runbook_sha256)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT(window, name) DO UPDATE SET runbook = ?3, params = ?4, priority = ?5,
                 created_by = ?6, created_by_uid = ?7, runbook_sha256 = ?8",
            params![
                t.window,
                t.name,
                t.runbook,
                serde_json::Value::Object(t.params.clone()).to_string(),
                t.priority,
                t.created_by,
                t.created_by_uid,
                t.runbook_sha256
            ],
        )?;
        Ok(())
    }

    /// A window's tasks, by priority then name.
    pub fn window_tasks(&self, window: &str) -> Result<Vec<WindowTask>, JournalError> {
        let mut stmt = self
            .conn
            .prepare("SELECT * FROM window_tasks WHERE window = ?1 ORDER BY priority, name")?;
        let rows = stmt
            .query_map([window], |r| {
                let params: String = r.get("params")?;
                Ok(WindowTask {
                    window: r.get("window")?,
                    name: r.get("name")?,
                    runbook: r.get("runbook")?,
                    params: serde_json::from_str(&params).unwrap_or_default(),
                    priority: r.get("priority")?,
                    created_by: r.get("created_by")?,
                    created_by_uid: r.get("created_by_uid")?,
                    runbook_sha256: r.get("runbook_sha256")?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Claims an opening of a window (once: false when it was claimed
    /// before); `state` is `open`, or `missed` for one that passed.
    pub fn claim_window_run(
        &mut self,
        window: &str,
        slot_at: i64,
        ends_at: i64,
        state: &str,
    ) -> Result<bool, JournalError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "INSERT OR IGNORE INTO window_runs (window, slot_at, ends_at, state, recorded_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![window, slot_at, ends_at, state, now_ms()],
        )?;
        tx.execute(
            "UPDATE windows SET last_slot_at = MAX(COALESCE(last_slot_at, 0), ?2) WHERE name = ?1",
            params![window, slot_at],
        )?;
        tx.commit()?;
        Ok(n == 1)
    }

    /// Openings still open.
    pub fn open_window_runs(&self) -> Result<Vec<WindowRun>, JournalError> {
        self.query_window_runs(
            "SELECT * FROM window_runs WHERE state = 'open' ORDER BY slot_at",
            [],
        )
    }

    /// The latest openings of a window, newest first.
    pub fn window_runs(&self, window: &str, limit: usize) -> Result<Vec<WindowRun>, JournalError> {
        self.query_window_runs(
            "SELECT * FROM window_runs WHERE window = ?1 ORDER BY slot_at DESC LIMIT ?2",
            params![window, limit as i64],
        )
    }

    fn query_window_runs<P: rusqlite::Params>(
        &self,
        sql: &str,
        p: P,
    ) -> Result<Vec<WindowRun>, JournalError> {
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt
            .query_map(p, |r| {
                Ok(WindowRun {
                    window: r.get("window")?,
                    slot_at: r.get("slot_at")?,
                    ends_at: r.get("ends_at")?,
                    state: r.get("state")?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Closes an opening.
    pub fn close_window_run(&mut self, window: &str, slot_at: i64) -> Result<(), JournalError> {
        self.conn.execute(
            "UPDATE window_runs SET state = 'closed' WHERE window = ?1 AND slot_at = ?2",
            params![window, slot_at],
        )?;
        Ok(())
    }

    /// Records what a task did in an opening (once per task).
    pub fn record_window_task(
        &mut self,
        window: &str,
        slot_at: i64,
        task: &str,
        state: &str,
        execution: Option<&str>,
        reason: Option<&str>,
    ) -> Result<bool, JournalError> {
        let n = self.conn.execute(
            "INSERT OR IGNORE INTO window_task_runs (window, slot_at, task, state, execution_id, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![window, slot_at, task, state, execution, reason],
        )?;
        Ok(n == 1)
    }

    /// A task that was to start but could not (its runbook changed since
    /// it was approved, its parameters no longer fit): recorded skipped,
    /// with the reason.
    pub fn set_window_task_skipped(
        &mut self,
        window: &str,
        slot_at: i64,
        task: &str,
        reason: &str,
    ) -> Result<(), JournalError> {
        self.conn.execute(
            "UPDATE window_task_runs SET state = 'skipped', reason = ?4
             WHERE window = ?1 AND slot_at = ?2 AND task = ?3",
            params![window, slot_at, task, reason],
        )?;
        Ok(())
    }

    /// Sets the execution a started task runs as.
    pub fn set_window_task_execution(
        &mut self,
        window: &str,
        slot_at: i64,
        task: &str,
        execution: &str,
    ) -> Result<(), JournalError> {
        self.conn.execute(
            "UPDATE window_task_runs SET execution_id = ?4 WHERE window = ?1 AND slot_at = ?2 AND task = ?3",
            params![window, slot_at, task, execution],
        )?;
        Ok(())
    }

    /// What the tasks of one opening did.
    pub fn window_task_runs(
        &self,
        window: &str,
        slot_at: i64,
    ) -> Result<Vec<WindowTaskRun>, JournalError> {
        let mut stmt = self.conn.prepare(
            "SELECT task, state, execution_id, reason FROM window_task_runs
             WHERE window = ?1 AND slot_at = ?2 ORDER BY task",
        )?;
        let rows = stmt
            .query_map(params![window, slot_at], |r| {
                Ok(WindowTaskRun {
                    task: r.get(0)?,
                    state: r.get(1)?,
                    execution_id: r.get(2)?,
                    reason: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}
