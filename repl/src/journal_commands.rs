//! The REPL's `:commands` over the journal: `:run` (a runbook from the
//! REPL, its progress inline), `:approvals`, `:approve`/`:reject`,
//! `:executions` and `:show`.

use crate::render::{table, when};
use drydock_ops::approvals::{self, DecideOptions};
use drydock_ops::display::{clip, shown};
use drydock_ops::executions::{is_repl_session, step_detail, ExecutionView, ReplSessionView};
use drydock_runtime::identity::Identity;
use drydock_runtime::journal::{ApprovalRecord, ExecutionFilter};
use drydock_runtime::observer::{ExecutionOutcome, Observer, StepEvent, StepOutcome};
use drydock_runtime::{Journal, StartError, StartOptions, SuppliedValue};
use drydock_runtime::{RunOptions, StepState};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::commands::{split_words, Repl};

impl Repl<'_> {
    pub(crate) fn run_runbook(&mut self, rest: &str) -> Result<String, String> {
        let mut words = split_words(rest).into_iter();
        let name = words.next().ok_or("usage: :run RUNBOOK name=value …")?;
        let executor = self.executor()?.clone();
        let runbook = executor.catalog().find(&name).map_err(|e| e.to_string())?;
        let mut supplied = BTreeMap::new();
        for w in words {
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| format!("parameters are name=value, got `{w}`"))?;
            let v = if v == "@focus" {
                self.session.focus().unwrap_or_default()
            } else {
                v.to_string()
            };
            supplied.insert(k.trim().to_string(), SuppliedValue::Text(v));
        }
        // An instance parameter left out takes the focused instance.
        if let Some(focus) = self.session.focus() {
            for p in &runbook.params {
                let is_instance = format!("{:?}", p.kind).contains("Instance");
                if is_instance && p.required && !supplied.contains_key(&p.name) {
                    supplied.insert(p.name.clone(), SuppliedValue::Text(focus.clone()));
                    eprintln!("  {} = {focus} (the focused instance)", p.name);
                }
            }
        }
        let opts = StartOptions {
            auto_approve: false,
            requester: Some(Identity::current()),
            gate: None,
            gate_approvers: Vec::new(),
        };
        let id = match executor.create_execution(&runbook, &supplied, &opts) {
            Ok(id) => id,
            Err(StartError::Params(e)) => {
                return Err(format!(
                    "runbook `{}` was not started; its parameters are not valid:\n  {}",
                    runbook.name,
                    e.to_string().replace('\n', "\n  ")
                ))
            }
            Err(e) => return Err(e.to_string()),
        };
        eprintln!(
            "{id}: {} in {} (Ctrl-C cancels it)",
            shown(&runbook.name),
            self.session.region()
        );
        if let Ok(mut r) = self.running.lock() {
            *r = Some((self.data_dir.clone(), id.clone()));
        }
        let outcome = executor.run(&id, Arc::new(InlineProgress), RunOptions::default());
        if let Ok(mut r) = self.running.lock() {
            *r = None;
        }
        self.shared.poke();
        let outcome = outcome.map_err(|e| e.to_string())?;
        let mut out = format!(
            "{id}: {} {} in {:.1}s ({} steps run, {} replayed)",
            outcome.runbook,
            outcome.state,
            outcome.duration_ms as f64 / 1000.0,
            outcome.steps_run,
            outcome.steps_replayed
        );
        if let Some(e) = &outcome.error {
            out.push_str(&format!("\n  error: {}", shown(e)));
        }
        if !outcome.output.is_null() {
            out.push_str(&format!(
                "\n{}",
                serde_json::to_string_pretty(&outcome.output).unwrap_or_default()
            ));
        }
        if outcome.state == drydock_runtime::ExecutionState::Success {
            Ok(out)
        } else {
            Err(out)
        }
    }

    pub(crate) fn journal(&self) -> Result<Journal, String> {
        Journal::open(&self.data_dir).map_err(|e| e.to_string())
    }

    pub(crate) fn approvals(&self) -> Result<String, String> {
        let journal = self.journal()?;
        let me = Identity::current();
        let pending = approvals::list(&journal, &me).map_err(|e| e.to_string())?;
        if pending.is_empty() {
            return Ok("no pending approvals".into());
        }
        let rows = pending
            .iter()
            .map(|p| {
                vec![
                    p.approval.execution_id.clone(),
                    shown(&p.execution.runbook),
                    clip(&p.approval.message, 50),
                    format!("{}/{}", p.approval.approvals(), p.approval.min_approvals),
                    shown(&p.execution.requested_by),
                    p.you.label().to_string(),
                ]
            })
            .collect();
        Ok(format!(
            "{}\nyou are {}; decide with `:approve EXEC [comment]` or `:reject EXEC [comment]`",
            table(
                &[
                    "EXECUTION",
                    "RUNBOOK",
                    "MESSAGE",
                    "APPROVED",
                    "REQUESTED BY",
                    "YOU"
                ],
                rows
            ),
            shown(&me.name)
        ))
    }

    pub(crate) fn decide(&mut self, rest: &str, approve: bool) -> Result<String, String> {
        let (exec, comment) = match rest.split_once(char::is_whitespace) {
            Some((e, c)) => (e, c.trim().trim_matches('"')),
            None => (rest, ""),
        };
        if exec.is_empty() {
            return Err(format!(
                "usage: :{} EXEC [comment]",
                if approve { "approve" } else { "reject" }
            ));
        }
        let mut journal = self.journal()?;
        let me = Identity::current();
        let decided = approvals::decide(
            &mut journal,
            &DecideOptions {
                execution: exec,
                approve,
                comment,
                who: &me,
            },
        )
        .map_err(|e| e.to_string())?;
        self.shared.poke();
        let mut out = decided.summary();
        if decided.waits_for_resume() {
            let id = &decided.execution_id;
            out.push_str(&format!(
                "\nno runner is active for {id}; the decision is kept and applied by `drydock resume {id}`"
            ));
        }
        Ok(out)
    }

    pub(crate) fn executions(&self) -> Result<String, String> {
        let journal = self.journal()?;
        let list = journal
            .executions(&ExecutionFilter {
                limit: Some(20),
                ..ExecutionFilter::default()
            })
            .map_err(|e| e.to_string())?;
        let mut out = if list.is_empty() {
            "no executions".to_string()
        } else {
            table(
                &["EXECUTION", "RUNBOOK", "STATE", "CREATED", "BY"],
                list.iter()
                    .map(|e| {
                        vec![
                            e.id.clone(),
                            shown(&e.runbook),
                            e.state.to_string(),
                            when(e.created_at),
                            shown(&e.requested_by),
                        ]
                    })
                    .collect(),
            )
        };
        let sessions = journal.repl_sessions(5).map_err(|e| e.to_string())?;
        if !sessions.is_empty() {
            out.push_str("\n\nREPL sessions:\n");
            out.push_str(&table(
                &["SESSION", "BY", "WHERE", "STARTED", "ENTRIES"],
                sessions
                    .iter()
                    .map(|s| {
                        vec![
                            s.id.clone(),
                            shown(&s.started_by),
                            format!("{}@{}", shown(&s.profile), shown(&s.region)),
                            when(s.started_at),
                            s.entries.to_string(),
                        ]
                    })
                    .collect(),
            ));
        }
        Ok(out)
    }

    pub(crate) fn show_execution(&self, prefix: &str) -> Result<String, String> {
        if prefix.is_empty() {
            return Err("usage: :show EXEC (or a repl-… session)".into());
        }
        let journal = self.journal()?;
        if is_repl_session(prefix) {
            let view = ReplSessionView::load(&journal, prefix).map_err(|e| e.to_string())?;
            let s = &view.session;
            let mut out = format!(
                "session {} by {} in {}@{}\n",
                s.id,
                shown(&s.started_by),
                shown(&s.profile),
                shown(&s.region)
            );
            for e in &view.entries {
                out.push_str(&format!(
                    "{:>4} {} {} ({} ms)\n",
                    e.seq,
                    if e.ok { "ok " } else { "err" },
                    clip(&e.input, 70),
                    e.duration_ms
                ));
            }
            return Ok(out);
        }
        let view = ExecutionView::load(&journal, prefix).map_err(|e| e.to_string())?;
        let exec = &view.execution;
        let mut out = format!(
            "execution {}\nrunbook   {}\nstate     {}\nby        {}\nparams    {}\n",
            exec.id,
            shown(&exec.runbook),
            drydock_ops::executions::state_text(exec),
            shown(&exec.requested_by),
            shown(&exec.params.to_string())
        );
        if let Some(e) = &exec.error {
            out.push_str(&format!("error     {}\n", shown(e)));
        }
        if !exec.output.is_null() {
            out.push_str(&format!("output    {}\n", shown(&exec.output.to_string())));
        }
        if !view.steps.is_empty() {
            out.push_str(&table(
                &["STEP", "STATE", "ATTEMPTS", "OUTPUT / ERROR"],
                view.steps
                    .iter()
                    .map(|s| {
                        vec![
                            shown(&s.name),
                            s.state.to_string(),
                            s.attempts.to_string(),
                            clip(&step_detail(s), 60),
                        ]
                    })
                    .collect(),
            ));
            out.push('\n');
        }
        for a in &view.approvals {
            out.push_str(&format!(
                "approval {}: \"{}\" ({}/{})\n",
                a.state.as_str(),
                shown(&a.message),
                a.approvals(),
                a.min_approvals
            ));
            for d in &a.decisions {
                out.push_str(&format!(
                    "  {} {} {}\n",
                    shown(&d.approver),
                    if d.approve { "approved" } else { "rejected" },
                    shown(&d.comment)
                ));
            }
        }
        Ok(out)
    }
}

