//! Runs executions: validates parameters, records the execution, builds a
//! Rhai engine with the journaled primitives (`step`, `approve`, `cleanup`,
//! `run_runbook`) plus the stdlib, evaluates the runbook, runs its cleanups
//! and records how it ended.

mod approval;
mod call_sites;
mod children;
mod creation;
mod engine;
mod fleet;
mod options;
mod session;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, Map, NativeCallContext, Scope};

pub use call_sites::{CallSites, CallToken};
pub use fleet::FleetSpec;
pub use options::{duration_value, ApprovalOptions, OnFailure, StepOptions, Unapproved};
pub use session::describe_error;

use crate::catalog::{Catalog, CatalogError};
use crate::identity::Identity;
use crate::interrupt::{Interrupt, Interruption, CANCELLED_MARK};
use crate::journal::{Durability, Journal, JournalError, NewExecution, StepKind};
use crate::observer::{ExecutionOutcome, Observer, StepOutcome};
use crate::params::{resolve_params, ParamErrors, SuppliedValue};
use crate::runbook::Runbook;
use crate::runner::RunnerIdentity;
use crate::secrets::{SecretKey, Secrets, PARAM_REF_KEY, SEALED_KEY};
use crate::state::{ExecutionState, StepState};
use children::child_region;
use engine::located;
use session::{
    terminated_mark, AutoApprove, Lookup, RhaiResult, Session, SessionOrigin, StepSpec,
    CHANGED_MARK,
};

/// The account of this process, when it runs on someone else's behalf.
pub(crate) fn run_by(requester: &Identity) -> Option<String> {
    let me = Identity::current();
    (me.uid != requester.uid || me.name != requester.name).then_some(me.name)
}

/// How deep child runbooks may nest.
pub const MAX_NESTING: usize = 16;

/// What a primitive needs from the execution it runs in.
#[derive(Clone)]
pub struct RunContext {
    pub execution_id: String,
    pub data_dir: PathBuf,
    /// Deadlines and cancellation: primitives that wait must use it.
    pub interrupt: Arc<Interrupt>,
    /// The region and profile the execution acts in.
    pub region: String,
    pub profile: String,
    /// Secret values of this execution: primitives that write text out
    /// (transcripts, logs) mask them; primitives that obtain a secret
    /// register it.
    pub secrets: Secrets,
    /// Names create calls so that they are idempotent across a crash of
    /// the runner ([`CallSites::next`]).
    pub call_sites: CallSites,
}

/// Registers primitives into an engine built for one execution.
pub type PrimitiveInstaller = Arc<dyn Fn(&mut Engine, &RunContext) + Send + Sync>;

/// Errors creating an execution.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Params(#[from] ParamErrors),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// Errors that keep an execution from running (it is left as it was).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("cannot load the runbook of this execution: {0}")]
    Runbook(#[from] CatalogError),
    #[error("{0}")]
    RunbookChanged(String),
    #[error("cannot open the secret parameters of this execution: {0}")]
    Secrets(String),
    #[error("{0}")]
    JournalBroken(String),
}

/// How an execution is started.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Ask for `--auto-approve`: it settles approvals that allow it (any
    /// approval when the requester is an admin), recorded with who asked.
    pub auto_approve: bool,
    /// Who requests the execution; this process's account when None.
    pub requester: Option<Identity>,
    /// Ask this approval before the runbook runs (anyone but the
    /// requester decides): a change calendar's override gate.
    pub gate: Option<String>,
    /// Who decides the gate (empty: anyone but the requester).
    pub gate_approvers: Vec<String>,
}

/// How an execution is run.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Reopen a Failed / TimedOut / Cancelled execution and run its failed
    /// part again (completed steps are replayed).
    pub retry: bool,
}

/// Runs runbooks and keeps their journal.
#[derive(Clone)]
pub struct Executor {
    data_dir: PathBuf,
    catalog: Arc<Catalog>,
    durability: Durability,
    installers: Vec<PrimitiveInstaller>,
    region: String,
    profile: String,
    admins: Vec<String>,
}

pub use crate::runbook::source_digest;

impl Executor {
    /// An executor keeping its journal in `data_dir`.
    pub fn new(data_dir: PathBuf, catalog: Catalog) -> Self {
        Self {
            data_dir,
            catalog: Arc::new(catalog),
            durability: Durability::Full,
            installers: Vec::new(),
            region: "region-a".into(),
            profile: "default".into(),
            admins: Vec::new(),
        }
    }

    /// Accounts (names or `@group`) that may `--auto-approve` any approval.
    /// Root always may: it can read and write everything drydock keeps.
    pub fn with_admins(mut self, admins: Vec<String>) -> Self {
        self.admins = admins;
        self
    }

    /// Whether `who` is an admin.
    pub fn is_admin(&self, who: &Identity) -> bool {
        who.is_root() || self.admins.iter().any(|a| a != "*" && who.matches(a))
    }

    /// Sets the region and profile executions act in.
    pub fn with_location(mut self, region: &str, profile: &str) -> Self {
        self.region = region.to_string();
        self.profile = profile.to_string();
        self
    }

