//! Fleets: one runbook over many targets, as SSM's rate control does it —
//! a child execution per target, at most `max_concurrency` at once, no
//! new target after more than `max_errors` failed, and a parent that
//! summarises. The parent is journaled like any execution: each target is
//! a step linked to its child, so a resumed fleet replays the targets that
//! ended and resumes the children that were running.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Executor, RunError, RunOptions, StartError, StartOptions};
use crate::journal::{ExecutionRecord, Journal, StepKind};
use crate::observer::{ExecutionOutcome, Observer, StepEvent, StepOutcome};
use crate::params::{resolve_params, ParamError, ParamErrors, SuppliedValue};
use crate::runbook::Runbook;
use crate::state::{ExecutionState, StepState};

/// How a fleet runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetSpec {
    /// Target ids, in order.
    pub targets: Vec<String>,
    /// The runbook parameter each target is given in.
    pub target_param: String,
    /// At most this many targets at once (at least 1).
    pub max_concurrency: usize,
    /// Stop starting targets once more than this many failed.
    pub max_errors: usize,
}

/// How a target ended: its step state, its child, and why it failed.
type TargetEnd = (StepState, Option<String>, Option<String>);

struct Running {
    index: usize,
    child: String,
    started: Instant,
    handle: std::thread::JoinHandle<Result<ExecutionOutcome, RunError>>,
}

