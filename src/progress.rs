//! Live progress of an execution: a line per step with its status and
//! duration; a spinner on the running steps when stderr is a terminal,
//! plain lines otherwise.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use drydock_runtime::duration::format_duration;
use drydock_runtime::journal::{ApprovalRecord, ApprovalState, StepKind};
use drydock_runtime::observer::{ExecutionOutcome, Observer, StepEvent, StepOutcome};
use drydock_runtime::StepState;

use drydock_ops::display::{shown, shown_lines};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shows progress on stderr (stdout stays free for results and `--json`).
pub struct Progress {
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

fn symbol(state: StepState) -> &'static str {
    match state {
        StepState::Succeeded => "ok",
        StepState::FailedContinued => "failed (continuing)",
        StepState::Failed => "FAILED",
        StepState::TimedOut => "TIMED OUT",
        StepState::Cancelled => "cancelled",
        StepState::Rejected => "REJECTED",
        StepState::Running => "running",
    }
}

fn label(step: &StepEvent) -> String {
    let indent = "  ".repeat(step.depth + 1);
    let what = match step.kind {
        StepKind::Step => shown(&step.name),
        StepKind::Approval => "approval".to_string(),
        StepKind::Runbook => format!("runbook: {}", shown(&step.name)),
        StepKind::Cleanup => format!("cleanup: {}", shown(&step.name)),
        StepKind::Compensation => format!("compensation: {}", shown(&step.name)),
    };
    format!("{indent}[{}] {what}", step.path)
}

impl Progress {
    /// Spinners when stderr is a terminal, plain lines otherwise.
    pub fn new() -> Self {
        let multi = std::io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Self {
            multi,
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn line(&self, text: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(text);
            }
            None => {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "{text}");
            }
        }
    }

    fn key(step: &StepEvent) -> String {
        format!("{}/{}", step.execution_id, step.path)
    }

    fn stop_bar(&self, step: &StepEvent) {
        if let Some(bar) = self.bars.lock().unwrap().remove(&Self::key(step)) {
            bar.finish_and_clear();
            if let Some(m) = &self.multi {
                m.remove(&bar);
            }
        }
    }
}

impl Observer for Progress {
    fn execution_started(&self, id: &str, runbook: &str, resumed: bool, depth: usize) {
        let indent = "  ".repeat(depth);
        let verb = if resumed { "resuming" } else { "running" };
        self.line(&format!(
            "{indent}{verb} {} as execution {id}",
            shown(runbook)
        ));
    }

    fn note(&self, _id: &str, message: &str) {
        self.line(&format!("  note: {}", shown(message)));
    }

    fn step_started(&self, step: &StepEvent) {
        let text = if step.attempt > 1 {
            format!("{} (attempt {})", label(step), step.attempt)
        } else {
            label(step)
        };
        match &self.multi {
            Some(m) => {
                let bar = m.add(ProgressBar::new_spinner());
                bar.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").unwrap());
                bar.set_message(text);
                bar.enable_steady_tick(Duration::from_millis(100));
                if let Some(old) = self.bars.lock().unwrap().insert(Self::key(step), bar) {
                    old.finish_and_clear();
                }
            }
            None => self.line(&format!("{text} ... started")),
        }
    }

    fn step_retrying(&self, step: &StepEvent, error: &str, delay: Duration) {
        self.stop_bar(step);
        self.line(&format!(
            "{} attempt {} failed: {}; retrying in {}",
            label(step),
            step.attempt,
            shown_lines(error),
            format_duration(delay)
        ));
    }

    fn step_finished(&self, step: &StepEvent, outcome: &StepOutcome) {
        self.stop_bar(step);
        let mut text = format!(
            "{} ... {} in {}",
            label(step),
            symbol(outcome.state),
            format_duration(outcome.duration)
        );
        if let (Some(e), true) = (&outcome.error, outcome.state != StepState::Succeeded) {
            text.push_str(&format!(
                "\n{}    {}",
                "  ".repeat(step.depth),
                shown_lines(e)
            ));
        }
        self.line(&text);
    }

    fn step_replayed(&self, step: &StepEvent, state: StepState) {
        self.line(&format!(
            "{} ... {} (replayed from the journal)",
            label(step),
            symbol(state)
        ));
    }

    fn approval_waiting(&self, step: &StepEvent, approval: &ApprovalRecord) {
        if approval.state != ApprovalState::Pending {
            return;
        }
        let who = if approval.approvers.is_empty() {
            "anyone but the requester".to_string()
        } else {
            shown(&approval.approvers.join(", "))
        };
        self.line(&format!(
            "{} waiting for approval: {}\n      approvers: {who}; {} needed; decide with `drydock approve {}` or `drydock approve {} --reject`",
            label(step),
            shown(&approval.message),
            approval.min_approvals,
            step.execution_id,
            step.execution_id
        ));
    }

    fn approval_decided(&self, step: &StepEvent, approval: &ApprovalRecord) {
        let who: Vec<String> = approval
            .decisions
            .iter()
            .map(|d| {
                let verb = if d.approve { "approved" } else { "rejected" };
                let auto = if d.auto { " (auto)" } else { "" };
                format!("{} {verb}{auto}", shown(&d.approver))
            })
            .collect();
        self.line(&format!(
            "{} {}: {}",
            label(step),
            approval.state.as_str(),
            who.join(", ")
        ));
    }

    fn printed(&self, _id: &str, line: &str) {
        self.line(&format!("    | {}", shown(line)));
    }

    fn execution_finished(&self, outcome: &ExecutionOutcome, depth: usize) {
        let indent = "  ".repeat(depth);
        let mut text = format!(
            "{indent}execution {} ({}) ended {} in {} — {} steps run, {} replayed",
            outcome.execution_id,
            shown(&outcome.runbook),
            outcome.state,
            format_duration(Duration::from_millis(outcome.duration_ms)),
            outcome.steps_run,
            outcome.steps_replayed
        );
        if let Some(e) = &outcome.error {
            text.push_str(&format!("\n{indent}  error: {}", shown_lines(e)));
        }
        self.line(&text);
    }
}
