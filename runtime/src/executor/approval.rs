//! The `approve` primitive: pause until approvers decide, journaled so a
//! decision made while no runner is alive is applied on resume.

use std::time::Duration;

use rhai::{Dynamic, Position};
use serde_json::json;

use super::options::{ApprovalOptions, Unapproved};
use super::session::{Lookup, RhaiResult, Session};
use crate::interrupt::Interruption;
use crate::journal::{now_ms, ApprovalRecord, ApprovalState, NewApproval, StepKind};
use crate::observer::StepOutcome;
use crate::state::{ExecutionState, StepState};

const POLL: Duration = Duration::from_millis(100);

/// The name approval calls have in the journal.
pub(crate) const APPROVAL_STEP: &str = "approval";

fn decision_output(rec: &ApprovalRecord) -> serde_json::Value {
    json!({
        "approved": rec.state == ApprovalState::Approved,
        "decision": rec.state.as_str(),
        "message": rec.message,
        "decisions": rec.decisions.iter().map(|d| json!({
            "approver": d.approver,
            "approve": d.approve,
            "comment": d.comment,
            "auto": d.auto,
            "decided_at": d.decided_at,
        })).collect::<Vec<_>>(),
    })
}

impl Session {
    /// Runs `approve(#{ ... })`.
    pub fn approve(&self, opts: ApprovalOptions, pos: Position) -> RhaiResult {
        self.approve_at(opts, pos, None)
    }

    /// An approval at a fixed journal path (the override gate a change
    /// calendar puts before a scheduled run), or at the next call's path.
    pub fn approve_at(
        &self,
        opts: ApprovalOptions,
        pos: Position,
        path: Option<String>,
    ) -> RhaiResult {
        self.safe_point(pos)?;
        let call = match self.lookup(APPROVAL_STEP, StepKind::Approval, path, pos)? {
            Lookup::Replay(v) => return Ok(v),
            Lookup::Run(call, _) => call,
        };
        let started = std::time::Instant::now();
        let r = self.journal().start_attempt(
            &self.exec_id,
            &call.path,
            APPROVAL_STEP,
            StepKind::Approval,
            1,
        );
        self.journal_result(r);
        let new = NewApproval {
            message: opts.message.clone(),
            approvers: opts.approvers.clone(),
            min_approvals: opts.min_approvals,
            deadline_at: now_ms()
                .saturating_add(opts.timeout.as_millis().min(i64::MAX as u128) as i64),
            source_sha256: self.source_sha256.clone(),
            allow_self: opts.allow_self_approval,
            auto_allowed: opts.auto_approve_allowed,
        };
        let mut rec = {
            let r = self
                .journal()
                .create_approval(&self.exec_id, &call.path, &new);
            self.journal_result(r).ok_or_else(|| {
                super::session::runtime_error("cannot record the approval request in the journal")
            })?
        };
        match &self.auto_approve {
            Some(auto) if rec.state == ApprovalState::Pending => {
                if opts.auto_approve_allowed || auto.admin {
                    let how = if opts.auto_approve_allowed {
                        "the runbook allows it"
                    } else {
                        "admin"
                    };
                    let r = self.journal().decide(
                        &self.exec_id,
                        &auto.by,
                        true,
                        &format!("approved by --auto-approve ({how})"),
                        true,
                    );
                    self.journal_result(r);
                    if let Some(now) = self
                        .journal_result(self.journal().approval(&self.exec_id, &call.path))
                        .flatten()
                    {
                        rec = now;
                    }
                } else {
                    let note = format!(
                        "--auto-approve by {} does not apply to this approval: its approve() does not say auto_approve: \"allowed\" and {} is not an admin; waiting for approvers",
                        auto.by.name, auto.by.name
                    );
                    let r = self.journal().add_event(&self.exec_id, "note", &note);
                    self.journal_result(r);
                    self.observer.note(&self.exec_id, &note);
                }
            }
            _ => {}
        }
        let r = self
            .journal()
            .set_execution_state(&self.exec_id, ExecutionState::WaitingForApproval);
        self.journal_result(r);
        self.observer.approval_waiting(&call.event, &rec);
        loop {
            if let Some(now) = self
                .journal_result(self.journal().approval(&self.exec_id, &call.path))
                .flatten()
            {
                rec = now;
            }
            if rec.state != ApprovalState::Pending {
                break;
            }
            if now_ms() >= rec.deadline_at {
                if let Some(closed) = self
                    .journal_result(self.journal().close_approval(
                        &self.exec_id,
                        &call.path,
                        ApprovalState::TimedOut,
                    ))
                    .flatten()
                {
                    rec = closed;
                }
                break;
            }
            if self.interrupt.is_cancelled() {
                let r = self.journal().close_approval(
                    &self.exec_id,
                    &call.path,
                    ApprovalState::Cancelled,
                );
                self.journal_result(r);
                let msg = "cancelled while waiting for approval";
                let r = self.journal().finish_attempt(
                    &self.exec_id,
                    &call.path,
                    1,
                    Some(msg),
                    Some((StepState::Cancelled, &serde_json::Value::Null, Some(msg))),
                );
                self.journal_result(r);
                self.observer.step_finished(
                    &call.event,
                    &StepOutcome {
                        state: StepState::Cancelled,
                        duration: started.elapsed(),
                        error: Some(msg.into()),
                    },
                );
                return Err(Interruption::Cancelled.into_rhai(pos));
            }
            std::thread::sleep(POLL);
        }
        let r = self
            .journal()
            .set_execution_state(&self.exec_id, ExecutionState::InProgress);
        self.journal_result(r);
        self.observer.approval_decided(&call.event, &rec);
        let output = decision_output(&rec);
        let (policy, state, failure) = match rec.state {
            ApprovalState::Approved => (
                Unapproved::Continue,
                StepState::Succeeded,
                ExecutionState::Success,
            ),
            ApprovalState::Rejected => (
                opts.on_reject,
                StepState::Rejected,
                ExecutionState::Rejected,
            ),
            _ => (
                opts.on_timeout,
                StepState::TimedOut,
                ExecutionState::TimedOut,
            ),
        };
        let message = match rec.state {
            ApprovalState::Approved => None,
            ApprovalState::Rejected => {
                let who = rec.decisions.iter().find(|d| !d.approve);
                Some(match who {
                    Some(d) if d.comment.is_empty() => {
                        format!("approval rejected by {}", d.approver)
                    }
                    Some(d) => format!("approval rejected by {}: {}", d.approver, d.comment),
                    None => "approval rejected".to_string(),
                })
            }
            _ => Some(format!(
                "approval timed out after {} with {} of {} approvals",
                crate::duration::format_duration(opts.timeout),
                rec.approvals(),
                rec.min_approvals
            )),
        };
        let (recorded_state, err) = match (&message, policy) {
            (Some(m), Unapproved::Abort) => (state, Some(m.as_str())),
            _ => (StepState::Succeeded, None),
        };
        let r = self.journal().finish_attempt(
            &self.exec_id,
            &call.path,
            1,
            err,
            Some((recorded_state, &output, err)),
        );
        self.journal_result(r);
        self.observer.step_finished(
            &call.event,
            &StepOutcome {
                state: recorded_state,
                duration: started.elapsed(),
                error: message.clone(),
            },
        );
        match (message, policy) {
            (Some(m), Unapproved::Abort) => Err(self.fail_with(failure, &m)),
            _ => Ok(rhai::serde::to_dynamic(&output).unwrap_or(Dynamic::UNIT)),
        }
    }
}