/// `:run` progress, printed as it happens.
struct InlineProgress;

impl Observer for InlineProgress {
    fn step_started(&self, s: &StepEvent) {
        let indent = "  ".repeat(s.depth + 1);
        if s.attempt > 1 {
            eprintln!("{indent}▸ {} (attempt {})", shown(&s.name), s.attempt);
        } else {
            eprintln!("{indent}▸ {}", shown(&s.name));
        }
    }
    fn step_retrying(&self, s: &StepEvent, error: &str, delay: Duration) {
        eprintln!(
            "{}  ↻ {}: {}; again in {:.1}s",
            "  ".repeat(s.depth + 1),
            shown(&s.name),
            shown(error),
            delay.as_secs_f64()
        );
    }
    fn step_finished(&self, s: &StepEvent, o: &StepOutcome) {
        let indent = "  ".repeat(s.depth + 1);
        match (&o.state, &o.error) {
            (StepState::Succeeded, _) => {
                eprintln!(
                    "{indent}✓ {} ({:.1}s)",
                    shown(&s.name),
                    o.duration.as_secs_f64()
                )
            }
            (state, Some(e)) => eprintln!("{indent}✗ {} {state}: {}", shown(&s.name), shown(e)),
            (state, None) => eprintln!("{indent}· {} {state}", shown(&s.name)),
        }
    }
    fn step_replayed(&self, s: &StepEvent, state: StepState) {
        eprintln!(
            "{}= {} ({state}, replayed)",
            "  ".repeat(s.depth + 1),
            shown(&s.name)
        );
    }
    fn approval_waiting(&self, s: &StepEvent, a: &ApprovalRecord) {
        let who = if a.approvers.is_empty() {
            "anyone but you".to_string()
        } else {
            shown(&a.approvers.join(", "))
        };
        eprintln!(
            "{}⏸ waiting for approval: \"{}\" (approvers: {who}); another account decides with `drydock approve {}` or `:approve {}`",
            "  ".repeat(s.depth + 1),
            shown(&a.message),
            s.execution_id,
            s.execution_id
        );
    }
    fn approval_decided(&self, s: &StepEvent, a: &ApprovalRecord) {
        eprintln!(
            "{}▶ approval {}",
            "  ".repeat(s.depth + 1),
            a.state.as_str()
        );
    }
    fn printed(&self, _id: &str, line: &str) {
        eprintln!("  | {}", shown(line));
    }
    fn note(&self, _id: &str, message: &str) {
        eprintln!("  note: {}", shown(message));
    }
    fn execution_finished(&self, _o: &ExecutionOutcome, _depth: usize) {}
}
