//! One execution being run: step paths, replay from the journal, retries,
//! timeouts, failure policies and cleanups.
//!
//! Every journaled call (step, approval, child runbook, cleanup) gets a
//! path from its position in the script: `3` is the third top-level call,
//! `3.2` the second call inside it, `cleanup.1` the first cleanup. On
//! resume, a call whose path holds a completed record is replayed: its
//! closure is not called and its recorded output is returned.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rhai::{Dynamic, EvalAltResult, FnPtr, Position};

use super::options::{OnFailure, StepOptions};
use crate::identity::Identity;
use crate::interrupt::{Interrupt, Interruption, CANCELLED_MARK, DEADLINE_MARK};
use crate::journal::{Journal, StepKind, StepRecord};
use crate::observer::{Observer, StepEvent, StepOutcome};
use crate::state::{ExecutionState, StepState};

pub(crate) type RhaiResult = Result<Dynamic, Box<EvalAltResult>>;

pub(crate) const CHANGED_MARK: &str = "drydock:runbook-changed";
/// Stops a script whose journal can no longer be written.
pub(crate) const JOURNAL_MARK: &str = "drydock:journal-broken";

/// Per-execution state shared by the registered primitives.
pub(crate) struct Session {
    pub exec_id: String,
    pub journal: Arc<Mutex<Journal>>,
    pub observer: Arc<dyn Observer>,
    pub interrupt: Arc<Interrupt>,
    /// `--auto-approve` in effect for this runner, and by whom.
    pub auto_approve: Option<AutoApprove>,
    /// Who requested the execution (approvals keep them from approving it).
    pub requester: Identity,
    /// SHA-256 of the runbook source this runner executes.
    pub source_sha256: String,
    /// Secret values this execution has seen.
    pub secrets: crate::secrets::Secrets,
    /// Where the execution acts (its children act there too).
    pub location: (String, String),
    pub depth: usize,
    /// Names the create calls of this execution (idempotency tokens).
    pub call_sites: super::call_sites::CallSites,
    state: Mutex<SessionState>,
}

/// An `--auto-approve` that this runner may apply.
#[derive(Debug, Clone)]
pub(crate) struct AutoApprove {
    /// The account that asked for it (also the runner's account).
    pub by: Identity,
    /// Admins may auto-approve any approval; others only those that say
    /// `auto_approve: "allowed"`.
    pub admin: bool,
}

/// Who an execution is for, and under which code.
pub(crate) struct SessionOrigin {
    pub requester: Identity,
    pub auto_approve: Option<AutoApprove>,
    pub source_sha256: String,
    pub secrets: crate::secrets::Secrets,
    pub location: (String, String),
}

struct SessionState {
    recorded: HashMap<String, StepRecord>,
    scopes: Vec<(String, u32)>,
    cleanups: Vec<(String, StepOptions, FnPtr)>,
    visited_top: HashSet<String>,
    failure: Option<(ExecutionState, String)>,
    changed: Option<String>,
    journal_broken: Option<String>,
    steps_run: u32,
    steps_replayed: u32,
    /// Events this run of the body emitted (`event(…)`), in order: a
    /// resumed execution emits again only past what the journal holds.
    events_emitted: i64,
}

/// A journaled call being made: its path and event.
pub(crate) struct Call {
    pub path: String,
    pub event: StepEvent,
}

/// What a step call is: its name, kind, policy and, for cleanups and
/// compensations, a fixed path.
pub(crate) struct StepSpec<'a> {
    pub name: &'a str,
    pub kind: StepKind,
    pub opts: &'a StepOptions,
    pub path: Option<String>,
    pub pos: Position,
}

/// The result of looking a call up in the journal.
pub(crate) enum Lookup {
    Replay(Dynamic),
    Run(Call, u32),
}

