//! `drydock host recover`: the host after an outage (anchor: EC2's
//! host-failure handling, Temporal's worker restart).
//!
//! When the whole host goes down at once — runners, instance supervisors,
//! VMMs and guests — nothing is left to notice. Run on the way back up (by
//! hand, from a boot unit, or by `drydock serve` when it starts), this
//! reconciles every region (instances whose process is gone are marked
//! stopped, saying so), starts again the instances launched with
//! `--after-host-failure start`, records in the journal of every execution
//! whose runner is gone what the outage did, and resumes those executions
//! in the background. Their runbooks re-establish what they need
//! (`instance::ensure_running`, a fresh console login) on the way.

use drydock_host::{AfterHostFailure, InstanceState, RECONCILE_REASON, REGIONS};
use drydock_runtime::journal::ExecutionFilter;
use drydock_runtime::ExecutionState;
use serde::Serialize;
use serde_json::json;

use super::{print_json, table, Context};
use crate::failure::CliError;

/// An instance the outage stopped.
#[derive(Debug, Clone, Serialize)]
pub struct StoppedInstance {
    pub id: String,
    pub region: String,
    pub after_host_failure: AfterHostFailure,
    /// `left stopped`, `started`, or why it could not start.
    pub outcome: String,
}

/// An execution whose runner the outage (or a crash) took.
#[derive(Debug, Clone, Serialize)]
pub struct CutOffExecution {
    pub id: String,
    pub runbook: String,
    pub state: ExecutionState,
    /// `resumed`, `left for drydock resume`, or why it could not resume.
    pub outcome: String,
}

/// What a recovery found and did.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Recovery {
    pub instances: Vec<StoppedInstance>,
    pub executions: Vec<CutOffExecution>,
    pub leftovers: Vec<super::leftovers::Leftover>,
    /// VPC network namespaces no running instance used any more (their
    /// TAPs went with the VMMs), removed.
    pub networks_removed: Vec<String>,
}

/// Recovers the host; `resume` starts a background runner for each
/// execution cut off (returned, for the caller to reap). `say` reports
/// progress to people.
pub fn recover(
    ctx: &Context,
    resume: bool,
    say: &dyn Fn(&str),
) -> Result<(Recovery, Vec<std::process::Child>), CliError> {
    let mut runners = Vec::new();
    let s = &ctx.settings;
    let mut report = Recovery::default();
    let mut stopped_ids = Vec::new();
    // The outage took the VMMs and their TAPs; the VPCs' namespaces were
    // left. Those with no TAP are removed (a restarted instance makes its
    // own again).
    match drydock_host::network::sweep(&s.data_dir) {
        Ok(removed) => report.networks_removed = removed,
        Err(e) => say(&format!("cannot clean up instance networks: {e}")),
    }
    for region in REGIONS {
        // Opening a region reconciles it.
        let host = drydock_ops::host::open(&drydock_ops::host::HostOptions {
            data_dir: &s.data_dir,
            region,
            profile: &s.profile,
        })?;
        for i in host.store()?.instances(Some(region))? {
            if i.state != InstanceState::Stopped || i.state_reason != RECONCILE_REASON {
                continue;
            }
            stopped_ids.push(i.id.clone());
            let outcome = match i.after_host_failure {
                AfterHostFailure::Stop => "left stopped (--after-host-failure stop)".to_string(),
                AfterHostFailure::Start => {
                    say(&format!("starting {} ({region}) again", i.id));
                    match host.start(&i.id) {
                        Ok(_) => "started".to_string(),
                        Err(e) => format!("could not start: {e}"),
                    }
                }
            };
            report.instances.push(StoppedInstance {
                id: i.id,
                region: region.to_string(),
                after_host_failure: i.after_host_failure,
                outcome,
            });
        }
    }
    let mut journal = ctx.executor.journal()?;
    let all = journal.executions(&ExecutionFilter {
        state: None,
        runbook: None,
        include_children: false,
        limit: None,
    })?;
    for e in all {
        // Children are resumed by their parents. A Pending execution is
        // one whose runner never started (a serve killed between recording
        // a slot's execution and starting it); one created in the last
        // seconds may be about to start, and is left to its starter (a
        // second runner would be refused by the claim anyway).
        let cut_off = match e.state {
            ExecutionState::InProgress | ExecutionState::WaitingForApproval => true,
            ExecutionState::Pending => drydock_runtime::journal::now_ms() - e.created_at > 10_000,
            _ => false,
        };
        if !cut_off || e.has_live_runner() {
            continue;
        }
        let stopped = if stopped_ids.is_empty() {
            "none".to_string()
        } else {
            stopped_ids.join(", ")
        };
        let note = format!(
            "host recovery: the runner of this execution was gone (a host outage or a crash); instances found stopped by it: {stopped}"
        );
        if let Err(err) = journal.add_event(&e.id, "host", &note) {
            tracing::warn!(execution = %e.id, "cannot record the outage: {err}");
        }
        let outcome = if resume {
            say(&format!("resuming {} ({})", e.id, e.runbook));
            match super::run::start_background(ctx, &e.id) {
                Ok((child, _)) => {
                    runners.push(child);
                    "resumed".to_string()
                }
                Err(err) => format!("could not resume: {err}"),
            }
        } else {
            format!("left for `drydock resume {}`", e.id)
        };
        report.executions.push(CutOffExecution {
            id: e.id,
            runbook: e.runbook,
            state: e.state,
            outcome,
        });
    }
    let store = drydock_host::HostStore::open(&s.data_dir)?;
    report.leftovers = super::leftovers::unreferenced(&journal, &store, None)?;
    Ok((report, runners))
}

/// `drydock host recover`.
pub fn run(ctx: &Context, no_resume: bool) -> Result<i32, CliError> {
    let json = ctx.json;
    let say = |m: &str| {
        if !json {
            eprintln!("  {m}");
        }
    };
    let (report, runners) = recover(ctx, !no_resume, &say)?;
    // The runners live on without this command (init reaps them).
    for r in runners {
        std::mem::forget(r);
    }
    if ctx.json {
        print_json(&json!(report));
        return Ok(0);
    }
    if report.instances.is_empty() {
        println!("no instance was found stopped by an outage");
    } else {
        let mut t = table(&["INSTANCE", "REGION", "AFTER HOST FAILURE", "NOW"]);
        for i in &report.instances {
            t.add_row(vec![
                i.id.clone(),
                i.region.clone(),
                i.after_host_failure.as_str().to_string(),
                i.outcome.clone(),
            ]);
        }
        println!("instances whose process was gone\n{t}");
    }
    if report.executions.is_empty() {
        println!("no execution was cut off");
    } else {
        let mut t = table(&["EXECUTION", "RUNBOOK", "STATE", "NOW"]);
        for e in &report.executions {
            t.add_row(vec![
                e.id.clone(),
                e.runbook.clone(),
                e.state.to_string(),
                e.outcome.clone(),
            ]);
        }
        println!("executions whose runner was gone\n{t}");
    }
    if !report.networks_removed.is_empty() {
        println!(
            "instance networks left without instances, removed: {}",
            report.networks_removed.join(", ")
        );
    }
    if !report.leftovers.is_empty() {
        print!("{}", super::leftovers::describe(&report.leftovers));
    }
    Ok(0)
}
