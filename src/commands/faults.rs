//! `drydock fault …`: put real faults into instances allowed to be broken
//! (launched with `--allow-faults`), list them, and revert them.

use drydock_host::faults::{FaultRecord, CATALOG};
use serde_json::json;

use super::host_common::open_host;
use super::{print_json, shown, table, when, Context};
use crate::cli::FaultCommand;
use crate::failure::CliError;

fn print_faults(ctx: &Context, list: &[FaultRecord], empty: &str) {
    if ctx.json {
        print_json(&json!({ "faults": list }));
        return;
    }
    if list.is_empty() {
        println!("{empty}");
        return;
    }
    let mut t = table(&[
        "FAULT", "INSTANCE", "KIND", "INJECTED", "BY", "REVERTED", "WHAT",
    ]);
    for f in list {
        t.add_row(vec![
            f.id.clone(),
            f.instance.clone(),
            f.fault.clone(),
            when(f.injected_at),
            shown(&f.injected_by),
            f.reverted_at.map(when).unwrap_or_else(|| "no".into()),
            shown(&f.detail),
        ]);
    }
    println!("{t}");
}

/// `drydock fault`.
pub fn run(ctx: &Context, cmd: FaultCommand) -> Result<i32, CliError> {
    match cmd {
        FaultCommand::Kinds => {
            if ctx.json {
                let kinds: Vec<_> = CATALOG
                    .iter()
                    .map(|k| json!({ "name": k.name, "description": k.description, "symptom": k.symptom }))
                    .collect();
                print_json(&json!({ "kinds": kinds }));
            } else {
                let mut t = table(&["FAULT", "WHAT IT DOES", "ON THE CONSOLE"]);
                for k in CATALOG {
                    t.add_row(vec![k.name, k.description, k.symptom]);
                }
                println!("{t}");
            }
            Ok(0)
        }
        FaultCommand::Inject {
            instance,
            fault,
            target,
        } => {
            let host = open_host(ctx)?;
            let rec = host.inject_fault(&instance, &fault, target.as_deref(), None)?;
            if ctx.json {
                print_json(&rec);
            } else {
                println!(
                    "{}: {} put into {instance} ({}); undo with `drydock fault revert {instance} {}`",
                    rec.id, rec.fault, rec.detail, rec.id
                );
            }
            Ok(0)
        }
        FaultCommand::Revert { instance, fault } => {
            let host = open_host(ctx)?;
            let done = host.revert_faults(&instance, fault.as_deref())?;
            print_faults(
                ctx,
                &done,
                &format!("{instance} has no fault left to revert"),
            );
            Ok(0)
        }
        FaultCommand::List { instance } => {
            let host = open_host(ctx)?;
            let list = host.faults(instance.as_deref())?;
            print_faults(ctx, &list, "no faults");
            Ok(0)
        }
    }
}
