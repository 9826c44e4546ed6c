//! `volumes`, `volume …`, `snapshots`, `snapshot …`.

use serde_json::json;

use super::host_common::{count_by_region, empty_hint, open_host, parse_tags, tags_text};
use super::{print_json, table, when, Context};
use crate::cli::{SnapshotCommand, TagArgs, TagsArgs, UntagArgs, VolumeCommand};
use crate::failure::CliError;
use drydock_host::tags::with_tags;
use drydock_host::{ClientToken, TagKind, Tags};

/// `drydock volumes`.
pub fn volumes(ctx: &Context) -> Result<i32, CliError> {
    let host = open_host(ctx)?;
    let store = host.store()?;
    let list = store.volumes(Some(host.region()))?;
    let tags = store.all_tags(TagKind::Volume)?;
    if ctx.json {
        let list: Vec<_> = list.iter().map(|v| with_tags(v, tags.get(&v.id))).collect();
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
        "TAGS",
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
            tags_text(tags.get(&v.id)),
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
            tags,
            client_token,
        } => {
            let tags = parse_tags(&tags)?;
            let token = client_token
                .as_deref()
                .map(ClientToken::given)
                .transpose()?;
            (
                "created",
                host.create_volume(
                    size,
                    snapshot.as_deref(),
                    ext4.as_deref(),
                    &tags,
                    token.as_ref(),
                )?,
            )
        }
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
        SnapshotCommand::Create {
            volume,
            client_token,
        } => {
            let token = client_token
                .as_deref()
                .map(ClientToken::given)
                .transpose()?;
            let start = std::time::Instant::now();
            let (rec, copied, paused) = host.create_snapshot(&volume, token.as_ref())?;
            let paused_ms = paused.map(|p| p.as_millis() as u64);
            if ctx.json {
                print_json(
                    &json!({ "snapshot": rec, "bytes_copied": copied, "ms": start.elapsed().as_millis(), "paused_ms": paused_ms }),
                );
            } else {
                let paused = paused_ms
                    .map(|ms| format!("; its VM paused {ms} ms for the copy"))
                    .unwrap_or_default();
                println!(
                    "{} of {volume} in {} ({:.1} MiB of data copied in {} ms{paused})",
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

fn tag_kind(id: &str) -> Result<TagKind, CliError> {
    TagKind::of_id(id).ok_or_else(|| {
        CliError::usage(format!(
            "`{id}` is not an instance (i-…) or volume (vol-…) id; only those take tags"
        ))
    })
}

fn print_tags(ctx: &Context, id: &str, tags: &Tags) {
    if ctx.json {
        print_json(&json!({ "resource": id, "tags": tags }));
    } else {
        println!("{id}: {}", tags_text(Some(tags)));
    }
}

/// `drydock tag RESOURCE-ID KEY=VALUE…`.
pub fn tag(ctx: &Context, args: TagArgs) -> Result<i32, CliError> {
    let kind = tag_kind(&args.resource)?;
    let wanted = parse_tags(&args.tags)?;
    let host = open_host(ctx)?;
    let tags = host.set_tags(kind, &args.resource, &wanted)?;
    print_tags(ctx, &args.resource, &tags);
    Ok(0)
}

/// `drydock untag RESOURCE-ID KEY…`.
pub fn untag(ctx: &Context, args: UntagArgs) -> Result<i32, CliError> {
    let kind = tag_kind(&args.resource)?;
    let host = open_host(ctx)?;
    let mut tags = host.tags(&args.resource)?;
    for k in &args.keys {
        tags = host.remove_tag(kind, &args.resource, k)?;
    }
    print_tags(ctx, &args.resource, &tags);
    Ok(0)
}

/// `drydock tags [tag:KEY=VALUE]`.
pub fn tags(ctx: &Context, args: TagsArgs) -> Result<i32, CliError> {
    let host = open_host(ctx)?;
    let filter = args.filter.as_deref();
    let instances = host.instances_tagged(filter)?;
    let volumes = host.volumes_tagged(filter)?;
    let store = host.store()?;
    let it = store.all_tags(TagKind::Instance)?;
    let vt = store.all_tags(TagKind::Volume)?;
    let mut rows: Vec<(String, &str, Tags)> = Vec::new();
    for i in &instances {
        rows.push((
            i.id.clone(),
            "instance",
            it.get(&i.id).cloned().unwrap_or_default(),
        ));
    }
    for v in &volumes {
        rows.push((
            v.id.clone(),
            "volume",
            vt.get(&v.id).cloned().unwrap_or_default(),
        ));
    }
    if filter.is_none() {
        rows.retain(|r| !r.2.is_empty());
    }
    if ctx.json {
        let list: Vec<_> = rows
            .iter()
            .map(|(id, kind, tags)| json!({ "resource": id, "kind": kind, "tags": tags }))
            .collect();
        print_json(&json!({ "region": host.region(), "resources": list }));
        return Ok(0);
    }
    if rows.is_empty() {
        println!("no tagged resources in {}", host.region());
        return Ok(0);
    }
    let mut t = table(&["RESOURCE", "KIND", "TAGS"]);
    for (id, kind, tags) in &rows {
        t.add_row(vec![id.clone(), kind.to_string(), tags_text(Some(tags))]);
    }
    println!("region {}, profile {}\n{t}", host.region(), host.profile());
    Ok(0)
}
