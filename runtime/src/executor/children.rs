//! Child runbooks (`run_runbook`): an execution of its own, linked to its
//! parent's step, in the parent's region or another.

use super::*;

/// The options of `run_runbook(name, params, opts)`: only `region`, a
/// region name.
pub(super) fn child_region(opts: &Map) -> Result<Option<String>, String> {
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

impl Executor {
    pub(super) fn run_child(
        &self,
        session: &Arc<Session>,
        ctx: &NativeCallContext,
        name: &str,
        params: Map,
    ) -> RhaiResult {
        self.run_child_in(session, ctx, name, params, None)
    }

    /// [`Self::run_child`] in `region` (the parent's when `None`).
    pub(super) fn run_child_in(
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
                            gate_approvers: Vec::new(),
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
