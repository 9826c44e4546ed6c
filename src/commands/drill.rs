//! `drydock drill report EXECUTION`: what a `dr-drill` execution found —
//! the verdict, each instance's RTO and RPO against the targets — and its
//! timeline (the drill's steps in the source region and its restore
//! executions' in the target region), as a table, as JSON, and as a page
//! or an SVG picture. Everything comes from the journal, so a report can
//! be made for a drill still running, failed or long over.

use std::path::Path;

use drydock_runtime::journal::{ExecutionRecord, Journal, StepRecord};
use serde_json::{json, Value};

use super::drill_timeline::{escape, Bar, Mark, Timeline};
use super::{print_json, shown, table, when, Context};
use crate::cli::DrillCommand;
use crate::failure::CliError;

/// The runbook whose executions are drills.
const DRILL: &str = "dr-drill";
/// The step whose output is the report.
const VERDICT_STEP: &str = "verdict";

/// `drydock drill`.
pub fn run(ctx: &Context, cmd: DrillCommand) -> Result<i32, CliError> {
    match cmd {
        DrillCommand::Report {
            execution,
            html,
            svg,
        } => report(ctx, &execution, html.as_deref(), svg.as_deref()),
    }
}

struct Drill {
    exec: ExecutionRecord,
    /// The verdict step's output, once the drill got that far.
    report: Option<Value>,
    timeline: Timeline,
}

fn gather(journal: &Journal, prefix: &str) -> Result<Drill, CliError> {
    let id = journal.resolve_execution(prefix)?;
    let exec = journal.execution(&id)?;
    if exec.runbook != DRILL {
        return Err(CliError::usage(format!(
            "execution {id} ran `{}`, not {DRILL}; `drydock executions` lists the drills (runbook {DRILL})",
            shown(&exec.runbook)
        )));
    }
    let steps = journal.steps(&id)?;
    let report = steps
        .iter()
        .find(|s| s.name == VERDICT_STEP && s.state.as_str() == "succeeded")
        .map(|s| s.output.clone());
    let region = exec.region.clone().unwrap_or_else(|| "source".into());
    let mut bars: Vec<Bar> = steps.iter().map(|s| bar(&region, s)).collect();
    for child in journal.children(&id)? {
        let lane = child.region.clone().unwrap_or_else(|| "target".into());
        bars.extend(journal.steps(&child.id)?.iter().map(|s| bar(&lane, s)));
    }
    bars.sort_by_key(|b| b.start_ms);
    let start_ms = exec
        .started_at
        .or_else(|| bars.first().map(|b| b.start_ms))
        .unwrap_or(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let end_ms = exec
        .ended_at
        .or_else(|| bars.iter().filter_map(|b| b.end_ms).max())
        .unwrap_or(now)
        .max(start_ms + 1);
    let mut marks = Vec::new();
    let mut rto_target_ms = None;
    if let Some(r) = &report {
        rto_target_ms = r["rto_target_ms"].as_i64();
        for row in r["instances"].as_array().into_iter().flatten() {
            if let Some(at) = row["steady_met_ms"].as_i64() {
                marks.push(Mark {
                    label: format!(
                        "{} steady",
                        row["restored_instance"].as_str().unwrap_or("?")
                    ),
                    at_ms: at,
                });
            }
        }
    }
    let verdict = report
        .as_ref()
        .and_then(|r| r["verdict"].as_str())
        .unwrap_or("no verdict yet");
    let timeline = Timeline {
        title: format!("DR drill {id}: {verdict} ({})", exec.state.as_str()),
        start_ms,
        end_ms,
        bars,
        marks,
        rto_target_ms,
    };
    Ok(Drill {
        exec,
        report,
        timeline,
    })
}

fn bar(lane: &str, s: &StepRecord) -> Bar {
    Bar {
        lane: lane.to_string(),
        label: format!("{}{}", kind_prefix(s), s.name),
        start_ms: s.started_at,
        end_ms: s.ended_at,
        state: s.state.as_str().to_string(),
    }
}

fn kind_prefix(s: &StepRecord) -> &'static str {
    match s.kind.as_str() {
        "approval" => "approval: ",
        "cleanup" => "cleanup: ",
        "runbook" => "child: ",
        _ => "",
    }
}

fn ms(v: &Value) -> String {
    match v.as_i64() {
        Some(ms) => format!("{:.1} s", ms as f64 / 1000.0),
        None => "-".into(),
    }
}

