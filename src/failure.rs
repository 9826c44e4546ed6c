//! Errors the CLI reports, each with its exit code.

use std::fmt;

/// An error shown to the user: 2 for usage errors (bad input, fix the
/// command), 1 for everything else.
#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub message: String,
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }

    pub fn failure(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl From<drydock_runtime::JournalError> for CliError {
    fn from(e: drydock_runtime::JournalError) -> Self {
        use drydock_runtime::JournalError as J;
        match e {
            J::UnknownExecution(_) | J::AmbiguousExecution { .. } | J::Conflict(_) => {
                Self::usage(e.to_string())
            }
            other => Self::failure(other.to_string()),
        }
    }
}

impl From<drydock_runtime::RunError> for CliError {
    fn from(e: drydock_runtime::RunError) -> Self {
        use drydock_runtime::RunError as R;
        match e {
            R::Journal(j) => j.into(),
            R::Runbook(_) | R::RunbookChanged(_) => Self::usage(e.to_string()),
            R::Secrets(_) | R::JournalBroken(_) => Self::failure(e.to_string()),
        }
    }
}

impl From<drydock_runtime::CatalogError> for CliError {
    fn from(e: drydock_runtime::CatalogError) -> Self {
        Self::usage(e.to_string())
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        Self::failure(e.to_string())
    }
}

impl From<drydock_host::HostError> for CliError {
    fn from(e: drydock_host::HostError) -> Self {
        if e.is_usage() {
            Self::usage(e.to_string())
        } else {
            Self::failure(e.to_string())
        }
    }
}

impl From<drydock_images::ImageError> for CliError {
    fn from(e: drydock_images::ImageError) -> Self {
        Self::failure(e.to_string())
    }
}

impl From<drydock_ops::OpsError> for CliError {
    fn from(e: drydock_ops::OpsError) -> Self {
        use drydock_ops::OpsError as O;
        match e {
            O::Usage(m) => Self::usage(m),
            O::Journal(j) => j.into(),
            O::Host(h) => h.into(),
        }
    }
}
