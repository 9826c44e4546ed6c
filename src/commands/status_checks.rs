//! `drydock instance-status [ID]`: both status checks of one instance, or
//! of every instance of the region that runs (or was stopped by a
//! failure), run now; with since when the verdict holds when `drydock
//! serve` has been checking.

use drydock_host::health::{unplanned_stop, StatusReport};
use drydock_host::InstanceState;

use super::host_common::open_host;
use super::{clip, print_json, shown, table, when, Context};
use crate::failure::CliError;

pub fn run(ctx: &Context, instance: Option<String>) -> Result<i32, CliError> {
    let host = open_host(ctx)?;
    let ids: Vec<String> = match instance {
        Some(id) => vec![id],
        None => host
            .store()?
            .instances(Some(host.region()))?
            .into_iter()
            .filter(|i| {
                i.state == InstanceState::Running
                    || (i.state == InstanceState::Stopped && unplanned_stop(&i.state_reason))
            })
            .map(|i| i.id)
            .collect(),
    };
    let mut reports: Vec<(StatusReport, Option<i64>)> = Vec::new();
    for id in ids {
        let r = host.status_checks(&id)?;
        // Since when, as the serve's checks recorded it (same verdict).
        let since = host
            .store()?
            .stored_status(&id)?
            .filter(|s| s.status == r.status.as_str())
            .map(|s| s.since);
        reports.push((r, since));
    }
    if ctx.json {
        let list: Vec<serde_json::Value> = reports
            .iter()
            .map(|(r, since)| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                v["since"] = serde_json::json!(since);
                v
            })
            .collect();
        print_json(&serde_json::json!({ "region": host.region(), "statuses": list }));
    } else if reports.is_empty() {
        println!(
            "no running instance in {} (status checks look at running instances, and at ones a failure stopped)",
            host.region()
        );
    } else {
        let mut t = table(&[
            "INSTANCE",
            "STATE",
            "STATUS",
            "SYSTEM",
            "INSTANCE CHECK",
            "SINCE",
            "WHY",
        ]);
        for (r, since) in &reports {
            let why = if r.system.status != drydock_host::health::Status::Ok {
                &r.system.reason
            } else {
                &r.guest.reason
            };
            t.add_row(vec![
                r.instance.clone(),
                r.state.clone(),
                r.status.to_string(),
                r.system.status.to_string(),
                r.guest.status.to_string(),
                since.map(when).unwrap_or_else(|| "-".into()),
                clip(&shown(why), 80),
            ]);
        }
        println!("{t}");
    }
    // Exit 1 when something is impaired: usable in scripts.
    Ok(i32::from(reports.iter().any(|(r, _)| {
        r.status == drydock_host::health::Status::Impaired
    })))
}
