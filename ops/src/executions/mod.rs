//! Executions as people see them: the one model that `drydock executions
//! show`, the REPL's `:show` and the web console's execution page (and
//! its live stream) are built from. Each front end only renders it.

pub mod timeline;

use drydock_runtime::journal::{
    ApprovalRecord, AttemptRecord, EventRecord, ExecutionRecord, ReplEntryRecord,
    ReplSessionRecord, StepRecord,
};
use drydock_runtime::{ExecutionState, Journal, JournalError};
use serde::Serialize;

use crate::display::shown;
use crate::OpsError;
use timeline::Timeline;

/// An execution and everything its journal holds about it. Serialized,
/// it is what `drydock executions show --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct ExecutionView {
    pub execution: ExecutionRecord,
    pub runner_alive: bool,
    pub steps: Vec<StepRecord>,
    pub attempts: Vec<AttemptRecord>,
    pub approvals: Vec<ApprovalRecord>,
    /// What the runbook printed, and notes.
    pub events: Vec<EventRecord>,
    /// Child executions (`run_runbook`, fleets).
    pub children: Vec<ExecutionRecord>,
}

impl ExecutionView {
    /// Reads an execution (an id or a unique prefix of one) from the journal.
    pub fn load(journal: &Journal, id_or_prefix: &str) -> Result<Self, JournalError> {
        let id = journal.resolve_execution(id_or_prefix)?;
        let execution = journal.execution(&id)?;
        Ok(Self {
            runner_alive: execution.has_live_runner(),
            steps: journal.steps(&id)?,
            attempts: journal.attempts(&id)?,
            approvals: journal.approvals_of(&id)?,
            events: journal.events(&id)?,
            children: journal.children(&id)?,
            execution,
        })
    }

    /// The execution's timeline; `now` (ms since the epoch) ends what is
    /// still running when a runner is alive.
    pub fn timeline(&self, now: i64) -> Timeline {
        timeline::build(
            &self.execution,
            &self.steps,
            &self.attempts,
            &self.approvals,
            now,
            self.runner_alive,
        )
    }

    /// Whether the execution has ended.
    pub fn ended(&self) -> bool {
        self.execution.state.is_terminal()
    }

    /// The attempts that failed (retried or not).
    pub fn failed_attempts(&self) -> impl Iterator<Item = &AttemptRecord> {
        self.attempts.iter().filter(|a| a.error.is_some())
    }
}

/// An execution's state for people, with what to do when its runner is
/// gone (`InProgress (runner gone: drydock resume ex-…)`) or a cancel is
/// under way.
pub fn state_text(e: &ExecutionRecord) -> String {
    if !e.state.is_terminal() && e.state != ExecutionState::Pending && !e.has_live_runner() {
        format!("{} (runner gone: drydock resume {})", e.state, e.id)
    } else if e.cancel_requested && !e.state.is_terminal() {
        format!("{} (cancelling)", e.state)
    } else {
        e.state.to_string()
    }
}

/// A step's error, or else its output as JSON: the "OUTPUT / ERROR"
/// column (raw: clip it with [`crate::display::clip`] to show it).
pub fn step_detail(s: &StepRecord) -> String {
    match &s.error {
        Some(e) => e.clone(),
        None => s.output.to_string(),
    }
}

/// Who may decide an approval, for people: its approvers, or anyone.
pub fn approvers_text(a: &ApprovalRecord) -> String {
    if a.approvers.is_empty() {
        "anyone".into()
    } else {
        a.approvers.join(", ")
    }
}

/// A REPL session and its entries (`repl-…` ids are sessions, not
/// executions: they have entries, not steps).
#[derive(Debug, Clone, Serialize)]
pub struct ReplSessionView {
    pub session: ReplSessionRecord,
    pub entries: Vec<ReplEntryRecord>,
}

/// Whether an id names a REPL session rather than an execution.
pub fn is_repl_session(id: &str) -> bool {
    id.trim().starts_with("repl-")
}

impl ReplSessionView {
    /// Reads a REPL session (an id or a unique prefix of one).
    pub fn load(journal: &Journal, id_or_prefix: &str) -> Result<Self, OpsError> {
        let Some(session) = journal.repl_session(id_or_prefix)? else {
            return Err(OpsError::Usage(format!(
                "no REPL session {}; the executions listing shows them",
                shown(id_or_prefix.trim())
            )));
        };
        let entries = journal.repl_entries(&session.id)?;
        Ok(Self { session, entries })
    }
}

/// A REPL entry's error, or else its output: the "OUTPUT / ERROR" column.
pub fn entry_detail(e: &ReplEntryRecord) -> String {
    match (&e.error, &e.output) {
        (Some(err), _) => err.clone(),
        (None, Some(out)) => out.clone(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{execution, journal};

    #[test]
    fn a_view_holds_what_the_journal_has_and_serializes_as_show_json() {
        let (_dir, mut j) = journal();
        let id = execution(&mut j, "hello", "bob");
        let view = ExecutionView::load(&j, &id[..6]).unwrap();
        assert_eq!(view.execution.id, id);
        assert_eq!(view.execution.runbook, "hello");
        assert!(!view.runner_alive && !view.ended());
        assert!(view.steps.is_empty() && view.failed_attempts().next().is_none());
        let json = serde_json::to_value(&view).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "approvals",
                "attempts",
                "children",
                "events",
                "execution",
                "runner_alive",
                "steps"
            ]
        );
        assert_eq!(view.timeline(0).execution, id);
        assert!(matches!(
            ExecutionView::load(&j, "ex-ffffffffffff"),
            Err(JournalError::UnknownExecution(_))
        ));
    }

    #[test]
    fn repl_sessions_are_their_own_kind() {
        let (_dir, mut j) = journal();
        assert!(is_repl_session(" repl-12ab") && !is_repl_session("ex-12ab"));
        let id = j
            .start_repl_session("alice", "region-a", "default")
            .unwrap();
        j.add_repl_entry(&id, "1 + 1", true, Some("2"), None, 3)
            .unwrap();
        j.add_repl_entry(&id, "boom", false, Some("x"), Some("bad"), 1)
            .unwrap();
        let v = ReplSessionView::load(&j, &id).unwrap();
        assert_eq!(v.session.started_by, "alice");
        let details: Vec<String> = v.entries.iter().map(entry_detail).collect();
        assert_eq!(details, ["2", "bad"]);
        let e = ReplSessionView::load(&j, "repl-0\x1b").unwrap_err();
        assert!(matches!(e, OpsError::Usage(_)));
        assert!(e.to_string().contains("repl-0\\x1b"), "{e}");
    }
}
