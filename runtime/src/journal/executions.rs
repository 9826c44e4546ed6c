//! Execution rows: create, claim by a runner, change state, list.

use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};
use serde::Serialize;

use super::{json_or_null, now_ms, Journal, JournalError};
use crate::runner::RunnerIdentity;
use crate::state::ExecutionState;

/// What is recorded when an execution is created.
#[derive(Debug, Clone)]
pub struct NewExecution {
    pub runbook: String,
    pub origin: String,
    pub source_sha256: String,
    pub params: serde_json::Map<String, serde_json::Value>,
    /// The parent execution and its step, for a child runbook.
    pub parent: Option<(String, String)>,
    /// Who asked for `--auto-approve` (the requester), if anyone did.
    pub auto_approve_by: Option<String>,
    pub requested_by: String,
    pub requester_uid: Option<u32>,
    /// Where it acts: every run and resume uses these, whatever the
    /// resuming shell's settings.
    pub region: String,
    pub profile: String,
    /// An approval asked before the runbook runs (a change calendar's
    /// override), with this message.
    pub gate: Option<String>,
    /// Who approves the gate (empty: anyone but the requester).
    pub gate_approvers: Vec<String>,
    /// The account whose process creates it (`drydock serve`'s for a
    /// scheduled run), when not the requester's.
    pub run_by: Option<String>,
    /// Who owns the runbook file (None for a bundled runbook).
    pub runbook_owner: Option<String>,
}

/// One execution as stored.
#[derive(Debug, Clone, Serialize)]
pub struct ExecutionRecord {
    pub id: String,
    pub runbook: String,
    pub origin: String,
    pub source_sha256: String,
    /// The parameters as people may see them (secrets as `****`).
    pub params: serde_json::Value,
    /// The parameters as stored: secrets sealed or referenced.
    #[serde(skip)]
    pub stored_params: serde_json::Value,
    pub state: ExecutionState,
    pub parent_id: Option<String>,
    pub parent_step: Option<String>,
    pub auto_approve: bool,
    pub auto_approve_by: Option<String>,
    pub cancel_requested: bool,
    /// Incremented by every claim: the fencing token of the current runner.
    pub runner_epoch: i64,
    pub runner_pid: Option<u32>,
    #[serde(skip)]
    pub runner_token: Option<String>,
    pub output: serde_json::Value,
    pub error: Option<String>,
    pub requested_by: String,
    pub requester_uid: Option<u32>,
    /// Where it acts (None for executions recorded before schema 3).
    pub region: Option<String>,
    pub profile: Option<String>,
    pub gate: Option<String>,
    /// Who approves the gate (empty: anyone but the requester).
    pub gate_approvers: Vec<String>,
    /// A fleet's targets and limits (JSON), for a fleet's parent.
    pub fleet: Option<String>,
    /// The account that runs it on the requester's behalf (a scheduled
    /// run: `drydock serve`'s), when not the requester.
    pub run_by: Option<String>,
    /// Who owned the runbook file when the execution was created.
    pub runbook_owner: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
}

impl ExecutionRecord {
    /// The runner process recorded for this execution, if any.
    pub fn runner(&self) -> Option<RunnerIdentity> {
        Some(RunnerIdentity {
            pid: self.runner_pid?,
            token: self.runner_token.clone()?,
        })
    }

    /// Whether a live process is running this execution now.
    pub fn has_live_runner(&self) -> bool {
        self.runner().is_some_and(|r| r.is_alive())
    }

