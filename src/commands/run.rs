//! `run`, `resume` and `cancel`.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use drydock_runtime::observer::{ExecutionOutcome, Observer, QuietObserver};
use drydock_runtime::{
    ExecutionState, RunOptions, Runbook, StartError, StartOptions, SuppliedValue,
};

use super::fleet::FleetRequest;
use super::{print_json, Context};
use crate::cli::{CancelArgs, ResumeArgs, RunArgs};
use crate::failure::CliError;
use crate::progress::Progress;

fn parse_params(args: &RunArgs) -> Result<BTreeMap<String, SuppliedValue>, CliError> {
    params_from(&args.params, args.params_file.as_deref())
}

/// Parameters from `NAME=VALUE` pairs and an optional JSON file (pairs win).
pub fn params_from(
    pairs: &[String],
    params_file: Option<&std::path::Path>,
) -> Result<BTreeMap<String, SuppliedValue>, CliError> {
    let mut supplied = BTreeMap::new();
    if let Some(file) = params_file {
        let text = drydock_runtime::input_file::read_to_string(
            file,
            drydock_runtime::input_file::InputKind::ParamsFile,
        )
        .map_err(|e| CliError::usage(e.to_string()))?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            CliError::usage(format!(
                "--params-file {} is not valid JSON: {e}",
                file.display()
            ))
        })?;
        let serde_json::Value::Object(map) = value else {
            return Err(CliError::usage(format!(
                "--params-file {} must hold a JSON object like {{\"name\": \"value\"}}",
                file.display()
            )));
        };
        for (k, v) in map {
            supplied.insert(k, SuppliedValue::Json(v));
        }
    }
    for p in pairs {
        let Some((k, v)) = p.split_once('=') else {
            return Err(CliError::usage(format!(
                "--param expects NAME=VALUE, got `{p}`"
            )));
        };
        if k.trim().is_empty() {
            return Err(CliError::usage(format!(
                "--param expects NAME=VALUE, got `{p}` (no name)"
            )));
        }
        supplied.insert(k.trim().to_string(), SuppliedValue::Text(v.to_string()));
    }
    Ok(supplied)
}

/// Fetches the value of each secret parameter given as `file:PATH`,
/// `env:VAR` or `prompt`, so no secret needs to sit on a command line;
/// `param:NAME` is resolved (and pinned) by the executor.
fn read_secrets(
    runbook: &drydock_runtime::Runbook,
    supplied: &mut BTreeMap<String, SuppliedValue>,
    on_command_line: bool,
) -> Result<(), CliError> {
    use drydock_runtime::params::ParamType;
    for spec in runbook
        .params
        .iter()
        .filter(|p| p.kind == ParamType::Secret)
    {
        let Some(value) = supplied.get(&spec.name) else {
            continue;
        };
        let (text, from_cli) = match value {
            SuppliedValue::Text(t) => (t.clone(), true),
            SuppliedValue::Json(serde_json::Value::String(t)) => (t.clone(), false),
            SuppliedValue::Json(_) => continue,
        };
        let name = &spec.name;
        let resolved = if let Some(path) = text.strip_prefix("file:") {
            super::params::read_secret_file(std::path::Path::new(path))?
        } else if let Some(var) = text.strip_prefix("env:") {
            std::env::var(var).map_err(|_| {
                CliError::usage(format!(
                    "parameter `{name}`: environment variable {var} is not set"
                ))
            })?
        } else if text == "prompt" {
            super::params::prompt_hidden(&format!("{name} (secret)"))?
        } else {
            if from_cli && on_command_line && !text.starts_with("param:") {
                eprintln!(
                    "warning: parameter `{name}` is a secret given on the command line, where every local user can read it in `ps`; use {name}=param:NAME, {name}=file:PATH, {name}=env:VAR or {name}=prompt"
                );
            }
            continue;
        };
        supplied.insert(name.clone(), SuppliedValue::Text(resolved));
    }
    Ok(())
}

/// `drydock run`.
pub fn run(ctx: &Context, args: RunArgs) -> Result<i32, CliError> {
    let runbook = ctx.executor.catalog().find(&args.runbook)?;
    let mut supplied = parse_params(&args)?;
    read_secrets(&runbook, &mut supplied, !args.params.is_empty())?;
    if let Some(req) = FleetRequest::from_args(args.fleet.clone()) {
        return run_fleet(ctx, &args, &runbook, supplied, &req);
    }
    let opts = StartOptions {
        auto_approve: args.auto_approve,
        requester: Some(crate::config::actor(args.as_user.as_deref())?),
        gate: None,
        gate_approvers: Vec::new(),
    };
    let id = match ctx.executor.create_execution(&runbook, &supplied, &opts) {
        Ok(id) => id,
        Err(StartError::Params(errors)) => {
            return Err(CliError::usage(format!(
                "runbook `{}` was not started; its parameters are not valid:\n  {}",
                runbook.name,
                errors.to_string().replace('\n', "\n  ")
            )))
        }
        Err(StartError::Journal(e)) => return Err(e.into()),
    };
    if args.detach {
        return detach(ctx, &id);
    }
    follow(ctx, &id, RunOptions::default())
}

/// `drydock run --targets …`: the fleet in the foreground (or detached),
/// then its summary.
fn run_fleet(
    ctx: &Context,
    args: &RunArgs,
    runbook: &Runbook,
    supplied: BTreeMap<String, SuppliedValue>,
    req: &FleetRequest,
) -> Result<i32, CliError> {
    let opts = StartOptions {
        auto_approve: args.auto_approve,
        requester: Some(crate::config::actor(args.as_user.as_deref())?),
        gate: None,
        gate_approvers: Vec::new(),
    };
    let (id, spec) = super::fleet::create(ctx, runbook, &supplied, req, &opts)?;
    if !ctx.json {
        eprintln!(
            "fleet {id}: {} over {} targets, at most {} at once, stop after more than {} failed",
            runbook.name,
            spec.targets.len(),
            spec.max_concurrency,
            spec.max_errors
        );
    }
    if args.detach {
        return detach(ctx, &id);
    }
    follow(ctx, &id, RunOptions::default())
}

