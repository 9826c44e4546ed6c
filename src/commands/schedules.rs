//! `drydock schedules`: runbooks that run on a schedule, run by
//! `drydock serve`.

use std::collections::BTreeMap;
use std::path::Path;

use drydock_runtime::journal::{MissedPolicy, ScheduleRecord};
use drydock_runtime::params::ParamType;
use drydock_runtime::schedule::{next_run, parse_tz, ScheduleExpr};
use drydock_runtime::{StartError, SuppliedValue};
use serde::Deserialize;
use serde_json::json;

use super::{clip, print_json, shown, table, when, Context};
use crate::cli::{ScheduleAddArgs, SchedulesCommand};
use crate::failure::CliError;

/// `drydock schedules [ACTION]`.
pub fn run(ctx: &Context, cmd: Option<SchedulesCommand>) -> Result<i32, CliError> {
    match cmd {
        None | Some(SchedulesCommand::List) => list(ctx),
        Some(SchedulesCommand::Add(args)) => add(ctx, args),
        Some(SchedulesCommand::Show { name }) => show(ctx, &name),
        Some(SchedulesCommand::Remove { name }) => {
            ctx.executor.journal()?.remove_schedule(&name)?;
            if ctx.json {
                print_json(&json!({ "schedule": name, "removed": true }));
            } else {
                println!("schedule {name} removed (its history stays in the journal)");
            }
            Ok(0)
        }
        Some(SchedulesCommand::Pause { name }) => {
            let mut journal = ctx.executor.journal()?;
            journal.set_schedule_paused(&name, true)?;
            if ctx.json {
                print_json(&journal.schedule(&name)?);
            } else {
                println!("schedule {name} paused; its slots are skipped until `drydock schedules resume {name}`");
            }
            Ok(0)
        }
        Some(SchedulesCommand::Resume { name }) => {
            let mut journal = ctx.executor.journal()?;
            journal.set_schedule_paused(&name, false)?;
            if ctx.json {
                print_json(&journal.schedule(&name)?);
            } else {
                println!("schedule {name} resumed");
            }
            Ok(0)
        }
        Some(SchedulesCommand::RunNow { name }) => run_now(ctx, &name),
        Some(SchedulesCommand::Update { name }) => update(ctx, &name),
        Some(SchedulesCommand::Import { file }) => {
            let n = import_file(ctx, &file)?;
            if ctx.json {
                print_json(&json!({ "imported": n }));
            } else {
                println!("{n} schedules from {}", file.display());
            }
            Ok(0)
        }
    }
}

/// A schedule as the TOML file and the CLI give it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    pub name: String,
    pub runbook: String,
    pub schedule: String,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub params: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub start: Option<String>,
    #[serde(default)]
    pub end: Option<String>,
    #[serde(default)]
    pub missed: Option<String>,
    #[serde(default)]
    pub max_lateness: Option<String>,
    #[serde(default)]
    pub calendar: Option<String>,
    #[serde(default)]
    pub paused: bool,
    /// Run as a fleet (`targets`, `target_param`, `max_concurrency`, `max_errors`).
    #[serde(default)]
    pub fleet: Option<super::fleet::FleetRequest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleFile {
    #[serde(default, rename = "schedule")]
    schedules: Vec<ScheduleSpec>,
}

fn parse_time(what: &str, text: &str, tz: chrono_tz::Tz) -> Result<i64, CliError> {
    use chrono::TimeZone;
    let naive = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M"))
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default())
        })
        .map_err(|_| {
            CliError::usage(format!(
                "{what} `{}` is not a date like 2026-12-24 or 2026-12-24T22:00 (in the schedule's time zone)",
                shown(text)
            ))
        })?;
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.timestamp_millis())
        .ok_or_else(|| CliError::usage(format!("{what} `{text}` does not exist in {tz}")))
}

