//! Progress events of an execution, for whoever shows them (the CLI's
//! progress lines, an embedding program, a test).

use std::time::Duration;

use crate::journal::{ApprovalRecord, StepKind};
use crate::state::{ExecutionState, StepState};

/// Identifies a step in progress events.
#[derive(Debug, Clone)]
pub struct StepEvent {
    pub execution_id: String,
    pub path: String,
    pub name: String,
    pub kind: StepKind,
    pub attempt: u32,
    /// Nesting depth: 0 for top-level steps of the top-level execution.
    pub depth: usize,
}

/// How a step attempt ended.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    pub state: StepState,
    pub duration: Duration,
    pub error: Option<String>,
}

/// How an execution ended (or stopped, for a runbook changed under it).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExecutionOutcome {
    pub execution_id: String,
    pub runbook: String,
    pub state: ExecutionState,
    pub output: serde_json::Value,
    pub error: Option<String>,
    pub duration_ms: u64,
    pub steps_run: u32,
    pub steps_replayed: u32,
}

/// Receives progress events. Every method has an empty default.
pub trait Observer: Send + Sync {
    fn execution_started(&self, _id: &str, _runbook: &str, _resumed: bool, _depth: usize) {}
    fn note(&self, _id: &str, _message: &str) {}
    fn step_started(&self, _step: &StepEvent) {}
    fn step_retrying(&self, _step: &StepEvent, _error: &str, _delay: Duration) {}
    fn step_finished(&self, _step: &StepEvent, _outcome: &StepOutcome) {}
    fn step_replayed(&self, _step: &StepEvent, _state: StepState) {}
    fn approval_waiting(&self, _step: &StepEvent, _approval: &ApprovalRecord) {}
    fn approval_decided(&self, _step: &StepEvent, _approval: &ApprovalRecord) {}
    fn printed(&self, _id: &str, _line: &str) {}
    fn execution_finished(&self, _outcome: &ExecutionOutcome, _depth: usize) {}
}

/// An observer that shows nothing.
pub struct QuietObserver;

impl Observer for QuietObserver {}

/// Passes events on with every secret masked out of their text.
pub struct MaskingObserver {
    inner: std::sync::Arc<dyn Observer>,
    secrets: crate::secrets::Secrets,
}

impl MaskingObserver {
    pub fn new(inner: std::sync::Arc<dyn Observer>, secrets: crate::secrets::Secrets) -> Self {
        Self { inner, secrets }
    }
}

impl Observer for MaskingObserver {
    fn execution_started(&self, id: &str, runbook: &str, resumed: bool, depth: usize) {
        self.inner.execution_started(id, runbook, resumed, depth)
    }
    fn note(&self, id: &str, message: &str) {
        self.inner.note(id, &self.secrets.mask(message))
    }
    fn step_started(&self, step: &StepEvent) {
        self.inner.step_started(step)
    }
    fn step_retrying(&self, step: &StepEvent, error: &str, delay: Duration) {
        self.inner
            .step_retrying(step, &self.secrets.mask(error), delay)
    }
    fn step_finished(&self, step: &StepEvent, outcome: &StepOutcome) {
        let masked = StepOutcome {
            state: outcome.state,
            duration: outcome.duration,
            error: outcome.error.as_deref().map(|e| self.secrets.mask(e)),
        };
        self.inner.step_finished(step, &masked)
    }
    fn step_replayed(&self, step: &StepEvent, state: StepState) {
        self.inner.step_replayed(step, state)
    }
    fn approval_waiting(&self, step: &StepEvent, approval: &ApprovalRecord) {
        let mut a = approval.clone();
        a.message = self.secrets.mask(&a.message);
        self.inner.approval_waiting(step, &a)
    }
    fn approval_decided(&self, step: &StepEvent, approval: &ApprovalRecord) {
        let mut a = approval.clone();
        a.message = self.secrets.mask(&a.message);
        self.inner.approval_decided(step, &a)
    }
    fn printed(&self, id: &str, line: &str) {
        self.inner.printed(id, &self.secrets.mask(line))
    }
    fn execution_finished(&self, outcome: &ExecutionOutcome, depth: usize) {
        self.inner.execution_finished(outcome, depth)
    }
}
