//! drydock's runbook runtime.
//!
//! A runbook is a Rhai script that first declares its metadata with
//! `runbook(#{ name, description, params })`, then does its work in
//! journaled `step`s. The [`Executor`] validates typed parameters, records
//! each execution in a SQLite [`Journal`], and can resume one after a crash
//! by replaying the steps that completed.
//!
//! Map of the crate (every module):
//! - Runbooks: [`runbook`] parses a script and its metadata; [`params`]
//!   validates parameters; [`catalog`] finds bundled and user runbooks;
//!   [`provenance`] decides whose runbook files may run.
//! - Running them: [`executor`] runs executions (steps with retries,
//!   timeouts and failure policies, approvals, cleanups, child runbooks,
//!   fleets, replay); [`runner`] names the process that runs one (and
//!   fences a second); [`interrupt`] carries deadlines and cancellation to
//!   waiting primitives; [`observer`] reports progress to whoever shows it.
//! - State: [`parameters`] reads the parameter store (and provides
//!   `param()`/`secret()`); [`journal`] stores everything (executions, steps, approvals,
//!   parameters, schedules, windows, calendars, tokens, REPL sessions),
//!   with versioned migrations, on [`sqlite`] connections shared between
//!   processes; [`state`] names the states; [`ids`] makes ids and times.
//! - Scheduling: [`schedule`] (expressions, the planner, maintenance
//!   windows, change calendars).
//! - Who and what may be trusted: [`identity`] (OS accounts, socket
//!   peers), [`access`] (the umask, the sharing group, who may administer),
//!   [`private`] (file and socket modes, peer checks, tightening old state),
//!   [`secrets`] (sealing at rest, masking in output), [`input_file`] (every
//!   user-named file read bounded), [`display`] (text made safe to show).
//! - [`duration`] reads and writes durations (`90s`, `2h`).

pub mod access;
pub mod catalog;
pub mod display;
pub mod duration;
pub mod executor;
pub mod identity;
pub mod ids;
pub mod input_file;
pub mod interrupt;
pub mod journal;
pub mod observer;
pub mod parameters;
pub mod params;
pub mod private;
pub mod provenance;
pub mod runbook;
pub mod runner;
pub mod schedule;
pub mod secrets;
pub mod sqlite;
pub mod state;

pub use catalog::{Catalog, CatalogError};
pub use executor::{Executor, RunContext, RunError, RunOptions, StartError, StartOptions};
pub use journal::{Durability, Journal, JournalError};
pub use observer::{ExecutionOutcome, Observer, QuietObserver};
pub use params::{ParamErrors, SuppliedValue};
pub use runbook::{Runbook, RunbookError, RunbookOrigin};
pub use state::{ExecutionState, StepState};
