//! `drydock calendar`: change calendars that open or close scheduled work.

use chrono::Utc;
use drydock_runtime::journal::CalendarRecord;
use drydock_runtime::schedule::calendar::{read_ics, state_of, CalendarState};
use serde_json::json;

use super::{print_json, shown, table, when, Context};
use crate::cli::CalendarCommand;
use crate::failure::CliError;

fn time(what: &str, text: &str) -> Result<i64, CliError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S")
                .or_else(|_| chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M"))
                .or_else(|_| {
                    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                        .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default())
                })
                .map(|n| n.and_utc().timestamp_millis())
        })
        .map_err(|_| {
            CliError::usage(format!(
                "{what} `{}` is not a time like 2026-12-24T22:00:00Z (UTC unless an offset is given)",
                shown(text)
            ))
        })
}

/// `drydock calendar …`.
pub fn run(ctx: &Context, cmd: Option<CalendarCommand>) -> Result<i32, CliError> {
    let mut journal = ctx.executor.journal()?;
    match cmd {
        None | Some(CalendarCommand::List) => {
            let list = journal.calendars()?;
            let now = Utc::now();
            if ctx.json {
                let out: Vec<_> = list
                    .iter()
                    .map(|c| {
                        let state = state_of(&journal, &c.name, now);
                        json!({ "calendar": c, "open": state == CalendarState::Open,
                                "reason": match state { CalendarState::Closed(r) => r, _ => String::new() } })
                    })
                    .collect();
                print_json(&out);
                return Ok(0);
            }
            if list.is_empty() {
                println!("no change calendars; add one with `drydock calendar add NAME --default open|closed`");
                return Ok(0);
            }
            let mut t = table(&["CALENDAR", "DEFAULT", "WHEN CLOSED", "NOW"]);
            for c in &list {
                t.add_row(vec![
                    shown(&c.name),
                    c.default_state.clone(),
                    c.on_closed.clone(),
                    match state_of(&journal, &c.name, now) {
                        CalendarState::Open => "open".into(),
                        CalendarState::Closed(why) => format!("closed: {why}"),
                    },
                ]);
            }
            println!("{t}");
        }
        Some(CalendarCommand::Add {
            name,
            default,
            on_closed,
        }) => {
            if !matches!(default.as_str(), "open" | "closed") {
                return Err(CliError::usage(
                    "--default is open (events are freezes) or closed (events are change windows)",
                ));
            }
            if !matches!(on_closed.as_str(), "skip" | "approval") {
                return Err(CliError::usage(
                    "--on-closed is skip (the run is skipped and recorded) or approval (it waits for an override approval)",
                ));
            }
            drydock_runtime::journal::check_parameter_name(&name).map_err(CliError::usage)?;
            let record = CalendarRecord {
                name: name.clone(),
                default_state: default,
                on_closed,
                created_by: drydock_runtime::identity::Identity::current().name,
                created_at: drydock_runtime::journal::now_ms(),
            };
            journal.put_calendar(&record)?;
            if ctx.json {
                // As stored (an update keeps the first creation's time).
                print_json(&journal.calendar(&name)?.unwrap_or(record));
            } else {
                println!("change calendar {name} saved");
            }
        }
        Some(CalendarCommand::Event {
            name,
            start,
            end,
            summary,
        }) => {
            let (s, e) = (time("--start", &start)?, time("--end", &end)?);
            if e <= s {
                return Err(CliError::usage("--end must be after --start"));
            }
            let id = journal.add_calendar_event(&name, s, e, &summary)?;
            if ctx.json {
                print_json(&json!({ "event": id }));
            } else {
                println!("{name}: event {id} from {} to {}", when(s), when(e));
            }
        }
        Some(CalendarCommand::Import { name, file }) => {
            let text = drydock_runtime::input_file::read_to_string(
                &file,
                drydock_runtime::input_file::InputKind::Calendar,
            )
            .map_err(|e| CliError::usage(e.to_string()))?;
            let events =
                read_ics(&text).map_err(|e| CliError::usage(format!("{}: {e}", file.display())))?;
            let mut ids = Vec::new();
            for (s, e, summary) in &events {
                ids.push(journal.add_calendar_event(&name, *s, *e, summary)?);
            }
            if ctx.json {
                print_json(&json!({ "calendar": name, "imported": ids.len(), "events": ids }));
            } else {
                println!(
                    "{name}: {} events imported from {}",
                    events.len(),
                    file.display()
                );
            }
        }
        Some(CalendarCommand::Show { name }) => {
            let cal = journal.calendar(&name)?.ok_or_else(|| {
                CliError::usage(format!("no change calendar named {}", shown(&name)))
            })?;
            let events = journal.calendar_events(&name)?;
            if ctx.json {
                print_json(&json!({ "calendar": cal, "events": events }));
                return Ok(0);
            }
            println!(
                "{} — {} by default; a scheduled run while closed: {}",
                shown(&cal.name),
                cal.default_state,
                cal.on_closed
            );
            let mut t = table(&["EVENT", "FROM", "TO", "SUMMARY"]);
            for e in &events {
                t.add_row(vec![
                    e.id.to_string(),
                    when(e.starts_at),
                    when(e.ends_at),
                    shown(&e.summary),
                ]);
            }
            println!("{t}");
        }
        Some(CalendarCommand::State { name, at }) => {
            let t = match at {
                Some(a) => {
                    chrono::DateTime::from_timestamp_millis(time("--at", &a)?).unwrap_or_default()
                }
                None => Utc::now(),
            };
            let state = state_of(&journal, &name, t);
            let open = state == CalendarState::Open;
            if ctx.json {
                print_json(&json!({ "calendar": name, "open": open,
                    "reason": match &state { CalendarState::Closed(r) => r.clone(), _ => String::new() } }));
            } else {
                match state {
                    CalendarState::Open => println!("open"),
                    CalendarState::Closed(why) => println!("closed: {why}"),
                }
            }
            return Ok(if open { 0 } else { 1 });
        }
        Some(CalendarCommand::Remove { name }) => {
            journal.remove_calendar(&name)?;
            if ctx.json {
                print_json(&json!({ "calendar": name, "removed": true }));
            } else {
                println!("change calendar {name} removed");
            }
        }
    }
    Ok(0)
}
