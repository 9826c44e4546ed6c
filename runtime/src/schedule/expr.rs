//! Schedule expressions, as SSM maintenance windows and EventBridge write
//! them:
//!
//! - `cron(MIN HOUR DOM MONTH DOW)` or the bare five fields: POSIX/Vixie
//!   cron (`0 3 * * 1-5`), with `L`, `W` and `#` (`0 3 L * *`,
//!   `0 3 * * 5#2`);
//! - `cron(MIN HOUR DOM MONTH DOW YEAR)`: AWS's six-field form, where one
//!   of DOM and DOW is `?` and weekdays count 1 = Sunday … 7 = Saturday;
//! - `rate(N unit)`: every N minutes, hours or days from the schedule's
//!   start (`rate(6 hours)`, `rate(1 day)`);
//! - `at(2026-12-24T22:00:00)`: once, at a wall-clock time.
//!
//! Times are evaluated in the schedule's IANA time zone (UTC by default)
//! with cron's DST rules (croner follows Vixie cron: a fixed time in a
//! spring-forward gap runs right after it, a time repeated at fall-back
//! runs once). Parsing and evaluation are croner's and chrono-tz's.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// A parsed schedule expression.
#[derive(Debug, Clone)]
pub enum ScheduleExpr {
    Cron(Box<Cron>),
    Rate(Duration),
    At(NaiveDateTime),
}

/// A schedule expression that does not parse: what, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    /// The expression as given.
    pub expr: String,
    /// 1-based column of the first character at fault.
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "schedule `{}`, column {}: {}",
            self.expr, self.column, self.message
        )
    }
}

impl std::error::Error for ExprError {}

const FIELDS5: [&str; 5] = ["minute", "hour", "day of month", "month", "day of week"];
const FIELDS6: [&str; 6] = [
    "minute",
    "hour",
    "day of month",
    "month",
    "day of week",
    "year",
];

fn err(expr: &str, column: usize, message: impl Into<String>) -> ExprError {
    ExprError {
        expr: expr.to_string(),
        column,
        message: message.into(),
    }
}

/// Splits `text` on whitespace, keeping each field's 0-based byte offset.
fn fields(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push((s, &text[s..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &text[s..]));
    }
    out
}

fn cron_parser(aws: bool) -> CronParser {
    let builder = CronParser::builder().seconds(if aws {
        Seconds::Required
    } else {
        Seconds::Disallowed
    });
    let builder = if aws {
        builder.year(Year::Required).alternative_weekdays(true)
    } else {
        builder.year(Year::Disallowed)
    };
    builder.build()
}

impl ScheduleExpr {
    /// Parses an expression; errors name the column and the field.
    pub fn parse(text: &str) -> Result<Self, ExprError> {
        let trimmed = text.trim();
        let lead = text.len() - text.trim_start().len();
        if trimmed.is_empty() {
            return Err(err(
                text,
                1,
                "empty; write e.g. `cron(0 3 * * *)`, `rate(6 hours)` or `at(2026-12-24T22:00:00)`",
            ));
        }
        let call = |name: &str| -> Option<(usize, &str)> {
            let rest = trimmed.strip_prefix(name)?.strip_prefix('(')?;
            Some((lead + name.len() + 1, rest.strip_suffix(')')?))
        };
        if let Some((offset, inner)) = call("rate") {
            return parse_rate(text, offset, inner);
        }
        if let Some((offset, inner)) = call("at") {
            return parse_at(text, offset, inner);
        }
        if let Some((offset, inner)) = call("cron") {
            return parse_cron(text, offset, inner);
        }
        for name in ["rate(", "at(", "cron("] {
            if trimmed.starts_with(name) {
                return Err(err(text, text.len(), "missing the closing `)`"));
            }
        }
        if trimmed
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && trimmed.contains('(')
        {
            return Err(err(
                text,
                lead + 1,
                "unknown kind of schedule; expected cron(…), rate(…) or at(…)",
            ));
        }
        parse_cron(text, lead, trimmed)
    }

    /// The first time strictly after `after` (an instant), evaluated in
    /// `tz`; `start` anchors rates (which run every period after it). None when there is none (a passed
    /// `at`, a cron that matches no future time).
    pub fn next_after(
        &self,
        after: DateTime<Utc>,
        tz: Tz,
        start: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        match self {
            Self::Cron(cron) => cron
                .find_next_occurrence(&after.with_timezone(&tz), false)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            Self::Rate(every) => {
                // Every period after the start: the first run is one
                // period after the schedule starts.
                let every = chrono::Duration::from_std(*every).ok()?;
                if after < start {
                    return start.checked_add_signed(every);
                }
                let since = after - start;
                let n = since.num_milliseconds() / every.num_milliseconds() + 1;
                start.checked_add_signed(every * n.try_into().ok()?)
            }
            Self::At(when) => {
                let t = tz
                    .from_local_datetime(when)
                    .earliest()
                    .or_else(|| {
                        // In a DST gap: the first valid time after it.
                        (1..=180).find_map(|m| {
                            tz.from_local_datetime(&(*when + chrono::Duration::minutes(m)))
                                .earliest()
                        })
                    })?
                    .with_timezone(&Utc);
                (t > after).then_some(t)
            }
        }
    }
}