    /// Sets how hard journal writes are pushed to disk.
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Adds primitives (a stdlib, or an embedder's own functions).
    pub fn with_primitives(
        mut self,
        install: impl Fn(&mut Engine, &RunContext) + Send + Sync + 'static,
    ) -> Self {
        self.installers.push(Arc::new(install));
        self
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Opens the journal.
    pub fn journal(&self) -> Result<Journal, JournalError> {
        Journal::open_with(&self.data_dir, self.durability)
    }

    /// Runs (or resumes) an execution to its end in this thread.
    pub fn run(
        &self,
        id: &str,
        observer: Arc<dyn Observer>,
        opts: RunOptions,
    ) -> Result<ExecutionOutcome, RunError> {
        self.run_at_depth(id, observer, opts, 0)
    }

    fn run_at_depth(
        &self,
        id: &str,
        observer: Arc<dyn Observer>,
        opts: RunOptions,
        depth: usize,
    ) -> Result<ExecutionOutcome, RunError> {
        let started = Instant::now();
        let mut journal = self.journal()?;
        let record = journal.claim_execution(id, &RunnerIdentity::current(), opts.retry)?;
        journal.set_fence(id, record.runner_epoch);
        let runbook = match self.catalog.load(&record.origin) {
            Ok(rb) => rb,
            Err(e) => {
                journal.release_runner(id)?;
                return Err(e.into());
            }
        };
        if let Some(fleet) = &record.fleet {
            let spec: FleetSpec = match serde_json::from_str(fleet) {
                Ok(s) => s,
                Err(e) => {
                    journal.release_runner(id)?;
                    return Err(RunError::Journal(crate::journal::JournalError::Conflict(
                        format!("the fleet of {id} is not readable: {e}"),
                    )));
                }
            };
            return self.run_fleet(&record, &runbook, spec, journal, observer, depth);
        }
        if opts.retry {
            journal.forget_cleanups(id)?;
        }
        let secrets = Secrets::new();
        let opened = match self.open_secrets(&journal, &record.stored_params, &secrets) {
            Ok(p) => p,
            Err(e) => {
                journal.release_runner(id)?;
                return Err(e);
            }
        };
        journal.set_masker(secrets.clone());
        let observer: Arc<dyn Observer> = Arc::new(crate::observer::MaskingObserver::new(
            observer,
            secrets.clone(),
        ));
        let recorded = journal.steps(id)?;
        let resumed = !recorded.is_empty();
        let digest = source_digest(&runbook.source);
        if let Some(msg) = approved_for_other_code(&journal, id, &digest, &runbook.label())? {
            journal.add_event(id, "error", &msg)?;
            journal.release_runner(id)?;
            return Err(RunError::RunbookChanged(msg));
        }
        observer.execution_started(id, &record.runbook, resumed, depth);
        let me = Identity::current();
        let auto_approve = match &record.auto_approve_by {
            Some(by) if *by == me.name => Some(AutoApprove {
                admin: self.is_admin(&me),
                by: me.clone(),
            }),
            Some(by) => {
                let note = format!(
                    "--auto-approve was asked for by {by}; this runner runs as {}, so approvals wait for approvers",
                    me.name
                );
                journal.add_event(id, "note", &note)?;
                observer.note(id, &note);
                None
            }
            None => None,
        };
        let origin = SessionOrigin {
            requester: Identity {
                uid: record.requester_uid.unwrap_or(u32::MAX),
                name: record.requested_by.clone(),
            },
            auto_approve,
            source_sha256: digest.clone(),
            secrets: secrets.clone(),
            location: (
                record.region.clone().unwrap_or_else(|| self.region.clone()),
                record
                    .profile
                    .clone()
                    .unwrap_or_else(|| self.profile.clone()),
            ),
        };
        if digest != record.source_sha256 {
            let note = format!(
                "the runbook {} changed since this execution started; completed steps are replayed and checked against it",
                runbook.label()
            );
            journal.add_event(id, "note", &note)?;
            observer.note(id, &note);
        }
        let journal = Arc::new(Mutex::new(journal));
        let probe_journal = journal.clone();
        let probe_id = id.to_string();
        let interrupt = Arc::new(Interrupt::with_probe(Some(Box::new(move || {
            probe_journal
                .lock()
                .unwrap()
                .cancel_requested(&probe_id)
                .unwrap_or(false)
        }))));
        let session = Arc::new(Session::new(
            id.to_string(),
            journal.clone(),
            observer.clone(),
            interrupt.clone(),
            origin,
            depth,
            recorded,
        ));
        let params = rhai::serde::to_dynamic(&opened).unwrap_or(Dynamic::UNIT);
        // An execution acts where it was started, whoever resumes it.
        let (region, profile) = session.location.clone();
        let engine = self.build_engine(&session, params.clone(), &region, &profile);

        let result = match engine.compile(&runbook.source) {
            Ok(ast) => {
                let mut scope = Scope::new();
                scope.push_constant("params", params);
                scope.push_constant("execution_id", id.to_string());
                let gate = match &record.gate {
                    Some(message) => session
                        .approve_at(
                            ApprovalOptions {
                                message: message.clone(),
                                approvers: record.gate_approvers.clone(),
                                ..ApprovalOptions::gate()
                            },
                            rhai::Position::NONE,
                            Some("gate".into()),
                        )
                        .map(|_| ()),
                    None => Ok(()),
                };
                let r = gate.and_then(|_| engine.eval_ast_with_scope::<Dynamic>(&mut scope, &ast));
                let changed = session.changed();
                if changed.is_none() && session.journal_broken().is_none() {
                    let cleanup_call = |f: &FnPtr| f.call::<Dynamic>(&engine, &ast, ());
                    let cleanup_error = session.run_cleanups(&cleanup_call);
                    (r, cleanup_error)
                } else {
                    (r, None)
                }
            }
            Err(e) => {
                let mut j = journal.lock().unwrap();
                j.release_runner(id)?;
                return Err(CatalogError::Invalid(crate::runbook::RunbookError::at(
                    &runbook.origin,
                    e.position(),
                    e.err_type().to_string(),
                ))
                .into());
            }
        };
        let (result, cleanup_error) = result;
        let mut journal = journal.lock().unwrap();

        if let Some(broken) = session.journal_broken() {
            let _ = journal.release_runner(id);
            return Err(RunError::JournalBroken(format!(
                "the journal could not be written ({broken}); execution {id} was stopped where it was, before any unrecorded work; `drydock resume {id}` continues it once the journal is writable"
            )));
        }
        if let Some(changed) = session.changed() {
            journal.add_event(id, "error", &changed)?;
            journal.set_execution_state(id, record.state.max_running())?;
            journal.release_runner(id)?;
            return Err(RunError::RunbookChanged(changed));
        }
        let (state, output, error) = match result {
            Ok(value) => {
                let unreached = session.unreached_steps();
                if let Some(first) = unreached.iter().find(|r| r.state == StepState::Succeeded) {
                    let msg = format!(
                        "runbook changed since this execution started: the journal records {} `{}` at call {} that the script no longer reaches",
                        first.kind.as_str(),
                        first.name,
                        first.path
                    );
                    journal.add_event(id, "error", &msg)?;
                    journal.set_execution_state(id, ExecutionState::InProgress)?;
                    journal.release_runner(id)?;
                    return Err(RunError::RunbookChanged(msg));
                }
                let output = rhai::serde::from_dynamic::<serde_json::Value>(&value)
                    .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
                match cleanup_error {
                    None => (ExecutionState::Success, output, None),
                    Some(e) => (ExecutionState::Failed, output, Some(e)),
                }
            }
            Err(err) => {
                let message = match terminated_mark(&err).as_deref() {
                    Some(CANCELLED_MARK) => "cancelled".to_string(),
                    Some(crate::interrupt::DEADLINE_MARK) => "timed out".to_string(),
                    _ => describe_error(&err),
                };
                let state = if terminated_mark(&err).as_deref() == Some(CANCELLED_MARK) {
                    ExecutionState::Cancelled
                } else {
                    match session.failure() {
                        Some((state, m)) if message.contains(&m) => state,
                        _ => ExecutionState::Failed,
                    }
                };
                let message = match cleanup_error {
                    Some(c) => format!("{message}; {c}"),
                    None => message,
                };
                (state, serde_json::Value::Null, Some(message))
            }
        };
        let output = secrets.mask_json(&output);
        let error = error.map(|e| secrets.mask(&e));
        journal.finish_execution(id, state, &output, error.as_deref())?;
        let (steps_run, steps_replayed) = session.counts();
        let outcome = ExecutionOutcome {
            execution_id: id.to_string(),
            runbook: record.runbook.clone(),
            state,
            output,
            error,
            duration_ms: started.elapsed().as_millis() as u64,
            steps_run,
            steps_replayed,
        };
        drop(journal);
        observer.execution_finished(&outcome, depth);
        Ok(outcome)
    }
}

/// An approval given (in full or in part) for runbook source other than
/// `digest` must not pass for this code: says which, or None.
fn approved_for_other_code(
    journal: &Journal,
    id: &str,
    digest: &str,
    label: &str,
) -> Result<Option<String>, JournalError> {
    for a in journal.approvals_of(id)? {
        let decided = a.decisions.iter().any(|d| d.approve);
        if decided && !a.source_sha256.is_empty() && a.source_sha256 != digest {
            return Ok(Some(format!(
                "runbook changed since it was approved: the approval at call {} ({:?}) was given for runbook source sha256:{}, but {label} is now sha256:{}. \
                 An approval covers the code it was asked for: put the original runbook back to resume, or start a new execution and ask again",
                a.path,
                crate::display::sanitize(&a.message),
                &a.source_sha256[..12.min(a.source_sha256.len())],
                &digest[..12.min(digest.len())],
            )));
        }
    }
    Ok(None)
}

impl ExecutionState {
    /// The state to leave an unfinished execution in when its runner stops.
    fn max_running(self) -> Self {
        match self {
            Self::WaitingForApproval => Self::WaitingForApproval,
            _ => Self::InProgress,
        }
    }
}