impl Session {
    pub fn new(
        exec_id: String,
        journal: Arc<Mutex<Journal>>,
        observer: Arc<dyn Observer>,
        interrupt: Arc<Interrupt>,
        origin: SessionOrigin,
        depth: usize,
        recorded: Vec<StepRecord>,
    ) -> Self {
        Self {
            call_sites: super::call_sites::CallSites::for_execution(&exec_id),
            exec_id,
            journal,
            observer,
            interrupt,
            auto_approve: origin.auto_approve,
            requester: origin.requester,
            source_sha256: origin.source_sha256,
            secrets: origin.secrets,
            location: origin.location,
            depth,
            state: Mutex::new(SessionState {
                recorded: recorded.into_iter().map(|s| (s.path.clone(), s)).collect(),
                scopes: vec![(String::new(), 0)],
                cleanups: Vec::new(),
                visited_top: HashSet::new(),
                failure: None,
                changed: None,
                journal_broken: None,
                steps_run: 0,
                steps_replayed: 0,
                events_emitted: 0,
            }),
        }
    }

    fn st(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap()
    }

    pub fn journal(&self) -> MutexGuard<'_, Journal> {
        self.journal.lock().unwrap()
    }

    /// Takes the result of a journal write. A failed write stops the
    /// execution at the next safe point (and before any step body runs):
    /// work the journal does not record would run again on resume.
    pub fn journal_result<T>(&self, r: Result<T, crate::journal::JournalError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::error!(execution = %self.exec_id, "journal write failed: {e}");
                self.observer
                    .note(&self.exec_id, &format!("journal write failed: {e}"));
                let mut st = self.st();
                if st.journal_broken.is_none() {
                    st.journal_broken = Some(e.to_string());
                }
                None
            }
        }
    }

    /// The first journal write that failed, if any.
    pub fn journal_broken(&self) -> Option<String> {
        self.st().journal_broken.clone()
    }

    fn stop_if_journal_broken(&self, pos: Position) -> Result<(), Box<EvalAltResult>> {
        if self.st().journal_broken.is_some() {
            return Err(EvalAltResult::ErrorTerminated(JOURNAL_MARK.into(), pos).into());
        }
        Ok(())
    }

    pub fn counts(&self) -> (u32, u32) {
        let st = self.st();
        (st.steps_run, st.steps_replayed)
    }

    pub fn failure(&self) -> Option<(ExecutionState, String)> {
        self.st().failure.clone()
    }

    pub fn changed(&self) -> Option<String> {
        self.st().changed.clone()
    }

    fn set_failure(&self, state: ExecutionState, message: &str) {
        self.st().failure = Some((state, message.to_string()));
    }

    /// A safe point: stops the script if cancellation was requested.
    pub fn safe_point(&self, pos: Position) -> Result<(), Box<EvalAltResult>> {
        self.stop_if_journal_broken(pos)?;
        if self.interrupt.is_cancelled() {
            return Err(Interruption::Cancelled.into_rhai(pos));
        }
        Ok(())
    }

    fn next_path(&self) -> (String, usize) {
        let mut st = self.st();
        let depth = st.scopes.len() - 1;
        let (prefix, counter) = st.scopes.last_mut().unwrap();
        *counter += 1;
        let path = if prefix.is_empty() {
            counter.to_string()
        } else {
            format!("{prefix}.{counter}")
        };
        (path, depth)
    }

    /// Whether the script is inside a step's closure right now.
    pub fn inside_step(&self) -> bool {
        self.st().scopes.len() > 1
    }

    /// Finds the next call's path and decides whether to replay it.
    pub fn lookup(
        &self,
        name: &str,
        kind: StepKind,
        forced_path: Option<String>,
        pos: Position,
    ) -> Result<Lookup, Box<EvalAltResult>> {
        let (path, nesting) = match forced_path {
            Some(p) => (p, 0),
            None => self.next_path(),
        };
        let event = StepEvent {
            execution_id: self.exec_id.clone(),
            path: path.clone(),
            name: name.to_string(),
            kind,
            attempt: 1,
            depth: self.depth + nesting,
        };
        let mut st = self.st();
        if !path.contains('.') {
            st.visited_top.insert(path.clone());
        }
        let Some(rec) = st.recorded.get(&path).cloned() else {
            return Ok(Lookup::Run(Call { path, event }, 0));
        };
        if rec.name != name || rec.kind != kind {
            let msg = format!(
                "runbook changed since this execution started: call {path} was {} `{}` in the journal, the script now makes {} `{name}` there. \
                 Resume with the runbook as it was, or start a new execution",
                rec.kind.as_str(),
                rec.name,
                kind.as_str()
            );
            st.changed = Some(msg);
            return Err(EvalAltResult::ErrorTerminated(CHANGED_MARK.into(), pos).into());
        }
        if rec.state.is_replayable() {
            st.steps_replayed += 1;
            drop(st);
            self.observer.step_replayed(&event, rec.state);
            let value = if rec.state == StepState::Succeeded {
                rhai::serde::to_dynamic(&rec.output).unwrap_or(Dynamic::UNIT)
            } else {
                Dynamic::UNIT
            };
            return Ok(Lookup::Replay(value));
        }
        Ok(Lookup::Run(Call { path, event }, rec.attempts))
    }

    /// Journaled top-level calls that the script no longer reached.
    pub fn unreached_steps(&self) -> Vec<StepRecord> {
        let st = self.st();
        let mut left: Vec<StepRecord> = st
            .recorded
            .values()
            .filter(|r| !r.path.contains('.') && r.kind != StepKind::Cleanup)
            .filter(|r| !st.visited_top.contains(&r.path))
            .cloned()
            .collect();
        left.sort_by_key(|r| r.started_at);
        left
    }

    /// Runs a step: attempts with backoff, per-attempt timeout, failure policy.
    pub fn run_step(
        &self,
        spec: StepSpec<'_>,
        body: &dyn Fn() -> RhaiResult,
        compensate: &dyn Fn(&FnPtr) -> RhaiResult,
    ) -> RhaiResult {
        let StepSpec {
            name,
            kind,
            opts,
            path: forced_path,
            pos,
        } = spec;
        if kind != StepKind::Cleanup {
            self.safe_point(pos)?;
        }
        let (call, previous_attempts) = match self.lookup(name, kind, forced_path, pos)? {
            Lookup::Replay(v) => return Ok(v),
            Lookup::Run(call, n) => (call, n),
        };
        self.st().steps_run += 1;
        let mut last_error = String::new();
        let mut last_state = StepState::Failed;
        for i in 1..=opts.attempts {
            let attempt = previous_attempts + i;
            let mut event = call.event.clone();
            event.attempt = attempt;
            let r = self
                .journal()
                .start_attempt(&self.exec_id, &call.path, name, kind, attempt);
            self.journal_result(r);
            self.stop_if_journal_broken(pos)?;
            self.observer.step_started(&event);
            let started = Instant::now();
            let token = opts
                .timeout
                .map(|t| self.interrupt.push_deadline(Instant::now() + t));
            // Attempts that ended before this one; an attempt cut off by a
            // crash never ended, so its resumption gets the same generation
            // (and its create calls find what the cut-off attempt created).
            let generation = self
                .journal()
                .ended_attempts(&self.exec_id, &call.path, attempt);
            let generation = self.journal_result(generation).unwrap_or(attempt - 1);
            self.call_sites.enter(&call.path, generation);
            self.st().scopes.push((call.path.clone(), 0));
            let result = body();
            self.st().scopes.pop();
            self.call_sites.leave();
            let timed_out = token.is_some_and(|t| self.interrupt.deadline_passed(t));
            if let Some(t) = token {
                self.interrupt.pop_deadline(t);
            }
            let elapsed = started.elapsed();
            let error = match result {
                Ok(value) => match rhai::serde::from_dynamic::<serde_json::Value>(&value) {
                    Ok(output) => {
                        let r = self.journal().finish_attempt(
                            &self.exec_id,
                            &call.path,
                            attempt,
                            None,
                            Some((StepState::Succeeded, &output, None)),
                        );
                        self.journal_result(r);
                        self.observer.step_finished(
                            &event,
                            &StepOutcome { state: StepState::Succeeded, duration: elapsed, error: None },
                        );
                        return Ok(value);
                    }
                    Err(e) => format!(
                        "step `{name}` returned a value that cannot be journaled ({}): return data (strings, numbers, lists, maps), not closures or handles; {e}",
                        value.type_name()
                    ),
                },
                Err(err) => {
                    if let Some(mark) = terminated_mark(&err) {
                        let is_my_deadline = mark == DEADLINE_MARK && timed_out;
                        if !is_my_deadline {
                            // Cancellation, an outer deadline or a changed runbook:
                            // close this step and let it unwind.
                            let state = if mark == CANCELLED_MARK { StepState::Cancelled } else { StepState::Failed };
                            let msg = match mark.as_str() {
                                CANCELLED_MARK => "cancelled".to_string(),
                                DEADLINE_MARK => "stopped by an enclosing step's timeout".to_string(),
                                _ => "stopped: runbook changed".to_string(),
                            };
                            let r = self.journal().finish_attempt(
                                &self.exec_id,
                                &call.path,
                                attempt,
                                Some(&msg),
                                Some((state, &serde_json::Value::Null, Some(&msg))),
                            );
                            self.journal_result(r);
                            self.observer.step_finished(
                                &event,
                                &StepOutcome { state, duration: elapsed, error: Some(msg) },
                            );
                            return Err(err);
                        }
                        format!("step `{name}` timed out after {}", crate::duration::format_duration(opts.timeout.unwrap_or_default()))
                    } else if timed_out {
                        format!(
                            "step `{name}` timed out after {}: {}",
                            crate::duration::format_duration(opts.timeout.unwrap_or_default()),
                            describe_error(&err)
                        )
                    } else {
                        describe_error(&err)
                    }
                }
            };
            last_state = if timed_out {
                StepState::TimedOut
            } else {
                StepState::Failed
            };
            last_error = error;
            if i < opts.attempts {
                let delay = opts.delay_before(i + 1);
                let r = self.journal().finish_attempt(
                    &self.exec_id,
                    &call.path,
                    attempt,
                    Some(&last_error),
                    None,
                );
                self.journal_result(r);
                self.observer.step_retrying(&event, &last_error, delay);
                if let Err(interruption) = self.interrupt.sleep(delay) {
                    let msg = "cancelled while waiting to retry".to_string();
                    let r = self.journal().finish_attempt(
                        &self.exec_id,
                        &call.path,
                        attempt,
                        Some(&last_error),
                        Some((StepState::Cancelled, &serde_json::Value::Null, Some(&msg))),
                    );
                    self.journal_result(r);
                    return Err(interruption.into_rhai(pos));
                }
                continue;
            }
            let attempts_note = if opts.attempts > 1 {
                format!(" (after {} attempts)", opts.attempts)
            } else {
                String::new()
            };
            let message = format!("{last_error}{attempts_note}");
            let final_state = match (&opts.on_failure, last_state) {
                (OnFailure::Continue, _) => StepState::FailedContinued,
                (_, s) => s,
            };
            let r = self.journal().finish_attempt(
                &self.exec_id,
                &call.path,
                attempt,
                Some(&last_error),
                Some((final_state, &serde_json::Value::Null, Some(&message))),
            );
            self.journal_result(r);
            self.observer.step_finished(
                &event,
                &StepOutcome {
                    state: final_state,
                    duration: elapsed,
                    error: Some(message.clone()),
                },
            );
            let failed_msg = if message.starts_with("step `") {
                message.clone()
            } else {
                format!("step `{name}` failed: {message}")
            };
            return match &opts.on_failure {
                OnFailure::Continue => Ok(Dynamic::UNIT),
                OnFailure::Abort => {
                    self.set_failure(exec_state_for(last_state), &failed_msg);
                    Err(runtime_error(&failed_msg))
                }
                OnFailure::Compensate(f) => {
                    let comp_name = format!("{name} (compensation)");
                    let comp_path = format!("{}.compensation", call.path);
                    let spec = StepSpec {
                        name: &comp_name,
                        kind: StepKind::Compensation,
                        opts: &StepOptions::default(),
                        path: Some(comp_path),
                        pos,
                    };
                    let comp = self.run_step(spec, &|| compensate(f), compensate);
                    if let Err(e) = comp {
                        if terminated_mark(&e).is_some() {
                            return Err(e);
                        }
                        let both = format!(
                            "{failed_msg}; its compensation failed too: {}",
                            describe_error(&e)
                        );
                        self.set_failure(ExecutionState::Failed, &both);
                        return Err(runtime_error(&both));
                    }
                    let msg = format!("{failed_msg} (compensated)");
                    self.set_failure(exec_state_for(last_state), &msg);
                    Err(runtime_error(&msg))
                }
            };
        }
        unreachable!("the attempt loop always returns: attempts >= 1 ({last_error}, {last_state})")
    }

    /// Remembers a cleanup to run when the execution ends.
    pub fn add_cleanup(&self, name: &str, opts: StepOptions, f: FnPtr) {
        self.st().cleanups.push((name.to_string(), opts, f));
    }

    /// Runs the registered cleanups, last registered first. Cancellation
    /// does not stop them. Returns the first failure.
    pub fn run_cleanups(&self, call: &dyn Fn(&FnPtr) -> RhaiResult) -> Option<String> {
        let cleanups = std::mem::take(&mut self.st().cleanups);
        self.interrupt.set_shielded(true);
        let mut first_error = None;
        for (i, (name, opts, f)) in cleanups.iter().rev().enumerate() {
            let path = format!("cleanup.{}", i + 1);
            let spec = StepSpec {
                name,
                kind: StepKind::Cleanup,
                opts,
                path: Some(path),
                pos: Position::NONE,
            };
            let r = self.run_step(spec, &|| call(f), call);
            if let Err(e) = r {
                let msg = describe_error(&e);
                tracing::warn!(execution = %self.exec_id, "cleanup `{name}` failed: {msg}");
                first_error.get_or_insert(format!("cleanup `{name}` failed: {msg}"));
            }
        }
        self.interrupt.set_shielded(false);
        first_error
    }

    /// Emits an event of the runbook's into the event stream (`event(…)`):
    /// the n-th call of a run is recorded once, however often a resume
    /// replays the body.
    pub fn emit_event(&self, kind: &str, detail: &str, data: serde_json::Value) -> Option<()> {
        let n = {
            let mut st = self.st();
            st.events_emitted += 1;
            st.events_emitted
        };
        let source = format!("execution:{}", self.exec_id);
        let e = crate::journal::stream::NewStreamEvent {
            kind,
            execution: Some(&self.exec_id),
            detail,
            data,
            ..Default::default()
        };
        let r = self.journal().emit_queued(&source, &[(n, e)]);
        self.journal_result(r).map(|_| ())
    }

    /// Records a line the runbook printed.
    pub fn printed(&self, line: &str) {
        let r = self.journal().add_event(&self.exec_id, "print", line);
        self.journal_result(r);
        self.observer.printed(&self.exec_id, line);
    }

    /// Marks the failure an approval or child runbook produced.
    pub fn fail_with(&self, state: ExecutionState, message: &str) -> Box<EvalAltResult> {
        self.set_failure(state, message);
        runtime_error(message)
    }
}