/// `drydock resume`.
pub fn resume(ctx: &Context, args: ResumeArgs) -> Result<i32, CliError> {
    let id = ctx.executor.journal()?.resolve_execution(&args.execution)?;
    if args.detach {
        return detach(ctx, &id);
    }
    follow(ctx, &id, RunOptions { retry: args.retry })
}

/// Runs an execution here, showing progress, and reports how it ended.
pub fn follow(ctx: &Context, id: &str, opts: RunOptions) -> Result<i32, CliError> {
    if !ctx.json {
        let rec = ctx.executor.journal()?.execution(id)?;
        eprintln!(
            "region {}, profile {}",
            rec.region.as_deref().unwrap_or(&ctx.settings.region),
            rec.profile.as_deref().unwrap_or(&ctx.settings.profile)
        );
    }
    let observer: Arc<dyn Observer> = if ctx.json {
        Arc::new(QuietObserver)
    } else {
        Arc::new(Progress::new())
    };
    let outcome = ctx.executor.run(id, observer, opts)?;
    report(ctx, &outcome);
    Ok(outcome.state.exit_code())
}

fn report(ctx: &Context, outcome: &ExecutionOutcome) {
    if ctx.json {
        print_json(outcome);
    } else if !outcome.output.is_null() {
        println!(
            "{}",
            serde_json::to_string_pretty(&outcome.output).unwrap_or_default()
        );
    }
}

/// Starts `drydock resume ID` in the background, its output appended to
/// the data directory's log folder, and returns once it has claimed the
/// execution (the child, for a caller that reaps it, and the log).
pub fn start_background(
    ctx: &Context,
    id: &str,
) -> Result<(std::process::Child, std::path::PathBuf), CliError> {
    start_background_with(ctx, id, RunOptions::default())
}

/// [`start_background`] with `drydock resume`'s options (`--retry`).
pub fn start_background_with(
    ctx: &Context,
    id: &str,
    opts: RunOptions,
) -> Result<(std::process::Child, std::path::PathBuf), CliError> {
    let logs = ctx.settings.data_dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let log_path = logs.join(format!("{id}.log"));
    // Appended: a resume after a crash keeps the evidence of the crash.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("--data-dir").arg(&ctx.settings.data_dir);
    for dir in &ctx.settings.runbook_dirs {
        cmd.arg("--runbook-dir").arg(dir);
    }
    cmd.arg("resume");
    if opts.retry {
        cmd.arg("--retry");
    }
    cmd.arg(id);
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    // Every claim of the execution moves its epoch: a retry of an ended
    // execution has started once its runner has claimed it, not while
    // the state is still the old ending.
    let epoch = ctx.executor.journal()?.execution(id)?.runner_epoch;
    let mut child = cmd.spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rec = ctx.executor.journal()?.execution(id)?;
        let claimed = rec.runner_epoch != epoch;
        if claimed || (!opts.retry && (rec.runner_pid.is_some() || rec.state.is_terminal())) {
            break;
        }
        if let Some(status) = child.try_wait()? {
            return Err(CliError::failure(format!(
                "the background runner of {id} exited ({status}) before starting; see {}",
                log_path.display()
            )));
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((child, log_path))
}

/// Starts an execution in the background and prints its id.
pub fn detach(ctx: &Context, id: &str) -> Result<i32, CliError> {
    let (child, log_path) = start_background(ctx, id)?;
    // The runner lives on without us; reap nothing.
    std::mem::forget(child);
    if ctx.json {
        print_json(&serde_json::json!({ "execution_id": id, "log": log_path }));
    } else {
        println!("{id}");
        eprintln!(
            "started in the background (log: {}); follow with `drydock executions show {id}`",
            log_path.display()
        );
    }
    Ok(0)
}

/// `drydock cancel`.
pub fn cancel(ctx: &Context, args: CancelArgs) -> Result<i32, CliError> {
    let mut journal = ctx.executor.journal()?;
    let requested = drydock_ops::runs::request_cancel(&mut journal, &args.execution)?;
    let id = requested.execution_id;
    if let Some(pid) = requested.runner_pid {
        if args.no_wait {
            println!("cancel requested; process {pid} stops {id} at its next safe point");
            return Ok(0);
        }
        eprintln!("cancel requested; waiting for process {pid} to stop {id} and run its cleanups");
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = journal.execution(&id)?;
            if now.state.is_terminal() {
                return finish_report(ctx, &now.state, &id);
            }
            if !now.has_live_runner() {
                break;
            }
        }
    }
    // No runner is alive: stop it here, which runs its cleanups.
    drop(journal);
    let observer: Arc<dyn Observer> = if ctx.json {
        Arc::new(QuietObserver)
    } else {
        Arc::new(Progress::new())
    };
    let outcome = ctx.executor.run(&id, observer, RunOptions::default())?;
    report(ctx, &outcome);
    Ok(if outcome.state == ExecutionState::Cancelled {
        0
    } else {
        outcome.state.exit_code()
    })
}

fn finish_report(ctx: &Context, state: &ExecutionState, id: &str) -> Result<i32, CliError> {
    if ctx.json {
        print_json(&serde_json::json!({ "execution_id": id, "state": state }));
    } else {
        println!("execution {id} ended {state}");
    }
    Ok(if *state == ExecutionState::Cancelled {
        0
    } else {
        state.exit_code()
    })
}