fn parse_rate(text: &str, offset: usize, inner: &str) -> Result<ScheduleExpr, ExprError> {
    let parts = fields(inner);
    let [(n_at, n), (u_at, unit)] = parts.as_slice() else {
        return Err(err(
            text,
            offset + 1,
            "a rate is `rate(N minutes|hours|days)`, e.g. `rate(6 hours)`",
        ));
    };
    let n: u64 = n.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
        err(
            text,
            offset + n_at + 1,
            format!("`{n}` is not a whole number of at least 1"),
        )
    })?;
    let secs = match *unit {
        "minute" | "minutes" => 60,
        "hour" | "hours" => 3600,
        "day" | "days" => 86400,
        other => {
            return Err(err(
                text,
                offset + u_at + 1,
                format!("unit `{other}`: expected minutes, hours or days"),
            ))
        }
    };
    let singular = unit.ends_with('s') == (n == 1);
    if singular && n == 1 {
        return Err(err(
            text,
            offset + u_at + 1,
            format!("write `rate(1 {})`", unit.trim_end_matches('s')),
        ));
    }
    let total = n
        .checked_mul(secs)
        .filter(|t| *t <= crate::duration::MAX.as_secs())
        .ok_or_else(|| err(text, offset + n_at + 1, "longer than 100 years"))?;
    Ok(ScheduleExpr::Rate(Duration::from_secs(total)))
}

fn parse_at(text: &str, offset: usize, inner: &str) -> Result<ScheduleExpr, ExprError> {
    let t = inner.trim();
    NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M"))
        .map(ScheduleExpr::At)
        .map_err(|e| {
            err(
                text,
                offset + 1,
                format!("`{t}` is not a time like 2026-12-24T22:00:00 ({e}); the schedule's time zone applies"),
            )
        })
}

fn parse_cron(text: &str, offset: usize, inner: &str) -> Result<ScheduleExpr, ExprError> {
    let parts = fields(inner);
    let aws = match parts.len() {
        5 => false,
        6 => true,
        n => {
            return Err(err(
                text,
                offset + 1,
                format!(
                    "{n} fields; cron takes 5 (minute hour day-of-month month day-of-week) or AWS's 6 (… year)"
                ),
            ))
        }
    };
    let names: &[&str] = if aws { &FIELDS6 } else { &FIELDS5 };
    if aws {
        let (dom, dow) = (parts[2].1, parts[4].1);
        if (dom == "?") == (dow == "?") {
            let at = if dom == "?" { parts[2].0 } else { parts[4].0 };
            return Err(err(
                text,
                offset + at + 1,
                "in the six-field form exactly one of day-of-month and day-of-week is `?`",
            ));
        }
    }
    let pattern = |ps: &[&str]| {
        let joined = ps.join(" ");
        if aws {
            format!("0 {joined}")
        } else {
            joined
        }
    };
    let given: Vec<&str> = parts.iter().map(|p| p.1).collect();
    match cron_parser(aws).parse(&pattern(&given)) {
        Ok(cron) => Ok(ScheduleExpr::Cron(Box::new(cron))),
        Err(e) => {
            // Find the field at fault: the first one that fails alone.
            for (i, (at, field)) in parts.iter().enumerate() {
                let mut probe: Vec<&str> = vec!["*"; parts.len()];
                if aws {
                    probe[2] = if i == 4 { "?" } else { "*" };
                    probe[4] = if i == 4 { field } else { "?" };
                }
                probe[i] = field;
                if cron_parser(aws).parse(&pattern(&probe)).is_err() {
                    return Err(err(
                        text,
                        offset + at + 1,
                        format!("{} `{field}` is not valid ({e})", names[i]),
                    ));
                }
            }
            Err(err(text, offset + 1, e.to_string()))
        }
    }
}

