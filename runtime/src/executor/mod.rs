//! Runs executions: validates parameters, records the execution, builds a
//! Rhai engine with the journaled primitives (`step`, `approve`, `cleanup`,
//! `run_runbook`) plus the stdlib, evaluates the runbook, runs its cleanups
//! and records how it ended.

mod approval;
mod call_sites;
mod fleet;
mod options;
mod session;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, Map, NativeCallContext, Scope};
use sha2::{Digest, Sha256};

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
use session::{
    terminated_mark, AutoApprove, Lookup, RhaiResult, Session, SessionOrigin, StepSpec,
    CHANGED_MARK,
};

/// The options of `run_runbook(name, params, opts)`: only `region`, a
/// region name.
fn child_region(opts: &Map) -> Result<Option<String>, String> {
    let mut region = None;
    for (key, value) in opts {
        match key.as_str() {
            "region" => {
                let r = value
                    .clone()
                    .into_string()
                    .map_err(|t| format!("`region` must be a string, not {t}"))?;
                let (shape, expected) = crate::params::ResourceKind::Region.shape();
                if !regex::Regex::new(shape)
                    .expect("resource shapes are valid regexes")
                    .is_match(&r)
                {
                    return Err(format!("`region` must be {expected}, not {r:?}"));
                }
                region = Some(r);
            }
            other => {
                return Err(format!(
                    "unknown option `{other}`; the only option is `region`"
                ))
            }
        }
    }
    Ok(region)
}

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

