//! `drydock executions show ID --timeline`: an execution drawn from its
//! journal, one row per step (approval waits, child runbooks, cleanups and
//! compensations too), each bar placed and sized by when the step started
//! and ended relative to the execution's start and total duration, with its
//! status and duration, above a time axis.
//!
//! The journal records every step's start and end, and every attempt's, but
//! not when a resume replayed a step. A resume is seen where a step has an
//! attempt that never ended followed by a later one (the runner died during
//! it, a resume ran it again), or where an approval's call began after the
//! approval had been asked (the runner died while it waited, a resume asked
//! again): the latest such restart is where the last run began, and the
//! steps that had completed before it were replayed by it.

use std::collections::BTreeMap;
use std::time::Duration;

use drydock_runtime::journal::{
    ApprovalRecord, AttemptRecord, ExecutionRecord, StepKind, StepRecord,
};
use drydock_runtime::StepState;
use serde::Serialize;
use serde_json::json;

use super::{print_json, shown, when, Context};
use crate::failure::CliError;

/// The width drawn when `COLUMNS` is not set.
pub const DEFAULT_WIDTH: usize = 100;
/// Narrower terminals get this width (lines wrap rather than lose the bars).
pub const MIN_WIDTH: usize = 40;
/// The bar area is never narrower than this.
const MIN_BAR: usize = 10;
/// Step names longer than this are cut.
const MAX_NAME: usize = 32;

/// How a row ended (or that it has not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    /// Completed before the latest resume, whose run returned its recorded result.
    Replayed,
    Approved,
    Failed,
    /// Failed, and the runbook went on (`on_failure: "continue"`).
    FailedContinued,
    TimedOut,
    Cancelled,
    Rejected,
    Running,
    /// An approval still waiting for its decision.
    Waiting,
    /// Started, never ended, and no runner is alive: cut off.
    Interrupted,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Replayed => "replayed",
            Self::Approved => "approved",
            Self::Failed => "failed",
            Self::FailedContinued => "failed, went on",
            Self::TimedOut => "timed out",
            Self::Cancelled => "cancelled",
            Self::Rejected => "rejected",
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Interrupted => "interrupted",
        }
    }

    /// The bar's character: done, replayed, still going, went wrong.
    fn glyph(self) -> char {
        match self {
            Self::Ok | Self::Approved => '█',
            Self::Replayed => '░',
            Self::Running | Self::Waiting => '▒',
            _ => '#',
        }
    }
}

/// One row of the timeline; times are ms from the execution's start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Span {
    pub path: String,
    pub name: String,
    pub kind: &'static str,
    pub status: Status,
    pub start_ms: i64,
    pub end_ms: i64,
    pub duration_ms: i64,
    pub attempts: u32,
}

/// An execution as drawn.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub execution: String,
    pub runbook: String,
    pub state: String,
    /// When the execution started (ms since the epoch); offsets count from here.
    pub started_at: i64,
    pub duration_ms: i64,
    /// How many times a runner took the execution up again after the first.
    pub resumes: u32,
    /// Where the journal shows the latest resume began (ms from the start),
    /// when it does.
    pub resumed_at_ms: Option<i64>,
    pub steps: Vec<Span>,
}

