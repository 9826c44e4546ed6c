//! Execution and step states, as stored in the journal.

use std::fmt;
use std::str::FromStr;

/// Where an execution stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ExecutionState {
    /// Recorded with validated parameters; no runner has picked it up yet.
    Pending,
    InProgress,
    WaitingForApproval,
    Success,
    Failed,
    TimedOut,
    Cancelled,
    Rejected,
}

impl ExecutionState {
    pub const ALL: [Self; 8] = [
        Self::Pending,
        Self::InProgress,
        Self::WaitingForApproval,
        Self::Success,
        Self::Failed,
        Self::TimedOut,
        Self::Cancelled,
        Self::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::InProgress => "InProgress",
            Self::WaitingForApproval => "WaitingForApproval",
            Self::Success => "Success",
            Self::Failed => "Failed",
            Self::TimedOut => "TimedOut",
            Self::Cancelled => "Cancelled",
            Self::Rejected => "Rejected",
        }
    }

    /// An ended execution never changes state again (except by `resume --retry`).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Success | Self::Failed | Self::TimedOut | Self::Cancelled | Self::Rejected
        )
    }

    /// Process exit code for a finished run: 0 success, 1 failed, 3 rejected,
    /// 4 timed out, 5 cancelled (2 is kept for usage errors).
    pub fn exit_code(self) -> i32 {
        match self {
            Self::Success => 0,
            Self::Failed => 1,
            Self::Rejected => 3,
            Self::TimedOut => 4,
            Self::Cancelled => 5,
            Self::Pending | Self::InProgress | Self::WaitingForApproval => 0,
        }
    }
}

impl fmt::Display for ExecutionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExecutionState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown state {s:?}; expected one of {}", names.join(", "))
            })
    }
}

/// Where one journaled step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Running,
    Succeeded,
    /// Failed, and the runbook said to go on (`on_failure: "continue"`).
    FailedContinued,
    Failed,
    TimedOut,
    Cancelled,
    Rejected,
}

impl StepState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::FailedContinued => "failed_continued",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
            Self::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "succeeded" => Self::Succeeded,
            "failed_continued" => Self::FailedContinued,
            "failed" => Self::Failed,
            "timed_out" => Self::TimedOut,
            "cancelled" => Self::Cancelled,
            "rejected" => Self::Rejected,
            _ => Self::Running,
        }
    }

    /// A step whose recorded result is replayed instead of running it again.
    pub fn is_replayable(self) -> bool {
        matches!(self, Self::Succeeded | Self::FailedContinued)
    }
}

impl fmt::Display for StepState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