/// SHA-256 of a runbook's source, recorded to notice edits between runs.
pub fn source_digest(source: &str) -> String {
    Sha256::digest(source.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

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

    /// Validates parameters and records a Pending execution. Nothing is
    /// recorded when a parameter is bad.
    pub fn create_execution(
        &self,
        runbook: &Runbook,
        supplied: &BTreeMap<String, SuppliedValue>,
        opts: &StartOptions,
    ) -> Result<String, StartError> {
        self.create_inner(runbook, supplied, opts, None)
    }

    fn create_inner(
        &self,
        runbook: &Runbook,
        supplied: &BTreeMap<String, SuppliedValue>,
        opts: &StartOptions,
        parent: Option<(String, String)>,
    ) -> Result<String, StartError> {
        let resolved = self.resolve_plain_refs(runbook, supplied)?;
        let params = resolve_params(&runbook.params, &resolved)?;
        let params = self.seal_secrets(runbook, params)?;
        let mut journal = self.journal()?;
        let requester = opts.requester.clone().unwrap_or_else(Identity::current);
        Ok(journal.create_execution(&NewExecution {
            runbook: runbook.name.clone(),
            origin: runbook.origin.to_string(),
            source_sha256: source_digest(&runbook.source),
            params,
            parent,
            auto_approve_by: opts.auto_approve.then(|| requester.name.clone()),
            requested_by: requester.name.clone(),
            requester_uid: Some(requester.uid),
            region: self.region.clone(),
            profile: self.profile.clone(),
            gate: opts.gate.clone(),
            run_by: run_by(&requester),
            runbook_owner: runbook.provenance.as_ref().map(|p| p.owner.clone()),
        })?)
    }

    /// A `param:NAME[:VERSION|:LABEL]` given for a parameter that is not a
    /// secret is the parameter store's value (a String parameter), never
    /// the text `param:…`; a SecureString there is refused (the runbook
    /// must declare the parameter `secret` to receive it).
    fn resolve_plain_refs(
        &self,
        runbook: &Runbook,
        supplied: &BTreeMap<String, SuppliedValue>,
    ) -> Result<BTreeMap<String, SuppliedValue>, StartError> {
        use crate::journal::Selector;
        use crate::params::{ParamError, ParamType};
        let mut out = supplied.clone();
        let mut errors = Vec::new();
        for spec in &runbook.params {
            if spec.kind == ParamType::Secret {
                continue;
            }
            let text = match supplied.get(&spec.name) {
                Some(SuppliedValue::Text(t)) => t.clone(),
                Some(SuppliedValue::Json(serde_json::Value::String(t))) => t.clone(),
                _ => continue,
            };
            let Some(reference) = text.strip_prefix("param:") else {
                continue;
            };
            let (name, which) = Selector::split(reference);
            let journal = self.journal()?;
            match journal.parameter(name, &which) {
                Ok(rec) if rec.secure => errors.push(ParamError {
                    param: spec.name.clone(),
                    message: format!(
                        "param:{reference} is a SecureString, and `{}` is not a secret parameter of runbook `{}`: its value would be journaled and shown in clear. Declare the parameter `type: \"secret\"`, or store a String parameter",
                        spec.name, runbook.name
                    ),
                }),
                Ok(rec) => {
                    out.insert(spec.name.clone(), SuppliedValue::Text(rec.value));
                }
                Err(e) => errors.push(ParamError {
                    param: spec.name.clone(),
                    message: format!("param:{reference}: {e}"),
                }),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(StartError::Params(ParamErrors(errors)))
        }
    }

    /// Replaces each secret parameter's value by a sealed copy, or by a
    /// pinned reference to the parameter store (`param:NAME[:VERSION|:LABEL]`).
    fn seal_secrets(
        &self,
        runbook: &Runbook,
        mut params: serde_json::Map<String, serde_json::Value>,
    ) -> Result<serde_json::Map<String, serde_json::Value>, StartError> {
        use crate::journal::Selector;
        use crate::params::{ParamError, ParamType};
        let mut errors = Vec::new();
        for spec in runbook
            .params
            .iter()
            .filter(|p| p.kind == ParamType::Secret)
        {
            let Some(serde_json::Value::String(text)) = params.get(&spec.name).cloned() else {
                continue;
            };
            let stored = match text.strip_prefix("param:") {
                Some(reference) => {
                    let (name, which) = Selector::split(reference);
                    self.journal()?
                        .parameter(name, &which)
                        .map(|p| serde_json::json!({ PARAM_REF_KEY: p.name, "version": p.version }))
                        .map_err(|e| e.to_string())
                }
                None => SecretKey::load_or_create(&self.data_dir)
                    .and_then(|k| k.seal(&spec.name, &text))
                    .map(|sealed| serde_json::json!({ SEALED_KEY: sealed }))
                    .map_err(|e| e.to_string()),
            };
            match stored {
                Ok(v) => {
                    params.insert(spec.name.clone(), v);
                }
                Err(message) => errors.push(ParamError {
                    param: spec.name.clone(),
                    message,
                }),
            }
        }
        if errors.is_empty() {
            Ok(params)
        } else {
            Err(ParamErrors(errors).into())
        }
    }

    /// The stored parameters with secrets opened, registered in `secrets`.
    fn open_secrets(
        &self,
        journal: &Journal,
        stored: &serde_json::Value,
        secrets: &Secrets,
    ) -> Result<serde_json::Value, RunError> {
        let serde_json::Value::Object(map) = stored else {
            return Ok(stored.clone());
        };
        let mut key = None;
        let mut out = serde_json::Map::new();
        for (name, value) in map {
            let opened = match value.as_object() {
                Some(m) if m.contains_key(SEALED_KEY) => {
                    if key.is_none() {
                        key = Some(
                            SecretKey::load_or_create(&self.data_dir)
                                .map_err(|e| RunError::Secrets(e.to_string()))?,
                        );
                    }
                    let sealed = m.get(SEALED_KEY).and_then(|v| v.as_str()).unwrap_or("");
                    key.as_ref()
                        .map(|k| k.open(name, sealed))
                        .transpose()
                        .map_err(|e| RunError::Secrets(format!("parameter `{name}`: {e}")))?
                        .unwrap_or_default()
                }
                Some(m) if m.contains_key(PARAM_REF_KEY) => {
                    let pname = m.get(PARAM_REF_KEY).and_then(|v| v.as_str()).unwrap_or("");
                    let version = m.get("version").and_then(|v| v.as_i64()).unwrap_or(0);
                    crate::secrets::read_parameter(
                        &self.data_dir,
                        journal,
                        pname,
                        &crate::journal::Selector::Version(version),
                    )
                    .map(|(value, _)| value)
                    .map_err(|e| RunError::Secrets(format!("parameter `{name}`: {e}")))?
                }
                _ => {
                    out.insert(name.clone(), value.clone());
                    continue;
                }
            };
            secrets.add(&opened);
            out.insert(name.clone(), serde_json::Value::String(opened));
        }
        Ok(serde_json::Value::Object(out))
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

    fn build_engine(
        &self,
        session: &Arc<Session>,
        params: Dynamic,
        region: &str,
        profile: &str,
    ) -> Engine {
        let mut engine = Engine::new();
        engine.set_max_call_levels(256);
        let interrupt = session.interrupt.clone();
        engine.on_progress(move |ops| {
            if ops % 256 == 0 {
                if let Some(d) = interrupt.nearest_deadline() {
                    if d <= Instant::now() {
                        return Some(crate::interrupt::DEADLINE_MARK.into());
                    }
                }
            }
            // A busy loop must still stop for `drydock cancel` (the probe
            // reads the journal at most every PROBE_EVERY).
            if ops % 4096 == 0 && interrupt.is_cancelled() {
                return Some(CANCELLED_MARK.into());
            }
            None
        });
        let s = session.clone();
        engine.on_print(move |line| s.printed(line));
        let s = session.clone();
        engine.on_debug(move |line, _, pos| s.printed(&format!("[debug {pos}] {line}")));

        // runbook(#{...}) declares metadata; when run, it returns the parameters.
        engine.register_fn("runbook", move |_meta: Map| params.clone());

        let s = session.clone();
        engine.register_fn(
            "step",
            move |ctx: NativeCallContext, name: &str, f: FnPtr| -> RhaiResult {
                step(&s, &ctx, name, StepOptions::default(), f)
            },
        );
        let s = session.clone();
        engine.register_fn(
            "step",
            move |ctx: NativeCallContext, name: &str, opts: Map, f: FnPtr| -> RhaiResult {
                let opts = StepOptions::from_map(&opts)
                    .map_err(|e| located(&ctx, format!("step `{name}`: {e}")))?;
                step(&s, &ctx, name, opts, f)
            },
        );
        let s = session.clone();
        engine.register_fn(
            "cleanup",
            move |ctx: NativeCallContext, name: &str, f: FnPtr| -> RhaiResult {
                add_cleanup(&s, &ctx, name, StepOptions::default(), f)
            },
        );
        let s = session.clone();
        engine.register_fn(
            "cleanup",
            move |ctx: NativeCallContext, name: &str, opts: Map, f: FnPtr| -> RhaiResult {
                let opts = StepOptions::from_map(&opts)
                    .map_err(|e| located(&ctx, format!("cleanup `{name}`: {e}")))?;
                add_cleanup(&s, &ctx, name, opts, f)
            },
        );
        let s = session.clone();
        engine.register_fn(
            "approve",
            move |ctx: NativeCallContext, opts: Map| -> RhaiResult {
                let opts = ApprovalOptions::from_map(&opts)
                    .map_err(|e| located(&ctx, format!("approve: {e}")))?;
                s.approve(opts, ctx.call_position())
            },
        );
        let s = session.clone();
        let me = self.clone();
        engine.register_fn(
            "run_runbook",
            move |ctx: NativeCallContext, name: &str, params: Map| -> RhaiResult {
                me.run_child(&s, &ctx, name, params)
            },
        );
        let s = session.clone();
        let me = self.clone();
        engine.register_fn(
            "run_runbook",
            move |ctx: NativeCallContext, name: &str| -> RhaiResult {
                me.run_child(&s, &ctx, name, Map::new())
            },
        );
        // A child in another region (a DR drill's restore side): options
        // `#{ region: "region-b" }`.
        let s = session.clone();
        let me = self.clone();
        engine.register_fn(
            "run_runbook",
            move |ctx: NativeCallContext, name: &str, params: Map, opts: Map| -> RhaiResult {
                let region = child_region(&opts)
                    .map_err(|e| located(&ctx, format!("run_runbook(\"{name}\"): {e}")))?;
                me.run_child_in(&s, &ctx, name, params, region.as_deref())
            },
        );
        // Typed overloads replace Rhai's own blocking `sleep(INT)` / `sleep(FLOAT)`.
        let s = session.clone();
        engine.register_fn(
            "sleep",
            move |ctx: NativeCallContext, secs: rhai::INT| -> RhaiResult {
                interruptible_sleep(&s, &ctx, Dynamic::from(secs))
            },
        );
        let s = session.clone();
        engine.register_fn(
            "sleep",
            move |ctx: NativeCallContext, secs: rhai::FLOAT| -> RhaiResult {
                interruptible_sleep(&s, &ctx, Dynamic::from(secs))
            },
        );
        let s = session.clone();
        engine.register_fn(
            "sleep",
            move |ctx: NativeCallContext, d: rhai::ImmutableString| -> RhaiResult {
                interruptible_sleep(&s, &ctx, Dynamic::from(d))
            },
        );
        crate::secrets::install_primitives(
            &mut engine,
            self.data_dir.clone(),
            session.secrets.clone(),
        );
        crate::schedule::calendar::install(&mut engine, self.data_dir.clone());
        engine.register_fn(
            "duration_secs",
            |ctx: NativeCallContext, d: Dynamic| -> Result<f64, Box<EvalAltResult>> {
                options::duration_value("duration", &d)
                    .map(|d| d.as_secs_f64())
                    .map_err(|e| located(&ctx, e))
            },
        );

        let rc = RunContext {
            execution_id: session.exec_id.clone(),
            data_dir: self.data_dir.clone(),
            interrupt: session.interrupt.clone(),
            region: region.to_string(),
            profile: profile.to_string(),
            secrets: session.secrets.clone(),
            call_sites: session.call_sites.clone(),
        };
        for install in &self.installers {
            install(&mut engine, &rc);
        }
        engine
    }

    fn run_child(
        &self,
        session: &Arc<Session>,
        ctx: &NativeCallContext,
        name: &str,
        params: Map,
    ) -> RhaiResult {
        self.run_child_in(session, ctx, name, params, None)
    }

    /// [`Self::run_child`] in `region` (the parent's when `None`).
    fn run_child_in(
        &self,
        session: &Arc<Session>,
        ctx: &NativeCallContext,
        name: &str,
        params: Map,
        region: Option<&str>,
    ) -> RhaiResult {
        let pos = ctx.call_position();
        session.safe_point(pos)?;
        if session.depth + 1 > MAX_NESTING {
            return Err(located(
                ctx,
                format!(
                    "run_runbook(\"{name}\"): runbooks nest deeper than {MAX_NESTING} levels; does a runbook call itself (directly or through others)?"
                ),
            ));
        }
        let label = format!("run {name}");
        let call = match session.lookup(&label, StepKind::Runbook, None, pos)? {
            Lookup::Replay(v) => return Ok(v),
            Lookup::Run(call, _) => call,
        };
        let started = Instant::now();
        let r = session.journal().start_attempt(
            &session.exec_id,
            &call.path,
            &label,
            StepKind::Runbook,
            1,
        );
        session.journal_result(r);
        let finish = |state: StepState, output: &serde_json::Value, error: Option<&str>| {
            let r = session.journal().finish_attempt(
                &session.exec_id,
                &call.path,
                1,
                error,
                Some((state, output, error)),
            );
            session.journal_result(r);
            session.observer.step_finished(
                &call.event,
                &StepOutcome {
                    state,
                    duration: started.elapsed(),
                    error: error.map(String::from),
                },
            );
        };
        session.observer.step_started(&call.event);
        let existing = {
            let r = session
                .journal()
                .child_execution(&session.exec_id, &call.path);
            session.journal_result(r).flatten()
        };
        let child_id = match existing {
            Some(id) => id,
            None => {
                let created = self
                    .catalog
                    .find(name)
                    .map_err(|e| e.to_string())
                    .and_then(|rb| {
                        let supplied: BTreeMap<String, SuppliedValue> = params
                            .iter()
                            .map(|(k, v)| {
                                let json = rhai::serde::from_dynamic::<serde_json::Value>(v)
                                    .unwrap_or(serde_json::Value::Null);
                                (k.to_string(), SuppliedValue::Json(json))
                            })
                            .collect();
                        // A secret handed to a child must stay sealed there too.
                        for (k, v) in &supplied {
                            let SuppliedValue::Json(json) = v else { continue };
                            let is_secret = rb.params.iter().any(|p| {
                                &p.name == k && p.kind == crate::params::ParamType::Secret
                            });
                            if !is_secret && session.secrets.contains_secret(&json.to_string()) {
                                return Err(format!(
                                    "parameter `{k}` receives a secret value; declare it `type: \"secret\"` in {} so it stays sealed",
                                    rb.name
                                ));
                            }
                        }
                        let opts = StartOptions {
                            auto_approve: session.auto_approve.is_some(),
                            requester: Some(session.requester.clone()),
                            gate: None,
                        };
                        let (own_region, profile) = &session.location;
                        let region = region.unwrap_or(own_region);
                        self.clone().with_location(region, profile).create_inner(
                            &rb,
                            &supplied,
                            &opts,
                            Some((session.exec_id.clone(), call.path.clone())),
                        )
                        .map_err(|e| e.to_string())
                    });
                match created {
                    Ok(id) => id,
                    Err(e) => {
                        let msg = format!("cannot start runbook `{name}`: {e}");
                        finish(StepState::Failed, &serde_json::Value::Null, Some(&msg));
                        return Err(session.fail_with(ExecutionState::Failed, &msg));
                    }
                }
            }
        };
        let r = session
            .journal()
            .set_step_child(&session.exec_id, &call.path, &child_id);
        session.journal_result(r);
        if session.interrupt.is_cancelled() {
            let r = session.journal().request_cancel(&child_id);
            session.journal_result(r);
        }
        let outcome = match self.run_at_depth(
            &child_id,
            session.observer.clone(),
            RunOptions::default(),
            session.depth + 1,
        ) {
            Ok(o) => o,
            Err(RunError::RunbookChanged(m)) => {
                return Err(EvalAltResult::ErrorTerminated(CHANGED_MARK.into(), pos).into())
                    .inspect_err(|_| {
                        tracing::error!("{m}");
                    })
            }
            Err(e) => {
                let msg = format!("runbook `{name}` ({child_id}) could not run: {e}");
                finish(StepState::Failed, &serde_json::Value::Null, Some(&msg));
                return Err(session.fail_with(ExecutionState::Failed, &msg));
            }
        };
        match outcome.state {
            ExecutionState::Success => {
                finish(StepState::Succeeded, &outcome.output, None);
                Ok(rhai::serde::to_dynamic(&outcome.output).unwrap_or(Dynamic::UNIT))
            }
            ExecutionState::Cancelled => {
                finish(
                    StepState::Cancelled,
                    &serde_json::Value::Null,
                    Some("cancelled"),
                );
                Err(Interruption::Cancelled.into_rhai(pos))
            }
            state => {
                let msg = format!(
                    "runbook `{name}` ({child_id}) ended {state}: {}",
                    outcome.error.as_deref().unwrap_or("no error recorded")
                );
                let step_state = match state {
                    ExecutionState::TimedOut => StepState::TimedOut,
                    ExecutionState::Rejected => StepState::Rejected,
                    _ => StepState::Failed,
                };
                finish(step_state, &serde_json::Value::Null, Some(&msg));
                let exec_state = match state {
                    ExecutionState::TimedOut | ExecutionState::Rejected => state,
                    _ => ExecutionState::Failed,
                };
                Err(session.fail_with(exec_state, &msg))
            }
        }
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

fn located(ctx: &NativeCallContext, message: String) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(message.into(), ctx.call_position()).into()
}

fn interruptible_sleep(session: &Session, ctx: &NativeCallContext, d: Dynamic) -> RhaiResult {
    let d = options::duration_value("sleep", &d).map_err(|e| located(ctx, e))?;
    session
        .interrupt
        .sleep(d)
        .map_err(|i| i.into_rhai(ctx.call_position()))?;
    Ok(Dynamic::UNIT)
}

fn step(
    session: &Session,
    ctx: &NativeCallContext,
    name: &str,
    opts: StepOptions,
    f: FnPtr,
) -> RhaiResult {
    if name.trim().is_empty() {
        return Err(located(ctx, "step() needs a non-empty name".into()));
    }
    let body = || f.call_within_context::<Dynamic>(ctx, ());
    let compensate = |c: &FnPtr| c.call_within_context::<Dynamic>(ctx, ());
    let spec = StepSpec {
        name,
        kind: StepKind::Step,
        opts: &opts,
        path: None,
        pos: ctx.call_position(),
    };
    session.run_step(spec, &body, &compensate)
}

fn add_cleanup(
    session: &Session,
    ctx: &NativeCallContext,
    name: &str,
    opts: StepOptions,
    f: FnPtr,
) -> RhaiResult {
    if session.inside_step() {
        return Err(located(
            ctx,
            format!(
                "cleanup `{name}` is registered inside a step; register cleanups at the top level of the runbook (use the step's output), so a resumed run registers them again"
            ),
        ));
    }
    session.add_cleanup(name, opts, f);
    Ok(Dynamic::UNIT)
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