/// Checks a schedule against its runbook and turns it into a record.
/// Nothing is stored when anything is wrong.
pub fn validate(
    ctx: &Context,
    spec: &ScheduleSpec,
    supplied: BTreeMap<String, SuppliedValue>,
    source: &str,
) -> Result<ScheduleRecord, CliError> {
    let bad = |m: String| CliError::usage(format!("schedule `{}`: {m}", shown(&spec.name)));
    if spec.name.is_empty()
        || spec.name.len() > 64
        || !spec
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(bad(
            "a schedule name uses letters, digits, `-`, `_` and `.` (up to 64)".into(),
        ));
    }
    ScheduleExpr::parse(&spec.schedule).map_err(|e| bad(e.to_string()))?;
    let tz_name = spec.timezone.clone().unwrap_or_else(|| "UTC".into());
    let tz = parse_tz(&tz_name).map_err(bad)?;
    let runbook = ctx.executor.catalog().find(&spec.runbook)?;
    for p in &runbook.params {
        if p.kind != ParamType::Secret {
            continue;
        }
        let literal = match supplied.get(&p.name) {
            Some(SuppliedValue::Text(t)) => !t.starts_with("param:"),
            Some(SuppliedValue::Json(serde_json::Value::String(t))) => !t.starts_with("param:"),
            _ => false,
        };
        if literal {
            return Err(bad(format!(
                "parameter `{}` is a secret: a schedule keeps it as a reference to the parameter store (`{}=param:NAME`), never the value",
                p.name, p.name
            )));
        }
    }
    if let Some(f) = &spec.fleet {
        super::fleet::check(f)?;
    }
    // A fleet gives each target its parameter at each run: check the
    // others with a stand-in id.
    let mut checked = supplied.clone();
    let mut stand_in = None;
    if let Some(f) = &spec.fleet {
        let target_param = f.target_param.clone().or_else(|| {
            runbook
                .params
                .iter()
                .find(|p| matches!(p.kind, ParamType::Resource(_)))
                .map(|p| p.name.clone())
        });
        if let Some(p) = target_param.and_then(|tp| runbook.params.iter().find(|p| p.name == tp)) {
            if let ParamType::Resource(kind) = p.kind {
                let sample = match kind {
                    drydock_runtime::params::ResourceKind::Volume => "vol-00000000",
                    _ => "i-00000000",
                };
                checked.insert(p.name.clone(), SuppliedValue::Text(sample.into()));
                stand_in = Some(p.name.clone());
            }
        }
    }
    let mut params =
        drydock_runtime::params::resolve_params(&runbook.params, &checked).map_err(|e| {
            bad(format!(
                "its parameters are not valid for runbook `{}`:\n  {}",
                runbook.name,
                e.to_string().replace('\n', "\n  ")
            ))
        })?;
    if let Some(name) = &stand_in {
        params.remove(name);
    }
    let missed = match spec.missed.as_deref() {
        None => MissedPolicy::Skip,
        Some(m) => MissedPolicy::parse(m)
            .ok_or_else(|| bad(format!("missed `{m}`: expected skip or catch-up")))?,
    };
    let max_lateness = match spec.max_lateness.as_deref() {
        None => std::time::Duration::from_secs(3600),
        Some(d) => drydock_runtime::duration::parse_duration(d)
            .map_err(|e| bad(format!("max_lateness: {e}")))?,
    };
    let start_at = spec
        .start
        .as_deref()
        .map(|s| parse_time("start", s, tz))
        .transpose()?;
    let end_at = spec
        .end
        .as_deref()
        .map(|s| parse_time("end", s, tz))
        .transpose()?;
    if let (Some(s), Some(e)) = (start_at, end_at) {
        if e <= s {
            return Err(bad("its end is not after its start".into()));
        }
    }
    // A runbook given by path is fired from that file (by name, another
    // runbook could answer); its code is pinned by SHA-256 either way.
    let by_path = spec.runbook.ends_with(".rhai") || spec.runbook.contains('/');
    let runbook_ref = match (&runbook.origin, by_path) {
        (drydock_runtime::RunbookOrigin::File(p), true) => p.display().to_string(),
        _ => runbook.name.clone(),
    };
    let me = drydock_runtime::identity::Identity::current();
    Ok(ScheduleRecord {
        name: spec.name.clone(),
        runbook: runbook_ref,
        expression: spec.schedule.trim().to_string(),
        timezone: tz_name,
        params,
        start_at,
        end_at,
        paused: spec.paused,
        missed,
        max_lateness_ms: max_lateness.as_millis() as i64,
        calendar: spec.calendar.clone(),
        created_by: me.name.clone(),
        created_at: drydock_runtime::journal::now_ms(),
        runbook_sha256: Some(drydock_runtime::executor::source_digest(&runbook.source)),
        created_by_uid: Some(me.uid),
        source: source.to_string(),
        last_slot_at: None,
        fleet: spec
            .fleet
            .as_ref()
            .map(|f| serde_json::to_value(f).unwrap_or_default()),
    })
}

