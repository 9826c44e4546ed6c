//! `drydock run RUNBOOK --targets …`: one runbook over many instances or
//! volumes, with a concurrency limit and an error threshold.

use std::collections::BTreeMap;

use drydock_runtime::executor::FleetSpec;
use drydock_runtime::params::{ParamType, ResourceKind};
use drydock_runtime::{Runbook, StartError, StartOptions, SuppliedValue};

use super::Context;
use crate::cli::FleetArgs;
use crate::failure::CliError;

/// A count given as `N` or `P%` of `total` (at least 1 for a percentage
/// of a non-empty fleet when `at_least_one`).
fn count(what: &str, text: &str, total: usize, at_least_one: bool) -> Result<usize, CliError> {
    let bad = || {
        CliError::usage(format!(
            "{what} `{text}`: expected a number or a percentage like 25%"
        ))
    };
    let n = match text.trim().strip_suffix('%') {
        Some(p) => {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(0.0..=100.0).contains(&p) {
                return Err(bad());
            }
            (total as f64 * p / 100.0).floor() as usize
        }
        None => text.trim().parse().map_err(|_| bad())?,
    };
    Ok(if at_least_one { n.max(1) } else { n })
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// Resolves `--targets` to resource ids of the current region.
fn resolve_targets(ctx: &Context, spec: &str, volumes: bool) -> Result<Vec<String>, CliError> {
    let host = super::host_common::open_host(ctx)?;
    let ids: Vec<(String, String)> = if volumes {
        host.volumes_tagged(None)?
            .into_iter()
            .map(|v| (v.id.clone(), v.id))
            .collect()
    } else {
        host.instances_tagged(None)?
            .into_iter()
            .map(|i| (i.id.clone(), i.id))
            .collect()
    };
    let spec = spec.trim();
    let list = if let Some(filter) = spec.strip_prefix("tag:") {
        let filter = format!("tag:{filter}");
        if volumes {
            host.volumes_tagged(Some(&filter))?
                .into_iter()
                .map(|v| v.id)
                .collect()
        } else {
            host.instances_tagged(Some(&filter))?
                .into_iter()
                .map(|i| i.id)
                .collect()
        }
    } else if let Some(pattern) = spec.strip_prefix("name:") {
        let mut out = Vec::new();
        for (id, _) in &ids {
            let tags = host.tags(id)?;
            if tags.get("Name").is_some_and(|n| glob(pattern, n)) {
                out.push(id.clone());
            }
        }
        out
    } else {
        let wanted: Vec<String> = spec
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        for w in &wanted {
            if !ids.iter().any(|(id, _)| id == w) {
                return Err(CliError::usage(format!(
                    "target {} is not a{} in region {}",
                    super::shown(w),
                    if volumes { " volume" } else { "n instance" },
                    host.region()
                )));
            }
        }
        let mut seen = Vec::new();
        for w in wanted {
            if !seen.contains(&w) {
                seen.push(w);
            }
        }
        seen
    };
    if list.is_empty() {
        return Err(CliError::usage(format!(
            "--targets `{}` matched nothing in region {}",
            super::shown(spec),
            host.region()
        )));
    }
    Ok(list)
}

/// How a fleet is asked for (the CLI's flags, [`FleetArgs`], or a
/// schedule's fields).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FleetRequest {
    pub targets: String,
    #[serde(default)]
    pub target_param: Option<String>,
    #[serde(default)]
    pub max_concurrency: Option<String>,
    #[serde(default)]
    pub max_errors: Option<String>,
}

impl FleetRequest {
    /// The fleet the flags ask for: none without `--targets`.
    pub fn from_args(args: FleetArgs) -> Option<Self> {
        Some(Self {
            targets: args.targets?,
            target_param: args.target_param,
            max_concurrency: args.max_concurrency,
            max_errors: args.max_errors,
        })
    }
}

/// Checks a fleet request's counts without resolving targets (a
/// schedule's targets are resolved at each run).
pub fn check(req: &FleetRequest) -> Result<(), CliError> {
    count(
        "--max-concurrency",
        req.max_concurrency.as_deref().unwrap_or("1"),
        100,
        true,
    )?;
    count(
        "--max-errors",
        req.max_errors.as_deref().unwrap_or("0"),
        100,
        false,
    )?;
    if req.targets.trim().is_empty() {
        return Err(CliError::usage("--targets is empty"));
    }
    Ok(())
}

/// Resolves the targets and records the fleet's parent execution.
pub fn create(
    ctx: &Context,
    runbook: &Runbook,
    supplied: &BTreeMap<String, SuppliedValue>,
    req: &FleetRequest,
    opts: &StartOptions,
) -> Result<(String, FleetSpec), CliError> {
    let target_param = match &req.target_param {
        Some(p) => p.clone(),
        None => runbook
            .params
            .iter()
            .find(|p| p.kind == ParamType::Resource(ResourceKind::Instance))
            .or_else(|| {
                runbook
                    .params
                    .iter()
                    .find(|p| p.kind == ParamType::Resource(ResourceKind::Volume))
            })
            .map(|p| p.name.clone())
            .ok_or_else(|| {
                CliError::usage(format!(
                    "runbook `{}` has no instance or volume parameter to give each target in; name one with --target-param",
                    runbook.name
                ))
            })?,
    };
    let volumes = runbook
        .params
        .iter()
        .any(|p| p.name == target_param && p.kind == ParamType::Resource(ResourceKind::Volume));
    let targets = resolve_targets(ctx, &req.targets, volumes)?;
    let n = targets.len();
    let spec = FleetSpec {
        max_concurrency: count(
            "--max-concurrency",
            req.max_concurrency.as_deref().unwrap_or("1"),
            n,
            true,
        )?,
        max_errors: count(
            "--max-errors",
            req.max_errors.as_deref().unwrap_or("0"),
            n,
            false,
        )?,
        targets,
        target_param,
    };
    match ctx.executor.create_fleet(runbook, supplied, &spec, opts) {
        Ok(id) => Ok((id, spec)),
        Err(StartError::Params(errors)) => Err(CliError::usage(format!(
            "fleet of `{}` was not started; its parameters are not valid:\n  {}",
            runbook.name,
            errors.to_string().replace('\n', "\n  ")
        ))),
        Err(StartError::Journal(e)) => Err(e.into()),
    }
}