impl Executor {
    /// Validates the parameters for every target and records the fleet's
    /// parent execution. Nothing is recorded when a target's parameters
    /// are bad.
    pub fn create_fleet(
        &self,
        runbook: &Runbook,
        supplied: &BTreeMap<String, SuppliedValue>,
        spec: &FleetSpec,
        opts: &StartOptions,
    ) -> Result<String, StartError> {
        let mut errors = Vec::new();
        if !runbook.params.iter().any(|p| p.name == spec.target_param) {
            errors.push(ParamError {
                param: spec.target_param.clone(),
                message: format!(
                    "runbook `{}` has no parameter `{}` to give each target in",
                    runbook.name, spec.target_param
                ),
            });
        }
        if spec.targets.is_empty() {
            errors.push(ParamError {
                param: spec.target_param.clone(),
                message: "no targets matched".into(),
            });
        }
        let mut common = supplied.clone();
        common.remove(&spec.target_param);
        if errors.is_empty() {
            for t in &spec.targets {
                let mut given = common.clone();
                given.insert(spec.target_param.clone(), SuppliedValue::Text(t.clone()));
                if let Err(e) = resolve_params(&runbook.params, &given) {
                    errors.extend(e.0.into_iter().map(|mut pe| {
                        pe.message = format!("for target {t}: {}", pe.message);
                        pe
                    }));
                    break;
                }
            }
        }
        if !errors.is_empty() {
            return Err(ParamErrors(errors).into());
        }
        let common_json: serde_json::Map<String, serde_json::Value> = common
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    SuppliedValue::Text(t) => serde_json::Value::String(t.clone()),
                    SuppliedValue::Json(j) => j.clone(),
                };
                (k.clone(), v)
            })
            .collect();
        let requester = opts
            .requester
            .clone()
            .unwrap_or_else(crate::identity::Identity::current);
        let mut journal = self.journal()?;
        let id = journal.create_execution(&crate::journal::NewExecution {
            runbook: runbook.name.clone(),
            origin: runbook.origin.to_string(),
            source_sha256: super::source_digest(&runbook.source),
            params: common_json,
            parent: None,
            auto_approve_by: opts.auto_approve.then(|| requester.name.clone()),
            requested_by: requester.name.clone(),
            requester_uid: Some(requester.uid),
            region: self.region.clone(),
            profile: self.profile.clone(),
            gate: None,
            gate_approvers: Vec::new(),
            run_by: super::run_by(&requester),
            runbook_owner: runbook.provenance.as_ref().map(|p| p.owner.clone()),
        })?;
        journal.set_fleet(&id, &serde_json::to_string(spec).unwrap_or_default())?;
        Ok(id)
    }

    /// Runs a fleet's parent: starts, watches and summarises its children.
    pub(super) fn run_fleet(
        &self,
        record: &ExecutionRecord,
        runbook: &Runbook,
        spec: FleetSpec,
        mut journal: Journal,
        observer: Arc<dyn Observer>,
        depth: usize,
    ) -> Result<ExecutionOutcome, RunError> {
        let id = record.id.as_str();
        let started = Instant::now();
        let me = self.clone().with_location(
            record.region.as_deref().unwrap_or(&self.region),
            record.profile.as_deref().unwrap_or(&self.profile),
        );
        let recorded: BTreeMap<String, _> = journal
            .steps(id)?
            .into_iter()
            .map(|s| (s.path.clone(), s))
            .collect();
        observer.execution_started(id, &record.runbook, !recorded.is_empty(), depth);
        let n = spec.targets.len();
        // (state, child id, error) per target once it ended.
        let mut results: Vec<Option<TargetEnd>> = vec![None; n];
        let mut errors = 0usize;
        let mut replayed = 0u32;
        for (i, target) in spec.targets.iter().enumerate() {
            if let Some(s) = recorded.get(&(i + 1).to_string()) {
                if s.state.is_replayable() {
                    if s.state == StepState::FailedContinued {
                        errors += 1;
                    }
                    observer.step_replayed(&event(id, i, target, depth), s.state);
                    results[i] = Some((s.state, s.child_execution.clone(), s.error.clone()));
                    replayed += 1;
                }
            }
        }
        let mut queue: Vec<usize> = (0..n).filter(|i| results[*i].is_none()).collect();
        queue.reverse();
        let mut running: Vec<Running> = Vec::new();
        // Targets whose runner thread said it ended (joined next).
        let (done_tx, done_rx) = std::sync::mpsc::channel::<usize>();
        let mut ended = std::collections::HashSet::new();
        let mut stopped: Option<String> = None;
        let mut cancelled = false;
        loop {
            if !cancelled && journal.cancel_requested(id)? {
                cancelled = true;
                stopped = Some("cancelled".into());
                for r in &running {
                    journal.request_cancel(&r.child)?;
                }
            }
            if stopped.is_none() && errors > spec.max_errors {
                stopped = Some(format!(
                    "stopped starting targets after {errors} failed (max errors {})",
                    spec.max_errors
                ));
                observer.note(id, stopped.as_deref().unwrap_or(""));
            }
            while stopped.is_none() && running.len() < spec.max_concurrency.max(1) {
                let Some(i) = queue.pop() else { break };
                let target = &spec.targets[i];
                let path = (i + 1).to_string();
                let ev = event(id, i, target, depth);
                journal.start_attempt(id, &path, &ev.name, StepKind::Runbook, 1)?;
                observer.step_started(&ev);
                let child = match journal.child_execution(id, &path)? {
                    Some(c) => c,
                    None => {
                        let mut given: BTreeMap<String, SuppliedValue> = record
                            .stored_params
                            .as_object()
                            .map(|m| {
                                m.iter()
                                    .map(|(k, v)| (k.clone(), SuppliedValue::Json(v.clone())))
                                    .collect()
                            })
                            .unwrap_or_default();
                        given.insert(
                            spec.target_param.clone(),
                            SuppliedValue::Text(target.clone()),
                        );
                        let opts = StartOptions {
                            auto_approve: record.auto_approve_by.is_some(),
                            requester: Some(crate::identity::Identity {
                                uid: record.requester_uid.unwrap_or(u32::MAX),
                                name: record.requested_by.clone(),
                            }),
                            gate: None,
                            gate_approvers: Vec::new(),
                        };
                        match me.create_inner(
                            runbook,
                            &given,
                            &opts,
                            Some((id.to_string(), path.clone())),
                        ) {
                            Ok(c) => c,
                            Err(e) => {
                                let msg = format!("cannot start for {target}: {e}");
                                journal.finish_attempt(
                                    id,
                                    &path,
                                    1,
                                    Some(&msg),
                                    Some((
                                        StepState::FailedContinued,
                                        &serde_json::Value::Null,
                                        Some(&msg),
                                    )),
                                )?;
                                errors += 1;
                                results[i] = Some((StepState::FailedContinued, None, Some(msg)));
                                continue;
                            }
                        }
                    }
                };
                journal.set_step_child(id, &path, &child)?;
                let exec = me.clone();
                let obs = observer.clone();
                let cid = child.clone();
                let done = done_tx.clone();
                let handle = std::thread::spawn(move || {
                    let r = exec.run_at_depth(&cid, obs, RunOptions::default(), depth + 1);
                    // Wakes the loop below (which joins this thread).
                    let _ = done.send(i);
                    r
                });
                running.push(Running {
                    index: i,
                    child,
                    started: Instant::now(),
                    handle,
                });
            }
            while let Ok(i) = done_rx.try_recv() {
                ended.insert(i);
            }
            let mut still = Vec::new();
            for r in running.drain(..) {
                if !ended.remove(&r.index) && !r.handle.is_finished() {
                    still.push(r);
                    continue;
                }
                let i = r.index;
                let target = &spec.targets[i];
                let path = (i + 1).to_string();
                let (state, output, error) = match r.handle.join() {
                    Ok(Ok(o)) if o.state == ExecutionState::Success => {
                        (StepState::Succeeded, o.output, None)
                    }
                    Ok(Ok(o)) => (
                        StepState::FailedContinued,
                        serde_json::Value::Null,
                        Some(format!(
                            "{} ended {}: {}",
                            r.child,
                            o.state,
                            o.error.unwrap_or_default()
                        )),
                    ),
                    Ok(Err(e)) => (
                        StepState::FailedContinued,
                        serde_json::Value::Null,
                        Some(format!("{} could not run: {e}", r.child)),
                    ),
                    Err(_) => (
                        StepState::FailedContinued,
                        serde_json::Value::Null,
                        Some(format!("the runner of {} panicked", r.child)),
                    ),
                };
                if state != StepState::Succeeded {
                    errors += 1;
                }
                journal.finish_attempt(
                    id,
                    &path,
                    1,
                    error.as_deref(),
                    Some((state, &output, error.as_deref())),
                )?;
                observer.step_finished(
                    &event(id, i, target, depth),
                    &StepOutcome {
                        state,
                        duration: r.started.elapsed(),
                        error: error.clone(),
                    },
                );
                results[i] = Some((state, Some(r.child.clone()), error));
            }
            running = still;
            if running.is_empty() && (queue.is_empty() || stopped.is_some()) {
                break;
            }
            // Until a target ends (the next starts at once), looking again
            // at least every 100 ms.
            if !running.is_empty() {
                if let Ok(i) = done_rx.recv_timeout(Duration::from_millis(100)) {
                    ended.insert(i);
                }
            }
        }
        let summary: Vec<serde_json::Value> = spec
            .targets
            .iter()
            .zip(&results)
            .map(|(t, r)| match r {
                Some((state, child, error)) => json!({
                    "target": t,
                    "execution_id": child,
                    "outcome": if *state == StepState::Succeeded { "succeeded" } else { "failed" },
                    "error": error,
                }),
                None => json!({ "target": t, "outcome": "not started" }),
            })
            .collect();
        let ok = results
            .iter()
            .filter(|r| matches!(r, Some((StepState::Succeeded, _, _))))
            .count();
        let not_started = results.iter().filter(|r| r.is_none()).count();
        let failed = n - ok - not_started;
        let output = json!({
            "targets": summary,
            "succeeded": ok,
            "failed": failed,
            "not_started": not_started,
            "max_concurrency": spec.max_concurrency,
            "max_errors": spec.max_errors,
        });
        let (state, error) = if cancelled {
            (ExecutionState::Cancelled, Some("cancelled".to_string()))
        } else if failed == 0 && not_started == 0 {
            (ExecutionState::Success, None)
        } else {
            (
                ExecutionState::Failed,
                Some(format!(
                    "{failed} of {n} targets failed{}",
                    match (&stopped, not_started) {
                        (Some(why), k) if k > 0 => format!("; {why}, {k} not started"),
                        _ => String::new(),
                    }
                )),
            )
        };
        journal.finish_execution(id, state, &output, error.as_deref())?;
        let outcome = ExecutionOutcome {
            execution_id: id.to_string(),
            runbook: record.runbook.clone(),
            state,
            output,
            error,
            duration_ms: started.elapsed().as_millis() as u64,
            steps_run: ((n - not_started) as u32).saturating_sub(replayed),
            steps_replayed: replayed,
        };
        observer.execution_finished(&outcome, depth);
        Ok(outcome)
    }
}

fn event(id: &str, i: usize, target: &str, depth: usize) -> StepEvent {
    StepEvent {
        execution_id: id.to_string(),
        path: (i + 1).to_string(),
        name: format!("target {target}"),
        kind: StepKind::Runbook,
        attempt: 1,
        depth,
    }
}