fn exec_state_for(step: StepState) -> ExecutionState {
    match step {
        StepState::TimedOut => ExecutionState::TimedOut,
        StepState::Rejected => ExecutionState::Rejected,
        StepState::Cancelled => ExecutionState::Cancelled,
        _ => ExecutionState::Failed,
    }
}

/// A catchable runtime error carrying `message`.
pub(crate) fn runtime_error(message: &str) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(message.into(), Position::NONE).into()
}

/// The marker of a non-catchable drydock termination, if `err` is one.
pub(crate) fn terminated_mark(err: &EvalAltResult) -> Option<String> {
    match err.unwrap_inner() {
        EvalAltResult::ErrorTerminated(v, _) => Some(v.to_string()),
        _ => None,
    }
}

/// A one-line message for a script error, with where it happened.
pub fn describe_error(err: &EvalAltResult) -> String {
    let inner = err.unwrap_inner();
    let pos = if inner.position().is_none() {
        err.position()
    } else {
        inner.position()
    };
    let text = match inner {
        EvalAltResult::ErrorRuntime(v, _) => v.to_string(),
        other => {
            let text = other.to_string();
            let suffix = format!(" ({})", other.position());
            match text.strip_suffix(&suffix) {
                Some(t) if !other.position().is_none() => t.to_string(),
                _ => text,
            }
        }
    };
    match (pos.line(), pos.position()) {
        (Some(l), Some(c)) => format!("{text} (line {l}, column {c})"),
        (Some(l), None) => format!("{text} (line {l})"),
        _ => text,
    }
}
