//! drydock's operations layer, in the style of cargo's `ops::*`: the CLI
//! (`src/commands/*`), the REPL (`repl/`) and the web API
//! (`src/commands/web/`) each parse their own input into an options
//! struct and call one function here, then render what it returns. The
//! rules (who may decide an approval, how long a comment may be), the
//! models (an execution and its timeline) and how outside text is made
//! safe to show live here once, so the front ends cannot drift apart.
//!
//! - [`host`]: opening the embedded host for a region and profile.
//! - [`approvals`]: what waits for a decision, what the caller may do
//!   about it, and deciding.
//! - [`executions`]: an execution as shown (`drydock executions show`,
//!   the REPL's `:show`, the web page), and its [`executions::timeline`].
//! - [`runbooks`]: the catalogue's runbooks and their parameters as
//!   `drydock runbooks --json` and the web console's run form show them.
//! - [`runs`]: cancelling and resuming executions (`drydock cancel`, the
//!   web API's cancel and resume).
//! - [`display`]: text from runbooks, guests and the journal escaped and
//!   clipped for a terminal or a table cell.

pub mod approvals;
pub mod display;
pub mod executions;
pub mod health;
pub mod host;
pub mod rules;
pub mod runbooks;
pub mod runs;

#[cfg(test)]
mod testing;

use drydock_host::HostError;
use drydock_runtime::JournalError;

/// Why an operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The caller's input is wrong (a usage error: exit code 2, HTTP 400);
    /// the message says what to fix.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Host(#[from] HostError),
}