    fn from_row(row: &Row) -> rusqlite::Result<Self> {
        let state: String = row.get("state")?;
        let stored_params = json_or_null(row.get("params")?);
        Ok(Self {
            id: row.get("id")?,
            runbook: row.get("runbook")?,
            origin: row.get("origin")?,
            source_sha256: row.get("source_sha256")?,
            params: crate::secrets::redact_params(&stored_params),
            stored_params,
            state: state.parse().unwrap_or(ExecutionState::Failed),
            parent_id: row.get("parent_id")?,
            parent_step: row.get("parent_step")?,
            auto_approve: row.get("auto_approve")?,
            auto_approve_by: row.get("auto_approve_by")?,
            cancel_requested: row.get("cancel_requested")?,
            runner_epoch: row.get("runner_epoch")?,
            runner_pid: row.get("runner_pid")?,
            runner_token: row.get("runner_token")?,
            output: json_or_null(row.get("output")?),
            error: row.get("error")?,
            requested_by: row.get("requested_by")?,
            run_by: row.get("run_by")?,
            runbook_owner: row.get("runbook_owner")?,
            requester_uid: row.get("requester_uid")?,
            region: row.get("region")?,
            profile: row.get("profile")?,
            gate: row.get("gate")?,
            gate_approvers: row
                .get::<_, Option<String>>("gate_approvers")?
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default(),
            fleet: row.get("fleet")?,
            created_at: row.get("created_at")?,
            started_at: row.get("started_at")?,
            ended_at: row.get("ended_at")?,
        })
    }
}

/// Which executions to list.
#[derive(Debug, Clone, Default)]
pub struct ExecutionFilter {
    pub state: Option<ExecutionState>,
    pub runbook: Option<String>,
    pub include_children: bool,
    pub limit: Option<usize>,
}

