//! An execution's timeline: one row per step (approval waits, child
//! runbooks, cleanups and compensations too), placed by when the step
//! started and ended relative to the execution's start, with its status.
//! `drydock executions show --timeline` draws it, the web console draws
//! it as bars, and `--json` and the API give it as it is.
//!
//! The journal records every step's start and end, and every attempt's, but
//! not when a resume replayed a step. A resume is seen where a step has an
//! attempt that never ended followed by a later one (the runner died during
//! it, a resume ran it again), or where an approval's call began after the
//! approval had been asked (the runner died while it waited, a resume asked
//! again): the latest such restart is where the last run began, and the
//! steps that had completed before it were replayed by it.

use std::collections::BTreeMap;

use drydock_runtime::journal::{
    ApprovalRecord, AttemptRecord, ExecutionRecord, StepKind, StepRecord,
};
use drydock_runtime::StepState;
use serde::Serialize;

/// How a row ended (or that it has not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    /// Completed before the latest resume, whose run returned its recorded result.
    Replayed,
    Approved,
    Failed,
    /// Failed, and the runbook went on (`on_failure: "continue"`).
    FailedContinued,
    TimedOut,
    Cancelled,
    Rejected,
    Running,
    /// An approval still waiting for its decision.
    Waiting,
    /// Started, never ended, and no runner is alive: cut off.
    Interrupted,
}

impl Status {
    /// The status for people (`--json` and the API use the snake_case name).
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Replayed => "replayed",
            Self::Approved => "approved",
            Self::Failed => "failed",
            Self::FailedContinued => "failed, went on",
            Self::TimedOut => "timed out",
            Self::Cancelled => "cancelled",
            Self::Rejected => "rejected",
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Interrupted => "interrupted",
        }
    }
}

/// One row of the timeline; times are ms from the execution's start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Span {
    pub path: String,
    pub name: String,
    pub kind: &'static str,
    pub status: Status,
    pub start_ms: i64,
    pub end_ms: i64,
    pub duration_ms: i64,
    pub attempts: u32,
}

/// An execution as drawn.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub execution: String,
    pub runbook: String,
    pub state: String,
    /// When the execution started (ms since the epoch); offsets count from here.
    pub started_at: i64,
    pub duration_ms: i64,
    /// How many times a runner took the execution up again after the first.
    pub resumes: u32,
    /// Where the journal shows the latest resume began (ms from the start),
    /// when it does.
    pub resumed_at_ms: Option<i64>,
    pub steps: Vec<Span>,
}

