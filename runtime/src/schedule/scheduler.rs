//! Deciding what each schedule does now: which slots are due, which run,
//! which were missed or skipped and why. Pure: it takes the time and the
//! facts it needs, so tests drive it with a simulated clock.

use std::sync::Mutex;

use chrono::{DateTime, Duration as ChronoDuration, TimeZone, Utc};

use super::expr::{parse_tz, ScheduleExpr};
use crate::journal::{MissedPolicy, ScheduleRecord};

/// A slot is on time when it is at most this late.
pub const ON_TIME: std::time::Duration = std::time::Duration::from_secs(120);

/// At most this many past slots are recorded as missed in one go (a
/// `rate(1 minute)` schedule after a week down has ten thousand).
const MAX_MISSED_RECORDED: usize = 100;

/// Where the time comes from.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told (tests, simulations).
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Mutex::new(at))
    }
    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }
    pub fn advance(&self, by: std::time::Duration) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *t += ChronoDuration::from_std(by).unwrap_or_default();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What to do with one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Start,
    Missed(String),
    Skipped(String),
}

impl Decision {
    /// The slot state recorded in the journal.
    pub fn state(&self) -> &'static str {
        match self {
            Self::Start => "started",
            Self::Missed(_) => "missed",
            Self::Skipped(_) => "skipped",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Start => None,
            Self::Missed(r) | Self::Skipped(r) => Some(r),
        }
    }
}

/// One slot and its decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub slot: DateTime<Utc>,
    pub decision: Decision,
}

/// Facts about the world the plan depends on.
pub struct Facts<'a> {
    /// The schedule's previous execution, when it is still running.
    pub previous_running: Option<String>,
    /// Why the schedule's change calendar is closed at a time, if it is.
    pub calendar_closed: &'a dyn Fn(DateTime<Utc>) -> Option<String>,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// The slots of `s` due by `now` that were not handled yet, with what to
/// do with each. At most one starts (the latest, when on time or — with
/// `catch-up` — within the schedule's maximum lateness); never one that
/// was handled before (`last_slot_at`).
pub fn plan(
    s: &ScheduleRecord,
    now: DateTime<Utc>,
    facts: &Facts<'_>,
) -> Result<Vec<Planned>, String> {
    let expr = ScheduleExpr::parse(&s.expression).map_err(|e| e.to_string())?;
    let tz = parse_tz(&s.timezone)?;
    // Nothing before the schedule existed, nor before its start date.
    let origin = s.created_at.max(s.start_at.unwrap_or(i64::MIN));
    let anchor = from_ms(s.start_at.unwrap_or(s.created_at));
    // Slots strictly after the last one handled, or from the schedule's
    // creation (or start date) on.
    let mut after = match s.last_slot_at {
        Some(last) => from_ms(last),
        None => from_ms(origin) - ChronoDuration::milliseconds(1),
    };
    let mut due = Vec::new();
    let mut skipped_count = 0usize;
    while let Some(slot) = expr.next_after(after, tz, anchor) {
        if slot > now || s.end_at.is_some_and(|end| ms(slot) > end) {
            break;
        }
        due.push(slot);
        if due.len() > MAX_MISSED_RECORDED {
            due.remove(0);
            skipped_count += 1;
        }
        after = slot;
    }
    let Some(&latest) = due.last() else {
        return Ok(Vec::new());
    };
    let lateness = (now - latest).to_std().unwrap_or_default();
    let max_late = std::time::Duration::from_millis(s.max_lateness_ms.max(0) as u64);
    let runs_latest =
        lateness <= ON_TIME || (s.missed == MissedPolicy::CatchUp && lateness <= max_late);
    let mut out = Vec::with_capacity(due.len());
    for (i, slot) in due.iter().enumerate() {
        let is_latest = i + 1 == due.len();
        let decision = if s.paused {
            Decision::Skipped("the schedule is paused".into())
        } else if !is_latest || !runs_latest {
            let mut why = if s.missed == MissedPolicy::CatchUp && is_latest {
                format!(
                    "not run in time: {} late, more than the schedule's maximum lateness of {}",
                    crate::duration::format_duration(lateness),
                    crate::duration::format_duration(max_late)
                )
            } else if s.missed == MissedPolicy::CatchUp {
                "not run in time; only the latest missed slot is caught up".to_string()
            } else {
                "not run in time (drydock serve was not running, or the slot passed while it was busy); missed slots are skipped".to_string()
            };
            if i == 0 && skipped_count > 0 {
                why.push_str(&format!(" ({skipped_count} earlier slots also passed)"));
            }
            Decision::Missed(why)
        } else if let Some(previous) = &facts.previous_running {
            Decision::Skipped(format!(
                "the previous run {previous} is still running (overlapping runs are skipped)"
            ))
        } else if let Some(why) = (facts.calendar_closed)(*slot) {
            Decision::Skipped(why)
        } else {
            Decision::Start
        };
        out.push(Planned {
            slot: *slot,
            decision,
        });
    }
    Ok(out)
}