fn report(
    ctx: &Context,
    prefix: &str,
    html: Option<&Path>,
    svg: Option<&Path>,
) -> Result<i32, CliError> {
    let journal = ctx.executor.journal()?;
    let drill = gather(&journal, prefix)?;
    let picture = drill.timeline.svg();
    if let Some(path) = svg {
        write_file(path, &picture)?;
    }
    if let Some(path) = html {
        write_file(path, &page(&drill, &picture))?;
    }
    let verdict = drill
        .report
        .as_ref()
        .and_then(|r| r["verdict"].as_str())
        .map(String::from);
    if ctx.json {
        let bars: Vec<Value> = drill
            .timeline
            .bars
            .iter()
            .map(|b| {
                json!({
                    "region": b.lane,
                    "step": b.label,
                    "state": b.state,
                    "start_ms": b.start_ms,
                    "end_ms": b.end_ms,
                    "offset_ms": b.start_ms - drill.timeline.start_ms,
                    "duration_ms": b.end_ms.map(|e| e - b.start_ms),
                })
            })
            .collect();
        print_json(&json!({
            "execution": drill.exec.id,
            "state": drill.exec.state.as_str(),
            "error": drill.exec.error,
            "verdict": verdict,
            "report": drill.report,
            "timeline": bars,
        }));
    } else {
        print_report(&drill, verdict.as_deref());
        for (what, path) in [("page", html), ("picture", svg)] {
            if let Some(p) = path {
                println!("timeline {what}: {}", p.display());
            }
        }
    }
    Ok(match verdict.as_deref() {
        Some("met") => 0,
        _ => 1,
    })
}

fn print_report(drill: &Drill, verdict: Option<&str>) {
    let e = &drill.exec;
    println!("drill      {}", e.id);
    println!("state      {}", e.state.as_str());
    println!(
        "started    {}",
        e.started_at.map(when).unwrap_or_else(|| "-".into())
    );
    println!(
        "verdict    {}",
        verdict.unwrap_or("none (the drill did not reach its verdict)")
    );
    if let Some(err) = &e.error {
        println!("error      {}", shown(err));
    }
    let Some(r) = &drill.report else {
        return;
    };
    println!(
        "regions    {} -> {}",
        r["source_region"].as_str().unwrap_or("?"),
        r["target_region"].as_str().unwrap_or("?")
    );
    println!(
        "targets    RTO {}, RPO {}",
        ms(&r["rto_target_ms"]),
        ms(&r["rpo_target_ms"])
    );
    let mut t = table(&[
        "SOURCE",
        "RESTORED",
        "STEADY STATE",
        "RTO",
        "",
        "RPO",
        "",
        "MARKER",
    ]);
    for row in r["instances"].as_array().into_iter().flatten() {
        let s = |k: &str| shown(row[k].as_str().unwrap_or("-"));
        t.add_row(vec![
            s("source"),
            s("restored_instance"),
            s("steady_state"),
            ms(&row["rto_ms"]),
            s("rto"),
            ms(&row["rpo_ms"]),
            s("rpo"),
            if row["marker_found"].as_bool() == Some(true) {
                "found".into()
            } else {
                "missing".into()
            },
        ]);
    }
    println!("{t}");
    if r["kept"].as_bool() == Some(true) {
        println!("kept: the recovery points and restored instances were left in place (keep=true)");
    }
}

fn page(drill: &Drill, picture: &str) -> String {
    let mut rows = String::new();
    if let Some(r) = &drill.report {
        for row in r["instances"].as_array().into_iter().flatten() {
            let s = |k: &str| escape(row[k].as_str().unwrap_or("-"));
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} ({})</td><td>{} ({})</td></tr>\n",
                s("source"),
                s("restored_instance"),
                s("steady_state"),
                escape(&ms(&row["rto_ms"])),
                s("rto"),
                escape(&ms(&row["rpo_ms"])),
                s("rpo"),
            ));
        }
    }
    let r = drill.report.clone().unwrap_or(Value::Null);
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}</style>\
         </head><body>\n<h1>{title}</h1>\n<p>State: {state}. Regions: {src} &rarr; {dst}. Targets: RTO {rto}, RPO {rpo}.</p>\n\
         <table><tr><th>Source</th><th>Restored</th><th>Steady state</th><th>RTO</th><th>RPO</th></tr>\n{rows}</table>\n\
         <h2>Timeline</h2>\n{picture}</body></html>\n",
        title = escape(&drill.timeline.title),
        state = escape(drill.exec.state.as_str()),
        src = escape(r["source_region"].as_str().unwrap_or("?")),
        dst = escape(r["target_region"].as_str().unwrap_or("?")),
        rto = escape(&ms(&r["rto_target_ms"])),
        rpo = escape(&ms(&r["rpo_target_ms"])),
    )
}

/// Writes a report file whole (a temporary file beside it, renamed over it).
fn write_file(path: &Path, text: &str) -> Result<(), CliError> {
    let fail = |e: std::io::Error| {
        CliError::usage(format!(
            "cannot write {}: {e}; name a file in a directory you can write",
            path.display()
        ))
    };
    let name = path
        .file_name()
        .ok_or_else(|| fail(std::io::Error::other("not a file name")))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(fail)
}
