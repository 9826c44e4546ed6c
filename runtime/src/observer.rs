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