fn add(ctx: &Context, args: Box<ScheduleAddArgs>) -> Result<i32, CliError> {
    let args = *args;
    let supplied = super::run::params_from(&args.params, None)?;
    let spec = ScheduleSpec {
        name: args.name,
        runbook: args.runbook,
        schedule: args.schedule,
        timezone: args.timezone,
        params: BTreeMap::new(),
        start: args.start,
        end: args.end,
        missed: args.missed,
        max_lateness: args.max_lateness,
        calendar: args.calendar,
        paused: false,
        fleet: super::fleet::FleetRequest::from_args(args.fleet),
    };
    let rec = validate(ctx, &spec, supplied, "cli")?;
    let mut journal = ctx.executor.journal()?;
    journal.put_schedule(&rec)?;
    let next = next_run(&rec, chrono::Utc::now());
    if ctx.json {
        print_json(&json!({ "name": rec.name, "next_run": next.map(|t| t.to_rfc3339()) }));
    } else {
        println!(
            "schedule {} added: {} {} ({}); next run {}",
            rec.name,
            rec.runbook,
            rec.expression,
            rec.timezone,
            next.map(|t| t.to_rfc3339())
                .unwrap_or_else(|| "never".into())
        );
        println!("`drydock serve` runs it; it picks up changes without a restart");
    }
    Ok(0)
}

/// Imports (adds or replaces) the schedules of a TOML file:
/// `[[schedule]] name = … runbook = … schedule = … [schedule.params] …`.
pub fn import_file(ctx: &Context, path: &Path) -> Result<usize, CliError> {
    let text = drydock_runtime::input_file::read_to_string(
        path,
        drydock_runtime::input_file::InputKind::Schedules,
    )
    .map_err(|e| CliError::usage(e.to_string()))?;
    let file: ScheduleFile = toml::from_str(&text).map_err(|e| {
        CliError::usage(format!(
            "{} is not a valid schedules file: {e}",
            path.display()
        ))
    })?;
    let mut records = Vec::new();
    for spec in &file.schedules {
        let supplied = spec
            .params
            .iter()
            .map(|(k, v)| {
                let json = serde_json::to_value(v).unwrap_or(serde_json::Value::Null);
                (k.clone(), SuppliedValue::Json(json))
            })
            .collect();
        records.push(validate(
            ctx,
            spec,
            supplied,
            &format!("file:{}", path.display()),
        )?);
    }
    let mut journal = ctx.executor.journal()?;
    for r in &records {
        journal.put_schedule(r)?;
    }
    Ok(records.len())
}

fn last_result(ctx: &Context, name: &str) -> Result<String, CliError> {
    let journal = ctx.executor.journal()?;
    let Some(slot) = journal.slots(name, 1)?.into_iter().next() else {
        return Ok("-".into());
    };
    Ok(match (&slot.execution_id, slot.state.as_str()) {
        (Some(id), _) => {
            let state = journal
                .execution(id)
                .map(|e| e.state.to_string())
                .unwrap_or_else(|_| "?".into());
            format!("{state} ({id}, {})", when(slot.slot_at))
        }
        (None, state) => format!("{state} ({})", when(slot.slot_at)),
    })
}

