//! drydock's runbook runtime.
//!
//! A runbook is a Rhai script that first declares its metadata with
//! `runbook(#{ name, description, params })`, then does its work in
//! journaled `step`s. The [`Executor`] validates typed parameters, records
//! each execution in a SQLite [`Journal`], and can resume one after a crash
//! by replaying the steps that completed.
//!
//! Map of the crate:
//! - [`runbook`] parses a script and its metadata; [`params`] validates
//!   parameters; [`catalog`] finds bundled and user runbooks.
//! - [`executor`] runs executions: steps with retries, timeouts and failure
//!   policies, approvals, cleanups, child runbooks, replay.
//! - [`journal`] stores everything; [`state`] names the states.
//! - [`interrupt`] carries deadlines and cancellation to waiting primitives.
//! - [`observer`] reports progress to whoever shows it.

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
