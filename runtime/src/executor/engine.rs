//! The Rhai engine an execution runs in: the journaled primitives (`step`,
//! `approve`, `cleanup`, `run_runbook`, `sleep`, …) bound to its session,
//! plus the stdlib's.

use super::*;

impl Executor {
    pub(super) fn build_engine(
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
            "event",
            move |ctx: NativeCallContext, kind: &str, data: Map| -> RhaiResult {
                use crate::journal::stream::kind as k;
                if !k::runbook_may_emit(kind) {
                    return Err(located(
                        &ctx,
                        format!(
                            "event: `{}` is not a type a runbook may emit; use runbook.NAME (a-z, 0-9, -, _) or {}",
                            kind.escape_debug(),
                            k::DRILL_VERDICT
                        ),
                    ));
                }
                let data = rhai::serde::from_dynamic::<serde_json::Value>(&Dynamic::from(data))
                    .map_err(|e| located(&ctx, format!("event: its data: {e}")))?;
                let text = data.to_string();
                if text.len() > 16 * 1024 {
                    return Err(located(&ctx, "event: its data is over 16 KiB".into()));
                }
                let detail = format!("{kind}: {}", text.chars().take(200).collect::<String>());
                s.emit_event(kind, &detail, data);
                Ok(Dynamic::UNIT)
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
        crate::parameters::install_primitives(
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
}

pub(super) fn located(ctx: &NativeCallContext, message: String) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(message.into(), ctx.call_position()).into()
}

pub(super) fn interruptible_sleep(
    session: &Session,
    ctx: &NativeCallContext,
    d: Dynamic,
) -> RhaiResult {
    let d = options::duration_value("sleep", &d).map_err(|e| located(ctx, e))?;
    session
        .interrupt
        .sleep(d)
        .map_err(|i| i.into_rhai(ctx.call_position()))?;
    Ok(Dynamic::UNIT)
}

pub(super) fn step(
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

pub(super) fn add_cleanup(
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