/// Builds the timeline of an execution from its journal rows. `now` ends
/// what is still running when a runner is alive.
pub fn build(
    exec: &ExecutionRecord,
    steps: &[StepRecord],
    attempts: &[AttemptRecord],
    approvals: &[ApprovalRecord],
    now: i64,
    runner_alive: bool,
) -> Timeline {
    let live = runner_alive && !exec.state.is_terminal();
    let origin = steps
        .iter()
        .map(|s| s.started_at)
        .chain(exec.started_at)
        .min()
        .unwrap_or(exec.created_at);
    // The latest moment the journal knows of.
    let latest = steps
        .iter()
        .flat_map(|s| [Some(s.started_at), s.ended_at])
        .chain(
            attempts
                .iter()
                .flat_map(|a| [Some(a.started_at), a.ended_at]),
        )
        .flatten()
        .chain(exec.ended_at)
        .max()
        .unwrap_or(origin);
    let end = if live {
        now.max(latest)
    } else {
        exec.ended_at.unwrap_or(latest).max(latest)
    };
    // A restart: an attempt that never ended, followed by a later attempt
    // of the same step.
    let mut by_path: BTreeMap<&str, Vec<&AttemptRecord>> = BTreeMap::new();
    for a in attempts {
        by_path.entry(a.path.as_str()).or_default().push(a);
    }
    let mut restart: Option<i64> = None;
    for list in by_path.values_mut() {
        list.sort_by_key(|a| a.attempt);
        for pair in list.windows(2) {
            if pair[0].ended_at.is_none() {
                restart = restart.max(Some(pair[1].started_at));
            }
        }
    }
    // An approval asked before its call's row began: a later run entered
    // the call again (the row's start is reset, the request is kept).
    for a in approvals {
        let call = steps
            .iter()
            .find(|s| s.kind == StepKind::Approval && s.path == a.path);
        if let Some(s) = call {
            if a.created_at < s.started_at {
                restart = restart.max(Some(s.started_at));
            }
        }
    }
    let resumes = exec.runner_epoch.saturating_sub(1).max(0) as u32;
    let restart = if resumes > 0 { restart } else { None };
    let spans = steps
        .iter()
        .map(|s| {
            let status = match s.state {
                StepState::Succeeded => match (restart, s.ended_at) {
                    (Some(r), Some(e)) if e <= r => Status::Replayed,
                    _ if s.kind == StepKind::Approval => Status::Approved,
                    _ => Status::Ok,
                },
                StepState::FailedContinued => match (restart, s.ended_at) {
                    (Some(r), Some(e)) if e <= r => Status::Replayed,
                    _ => Status::FailedContinued,
                },
                StepState::Failed => Status::Failed,
                StepState::TimedOut => Status::TimedOut,
                StepState::Cancelled => Status::Cancelled,
                StepState::Rejected => Status::Rejected,
                StepState::Running if !live => Status::Interrupted,
                StepState::Running if s.kind == StepKind::Approval => Status::Waiting,
                StepState::Running => Status::Running,
            };
            let stop = s.ended_at.unwrap_or(end).max(s.started_at);
            Span {
                path: s.path.clone(),
                name: s.name.clone(),
                kind: s.kind.as_str(),
                status,
                start_ms: s.started_at - origin,
                end_ms: stop - origin,
                duration_ms: stop - s.started_at,
                attempts: s.attempts,
            }
        })
        .collect();
    Timeline {
        execution: exec.id.clone(),
        runbook: exec.runbook.clone(),
        state: exec.state.to_string(),
        started_at: origin,
        duration_ms: end - origin,
        resumes,
        resumed_at_ms: restart.map(|r| r - origin),
        steps: spans,
    }
}

/// The terminal width to draw for, from `COLUMNS` (unset or empty: the
/// default); a value that is not a width is a usage error.
pub fn width_from(columns: Option<&str>) -> Result<usize, String> {
    let Some(v) = columns.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(DEFAULT_WIDTH);
    };
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n.clamp(MIN_WIDTH, 1000)),
        _ => Err(format!(
            "COLUMNS={} is not a terminal width; set it to a number of columns (e.g. COLUMNS=120) or unset it for {DEFAULT_WIDTH}",
            shown(v)
        )),
    }
}

fn duration_text(ms: i64) -> String {
    drydock_runtime::duration::format_duration(Duration::from_millis(ms.max(0) as u64))
}

/// A row's label: its kind when it is not a plain step, indented by
/// nesting (paths are `2`, `2.1`, …; cleanups `cleanup.1`).
fn label(s: &Span) -> String {
    let depth = s
        .path
        .split('.')
        .filter(|seg| !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()))
        .count()
        .saturating_sub(1);
    let name = shown(&s.name.replace('\n', " "));
    let text = match s.kind {
        "step" => name,
        "approval" => "approval".to_string(),
        kind => format!("{kind}: {name}"),
    };
    format!("{}{text}", "  ".repeat(depth))
}

