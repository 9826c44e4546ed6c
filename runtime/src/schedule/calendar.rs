//! Whether a change calendar is open at a time, and `calendar::state()`
//! for runbooks. iCalendar files are read with the `icalendar` crate.

use std::path::PathBuf;

use chrono::{DateTime, TimeZone, Utc};

use crate::journal::{CalendarEvent, CalendarRecord, Journal};

/// A calendar's state at a time: open, or closed with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CalendarState {
    Open,
    Closed(String),
}

fn at(ms: i64) -> String {
    crate::display::timestamp(ms)
}

/// The state of `cal` at `t` given its events.
pub fn state_at(cal: &CalendarRecord, events: &[CalendarEvent], t: DateTime<Utc>) -> CalendarState {
    let ms = t.timestamp_millis();
    let current = events.iter().find(|e| e.starts_at <= ms && ms < e.ends_at);
    let name = crate::display::sanitize(&cal.name);
    match (cal.default_state.as_str(), current) {
        ("closed", Some(_)) | ("open", None) => CalendarState::Open,
        ("closed", None) => {
            let next = events
                .iter()
                .filter(|e| e.starts_at > ms)
                .min_by_key(|e| e.starts_at);
            CalendarState::Closed(match next {
                Some(e) => format!(
                    "change calendar {name} is closed outside change windows; the next opens at {}",
                    at(e.starts_at)
                ),
                None => format!(
                    "change calendar {name} is closed outside change windows, and none is planned"
                ),
            })
        }
        (_, Some(e)) => CalendarState::Closed(format!(
            "change calendar {name} is closed: {} until {}",
            crate::display::sanitize(&e.summary),
            at(e.ends_at)
        )),
        (_, None) => CalendarState::Open,
    }
}

/// The state of the calendar `name` now (closed, with the reason, when
/// it does not exist: an unknown calendar never lets work through).
pub fn state_of(journal: &Journal, name: &str, t: DateTime<Utc>) -> CalendarState {
    match journal.calendar(name) {
        Ok(Some(cal)) => {
            let events = journal.calendar_events(name).unwrap_or_default();
            state_at(&cal, &events, t)
        }
        Ok(None) => CalendarState::Closed(format!(
            "change calendar {} does not exist, so it counts as closed",
            crate::display::sanitize(name)
        )),
        Err(e) => CalendarState::Closed(format!("cannot read change calendar {name}: {e}")),
    }
}

/// Events of an iCalendar file: (start, end, summary) in ms. All-day
/// events span their dates in UTC; floating times are read as UTC.
pub fn read_ics(text: &str) -> Result<Vec<(i64, i64, String)>, String> {
    use icalendar::{CalendarDateTime, Component, DatePerhapsTime};
    let cal: icalendar::Calendar = text
        .parse()
        .map_err(|e| format!("not an iCalendar file: {e}"))?;
    let to_ms = |d: &DatePerhapsTime| -> Option<i64> {
        match d {
            DatePerhapsTime::Date(date) => Some(
                Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0)?)
                    .timestamp_millis(),
            ),
            DatePerhapsTime::DateTime(CalendarDateTime::Utc(t)) => Some(t.timestamp_millis()),
            DatePerhapsTime::DateTime(CalendarDateTime::Floating(n)) => {
                Some(Utc.from_utc_datetime(n).timestamp_millis())
            }
            DatePerhapsTime::DateTime(CalendarDateTime::WithTimezone { date_time, tzid }) => {
                let tz: chrono_tz::Tz = tzid.parse().ok()?;
                tz.from_local_datetime(date_time)
                    .earliest()
                    .map(|t| t.timestamp_millis())
            }
        }
    };
    let mut out = Vec::new();
    for (i, e) in cal.events().enumerate() {
        let summary = e.get_summary().unwrap_or("(no summary)").to_string();
        let start = e
            .get_start()
            .as_ref()
            .and_then(to_ms)
            .ok_or_else(|| format!("event {} ({summary}) has no usable DTSTART", i + 1))?;
        let end = match e.get_end().as_ref() {
            Some(d) => to_ms(d)
                .ok_or_else(|| format!("event {} ({summary}) has an unusable DTEND", i + 1))?,
            None => match e.get_start() {
                Some(DatePerhapsTime::Date(_)) => start + 86_400_000,
                _ => start,
            },
        };
        if end <= start {
            return Err(format!("event {} ({summary}) ends before it starts", i + 1));
        }
        out.push((start, end, summary));
    }
    Ok(out)
}