fn list(ctx: &Context) -> Result<i32, CliError> {
    let schedules = ctx.executor.journal()?.schedules()?;
    let now = chrono::Utc::now();
    if ctx.json {
        let out: Vec<_> = schedules
            .iter()
            .map(|s| {
                json!({
                    "schedule": s,
                    "next_run": next_run(s, now).map(|t| t.to_rfc3339()),
                    "last_result": last_result(ctx, &s.name).unwrap_or_default(),
                })
            })
            .collect();
        print_json(&out);
        return Ok(0);
    }
    if schedules.is_empty() {
        println!("no schedules; add one with `drydock schedules add NAME --runbook RB --schedule 'cron(0 3 * * *)'`");
        return Ok(0);
    }
    let mut t = table(&[
        "NAME",
        "RUNBOOK",
        "SCHEDULE",
        "TZ",
        "NEXT RUN",
        "LAST RESULT",
        "STATE",
    ]);
    for s in &schedules {
        t.add_row(vec![
            shown(&s.name),
            shown(&s.runbook),
            shown(&s.expression),
            s.timezone.clone(),
            if s.paused {
                "paused".into()
            } else {
                next_run(s, now)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "never".into())
            },
            clip(&last_result(ctx, &s.name)?, 50),
            if s.paused { "paused" } else { "active" }.into(),
        ]);
    }
    println!("{t}");
    Ok(0)
}

fn show(ctx: &Context, name: &str) -> Result<i32, CliError> {
    let journal = ctx.executor.journal()?;
    let s = journal.schedule(name)?;
    let slots = journal.slots(name, 20)?;
    let next = next_run(&s, chrono::Utc::now());
    if ctx.json {
        print_json(
            &json!({ "schedule": s, "next_run": next.map(|t| t.to_rfc3339()), "slots": slots }),
        );
        return Ok(0);
    }
    println!("schedule   {}", shown(&s.name));
    println!("runbook    {}", shown(&s.runbook));
    println!("when       {} ({})", shown(&s.expression), s.timezone);
    println!(
        "params     {}",
        drydock_runtime::secrets::redact_params(&serde_json::Value::Object(s.params.clone()))
    );
    println!(
        "missed     {}{}",
        s.missed.as_str(),
        if s.missed == MissedPolicy::CatchUp {
            format!(
                " (at most {} late)",
                drydock_runtime::duration::format_duration(std::time::Duration::from_millis(
                    s.max_lateness_ms.max(0) as u64
                ))
            )
        } else {
            String::new()
        }
    );
    println!("state      {}", if s.paused { "paused" } else { "active" });
    println!(
        "next run   {}",
        next.map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "never".into())
    );
    println!(
        "defined    by {} ({})",
        shown(&s.created_by),
        shown(&s.source)
    );
    if !slots.is_empty() {
        let mut t = table(&["SLOT", "STATE", "EXECUTION", "REASON"]);
        for slot in &slots {
            t.add_row(vec![
                when(slot.slot_at),
                slot.state.clone(),
                slot.execution_id.clone().unwrap_or_default(),
                clip(slot.reason.as_deref().unwrap_or(""), 70),
            ]);
        }
        println!("{t}");
    }
    Ok(0)
}

