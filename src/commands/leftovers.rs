//! Resources an execution created and no longer references: made by a
//! create call of one of its steps (recorded with the call's client
//! token), still there, while the execution has ended without its id in
//! anything it recorded (step outputs and errors, its output, its printed
//! lines). Such a resource was made by an attempt whose result was lost
//! (a step that failed after creating it, a crash before the result was
//! journaled by a version without idempotent creates) and nobody will
//! clean it up.

use drydock_host::{CreatedKind, CreatedRecord, HostStore, InstanceState};
use drydock_runtime::Journal;
use serde::Serialize;

use crate::failure::CliError;

/// One resource left behind.
#[derive(Debug, Clone, Serialize)]
pub struct Leftover {
    pub kind: CreatedKind,
    pub resource: String,
    pub region: String,
    pub execution: String,
    pub runbook: String,
    pub execution_state: String,
    /// The journal path of the step that created it.
    pub step: String,
    /// How to get rid of it.
    pub fix: String,
}

/// Whether `id` appears in anything the execution recorded.
fn referenced(journal: &Journal, execution: &str, id: &str) -> Result<bool, CliError> {
    let e = journal.execution(execution)?;
    if e.output.to_string().contains(id) || e.error.as_deref().is_some_and(|t| t.contains(id)) {
        return Ok(true);
    }
    for s in journal.steps(execution)? {
        if s.output.to_string().contains(id) || s.error.as_deref().is_some_and(|t| t.contains(id)) {
            return Ok(true);
        }
    }
    Ok(journal
        .events(execution)?
        .iter()
        .any(|ev| ev.message.contains(id)))
}

/// The live resource a record names: its region, or None if it is gone.
fn live_region(store: &HostStore, c: &CreatedRecord) -> Option<String> {
    match c.kind {
        CreatedKind::Instance => store
            .instance(&c.resource)
            .ok()
            .filter(|i| i.state != InstanceState::Terminated)
            .map(|i| i.region),
        CreatedKind::Volume => store.volume(&c.resource).ok().map(|v| v.region),
        CreatedKind::Snapshot => store.snapshot(&c.resource).ok().map(|s| s.region),
        CreatedKind::Image => store.image(&c.resource).ok().map(|i| i.region),
    }
}

fn fix(kind: CreatedKind, id: &str, region: &str) -> String {
    match kind {
        CreatedKind::Instance => format!("drydock --region {region} instance terminate {id}"),
        CreatedKind::Volume => format!("drydock --region {region} volume delete {id}"),
        CreatedKind::Snapshot => format!("drydock --region {region} snapshot delete {id}"),
        CreatedKind::Image => format!("drydock --region {region} image deregister {id}"),
    }
}

/// Every resource made by an execution that has ended without referencing
/// it, in `region` (all regions when None).
pub fn unreferenced(
    journal: &Journal,
    store: &HostStore,
    region: Option<&str>,
) -> Result<Vec<Leftover>, CliError> {
    let mut out = Vec::new();
    for c in store.created_by_executions()? {
        let Some(execution) = c.execution.as_deref() else {
            continue;
        };
        if !c.created {
            continue;
        }
        let Some(res_region) = live_region(store, &c) else {
            continue;
        };
        if region.is_some_and(|r| r != res_region) {
            continue;
        }
        // An execution that is gone from the journal references nothing.
        let (runbook, state) = match journal.execution(execution) {
            Ok(e) => {
                if !e.state.is_terminal() {
                    continue;
                }
                (e.runbook, e.state.to_string())
            }
            Err(_) => (String::new(), "unknown".to_string()),
        };
        if !state.is_empty() && state != "unknown" && referenced(journal, execution, &c.resource)? {
            continue;
        }
        out.push(Leftover {
            kind: c.kind,
            fix: fix(c.kind, &c.resource, &res_region),
            resource: c.resource.clone(),
            region: res_region,
            execution: execution.to_string(),
            runbook,
            execution_state: state,
            step: c.step_path.clone().unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Lines for people: one per leftover, with the fix.
pub fn describe(list: &[Leftover]) -> String {
    let mut s = String::new();
    for l in list {
        s.push_str(&format!(
            "{} {} was created by {} ({}, {}) at step {} and is no longer referenced by it; remove it with `{}`\n",
            l.kind.as_str(),
            l.resource,
            l.execution,
            l.runbook,
            l.execution_state,
            if l.step.is_empty() { "top level" } else { &l.step },
            l.fix
        ));
    }
    s
}
