//! Approval requests and the decisions approvers make on them.

use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};
use serde::Serialize;

use super::{now_ms, Journal, JournalError};

/// Where an approval request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    Pending,
    Approved,
    Rejected,
    TimedOut,
    Cancelled,
}

impl ApprovalState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "approved" => Self::Approved,
            "rejected" => Self::Rejected,
            "timed_out" => Self::TimedOut,
            "cancelled" => Self::Cancelled,
            _ => Self::Pending,
        }
    }
}

/// What a runbook asks approvers for.
#[derive(Debug, Clone)]
pub struct NewApproval {
    pub message: String,
    /// Who may decide; empty means anyone.
    pub approvers: Vec<String>,
    pub min_approvals: u32,
    pub deadline_at: i64,
}

/// One approver's decision.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub approver: String,
    pub approve: bool,
    pub comment: String,
    /// Made by `--auto-approve`, not by a person.
    pub auto: bool,
    pub decided_at: i64,
}

/// An approval request with its decisions.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalRecord {
    pub execution_id: String,
    pub path: String,
    pub message: String,
    pub approvers: Vec<String>,
    pub min_approvals: u32,
    pub deadline_at: i64,
    pub state: ApprovalState,
    pub created_at: i64,
    pub resolved_at: Option<i64>,
    pub decisions: Vec<Decision>,
}

impl ApprovalRecord {
    fn from_row(row: &Row) -> rusqlite::Result<Self> {
        let approvers: String = row.get("approvers")?;
        let state: String = row.get("state")?;
        Ok(Self {
            execution_id: row.get("execution_id")?,
            path: row.get("path")?,
            message: row.get("message")?,
            approvers: serde_json::from_str(&approvers).unwrap_or_default(),
            min_approvals: row.get("min_approvals")?,
            deadline_at: row.get("deadline_at")?,
            state: ApprovalState::parse(&state),
            created_at: row.get("created_at")?,
            resolved_at: row.get("resolved_at")?,
            decisions: Vec::new(),
        })
    }

    /// How many approvals are in.
    pub fn approvals(&self) -> u32 {
        self.decisions.iter().filter(|d| d.approve).count() as u32
    }

    /// Listed approvers who have not decided yet.
    pub fn waiting_on(&self) -> Vec<String> {
        self.approvers
            .iter()
            .filter(|a| !self.decisions.iter().any(|d| &d.approver == *a))
            .cloned()
            .collect()
    }
}

/// The result of recording one decision.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionOutcome {
    pub state: ApprovalState,
    pub approvals: u32,
    pub required: u32,
    pub waiting_on: Vec<String>,
}

