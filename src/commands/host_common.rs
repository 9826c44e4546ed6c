//! What the host's commands (instances, images, volumes, snapshots, tags)
//! share: opening the host of the configured region and profile, counts
//! per region for "nothing here, but …" hints, and tags as table text or
//! from `KEY=VALUE` words.

use drydock_host::{Host, HostStore, InstanceState, Tags, REGIONS};

use super::Context;
use crate::failure::CliError;

/// The host of the configured region and profile.
pub fn open_host(ctx: &Context) -> Result<Host, CliError> {
    let s = &ctx.settings;
    Ok(drydock_ops::host::open(&drydock_ops::host::HostOptions {
        data_dir: &s.data_dir,
        region: &s.region,
        profile: &s.profile,
    })?)
}

pub fn count_by_region(
    store: &HostStore,
    what: &str,
) -> Result<Vec<(String, usize, usize)>, CliError> {
    let mut out = Vec::new();
    for r in REGIONS {
        let (total, running) = match what {
            "instances" => {
                let l = store.instances(Some(r))?;
                let live: Vec<_> = l
                    .iter()
                    .filter(|i| i.state != InstanceState::Terminated)
                    .collect();
                (
                    live.len(),
                    live.iter()
                        .filter(|i| i.state == InstanceState::Running)
                        .count(),
                )
            }
            "images" => (store.images(Some(r))?.len(), 0),
            _ => (store.volumes(Some(r))?.len(), 0),
        };
        out.push((r.to_string(), total, running));
    }
    Ok(out)
}

/// "no instances in region-b; 2 running in region-a (use --region region-a)".
pub fn empty_hint(what: &str, region: &str, counts: &[(String, usize, usize)]) -> String {
    let elsewhere: Vec<String> = counts
        .iter()
        .filter(|(r, n, _)| r != region && *n > 0)
        .map(|(r, n, running)| {
            if what == "instances" {
                format!("{n} ({running} running) in {r} (use --region {r})")
            } else {
                format!("{n} in {r} (use --region {r})")
            }
        })
        .collect();
    if elsewhere.is_empty() {
        format!("no {what} in {region}")
    } else {
        format!("no {what} in {region}; {}", elsewhere.join("; "))
    }
}

/// Tags as `k=v, k2=v2` for a table cell (`-` for none).
pub fn tags_text(tags: Option<&Tags>) -> String {
    match tags {
        Some(t) if !t.is_empty() => t
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "-".into(),
    }
}

/// Tags given as `KEY=VALUE` words (`KEY=` for an empty value).
pub fn parse_tags(words: &[String]) -> Result<Tags, CliError> {
    let mut wanted = Tags::new();
    for t in words {
        let Some((k, v)) = t.split_once('=') else {
            return Err(CliError::usage(format!(
                "tag `{t}` must be KEY=VALUE (KEY= for an empty value)"
            )));
        };
        drydock_host::store::check_tag(k, v)?;
        wanted.insert(k.to_string(), v.to_string());
    }
    Ok(wanted)
}