fn fit(text: &str, width: usize) -> String {
    let n = text.chars().count();
    if n <= width {
        format!("{text}{}", " ".repeat(width - n))
    } else {
        let cut: String = text.chars().take(width.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// Where a span's bar goes in `cells` cells: [first, last) — at least one
/// cell, inside the area.
pub fn bar_cells(start: i64, end: i64, total: i64, cells: usize) -> (usize, usize) {
    if cells == 0 {
        return (0, 0);
    }
    let total = total.max(1) as i128;
    let c = cells as i128;
    let first = ((start.max(0) as i128 * c) / total).clamp(0, c - 1);
    let last = ((end.max(0) as i128 * c + total - 1) / total).clamp(first + 1, c);
    (first as usize, last as usize)
}

/// The rows as text, `width` columns wide: a header, one row per step,
/// the time axis and its labels.
pub fn render(t: &Timeline, width: usize) -> Vec<String> {
    let labels: Vec<String> = t.steps.iter().map(label).collect();
    let statuses: Vec<&str> = t.steps.iter().map(|s| s.status.label()).collect();
    let durations: Vec<String> = t
        .steps
        .iter()
        .map(|s| duration_text(s.duration_ms))
        .collect();
    let status_w = statuses.iter().map(|s| s.len()).chain([6]).max().unwrap();
    let dur_w = durations.iter().map(|d| d.len()).chain([4]).max().unwrap();
    let mut name_w = labels
        .iter()
        .map(|l| l.chars().count())
        .chain([4])
        .max()
        .unwrap()
        .min(MAX_NAME);
    // name, space, |bar|, space, status, space, duration
    let fixed = |name_w: usize| name_w + 4 + status_w + 1 + dur_w;
    while name_w > 8 && width < fixed(name_w) + MIN_BAR {
        name_w -= 1;
    }
    let cells = width.saturating_sub(fixed(name_w)).max(MIN_BAR);
    let mut out = Vec::new();
    out.push(format!(
        "{} {} {} {:>dur_w$}",
        fit("STEP", name_w),
        fit("", cells + 2),
        fit("STATUS", status_w),
        "TOOK"
    ));
    for (i, s) in t.steps.iter().enumerate() {
        let (first, last) = bar_cells(s.start_ms, s.end_ms, t.duration_ms, cells);
        let bar: String = (0..cells)
            .map(|c| {
                if c >= first && c < last {
                    s.status.glyph()
                } else {
                    ' '
                }
            })
            .collect();
        out.push(format!(
            "{} |{bar}| {} {:>dur_w$}",
            fit(&labels[i], name_w),
            fit(statuses[i], status_w),
            durations[i]
        ));
    }
    // The axis under the bars: ticks at 0, ¼, ½, ¾ and the end.
    let pad = " ".repeat(name_w + 1);
    let ticks: Vec<usize> = (0..=4).map(|k| k * cells / 4).collect();
    let mut axis: Vec<char> = vec!['-'; cells + 2];
    for &k in &ticks {
        axis[k + if k == cells { 1 } else { 0 }] = '+';
    }
    axis[0] = '+';
    axis[cells + 1] = '+';
    out.push(format!("{pad}{}", axis.iter().collect::<String>()));
    let mut line: Vec<char> = vec![' '; cells + 2];
    let mut free_from = 0usize;
    for (k, &tick) in ticks.iter().enumerate() {
        let text: Vec<char> = if k == 0 {
            "0s".chars().collect()
        } else {
            duration_text(t.duration_ms * k as i64 / 4)
                .chars()
                .collect()
        };
        let at = if k == 4 {
            (cells + 2).saturating_sub(text.len())
        } else {
            tick
        };
        if at < free_from || at + text.len() > cells + 2 {
            continue;
        }
        line[at..at + text.len()].copy_from_slice(&text);
        free_from = at + text.len() + 1;
    }
    out.push(
        format!("{pad}{}", line.iter().collect::<String>())
            .trim_end()
            .to_string(),
    );
    out
}

/// The timeline as JSON: the execution and its steps with offsets in ms.
pub fn to_json(t: &Timeline) -> serde_json::Value {
    json!({ "timeline": t })
}

/// `drydock executions show ID --timeline [--json]`.
pub fn show(ctx: &Context, prefix: &str) -> Result<i32, CliError> {
    let width = if ctx.json {
        DEFAULT_WIDTH
    } else {
        width_from(std::env::var("COLUMNS").ok().as_deref()).map_err(CliError::usage)?
    };
    let journal = ctx.executor.journal()?;
    let id = journal.resolve_execution(prefix)?;
    let exec = journal.execution(&id)?;
    let steps = journal.steps(&id)?;
    let attempts = journal.attempts(&id)?;
    let approvals = journal.approvals_of(&id)?;
    let t = build(
        &exec,
        &steps,
        &attempts,
        &approvals,
        drydock_runtime::journal::now_ms(),
        exec.has_live_runner(),
    );
    if ctx.json {
        print_json(&to_json(&t));
        return Ok(0);
    }
    println!(
        "{} {} — {}, started {}, {} {}",
        t.execution,
        shown(&t.runbook),
        t.state,
        when(t.started_at),
        if exec.state.is_terminal() {
            "took"
        } else {
            "so far"
        },
        duration_text(t.duration_ms)
    );
    if t.resumes > 0 {
        match t.resumed_at_ms {
            Some(at) => println!(
                "resumed {} time(s); the last run began at +{} (steps completed before it: replayed)",
                t.resumes,
                duration_text(at)
            ),
            None => println!(
                "resumed {} time(s); the journal does not show when, so replayed steps are shown as ok",
                t.resumes
            ),
        }
    }
    if t.steps.is_empty() {
        println!("no steps recorded yet");
        return Ok(0);
    }
    for line in render(&t, width) {
        println!("{line}");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(name: &str, kind: &'static str, status: Status, start: i64, end: i64) -> Span {
        Span {
            path: "1".into(),
            name: name.into(),
            kind,
            status,
            start_ms: start,
            end_ms: end,
            duration_ms: end - start,
            attempts: 1,
        }
    }

    fn timeline(steps: Vec<Span>, total: i64) -> Timeline {
        Timeline {
            execution: "ex-1".into(),
            runbook: "rb".into(),
            state: "Success".into(),
            started_at: 0,
            duration_ms: total,
            resumes: 0,
            resumed_at_ms: None,
            steps,
        }
    }

    #[test]
    fn renders_fixed_steps_exactly() {
        let t = timeline(
            vec![
                span("fetch", "step", Status::Ok, 0, 2000),
                span("approval", "approval", Status::Approved, 2000, 6000),
                span("apply", "step", Status::Failed, 6000, 8000),
                span("report", "cleanup", Status::Ok, 8000, 8010),
            ],
            8010,
        );
        let rows = render(&t, 60);
        // name 15 (`cleanup: report`), status 8, took 4: 60 - (15+4+8+1+4) = 28 cells.
        let expected = [
            "STEP                                           STATUS   TOOK",
            "fetch           |███████                     | ok       2.0s",
            "approval        |      ███████████████       | approved 4.0s",
            "apply           |                    ########| failed   2.0s",
            "cleanup: report |                           █| ok       10ms",
            "                +------+------+------+-------+",
            "                0s     2.0s   4.0s   6.0s 8.0s",
        ];
        assert_eq!(rows, expected, "\n{}", rows.join("\n"));
        for r in &rows {
            assert!(r.chars().count() <= 60, "{r:?}");
        }
    }

    #[test]
    fn a_tiny_step_still_gets_one_cell_and_bars_stay_inside() {
        assert_eq!(bar_cells(0, 0, 10_000, 20), (0, 1));
        assert_eq!(bar_cells(10_000, 10_000, 10_000, 20), (19, 20));
        assert_eq!(bar_cells(5_000, 10_000, 10_000, 20), (10, 20));
        assert_eq!(bar_cells(0, 0, 0, 20), (0, 1));
        assert_eq!(bar_cells(2_500, 2_600, 10_000, 20), (5, 6));
    }

    #[test]
    fn width_follows_columns_and_rejects_nonsense() {
        assert_eq!(width_from(None), Ok(DEFAULT_WIDTH));
        assert_eq!(width_from(Some("")), Ok(DEFAULT_WIDTH));
        assert_eq!(width_from(Some("132")), Ok(132));
        assert_eq!(width_from(Some("12")), Ok(MIN_WIDTH));
        let e = width_from(Some("wide")).unwrap_err();
        assert!(
            e.contains("COLUMNS=wide") && e.contains("COLUMNS=120"),
            "{e}"
        );
        assert!(width_from(Some("0")).is_err());
    }

    #[test]
    fn rows_fit_narrow_and_wide_terminals() {
        let t = timeline(
            vec![
                span(
                    "a step with a rather long name that will not fit",
                    "step",
                    Status::Running,
                    0,
                    500,
                ),
                span("short", "step", Status::Replayed, 100, 200),
            ],
            500,
        );
        for width in [MIN_WIDTH, 80, 200] {
            let rows = render(&t, width);
            assert_eq!(rows.len(), 5);
            for r in &rows {
                assert!(r.chars().count() <= width, "{width}: {r:?}");
            }
            assert!(rows[1].contains('▒') && rows[1].contains("running"));
            assert!(rows[2].contains('░') && rows[2].contains("replayed"));
        }
        let wide = render(&t, 200);
        assert_eq!(wide[0].chars().count(), 200);
        assert!(wide[1].starts_with("a step with a rather long name … |"));
    }

    #[test]
    fn labels_show_the_kind_and_the_nesting() {
        let mut s = span("inner", "step", Status::Ok, 0, 1);
        s.path = "2.1".into();
        assert_eq!(label(&s), "  inner");
        let mut c = span("tidy", "cleanup", Status::Ok, 0, 1);
        c.path = "cleanup.1".into();
        assert_eq!(label(&c), "cleanup: tidy");
        let mut r = span("child", "runbook", Status::Ok, 0, 1);
        r.path = "3".into();
        assert_eq!(label(&r), "runbook: child");
        let a = span("approval", "approval", Status::Waiting, 0, 1);
        assert_eq!(label(&a), "approval");
        let evil = span("a\nb\x1b[2J", "step", Status::Ok, 0, 1);
        assert!(!label(&evil).contains('\x1b') && !label(&evil).contains('\n'));
    }

    fn exec(epoch: i64) -> ExecutionRecord {
        ExecutionRecord {
            id: "ex-1".into(),
            runbook: "rb".into(),
            origin: "bundled".into(),
            source_sha256: String::new(),
            params: json!({}),
            stored_params: json!({}),
            state: drydock_runtime::ExecutionState::Success,
            parent_id: None,
            parent_step: None,
            auto_approve: false,
            auto_approve_by: None,
            cancel_requested: false,
            runner_epoch: epoch,
            runner_pid: None,
            runner_token: None,
            output: serde_json::Value::Null,
            error: None,
            requested_by: "me".into(),
            requester_uid: None,
            region: None,
            profile: None,
            gate: None,
            fleet: None,
            run_by: None,
            runbook_owner: None,
            created_at: 1_000,
            started_at: Some(1_000),
            ended_at: Some(9_000),
        }
    }

    fn step(path: &str, name: &str, state: StepState, start: i64, end: Option<i64>) -> StepRecord {
        StepRecord {
            path: path.into(),
            name: name.into(),
            kind: StepKind::Step,
            state,
            attempts: 1,
            output: serde_json::Value::Null,
            error: None,
            child_execution: None,
            started_at: start,
            ended_at: end,
        }
    }

    fn attempt(path: &str, n: u32, start: i64, end: Option<i64>) -> AttemptRecord {
        AttemptRecord {
            path: path.into(),
            attempt: n,
            started_at: start,
            ended_at: end,
            error: None,
        }
    }

    #[test]
    fn a_resume_after_a_cut_off_attempt_marks_earlier_steps_replayed() {
        let steps = vec![
            step("1", "first", StepState::Succeeded, 1_000, Some(2_000)),
            step("2", "second", StepState::Succeeded, 2_000, Some(9_000)),
        ];
        let attempts = vec![
            attempt("1", 1, 1_000, Some(2_000)),
            attempt("2", 1, 2_000, None),
            attempt("2", 2, 7_000, Some(9_000)),
        ];
        let t = build(&exec(2), &steps, &attempts, &[], 10_000, false);
        assert_eq!(t.duration_ms, 8_000);
        assert_eq!(t.resumes, 1);
        assert_eq!(t.resumed_at_ms, Some(6_000));
        assert_eq!(t.steps[0].status, Status::Replayed);
        assert_eq!(t.steps[1].status, Status::Ok);
        assert_eq!((t.steps[1].start_ms, t.steps[1].end_ms), (1_000, 8_000));
        // Claimed once: the same rows are not a resume.
        let once = build(&exec(1), &steps, &attempts, &[], 10_000, false);
        assert_eq!(once.steps[0].status, Status::Ok);
        assert_eq!(once.resumed_at_ms, None);
    }

    #[test]
    fn an_approval_asked_again_by_a_resume_marks_earlier_steps_replayed() {
        let mut wait = step("2", "approval", StepState::Succeeded, 8_000, Some(8_500));
        wait.kind = StepKind::Approval;
        let steps = vec![
            step("1", "first", StepState::Succeeded, 1_000, Some(2_000)),
            wait,
            step("3", "last", StepState::Succeeded, 8_500, Some(9_000)),
        ];
        let asked = ApprovalRecord {
            execution_id: "ex-1".into(),
            path: "2".into(),
            message: "go?".into(),
            approvers: vec![],
            min_approvals: 1,
            deadline_at: 100_000,
            state: drydock_runtime::journal::ApprovalState::Approved,
            created_at: 2_100,
            resolved_at: Some(8_400),
            source_sha256: String::new(),
            allow_self: true,
            auto_allowed: false,
            decisions: vec![],
        };
        let t = build(
            &exec(2),
            &steps,
            &[],
            std::slice::from_ref(&asked),
            10_000,
            false,
        );
        assert_eq!(t.resumed_at_ms, Some(7_000));
        let statuses: Vec<Status> = t.steps.iter().map(|s| s.status).collect();
        assert_eq!(statuses, [Status::Replayed, Status::Approved, Status::Ok]);
        // Asked when its call began (a run that was never cut off).
        let fresh = ApprovalRecord {
            created_at: 8_000,
            ..asked
        };
        let t = build(&exec(2), &steps, &[], &[fresh], 10_000, false);
        assert_eq!(t.resumed_at_ms, None);
        assert_eq!(t.steps[0].status, Status::Ok);
    }

    #[test]
    fn unfinished_steps_run_to_now_or_are_interrupted() {
        let mut e = exec(1);
        e.state = drydock_runtime::ExecutionState::InProgress;
        e.ended_at = None;
        let steps = vec![step("1", "slow", StepState::Running, 1_000, None)];
        let live = build(&e, &steps, &[], &[], 5_000, true);
        assert_eq!(live.steps[0].status, Status::Running);
        assert_eq!(live.steps[0].end_ms, 4_000);
        assert_eq!(live.duration_ms, 4_000);
        let dead = build(&e, &steps, &[], &[], 5_000, false);
        assert_eq!(dead.steps[0].status, Status::Interrupted);
        assert_eq!(dead.duration_ms, 0);
        let j = to_json(&live);
        assert_eq!(j["timeline"]["steps"][0]["status"], "running");
        assert_eq!(j["timeline"]["steps"][0]["end_ms"], 4_000);
    }
}
