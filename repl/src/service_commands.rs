//! `:calendars` and `:serve`: what the long-running side would do now —
//! which change calendars are closed, and how the running `drydock serve`
//! is (asked over its Unix socket by the caller's function).

use drydock_ops::display::shown;
use drydock_runtime::schedule::calendar::{state_of, CalendarState};
use drydock_runtime::Journal;
use serde_json::Value;

/// Asks the running serve for its status: `Ok(None)` when none runs.
pub type ServeStatus<'a> = &'a (dyn Fn() -> Result<Option<Value>, String> + Sync);

/// Every change calendar, open or closed now, and why.
pub fn calendars(journal: &Journal) -> Result<String, String> {
    let list = journal.calendars().map_err(|e| e.to_string())?;
    if list.is_empty() {
        return Ok("no change calendars (`drydock calendar add NAME`)".into());
    }
    let now = chrono::Utc::now();
    let rows = list
        .into_iter()
        .map(|c| {
            let (state, why) = match state_of(journal, &c.name, now) {
                CalendarState::Open => ("open".to_string(), String::new()),
                CalendarState::Closed(why) => ("closed".to_string(), why),
            };
            vec![
                shown(&c.name),
                state,
                format!("{} by default", c.default_state),
                c.on_closed,
                shown(&why),
            ]
        })
        .collect();
    Ok(crate::render::table(
        &["CALENDAR", "NOW", "DEFAULT", "WHEN CLOSED", "WHY"],
        rows,
    ))
}

/// The running serve, as it describes itself.
pub fn serve(status: Option<ServeStatus>) -> Result<String, String> {
    let Some(ask) = status else {
        return Err("this REPL cannot reach `drydock serve`".into());
    };
    let Some(v) = ask()? else {
        return Ok("no `drydock serve` runs for this data directory".into());
    };
    let text = |k: &str| v[k].as_str().map(shown).unwrap_or_else(|| "-".into());
    let next = v["next_slot_at"]
        .as_i64()
        .map(drydock_runtime::display::timestamp)
        .unwrap_or_else(|| "none".into());
    let started = v["started_at"]
        .as_i64()
        .map(drydock_runtime::display::timestamp)
        .unwrap_or_default();
    Ok(format!(
        "drydock serve, pid {}, since {started}\n  web console  {}\n  schedules    {} (next slot {next})\n  runs going   {}\n  you are      {}",
        v["pid"],
        text("http"),
        v["schedules"],
        v["runs_going"],
        text("caller"),
    ))
}