/// When the schedule runs next after `now` (None when it never will).
pub fn next_run(s: &ScheduleRecord, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let expr = ScheduleExpr::parse(&s.expression).ok()?;
    let tz = parse_tz(&s.timezone).ok()?;
    let anchor = from_ms(s.start_at.unwrap_or(s.created_at));
    let mut after = now;
    if let Some(start) = s.start_at {
        after = after.max(from_ms(start) - ChronoDuration::milliseconds(1));
    }
    let next = expr.next_after(after, tz, anchor)?;
    match s.end_at {
        Some(end) if ms(next) > end => None,
        _ => Some(next),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn schedule(expr: &str, created: &str) -> ScheduleRecord {
        ScheduleRecord {
            name: "nightly".into(),
            runbook: "rb".into(),
            expression: expr.into(),
            timezone: "UTC".into(),
            params: Default::default(),
            start_at: None,
            end_at: None,
            paused: false,
            missed: MissedPolicy::Skip,
            max_lateness_ms: 3_600_000,
            calendar: None,
            created_by: "root".into(),
            created_at: ms(t(created)),
            source: "cli".into(),
            last_slot_at: None,
            fleet: None,
            runbook_sha256: None,
            created_by_uid: None,
        }
    }

    fn open(_: DateTime<Utc>) -> Option<String> {
        None
    }

    fn facts() -> Facts<'static> {
        Facts {
            previous_running: None,
            calendar_closed: &open,
        }
    }

    #[test]
    fn a_slot_runs_once_on_time_and_the_clock_drives_it() {
        let clock = ManualClock::new(t("2026-12-01T02:59:00Z"));
        let mut s = schedule("cron(0 3 * * *)", "2026-12-01T00:00:00Z");
        assert!(plan(&s, clock.now(), &facts()).unwrap().is_empty());
        clock.advance(std::time::Duration::from_secs(61));
        let p = plan(&s, clock.now(), &facts()).unwrap();
        assert_eq!(
            p,
            vec![Planned {
                slot: t("2026-12-01T03:00:00Z"),
                decision: Decision::Start
            }]
        );
        // Once handled, the same slot is never planned again.
        s.last_slot_at = Some(ms(p[0].slot));
        assert!(plan(&s, clock.now(), &facts()).unwrap().is_empty());
        assert_eq!(next_run(&s, clock.now()), Some(t("2026-12-02T03:00:00Z")));
    }

    #[test]
    fn missed_slots_are_skipped_or_the_latest_caught_up_within_the_lateness() {
        let mut s = schedule("cron(0 * * * *)", "2026-12-01T00:30:00Z");
        let now = t("2026-12-01T03:30:00Z");
        let p = plan(&s, now, &facts()).unwrap();
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|x| matches!(x.decision, Decision::Missed(_))));
        s.missed = MissedPolicy::CatchUp;
        let p = plan(&s, now, &facts()).unwrap();
        assert_eq!(
            p[2].decision,
            Decision::Start,
            "latest, 30 min late, within 1 h"
        );
        assert!(matches!(p[0].decision, Decision::Missed(_)));
        s.max_lateness_ms = 10 * 60_000;
        let p = plan(&s, now, &facts()).unwrap();
        match &p[2].decision {
            Decision::Missed(why) => assert!(why.contains("maximum lateness of 10m"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn overlap_calendar_pause_and_dates() {
        let s = schedule("rate(1 hour)", "2026-12-01T00:00:00Z");
        let now = t("2026-12-01T01:00:30Z");
        let running = Facts {
            previous_running: Some("ex-1".into()),
            calendar_closed: &open,
        };
        assert!(
            matches!(&plan(&s, now, &running).unwrap()[0].decision, Decision::Skipped(w) if w.contains("ex-1"))
        );
        let closed = |_: DateTime<Utc>| Some("change calendar freeze is closed".to_string());
        let frozen = Facts {
            previous_running: None,
            calendar_closed: &closed,
        };
        assert!(
            matches!(&plan(&s, now, &frozen).unwrap()[0].decision, Decision::Skipped(w) if w.contains("freeze"))
        );
        let mut paused = s.clone();
        paused.paused = true;
        assert!(
            matches!(&plan(&paused, now, &facts()).unwrap()[0].decision, Decision::Skipped(w) if w.contains("paused"))
        );
        let mut ended = s.clone();
        ended.end_at = Some(ms(t("2026-12-01T00:30:00Z")));
        assert!(plan(&ended, now, &facts()).unwrap().is_empty());
        assert_eq!(next_run(&ended, now), None);
        let mut later = s.clone();
        later.start_at = Some(ms(t("2026-12-05T00:00:00Z")));
        assert!(plan(&later, now, &facts()).unwrap().is_empty());
        assert_eq!(next_run(&later, now), Some(t("2026-12-05T01:00:00Z")));
    }

    #[test]
    fn a_week_down_records_a_bounded_number_of_missed_slots() {
        let s = schedule("rate(1 minute)", "2026-12-01T00:00:00Z");
        let p = plan(&s, t("2026-12-08T00:00:30Z"), &facts()).unwrap();
        assert_eq!(p.len(), MAX_MISSED_RECORDED);
        assert_eq!(p.last().unwrap().decision, Decision::Start);
        assert!(
            matches!(&p[0].decision, Decision::Missed(w) if w.contains("earlier slots also passed"))
        );
    }
}