/// Registers `calendar::state("NAME")` → `"open"` or `"closed"`, and
/// `calendar::reason("NAME")` → why it is closed (empty when open).
pub fn install(engine: &mut rhai::Engine, data_dir: PathBuf) {
    let mut module = rhai::Module::new();
    let dir = data_dir.clone();
    // The documentation is Rhai metadata: help and docs/primitives.md read it.
    rhai::FuncRegistration::new("state")
        .with_params_info(["name: string", "string"])
        .with_comments([
            "/// `\"open\"` or `\"closed\"`: a change calendar's state now.\n\
             /// A calendar that does not exist (or cannot be read) counts as closed. Example: `if calendar::state(\"prod\") == \"closed\" { … }`",
        ])
        .set_into_module(&mut module, move |name: &str| -> Result<String, Box<rhai::EvalAltResult>> {
        let journal = Journal::open(&dir).map_err(|e| e.to_string())?;
        Ok(match state_of(&journal, name, Utc::now()) {
            CalendarState::Open => "open".to_string(),
            CalendarState::Closed(_) => "closed".to_string(),
        })
    });
    rhai::FuncRegistration::new("reason")
        .with_params_info(["name: string", "string"])
        .with_comments([
            "/// Why a change calendar is closed now (an event's summary); empty when open.",
        ])
        .set_into_module(
            &mut module,
            move |name: &str| -> Result<String, Box<rhai::EvalAltResult>> {
                let journal = Journal::open(&data_dir).map_err(|e| e.to_string())?;
                Ok(match state_of(&journal, name, Utc::now()) {
                    CalendarState::Open => String::new(),
                    CalendarState::Closed(why) => why,
                })
            },
        );
    engine.register_static_module("calendar", module.into());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cal(default: &str) -> CalendarRecord {
        CalendarRecord {
            name: "prod".into(),
            default_state: default.into(),
            on_closed: "skip".into(),
            created_by: "root".into(),
            created_at: 0,
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn freezes_close_an_open_calendar_and_windows_open_a_closed_one() {
        let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\nUID:1\r\nDTSTAMP:20261201T000000Z\r\nDTSTART:20261220T000000Z\r\nDTEND:20270102T000000Z\r\nSUMMARY:Year-end freeze\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:2\r\nDTSTAMP:20261201T000000Z\r\nDTSTART;VALUE=DATE:20261205\r\nSUMMARY:Saturday\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let events: Vec<CalendarEvent> = read_ics(ics)
            .unwrap()
            .into_iter()
            .enumerate()
            .map(|(i, (s, e, summary))| CalendarEvent {
                id: i as i64,
                calendar: "prod".into(),
                starts_at: s,
                ends_at: e,
                summary,
            })
            .collect();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].ends_at - events[1].starts_at, 86_400_000);
        let open = cal("open");
        assert_eq!(
            state_at(&open, &events, t("2026-12-10T00:00:00Z")),
            CalendarState::Open
        );
        match state_at(&open, &events, t("2026-12-24T00:00:00Z")) {
            CalendarState::Closed(why) => {
                assert!(why.contains("Year-end freeze until 2027-01-02"), "{why}")
            }
            s => panic!("{s:?}"),
        }
        let closed = cal("closed");
        assert_eq!(
            state_at(&closed, &events, t("2026-12-05T12:00:00Z")),
            CalendarState::Open
        );
        match state_at(&closed, &events, t("2026-12-03T00:00:00Z")) {
            CalendarState::Closed(why) => {
                assert!(why.contains("next opens at 2026-12-05"), "{why}")
            }
            s => panic!("{s:?}"),
        }
        assert!(read_ics("not a calendar").is_err());
    }
}