/// Parses an IANA time zone name (`Europe/Berlin`, `UTC`).
pub fn parse_tz(name: &str) -> Result<Tz, String> {
    name.trim().parse::<Tz>().map_err(|_| {
        format!(
            "`{}` is not an IANA time zone name (e.g. UTC, Europe/Berlin, America/New_York)",
            crate::display::sanitize(name)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(expr: &str, tz: &str, after: &str) -> String {
        ScheduleExpr::parse(expr)
            .unwrap()
            .next_after(
                utc(after),
                parse_tz(tz).unwrap(),
                utc("2026-01-01T00:00:00Z"),
            )
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "none".into())
    }

    #[test]
    fn cron_rate_and_at_cases() {
        let cases = [
            (
                "0 3 * * *",
                "UTC",
                "2026-12-01T07:00:00Z",
                "2026-12-02T03:00:00+00:00",
            ),
            (
                "cron(0 3 * * *)",
                "UTC",
                "2026-12-01T02:59:00Z",
                "2026-12-01T03:00:00+00:00",
            ),
            (
                "cron(30 2 L * *)",
                "UTC",
                "2026-02-01T00:00:00Z",
                "2026-02-28T02:30:00+00:00",
            ),
            (
                "cron(0 9 * * 5#2)",
                "UTC",
                "2026-12-01T00:00:00Z",
                "2026-12-11T09:00:00+00:00",
            ),
            // AWS form: weekdays 1 = Sunday; MON-FRI by name; a year.
            (
                "cron(0 10 ? * 2 *)",
                "UTC",
                "2026-12-01T00:00:00Z",
                "2026-12-07T10:00:00+00:00",
            ),
            (
                "cron(15 12 * * ? 2027)",
                "UTC",
                "2026-12-01T00:00:00Z",
                "2027-01-01T12:15:00+00:00",
            ),
            (
                "cron(0 4 ? * MON-FRI *)",
                "UTC",
                "2026-12-05T00:00:00Z",
                "2026-12-07T04:00:00+00:00",
            ),
            (
                "cron(0 4 15W * ? *)",
                "UTC",
                "2026-08-01T00:00:00Z",
                "2026-08-14T04:00:00+00:00",
            ),
            (
                "rate(6 hours)",
                "UTC",
                "2026-01-01T07:00:00Z",
                "2026-01-01T12:00:00+00:00",
            ),
            (
                "rate(1 day)",
                "UTC",
                "2026-01-03T00:00:00Z",
                "2026-01-04T00:00:00+00:00",
            ),
            (
                "at(2026-12-24T22:00:00)",
                "UTC",
                "2026-12-01T00:00:00Z",
                "2026-12-24T22:00:00+00:00",
            ),
            (
                "at(2026-12-24T22:00:00)",
                "Europe/Berlin",
                "2026-12-01T00:00:00Z",
                "2026-12-24T21:00:00+00:00",
            ),
            (
                "at(2026-12-24T22:00:00)",
                "UTC",
                "2026-12-25T00:00:00Z",
                "none",
            ),
            (
                "cron(0 3 * * ? 2020)",
                "UTC",
                "2026-01-01T00:00:00Z",
                "none",
            ),
            // Time zones.
            (
                "0 3 * * *",
                "America/New_York",
                "2026-12-01T00:00:00Z",
                "2026-12-01T08:00:00+00:00",
            ),
            // DST, Europe/Berlin: 2026-03-29 02:00 -> 03:00 (02:30 does not
            // exist: it runs right after the gap, 03:00 CEST = 01:00 UTC).
            (
                "30 2 * * *",
                "Europe/Berlin",
                "2026-03-28T12:00:00Z",
                "2026-03-29T01:00:00+00:00",
            ),
            (
                "30 2 * * *",
                "Europe/Berlin",
                "2026-03-29T02:00:00Z",
                "2026-03-30T00:30:00+00:00",
            ),
            // 2026-10-25 03:00 -> 02:00 (02:30 happens twice: once).
            (
                "30 2 * * *",
                "Europe/Berlin",
                "2026-10-24T12:00:00Z",
                "2026-10-25T00:30:00+00:00",
            ),
            (
                "30 2 * * *",
                "Europe/Berlin",
                "2026-10-25T00:30:00Z",
                "2026-10-26T01:30:00+00:00",
            ),
            // at() in a gap runs right after it.
            (
                "at(2026-03-29T02:30:00)",
                "Europe/Berlin",
                "2026-03-01T00:00:00Z",
                "2026-03-29T01:00:00+00:00",
            ),
        ];
        for (expr, tz, after, want) in cases {
            assert_eq!(next(expr, tz, after), want, "{expr} in {tz} after {after}");
        }
    }

    #[test]
    fn invalid_expressions_name_the_column() {
        let cases = [
            ("", 1, "empty"),
            ("cron(0 3 * *)", 6, "4 fields"),
            ("cron(0 25 * * *)", 8, "hour `25`"),
            ("61 3 * * *", 1, "minute `61`"),
            ("0 3 * * mon-xyz", 9, "day of week"),
            ("cron(0 3 * * 1 *)", 14, "exactly one of"),
            ("cron(0 3 ? * ? *)", 10, "exactly one of"),
            ("rate(0 hours)", 6, "at least 1"),
            ("rate(6 weeks)", 8, "unit `weeks`"),
            ("rate(1 hours)", 8, "rate(1 hour)"),
            ("rate(6)", 6, "rate(N minutes"),
            ("at(tomorrow)", 4, "not a time"),
            ("every(5 minutes)", 1, "unknown kind"),
            ("cron(0 3 * * *", 14, "closing"),
        ];
        for (expr, column, msg) in cases {
            let e = ScheduleExpr::parse(expr)
                .err()
                .unwrap_or_else(|| panic!("{expr} parsed"));
            assert_eq!(e.column, column, "{expr}: {e}");
            assert!(e.to_string().contains(msg), "{expr}: {e}");
        }
        assert!(parse_tz("Mars/Olympus").unwrap_err().contains("IANA"));
    }
}