fn load_decisions(conn: &rusqlite::Connection, rec: &mut ApprovalRecord) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(
        "SELECT approver, approve, comment, auto, decided_at FROM decisions
         WHERE execution_id = ?1 AND path = ?2 ORDER BY decided_at, approver",
    )?;
    rec.decisions = stmt
        .query_map(params![rec.execution_id, rec.path], |r| {
            Ok(Decision {
                approver: r.get(0)?,
                approve: r.get(1)?,
                comment: r.get(2)?,
                auto: r.get(3)?,
                decided_at: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(())
}

impl Journal {
    /// Records an approval request (once: a replay finds the first one,
    /// with its original deadline) and returns it.
    pub fn create_approval(
        &mut self,
        execution: &str,
        path: &str,
        new: &NewApproval,
    ) -> Result<ApprovalRecord, JournalError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO approvals (execution_id, path, message, approvers, min_approvals,
                deadline_at, state, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7)",
            params![
                execution,
                path,
                new.message,
                serde_json::to_string(&new.approvers).unwrap_or_else(|_| "[]".into()),
                new.min_approvals,
                new.deadline_at,
                now_ms()
            ],
        )?;
        self.approval(execution, path)?
            .ok_or_else(|| JournalError::Conflict("approval vanished after insert".into()))
    }

    /// One approval with its decisions.
    pub fn approval(
        &self,
        execution: &str,
        path: &str,
    ) -> Result<Option<ApprovalRecord>, JournalError> {
        let rec = self
            .conn
            .query_row(
                "SELECT * FROM approvals WHERE execution_id = ?1 AND path = ?2",
                params![execution, path],
                ApprovalRecord::from_row,
            )
            .optional()?;
        match rec {
            Some(mut rec) => {
                load_decisions(&self.conn, &mut rec)?;
                Ok(Some(rec))
            }
            None => Ok(None),
        }
    }

    /// Approvals of one execution (all states), oldest first.
    pub fn approvals_of(&self, execution: &str) -> Result<Vec<ApprovalRecord>, JournalError> {
        self.query_approvals(
            "SELECT * FROM approvals WHERE execution_id = ?1 ORDER BY created_at",
            [execution],
        )
    }

    /// Every pending approval of an unfinished execution, oldest first.
    pub fn pending_approvals(&self) -> Result<Vec<ApprovalRecord>, JournalError> {
        self.query_approvals(
            "SELECT a.* FROM approvals a JOIN executions e ON e.id = a.execution_id
             WHERE a.state = 'pending'
               AND e.state NOT IN ('Success', 'Failed', 'TimedOut', 'Cancelled', 'Rejected')
             ORDER BY a.created_at",
            [],
        )
    }

    fn query_approvals<P: rusqlite::Params>(
        &self,
        sql: &str,
        p: P,
    ) -> Result<Vec<ApprovalRecord>, JournalError> {
        let mut stmt = self.conn.prepare(sql)?;
        let mut recs: Vec<ApprovalRecord> = stmt
            .query_map(p, ApprovalRecord::from_row)?
            .collect::<Result<_, _>>()?;
        for rec in &mut recs {
            load_decisions(&self.conn, rec)?;
        }
        Ok(recs)
    }

    /// Records one approver's decision on the pending approval of an
    /// execution and settles the request when it can: one rejection
    /// rejects, `min_approvals` approvals approve.
    pub fn decide(
        &mut self,
        execution: &str,
        approver: &str,
        approve: bool,
        comment: &str,
        auto: bool,
    ) -> Result<DecisionOutcome, JournalError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let pending = tx
            .query_row(
                "SELECT * FROM approvals WHERE execution_id = ?1 AND state = 'pending'
                 ORDER BY created_at DESC LIMIT 1",
                [execution],
                ApprovalRecord::from_row,
            )
            .optional()?;
        let Some(mut rec) = pending else {
            let state: Option<String> = tx
                .query_row(
                    "SELECT state FROM executions WHERE id = ?1",
                    [execution],
                    |r| r.get(0),
                )
                .optional()?;
            return Err(match state {
                None => JournalError::UnknownExecution(execution.to_string()),
                Some(state) => JournalError::Conflict(format!(
                    "execution {execution} has no pending approval (it is {state}); see `drydock approvals`"
                )),
            });
        };
        load_decisions(&tx, &mut rec)?;
        if !auto && !rec.approvers.is_empty() && !rec.approvers.iter().any(|a| a == approver) {
            return Err(JournalError::Conflict(format!(
                "{approver} is not an approver of this request; it may be decided by: {}",
                rec.approvers.join(", ")
            )));
        }
        if let Some(previous) = rec.decisions.iter().find(|d| d.approver == approver) {
            return Err(JournalError::Conflict(format!(
                "{approver} already {} this request",
                if previous.approve {
                    "approved"
                } else {
                    "rejected"
                }
            )));
        }
        let now = now_ms();
        tx.execute(
            "INSERT INTO decisions (execution_id, path, approver, approve, comment, auto, decided_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![execution, rec.path, approver, approve, comment, auto, now],
        )?;
        rec.decisions.push(Decision {
            approver: approver.to_string(),
            approve,
            comment: comment.to_string(),
            auto,
            decided_at: now,
        });
        let state = if !approve {
            ApprovalState::Rejected
        } else if auto || rec.approvals() >= rec.min_approvals {
            ApprovalState::Approved
        } else {
            ApprovalState::Pending
        };
        if state != ApprovalState::Pending {
            tx.execute(
                "UPDATE approvals SET state = ?3, resolved_at = ?4 WHERE execution_id = ?1 AND path = ?2",
                params![execution, rec.path, state.as_str(), now],
            )?;
        }
        tx.commit()?;
        Ok(DecisionOutcome {
            state,
            approvals: rec.approvals(),
            required: rec.min_approvals,
            waiting_on: rec.waiting_on(),
        })
    }

    /// Settles a still-pending approval as timed out or cancelled.
    /// Returns the approval as it stands afterwards (a decision that won
    /// the race is kept).
    pub fn close_approval(
        &mut self,
        execution: &str,
        path: &str,
        state: ApprovalState,
    ) -> Result<Option<ApprovalRecord>, JournalError> {
        self.conn.execute(
            "UPDATE approvals SET state = ?3, resolved_at = ?4
             WHERE execution_id = ?1 AND path = ?2 AND state = 'pending'",
            params![execution, path, state.as_str(), now_ms()],
        )?;
        self.approval(execution, path)
    }
}