impl Journal {
    /// Records a new execution in state Pending and returns its id.
    pub fn create_execution(&mut self, new: &NewExecution) -> Result<String, JournalError> {
        let id = crate::ids::new_id("ex");
        self.conn.execute(
            "INSERT INTO executions (id, runbook, origin, source_sha256, params, state, parent_id,
                parent_step, auto_approve, requested_by, created_at, requester_uid, auto_approve_by, region, profile, gate,
                run_by, runbook_owner, gate_approvers)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
            params![
                id,
                new.runbook,
                new.origin,
                new.source_sha256,
                serde_json::Value::Object(new.params.clone()).to_string(),
                ExecutionState::Pending.as_str(),
                new.parent.as_ref().map(|p| &p.0),
                new.parent.as_ref().map(|p| &p.1),
                new.auto_approve_by.is_some(),
                new.requested_by,
                now_ms(),
                new.requester_uid,
                new.auto_approve_by,
                new.region,
                new.profile,
                new.gate,
                new.run_by,
                new.runbook_owner,
                (!new.gate_approvers.is_empty())
                    .then(|| serde_json::to_string(&new.gate_approvers).unwrap_or_default()),
            ],
        )?;
        Ok(id)
    }

    /// Marks an execution as a fleet's parent.
    pub fn set_fleet(&mut self, id: &str, spec: &str) -> Result<(), JournalError> {
        self.conn.execute(
            "UPDATE executions SET fleet = ?2 WHERE id = ?1",
            params![id, spec],
        )?;
        Ok(())
    }

    /// One execution by exact id.
    pub fn execution(&self, id: &str) -> Result<ExecutionRecord, JournalError> {
        self.conn
            .query_row(
                "SELECT * FROM executions WHERE id = ?1",
                [id],
                ExecutionRecord::from_row,
            )
            .optional()?
            .ok_or_else(|| JournalError::UnknownExecution(id.to_string()))
    }

    /// Expands a unique id prefix (`ex-3f`, or `3f`) to a full execution id.
    pub fn resolve_execution(&self, prefix: &str) -> Result<String, JournalError> {
        let prefix = prefix.trim();
        let full = if prefix.starts_with("ex-") {
            prefix.to_string()
        } else {
            format!("ex-{prefix}")
        };
        // Ids are `ex-` and hex digits: anything else matches nothing (and
        // never reaches a pattern, where `%` or `_` would match anything).
        let hex = &full[3..];
        if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(JournalError::UnknownExecution(
                crate::display::sanitize(prefix).into_owned(),
            ));
        }
        let hex = hex.to_ascii_lowercase();
        let lower = format!("ex-{hex}");
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM executions WHERE substr(id, 1, length(?1)) = ?1 LIMIT 6")?;
        let ids: Vec<String> = stmt
            .query_map([&lower], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        match ids.len() {
            0 => Err(JournalError::UnknownExecution(prefix.to_string())),
            1 => Ok(ids.into_iter().next().unwrap()),
            _ => Err(JournalError::AmbiguousExecution {
                prefix: prefix.to_string(),
                matches: ids.join(", "),
            }),
        }
    }

    /// Executions, newest first.
    pub fn executions(
        &self,
        filter: &ExecutionFilter,
    ) -> Result<Vec<ExecutionRecord>, JournalError> {
        let mut stmt = self.conn.prepare(
            "SELECT * FROM executions
             WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR runbook = ?2)
               AND (?3 OR parent_id IS NULL)
             ORDER BY created_at DESC, rowid DESC LIMIT ?4",
        )?;
        let limit = filter.limit.map(|l| l as i64).unwrap_or(-1);
        let rows = stmt.query_map(
            params![
                filter.state.map(|s| s.as_str()),
                filter.runbook,
                filter.include_children,
                limit
            ],
            ExecutionRecord::from_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Makes `runner` the process running `id`. Refuses when another live
    /// process runs it, or when it has ended (unless `retry` is set, which
    /// reopens a Failed, TimedOut or Cancelled execution).
    pub fn claim_execution(
        &mut self,
        id: &str,
        runner: &RunnerIdentity,
        retry: bool,
    ) -> Result<ExecutionRecord, JournalError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let record = tx
            .query_row(
                "SELECT * FROM executions WHERE id = ?1",
                [id],
                ExecutionRecord::from_row,
            )
            .optional()?
            .ok_or_else(|| JournalError::UnknownExecution(id.to_string()))?;
        if let Some(other) = record.runner() {
            if other != *runner && other.is_alive() {
                return Err(JournalError::Conflict(format!(
                    "execution {id} is being run by process {} right now; wait for it, or stop it with `drydock cancel {id}`",
                    other.pid
                )));
            }
        }
        if record.state.is_terminal() {
            let retryable = matches!(
                record.state,
                ExecutionState::Failed | ExecutionState::TimedOut | ExecutionState::Cancelled
            );
            if !retry || !retryable {
                let hint = if retryable {
                    format!("; to run its failed part again use `drydock resume {id} --retry`")
                } else {
                    String::new()
                };
                return Err(JournalError::Conflict(format!(
                    "execution {id} already ended {}{hint}",
                    record.state
                )));
            }
            tx.execute(
                "UPDATE executions SET ended_at = NULL, error = NULL, output = NULL, cancel_requested = 0 WHERE id = ?1",
                [id],
            )?;
        }
        let now = now_ms();
        tx.execute(
            "UPDATE executions SET runner_pid = ?2, runner_token = ?3, state = ?4,
                started_at = COALESCE(started_at, ?5), runner_epoch = runner_epoch + 1
             WHERE id = ?1",
            params![
                id,
                runner.pid,
                runner.token,
                if record.state == ExecutionState::WaitingForApproval {
                    ExecutionState::WaitingForApproval.as_str()
                } else {
                    ExecutionState::InProgress.as_str()
                },
                now
            ],
        )?;
        let claimed = tx.query_row(
            "SELECT * FROM executions WHERE id = ?1",
            [id],
            ExecutionRecord::from_row,
        )?;
        // Its first start (a resume or retry is not a new start).
        if record.started_at.is_none() {
            super::stream::emit_on(
                &tx,
                self.masker.as_ref(),
                &super::stream::NewStreamEvent {
                    kind: super::stream::kind::EXECUTION_STARTED,
                    execution: Some(id),
                    region: claimed.region.as_deref(),
                    detail: &format!(
                        "{id} ({}) started, requested by {}",
                        claimed.runbook, claimed.requested_by
                    ),
                    data: serde_json::json!({
                        "runbook": claimed.runbook,
                        "requested_by": claimed.requested_by,
                        "parent": claimed.parent_id,
                    }),
                    ..Default::default()
                },
            )?;
        }
        tx.commit()?;
        Ok(claimed)
    }

    /// Sets the state of a running execution.
    pub fn set_execution_state(
        &mut self,
        id: &str,
        state: ExecutionState,
    ) -> Result<(), JournalError> {
        self.fenced(id)?;
        self.conn.execute(
            "UPDATE executions SET state = ?2 WHERE id = ?1",
            params![id, state.as_str()],
        )?;
        Ok(())
    }

    /// Records the end of an execution and releases its runner.
    pub fn finish_execution(
        &mut self,
        id: &str,
        state: ExecutionState,
        output: &serde_json::Value,
        error: Option<&str>,
    ) -> Result<(), JournalError> {
        self.fenced(id)?;
        let masked_output = self.masked_json(output);
        let masked_error = error.map(|e| self.masked(e).into_owned());
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (runbook, region, parent): (String, Option<String>, Option<String>) = tx.query_row(
            "SELECT runbook, region, parent_id FROM executions WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        super::stream::emit_on(
            &tx,
            self.masker.as_ref(),
            &super::stream::NewStreamEvent {
                kind: super::stream::kind::EXECUTION_ENDED,
                execution: Some(id),
                region: region.as_deref(),
                detail: &match &masked_error {
                    Some(e) => format!("{id} ({runbook}) ended {state}: {e}"),
                    None => format!("{id} ({runbook}) ended {state}"),
                },
                data: serde_json::json!({
                    "runbook": runbook,
                    "state": state.as_str(),
                    "error": masked_error,
                    "parent": parent,
                }),
                ..Default::default()
            },
        )?;
        tx.execute(
            "UPDATE executions SET state = ?2, output = ?3, error = ?4, ended_at = ?5,
                runner_pid = NULL, runner_token = NULL
             WHERE id = ?1",
            params![id, state.as_str(), masked_output, masked_error, now_ms()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Releases the runner without ending the execution (e.g. `run --detach`
    /// handing over, or a runner stopping while it waits).
    pub fn release_runner(&mut self, id: &str) -> Result<(), JournalError> {
        self.fenced(id)?;
        self.conn.execute(
            "UPDATE executions SET runner_pid = NULL, runner_token = NULL WHERE id = ?1",
            [id],
        )?;
        Ok(())
    }

    /// Asks the execution and all its unfinished child executions to stop.
    pub fn request_cancel(&mut self, id: &str) -> Result<(), JournalError> {
        self.conn.execute(
            "WITH RECURSIVE tree(id) AS (
                 SELECT ?1 UNION ALL
                 SELECT e.id FROM executions e JOIN tree t ON e.parent_id = t.id
             )
             UPDATE executions SET cancel_requested = 1 WHERE id IN tree",
            [id],
        )?;
        Ok(())
    }

    /// Whether someone asked this execution to stop.
    pub fn cancel_requested(&self, id: &str) -> Result<bool, JournalError> {
        Ok(self
            .conn
            .query_row(
                "SELECT cancel_requested FROM executions WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(false))
    }

    /// The child execution started from a parent's step, if any.
    pub fn child_execution(
        &self,
        parent: &str,
        step: &str,
    ) -> Result<Option<String>, JournalError> {
        Ok(self
            .conn
            .query_row(
                "SELECT id FROM executions WHERE parent_id = ?1 AND parent_step = ?2
                 ORDER BY created_at DESC LIMIT 1",
                params![parent, step],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Direct child executions of an execution.
    pub fn children(&self, parent: &str) -> Result<Vec<ExecutionRecord>, JournalError> {
        let mut stmt = self
            .conn
            .prepare("SELECT * FROM executions WHERE parent_id = ?1 ORDER BY created_at, rowid")?;
        let rows = stmt.query_map([parent], ExecutionRecord::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