/// Builds the timeline of an execution from its journal rows. `now` ends
/// what is still running when a runner is alive.
pub fn build(
    exec: &ExecutionRecord,
    steps: &[StepRecord],
    attempts: &[AttemptRecord],
    approvals: &[ApprovalRecord],
    now: i64,
    runner_alive: bool,
) -> Timeline {
    let live = runner_alive && !exec.state.is_terminal();
    let origin = steps
        .iter()
        .map(|s| s.started_at)
        .chain(exec.started_at)
        .min()
        .unwrap_or(exec.created_at);
    // The latest moment the journal knows of.
    let latest = steps
        .iter()
        .flat_map(|s| [Some(s.started_at), s.ended_at])
        .chain(
            attempts
                .iter()
                .flat_map(|a| [Some(a.started_at), a.ended_at]),
        )
        .flatten()
        .chain(exec.ended_at)
        .max()
        .unwrap_or(origin);
    let end = if live {
        now.max(latest)
    } else {
        exec.ended_at.unwrap_or(latest).max(latest)
    };
    // A restart: an attempt that never ended, followed by a later attempt
    // of the same step.
    let mut by_path: BTreeMap<&str, Vec<&AttemptRecord>> = BTreeMap::new();
    for a in attempts {
        by_path.entry(a.path.as_str()).or_default().push(a);
    }
    let mut restart: Option<i64> = None;
    for list in by_path.values_mut() {
        list.sort_by_key(|a| a.attempt);
        for pair in list.windows(2) {
            if pair[0].ended_at.is_none() {
                restart = restart.max(Some(pair[1].started_at));
            }
        }
    }
    // An approval asked before its call's row began: a later run entered
    // the call again (the row's start is reset, the request is kept).
    for a in approvals {
        let call = steps
            .iter()
            .find(|s| s.kind == StepKind::Approval && s.path == a.path);
        if let Some(s) = call {
            if a.created_at < s.started_at {
                restart = restart.max(Some(s.started_at));
            }
        }
    }
    let resumes = exec.runner_epoch.saturating_sub(1).max(0) as u32;
    let restart = if resumes > 0 { restart } else { None };
    let spans = steps
        .iter()
        .map(|s| {
            let status = match s.state {
                StepState::Succeeded => match (restart, s.ended_at) {
                    (Some(r), Some(e)) if e <= r => Status::Replayed,
                    _ if s.kind == StepKind::Approval => Status::Approved,
                    _ => Status::Ok,
                },
                StepState::FailedContinued => match (restart, s.ended_at) {
                    (Some(r), Some(e)) if e <= r => Status::Replayed,
                    _ => Status::FailedContinued,
                },
                StepState::Failed => Status::Failed,
                StepState::TimedOut => Status::TimedOut,
                StepState::Cancelled => Status::Cancelled,
                StepState::Rejected => Status::Rejected,
                StepState::Running if !live => Status::Interrupted,
                StepState::Running if s.kind == StepKind::Approval => Status::Waiting,
                StepState::Running => Status::Running,
            };
            let stop = s.ended_at.unwrap_or(end).max(s.started_at);
            Span {
                path: s.path.clone(),
                name: s.name.clone(),
                kind: s.kind.as_str(),
                status,
                start_ms: s.started_at - origin,
                end_ms: stop - origin,
                duration_ms: stop - s.started_at,
                attempts: s.attempts,
            }
        })
        .collect();
    Timeline {
        execution: exec.id.clone(),
        runbook: exec.runbook.clone(),
        state: exec.state.to_string(),
        started_at: origin,
        duration_ms: end - origin,
        resumes,
        resumed_at_ms: restart.map(|r| r - origin),
        steps: spans,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn exec(epoch: i64) -> ExecutionRecord {
        ExecutionRecord {
            id: "ex-1".into(),
            runbook: "rb".into(),
            origin: "bundled".into(),
            source_sha256: String::new(),
            params: json!({}),
            stored_params: json!({}),
            state: drydock_runtime::ExecutionState::Success,
            parent_id: None,
            parent_step: None,
            auto_approve: false,
            auto_approve_by: None,
            cancel_requested: false,
            runner_epoch: epoch,
            runner_pid: None,
            runner_token: None,
            output: serde_json::Value::Null,
            error: None,
            requested_by: "me".into(),
            requester_uid: None,
            region: None,
            profile: None,
            gate: None,
            gate_approvers: Vec::new(),
            fleet: None,
            run_by: None,
            runbook_owner: None,
            created_at: 1_000,
            started_at: Some(1_000),
            ended_at: Some(9_000),
        }
    }

    fn step(path: &str, name: &str, state: StepState, start: i64, end: Option<i64>) -> StepRecord {
        StepRecord {
            path: path.into(),
            name: name.into(),
            kind: StepKind::Step,
            state,
            attempts: 1,
            output: serde_json::Value::Null,
            error: None,
            child_execution: None,
            started_at: start,
            ended_at: end,
        }
    }

    fn attempt(path: &str, n: u32, start: i64, end: Option<i64>) -> AttemptRecord {
        AttemptRecord {
            path: path.into(),
            attempt: n,
            started_at: start,
            ended_at: end,
            error: None,
        }
    }

    #[test]
    fn a_resume_after_a_cut_off_attempt_marks_earlier_steps_replayed() {
        let steps = vec![
            step("1", "first", StepState::Succeeded, 1_000, Some(2_000)),
            step("2", "second", StepState::Succeeded, 2_000, Some(9_000)),
        ];
        let attempts = vec![
            attempt("1", 1, 1_000, Some(2_000)),
            attempt("2", 1, 2_000, None),
            attempt("2", 2, 7_000, Some(9_000)),
        ];
        let t = build(&exec(2), &steps, &attempts, &[], 10_000, false);
        assert_eq!(t.duration_ms, 8_000);
        assert_eq!(t.resumes, 1);
        assert_eq!(t.resumed_at_ms, Some(6_000));
        assert_eq!(t.steps[0].status, Status::Replayed);
        assert_eq!(t.steps[1].status, Status::Ok);
        assert_eq!((t.steps[1].start_ms, t.steps[1].end_ms), (1_000, 8_000));
        // Claimed once: the same rows are not a resume.
        let once = build(&exec(1), &steps, &attempts, &[], 10_000, false);
        assert_eq!(once.steps[0].status, Status::Ok);
        assert_eq!(once.resumed_at_ms, None);
    }

    #[test]
    fn an_approval_asked_again_by_a_resume_marks_earlier_steps_replayed() {
        let mut wait = step("2", "approval", StepState::Succeeded, 8_000, Some(8_500));
        wait.kind = StepKind::Approval;
        let steps = vec![
            step("1", "first", StepState::Succeeded, 1_000, Some(2_000)),
            wait,
            step("3", "last", StepState::Succeeded, 8_500, Some(9_000)),
        ];
        let asked = ApprovalRecord {
            execution_id: "ex-1".into(),
            path: "2".into(),
            message: "go?".into(),
            approvers: vec![],
            min_approvals: 1,
            deadline_at: 100_000,
            state: drydock_runtime::journal::ApprovalState::Approved,
            created_at: 2_100,
            resolved_at: Some(8_400),
            source_sha256: String::new(),
            allow_self: true,
            auto_allowed: false,
            decisions: vec![],
        };
        let t = build(
            &exec(2),
            &steps,
            &[],
            std::slice::from_ref(&asked),
            10_000,
            false,
        );
        assert_eq!(t.resumed_at_ms, Some(7_000));
        let statuses: Vec<Status> = t.steps.iter().map(|s| s.status).collect();
        assert_eq!(statuses, [Status::Replayed, Status::Approved, Status::Ok]);
        // Asked when its call began (a run that was never cut off).
        let fresh = ApprovalRecord {
            created_at: 8_000,
            ..asked
        };
        let t = build(&exec(2), &steps, &[], &[fresh], 10_000, false);
        assert_eq!(t.resumed_at_ms, None);
        assert_eq!(t.steps[0].status, Status::Ok);
    }

    #[test]
    fn unfinished_steps_run_to_now_or_are_interrupted() {
        let mut e = exec(1);
        e.state = drydock_runtime::ExecutionState::InProgress;
        e.ended_at = None;
        let steps = vec![step("1", "slow", StepState::Running, 1_000, None)];
        let live = build(&e, &steps, &[], &[], 5_000, true);
        assert_eq!(live.steps[0].status, Status::Running);
        assert_eq!(live.steps[0].end_ms, 4_000);
        assert_eq!(live.duration_ms, 4_000);
        let dead = build(&e, &steps, &[], &[], 5_000, false);
        assert_eq!(dead.steps[0].status, Status::Interrupted);
        assert_eq!(dead.duration_ms, 0);
        let j = serde_json::to_value(&live).unwrap();
        assert_eq!(j["steps"][0]["status"], "running");
        assert_eq!(j["steps"][0]["end_ms"], 4_000);
    }
}
