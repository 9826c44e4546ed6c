//! `volumes`, `volume …`, `snapshots`, `snapshot …`.

use serde_json::json;

use super::host::{count_by_region, empty_hint, open_host};
use super::{print_json, table, when, Context};
use crate::cli::{SnapshotCommand, VolumeCommand};
use crate::failure::CliError;

/// `drydock volumes`.
pub fn volumes(ctx: &Context) -> Result<i32, CliError> {
    let host = open_host(ctx)?;
    let store = host.store()?;
    let list = store.volumes(Some(host.region()))?;
    if ctx.json {
        print_json(&json!({ "region": host.region(), "volumes": list }));
        return Ok(0);
    }
    if list.is_empty() {
        println!(
            "{}",
            empty_hint(
                "volumes",
                host.region(),
                &count_by_region(&store, "volumes")?
            )
        );
        return Ok(0);
    }
    let mut t = table(&[
        "VOLUME",
        "KIND",
        "SIZE",
        "ATTACHED TO",
        "DELETE ON TERMINATION",
        "CREATED",
    ]);
    for v in &list {
        let attached = match (&v.attached_to, v.attach_index) {
            (Some(i), Some(0)) => format!("{i} (root)"),
            (Some(i), _) => i.clone(),
            _ => "-".into(),
        };
        t.add_row(vec![
            v.id.clone(),
            format!("{:?}", v.kind).to_lowercase(),
            format!("{} MiB", v.size_mib),
            attached,
            v.delete_on_termination.to_string(),
            when(v.created_at),
        ]);
    }
    println!("region {}, profile {}\n{t}", host.region(), host.profile());
    Ok(0)
}

/// `drydock volume …`.
pub fn volume(ctx: &Context, cmd: VolumeCommand) -> Result<i32, CliError> {
    let host = open_host(ctx)?;
    let (verb, rec) = match cmd {
        VolumeCommand::Create {
            size,
            snapshot,
            ext4,
        } => (
            "created",
            host.create_volume(size, snapshot.as_deref(), ext4.as_deref())?,
        ),
        VolumeCommand::Attach {
            volume,
            instance,
            root,
        } => ("attached", host.attach_volume(&volume, &instance, root)?),
        VolumeCommand::Detach { volume, force } => {
            ("detached", host.detach_volume(&volume, force)?)
        }
        VolumeCommand::Modify {
            volume,
            delete_on_termination,
        } => (
            "modified",
            host.set_delete_on_termination(&volume, delete_on_termination)?,
        ),
        VolumeCommand::Delete { volume } => {
            host.delete_volume(&volume)?;
            if ctx.json {
                print_json(&json!({ "deleted": volume }));
            } else {
                println!("{volume} deleted");
            }
            return Ok(0);
        }
    };
    if ctx.json {
        print_json(&rec);
    } else {
        let at = rec
            .attached_to
            .as_deref()
            .map(|i| format!(", attached to {i}"))
            .unwrap_or_default();
        println!(
            "{} {verb} in {} ({} MiB{at})",
            rec.id, rec.region, rec.size_mib
        );
    }
    Ok(0)
}

/// `drydock snapshots`.
pub fn snapshots(ctx: &Context) -> Result<i32, CliError> {
    let host = open_host(ctx)?;
    let list = host.store()?.snapshots(Some(host.region()))?;
    if ctx.json {
        print_json(&json!({ "region": host.region(), "snapshots": list }));
        return Ok(0);
    }
    if list.is_empty() {
        println!("no snapshots in {}", host.region());
        return Ok(0);
    }
    let mut t = table(&["SNAPSHOT", "VOLUME", "SIZE", "DATA", "CREATED"]);
    for s in &list {
        t.add_row(vec![
            s.id.clone(),
            s.volume_id.clone(),
            format!("{} MiB", s.size_mib),
            format!("{:.1} MiB", s.bytes as f64 / (1 << 20) as f64),
            when(s.created_at),
        ]);
    }
    println!("region {}, profile {}\n{t}", host.region(), host.profile());
    Ok(0)
}

/// `drydock snapshot …`.
pub fn snapshot(ctx: &Context, cmd: SnapshotCommand) -> Result<i32, CliError> {
    let host = open_host(ctx)?;
    match cmd {
        SnapshotCommand::Create { volume } => {
            let start = std::time::Instant::now();
            let (rec, copied) = host.create_snapshot(&volume)?;
            if ctx.json {
                print_json(
                    &json!({ "snapshot": rec, "bytes_copied": copied, "ms": start.elapsed().as_millis() }),
                );
            } else {
                println!(
                    "{} of {volume} in {} ({:.1} MiB of data copied in {} ms)",
                    rec.id,
                    rec.region,
                    copied as f64 / (1 << 20) as f64,
                    start.elapsed().as_millis()
                );
            }
        }
        SnapshotCommand::Delete { snapshot } => {
            host.delete_snapshot(&snapshot)?;
            if ctx.json {
                print_json(&json!({ "deleted": snapshot }));
            } else {
                println!("{snapshot} deleted");
            }
        }
    }
    Ok(0)
}
