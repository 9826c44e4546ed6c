//! Stopping and going on with executions — what `drydock cancel` and
//! `drydock resume` decide before a runner acts, and what the web API's
//! cancel and resume do, the same for both.

use drydock_runtime::{ExecutionState, Journal};
use serde::Serialize;

use crate::OpsError;

/// A cancel that was recorded.
#[derive(Debug, Clone, Serialize)]
pub struct CancelRequested {
    pub execution_id: String,
    /// The live runner that stops the execution at its next safe point
    /// and runs its cleanups; None when no runner is alive (the caller
    /// starts one to do it).
    pub runner_pid: Option<u32>,
}

/// Records a cancel request for an execution (and its children); refused,
/// as a usage error, when the execution already ended.
pub fn request_cancel(journal: &mut Journal, execution: &str) -> Result<CancelRequested, OpsError> {
    let id = journal.resolve_execution(execution)?;
    let rec = journal.execution(&id)?;
    if rec.state.is_terminal() {
        return Err(OpsError::Usage(format!(
            "execution {id} already ended {}; nothing to cancel",
            rec.state
        )));
    }
    journal.request_cancel(&id)?;
    Ok(CancelRequested {
        execution_id: id,
        runner_pid: rec.has_live_runner().then_some(rec.runner_pid.unwrap_or(0)),
    })
}

/// What a resume of an execution needs: its full id, refused when a live
/// runner has it already, or when it ended and `retry` was not asked for
/// (`--retry` reopens a Failed, TimedOut or Cancelled execution).
pub fn check_resume(journal: &Journal, execution: &str, retry: bool) -> Result<String, OpsError> {
    let id = journal.resolve_execution(execution)?;
    let rec = journal.execution(&id)?;
    if rec.has_live_runner() {
        return Err(OpsError::Usage(format!(
            "execution {id} is running in process {}; nothing to resume",
            rec.runner_pid.unwrap_or(0)
        )));
    }
    if rec.state.is_terminal() {
        let retryable = matches!(
            rec.state,
            ExecutionState::Failed | ExecutionState::TimedOut | ExecutionState::Cancelled
        );
        if !retryable {
            return Err(OpsError::Usage(format!(
                "execution {id} ended {}; there is nothing to resume",
                rec.state
            )));
        }
        if !retry {
            return Err(OpsError::Usage(format!(
                "execution {id} ended {}; retry it to run its failed part again (`drydock resume --retry {id}`)",
                rec.state
            )));
        }
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_is_recorded_once_and_an_ended_execution_is_refused() {
        let (_dir, mut j) = crate::testing::journal();
        let id = crate::testing::execution(&mut j, "long", "bob");
        let c = request_cancel(&mut j, &id[..8]).unwrap();
        assert_eq!(c.execution_id, id);
        assert_eq!(c.runner_pid, None);
        assert!(j.execution(&id).unwrap().cancel_requested);
        // Nothing to resume-without-retry here: a pending execution resumes.
        assert_eq!(check_resume(&j, &id, false).unwrap(), id);
    }
}
