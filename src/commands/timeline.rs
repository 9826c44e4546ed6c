//! `drydock executions show ID --timeline`: an execution's timeline
//! ([`drydock_ops::executions::timeline`], built from its journal) drawn
//! for a terminal: one row per step, each bar placed and sized by when the
//! step started and ended relative to the execution's start and total
//! duration, with its status and duration, above a time axis.

use std::time::Duration;

use drydock_ops::executions::timeline::{Span, Status, Timeline};
use drydock_ops::executions::ExecutionView;
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

/// The bar's character: done, replayed, still going, went wrong.
fn glyph(status: Status) -> char {
    match status {
        Status::Ok | Status::Approved => '█',
        Status::Replayed => '░',
        Status::Running | Status::Waiting => '▒',
        _ => '#',
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
                    glyph(s.status)
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
    let view = ExecutionView::load(&journal, prefix)?;
    let t = view.timeline(drydock_runtime::journal::now_ms());
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
        if view.ended() { "took" } else { "so far" },
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
}
