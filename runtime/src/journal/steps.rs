//! Step rows, their attempts, and the event log of an execution.

use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

use super::{json_or_null, now_ms, Journal, JournalError};
use crate::state::StepState;

/// What kind of journaled call a step row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Step,
    Approval,
    Runbook,
    Cleanup,
    Compensation,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Step => "step",
            Self::Approval => "approval",
            Self::Runbook => "runbook",
            Self::Cleanup => "cleanup",
            Self::Compensation => "compensation",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "approval" => Self::Approval,
            "runbook" => Self::Runbook,
            "cleanup" => Self::Cleanup,
            "compensation" => Self::Compensation,
            _ => Self::Step,
        }
    }
}

/// One step as stored.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    pub path: String,
    pub name: String,
    pub kind: StepKind,
    pub state: StepState,
    pub attempts: u32,
    pub output: serde_json::Value,
    pub error: Option<String>,
    pub child_execution: Option<String>,
    pub started_at: i64,
    pub ended_at: Option<i64>,
}

impl StepRecord {
    fn from_row(row: &Row) -> rusqlite::Result<Self> {
        let kind: String = row.get("kind")?;
        let state: String = row.get("state")?;
        Ok(Self {
            path: row.get("path")?,
            name: row.get("name")?,
            kind: StepKind::parse(&kind),
            state: StepState::parse(&state),
            attempts: row.get("attempts")?,
            output: json_or_null(row.get("output")?),
            error: row.get("error")?,
            child_execution: row.get("child_execution")?,
            started_at: row.get("started_at")?,
            ended_at: row.get("ended_at")?,
        })
    }
}

/// One attempt of a step.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord {
    pub path: String,
    pub attempt: u32,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub error: Option<String>,
}

/// A line the runbook printed or the runtime noted.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    pub at: i64,
    pub kind: String,
    pub message: String,
}

impl Journal {
    /// Steps of an execution in the order they were first reached.
    pub fn steps(&self, execution: &str) -> Result<Vec<StepRecord>, JournalError> {
        let mut stmt = self
            .conn
            .prepare("SELECT * FROM steps WHERE execution_id = ?1 ORDER BY seq")?;
        let rows = stmt.query_map([execution], StepRecord::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Starts attempt `attempt` of a step, creating or reopening its row.
    /// One transaction.
    pub fn start_attempt(
        &mut self,
        execution: &str,
        path: &str,
        name: &str,
        kind: StepKind,
        attempt: u32,
    ) -> Result<(), JournalError> {
        let now = now_ms();
        self.fenced(execution)?;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO steps (execution_id, path, seq, name, kind, state, attempts, started_at)
             VALUES (?1, ?2, (SELECT COALESCE(MAX(seq), 0) + 1 FROM steps WHERE execution_id = ?1),
                     ?3, ?4, 'running', ?5, ?6)
             ON CONFLICT (execution_id, path) DO UPDATE SET
                 name = excluded.name, kind = excluded.kind, state = 'running',
                 attempts = excluded.attempts, output = NULL, error = NULL, ended_at = NULL,
                 started_at = CASE WHEN excluded.attempts = 1 THEN excluded.started_at ELSE started_at END",
            params![execution, path, name, kind.as_str(), attempt, now],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO attempts (execution_id, path, attempt, started_at) VALUES (?1, ?2, ?3, ?4)",
            params![execution, path, attempt, now],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Ends an attempt; when `step_end` is given the step ends too, in the
    /// same transaction.
    pub fn finish_attempt(
        &mut self,
        execution: &str,
        path: &str,
        attempt: u32,
        attempt_error: Option<&str>,
        step_end: Option<(StepState, &serde_json::Value, Option<&str>)>,
    ) -> Result<(), JournalError> {
        let now = now_ms();
        let attempt_error = attempt_error.map(|e| self.masked(e).into_owned());
        let step_end = step_end.map(|(state, output, error)| {
            (
                state,
                self.masked_json(output),
                error.map(|e| self.masked(e).into_owned()),
            )
        });
        self.fenced(execution)?;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE attempts SET ended_at = ?4, error = ?5 WHERE execution_id = ?1 AND path = ?2 AND attempt = ?3",
            params![execution, path, attempt, now, attempt_error],
        )?;
        if let Some((state, output, error)) = step_end {
            tx.execute(
                "UPDATE steps SET state = ?3, output = ?4, error = ?5, ended_at = ?6
                 WHERE execution_id = ?1 AND path = ?2",
                params![execution, path, state.as_str(), output, error, now],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Links a step to the child execution it started.
    pub fn set_step_child(
        &mut self,
        execution: &str,
        path: &str,
        child: &str,
    ) -> Result<(), JournalError> {
        self.fenced(execution)?;
        self.conn.execute(
            "UPDATE steps SET child_execution = ?3 WHERE execution_id = ?1 AND path = ?2",
            params![execution, path, child],
        )?;
        Ok(())
    }

    /// One step, if recorded.
    pub fn step(&self, execution: &str, path: &str) -> Result<Option<StepRecord>, JournalError> {
        Ok(self
            .conn
            .query_row(
                "SELECT * FROM steps WHERE execution_id = ?1 AND path = ?2",
                params![execution, path],
                StepRecord::from_row,
            )
            .optional()?)
    }

    /// Forgets the recorded cleanup steps, so a retried execution runs its
    /// cleanups again.
    pub fn forget_cleanups(&mut self, execution: &str) -> Result<(), JournalError> {
        self.conn.execute(
            "DELETE FROM steps WHERE execution_id = ?1 AND kind = 'cleanup'",
            [execution],
        )?;
        Ok(())
    }

    /// All attempts of all steps of an execution.
    /// How many attempts of a step before `attempt` ended (an attempt whose
    /// runner died never ends).
    pub fn ended_attempts(
        &self,
        execution: &str,
        path: &str,
        attempt: u32,
    ) -> Result<u32, JournalError> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM attempts
             WHERE execution_id = ?1 AND path = ?2 AND attempt < ?3 AND ended_at IS NOT NULL",
            params![execution, path, attempt],
            |r| r.get(0),
        )?)
    }

    pub fn attempts(&self, execution: &str) -> Result<Vec<AttemptRecord>, JournalError> {
        let mut stmt = self.conn.prepare(
            "SELECT path, attempt, started_at, ended_at, error FROM attempts
             WHERE execution_id = ?1 ORDER BY started_at, attempt",
        )?;
        let rows = stmt.query_map([execution], |r| {
            Ok(AttemptRecord {
                path: r.get(0)?,
                attempt: r.get(1)?,
                started_at: r.get(2)?,
                ended_at: r.get(3)?,
                error: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Appends an event (printed line, note) to an execution's log.
    pub fn add_event(
        &mut self,
        execution: &str,
        kind: &str,
        message: &str,
    ) -> Result<(), JournalError> {
        self.fenced(execution)?;
        self.conn.execute(
            "INSERT INTO events (execution_id, at, kind, message) VALUES (?1, ?2, ?3, ?4)",
            params![execution, now_ms(), kind, self.masked(message)],
        )?;
        Ok(())
    }

    /// An execution's events, oldest first.
    pub fn events(&self, execution: &str) -> Result<Vec<EventRecord>, JournalError> {
        let mut stmt = self
            .conn
            .prepare("SELECT at, kind, message FROM events WHERE execution_id = ?1 ORDER BY id")?;
        let rows = stmt.query_map([execution], |r| {
            Ok(EventRecord {
                at: r.get(0)?,
                kind: r.get(1)?,
                message: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
