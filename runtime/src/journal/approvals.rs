//! Approval requests and the decisions approvers make on them.

use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};
use serde::Serialize;

use super::{now_ms, Journal, JournalError};
use crate::identity::Identity;

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
    /// The runbook source the approval is asked for: a decision approves
    /// this code, not whatever the file holds later.
    pub source_sha256: String,
    /// The requester may approve their own execution.
    pub allow_self: bool,
    /// `--auto-approve` from a non-admin may settle it.
    pub auto_allowed: bool,
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
    /// The OS account that decided (None in journals from before identities).
    pub approver_uid: Option<u32>,
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
    pub source_sha256: String,
    pub allow_self: bool,
    pub auto_allowed: bool,
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
            source_sha256: row.get("source_sha256")?,
            allow_self: row.get("allow_self")?,
            auto_allowed: row.get("auto_allowed")?,
            decisions: Vec::new(),
        })
    }

    /// How many approvals are in.
    pub fn approvals(&self) -> u32 {
        self.decisions.iter().filter(|d| d.approve).count() as u32
    }

    /// Listed approvers who have not decided yet (groups stay listed).
    pub fn waiting_on(&self) -> Vec<String> {
        self.approvers
            .iter()
            .filter(|a| !self.decisions.iter().any(|d| &d.approver == *a))
            .cloned()
            .collect()
    }

    /// Whether `who` may decide, given the execution's requester. Returns
    /// the reason when not.
    pub fn may_decide(&self, who: &Identity, requester: &str, approve: bool) -> Result<(), String> {
        if !self.approvers.is_empty() && !self.approvers.iter().any(|a| who.matches(a)) {
            return Err(format!(
                "{} is not an approver of this request; it may be decided by: {}",
                who.name,
                self.approvers.join(", ")
            ));
        }
        // Withdrawing one's own request (a rejection) is always allowed.
        if approve && !self.allow_self && who.name == requester {
            return Err(format!(
                "{} requested this execution and cannot approve it (separation of duties); another approver must decide, or the runbook's approve() must say allow_self_approval: true",
                who.name
            ));
        }
        Ok(())
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
        "SELECT approver, approve, comment, auto, decided_at, approver_uid FROM decisions
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
                approver_uid: r.get(5)?,
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
        let message = self.masked(&new.message).into_owned();
        self.fenced(execution)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // A request that ended without approval is asked again when its
        // call runs again (`resume --retry`): the earlier round is kept as
        // an event, its decisions are cleared.
        let earlier: Option<(String, i64)> = tx
            .query_row(
                "SELECT state, deadline_at FROM approvals WHERE execution_id = ?1 AND path = ?2",
                params![execution, path],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((state, _)) = &earlier {
            if matches!(state.as_str(), "timed_out" | "rejected" | "cancelled") {
                tx.execute(
                    "INSERT INTO events (execution_id, at, kind, message) VALUES (?1, ?2, 'note', ?3)",
                    params![
                        execution,
                        now_ms(),
                        format!("approval at call {path} ended {state} earlier; asking again")
                    ],
                )?;
                tx.execute(
                    "DELETE FROM decisions WHERE execution_id = ?1 AND path = ?2",
                    params![execution, path],
                )?;
                tx.execute(
                    "DELETE FROM approvals WHERE execution_id = ?1 AND path = ?2",
                    params![execution, path],
                )?;
            }
        }
        tx.execute(
            "INSERT OR IGNORE INTO approvals (execution_id, path, message, approvers, min_approvals,
                deadline_at, state, created_at, source_sha256, allow_self, auto_allowed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?8, ?9, ?10)",
            params![
                execution,
                path,
                message,
                serde_json::to_string(&new.approvers).unwrap_or_else(|_| "[]".into()),
                new.min_approvals,
                new.deadline_at,
                now_ms(),
                new.source_sha256,
                new.allow_self,
                new.auto_allowed,
            ],
        )?;
        if tx.changes() > 0 {
            super::stream::emit_on(
                &tx,
                self.masker.as_ref(),
                &super::stream::NewStreamEvent {
                    kind: super::stream::kind::APPROVAL_REQUESTED,
                    execution: Some(execution),
                    detail: &format!("{execution} asks for approval: {message}"),
                    data: serde_json::json!({
                        "message": message,
                        "approvers": new.approvers,
                        "min_approvals": new.min_approvals,
                        "deadline_at": new.deadline_at,
                    }),
                    ..Default::default()
                },
            )?;
        }
        tx.commit()?;
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
    ///
    /// `approver` is the OS account deciding; `auto` marks a decision made
    /// by `--auto-approve` (whose permission the runner has checked), which
    /// settles the request at once. A person's decision is checked against
    /// the approver list, separation of duties and the deadline.
    pub fn decide(
        &mut self,
        execution: &str,
        approver: &Identity,
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
        let now = now_ms();
        if !auto && now >= rec.deadline_at {
            tx.execute(
                "UPDATE approvals SET state = 'timed_out', resolved_at = ?3
                 WHERE execution_id = ?1 AND path = ?2 AND state = 'pending'",
                params![execution, rec.path, now],
            )?;
            tx.commit()?;
            return Err(JournalError::Conflict(format!(
                "the approval of {execution} expired at {} and is closed; nothing was decided. `drydock resume {execution} --retry` asks again",
                crate::display::timestamp(rec.deadline_at)
            )));
        }
        if !auto {
            let requester: String = tx.query_row(
                "SELECT requested_by FROM executions WHERE id = ?1",
                [execution],
                |r| r.get(0),
            )?;
            rec.may_decide(approver, &requester, approve)
                .map_err(JournalError::Conflict)?;
        }
        let name = approver.name.as_str();
        if let Some(previous) = rec.decisions.iter().find(|d| d.approver == name) {
            return Err(JournalError::Conflict(format!(
                "{name} already {} this request (a quorum counts each account once)",
                if previous.approve {
                    "approved"
                } else {
                    "rejected"
                }
            )));
        }
        tx.execute(
            "INSERT INTO decisions (execution_id, path, approver, approve, comment, auto, decided_at, approver_uid)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![execution, rec.path, name, approve, comment, auto, now, approver.uid],
        )?;
        rec.decisions.push(Decision {
            approver: name.to_string(),
            approve,
            comment: comment.to_string(),
            auto,
            decided_at: now,
            approver_uid: Some(approver.uid),
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
        super::stream::emit_on(
            &tx,
            self.masker.as_ref(),
            &super::stream::NewStreamEvent {
                kind: super::stream::kind::APPROVAL_DECIDED,
                execution: Some(execution),
                detail: &format!(
                    "{name} {} {execution}{}",
                    if approve { "approved" } else { "rejected" },
                    match state {
                        ApprovalState::Pending =>
                            format!(" ({} of {} approvals)", rec.approvals(), rec.min_approvals),
                        other => format!(": {}", other.as_str()),
                    }
                ),
                data: serde_json::json!({
                    "approver": name,
                    "approve": approve,
                    "auto": auto,
                    "state": state.as_str(),
                    "comment": comment,
                }),
                ..Default::default()
            },
        )?;
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
        self.fenced(execution)?;
        self.conn.execute(
            "UPDATE approvals SET state = ?3, resolved_at = ?4
             WHERE execution_id = ?1 AND path = ?2 AND state = 'pending'",
            params![execution, path, state.as_str(), now_ms()],
        )?;
        self.approval(execution, path)
    }
}