/// Starts a schedule's runbook now, in the background.
///
/// `recorded(id)` runs once the execution is in the journal and before its
/// runner starts: the slot names its execution before anything can run
/// (a serve killed in between leaves a slot that points at a Pending
/// execution, never a runner nobody recorded).
pub fn start_scheduled(
    ctx: &Context,
    s: &ScheduleRecord,
    gate: Option<String>,
    recorded: &mut dyn FnMut(&str) -> Result<(), CliError>,
) -> Result<(String, std::process::Child), CliError> {
    let runbook = ctx.executor.catalog().find(&s.runbook)?;
    let digest = drydock_runtime::executor::source_digest(&runbook.source);
    if let Some(pinned) = &s.runbook_sha256 {
        if *pinned != digest {
            return Err(CliError::usage(format!(
                "schedule {}: runbook `{}` changed since the schedule was approved (sha256:{} then, sha256:{} now), so the slot is skipped; \
                 read the change, then approve it with `drydock schedules update {}`",
                s.name,
                s.runbook,
                &pinned[..12.min(pinned.len())],
                &digest[..12],
                s.name
            )));
        }
    }
    // Requested by whoever added (or last changed) the schedule: they do
    // not approve their own change because serve runs it.
    let requester = drydock_runtime::identity::Identity {
        uid: s.created_by_uid.unwrap_or(u32::MAX),
        name: s.created_by.clone(),
    };
    let supplied: BTreeMap<String, SuppliedValue> = s
        .params
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), SuppliedValue::Json(v.clone())))
        .collect();
    if let Some(f) = &s.fleet {
        let req: super::fleet::FleetRequest = serde_json::from_value(f.clone()).map_err(|e| {
            CliError::failure(format!(
                "schedule {}: its fleet is not readable: {e}",
                s.name
            ))
        })?;
        if let Some(why) = gate {
            return Err(CliError::usage(format!(
                "{why} — a fleet does not wait for an override approval; the slot is skipped"
            )));
        }
        let opts = drydock_runtime::StartOptions {
            requester: Some(requester),
            ..Default::default()
        };
        let (id, _) = super::fleet::create(ctx, &runbook, &supplied, &req, &opts)?;
        recorded(&id)?;
        let (child, _log) = super::run::start_background(ctx, &id)?;
        return Ok((id, child));
    }
    let id = match ctx.executor.create_execution(
        &runbook,
        &supplied,
        &drydock_runtime::StartOptions {
            gate,
            requester: Some(requester),
            ..Default::default()
        },
    ) {
        Ok(id) => id,
        Err(StartError::Params(e)) => {
            return Err(CliError::usage(format!(
                "schedule {}: its parameters are no longer valid for runbook `{}`: {e}",
                s.name, runbook.name
            )))
        }
        Err(StartError::Journal(e)) => return Err(e.into()),
    };
    recorded(&id)?;
    let (child, _log) = super::run::start_background(ctx, &id)?;
    Ok((id, child))
}

/// `drydock schedules update NAME`: pins the runbook's code as it is now.
fn update(ctx: &Context, name: &str) -> Result<i32, CliError> {
    let mut journal = ctx.executor.journal()?;
    let s = journal.schedule(name)?;
    let runbook = ctx.executor.catalog().find(&s.runbook)?;
    let digest = drydock_runtime::executor::source_digest(&runbook.source);
    let me = drydock_runtime::identity::Identity::current();
    journal.pin_schedule_runbook(name, &digest, &me)?;
    let before = s.runbook_sha256.clone().unwrap_or_default();
    if ctx.json {
        print_json(&json!({
            "schedule": name, "runbook": s.runbook, "sha256": digest,
            "previous_sha256": before, "requested_by": me.name,
        }));
    } else {
        let changed = if before == digest {
            "unchanged"
        } else {
            "approved as changed"
        };
        println!(
            "{name}: runbook {} sha256:{} {changed}; its runs are requested by {}",
            s.runbook,
            &digest[..12],
            me.name
        );
    }
    Ok(0)
}

fn run_now(ctx: &Context, name: &str) -> Result<i32, CliError> {
    let s = ctx.executor.journal()?.schedule(name)?;
    let (id, child) = start_scheduled(ctx, &s, None, &mut |id| {
        let mut journal = ctx.executor.journal()?;
        let slot = drydock_runtime::journal::now_ms();
        journal.claim_slot(name, slot, "started", Some("run-now"), false)?;
        journal.set_slot_execution(name, slot, id)?;
        Ok(())
    })?;
    // The runner lives on without us.
    std::mem::forget(child);
    if ctx.json {
        print_json(&json!({ "execution_id": id }));
    } else {
        println!("{id}");
    }
    Ok(0)
}
