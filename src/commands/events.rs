//! `drydock events`: the host's event stream (instances changing state,
//! status checks, recoveries, executions, approvals), oldest first, and
//! with `--follow` as it grows.

use std::io::Write;
use std::time::Duration;

use drydock_runtime::journal::stream::{kind, StreamEvent, StreamFilter};

use super::{clip, print_json, shown, table, when, Context};
use crate::cli::{EventsArgs, EventsCommand};
use crate::failure::CliError;

/// How often `--follow` looks for new events.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// `--since`: a duration back from now (`90m`, `2h`) or a time
/// (RFC 3339, `2026-12-07T10:00:00Z`).
fn since_ms(text: &str) -> Result<i64, CliError> {
    if let Ok(d) = drydock_runtime::duration::parse_duration(text) {
        return Ok(drydock_runtime::journal::now_ms() - d.as_millis() as i64);
    }
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            CliError::usage(format!(
                "--since `{}` is neither a duration (like 90m or 2h) nor a time (like 2026-12-07T10:00:00Z)",
                shown(text)
            ))
        })
}

fn check_types(types: &[String]) -> Result<(), CliError> {
    for t in types {
        if !kind::is_known(t) {
            return Err(CliError::usage(format!(
                "--type `{}` is not an event type; the types are {}, runbook.NAME (a runbook's own) or their first part (e.g. instance)",
                shown(t),
                kind::ALL.join(", ")
            )));
        }
    }
    Ok(())
}

fn print_table(events: &[StreamEvent]) {
    let mut t = table(&["SEQ", "WHEN", "TYPE", "ABOUT", "DETAIL"]);
    for e in events {
        let about = e
            .instance
            .clone()
            .or_else(|| e.execution.clone())
            .unwrap_or_else(|| "-".into());
        t.add_row(vec![
            e.seq.to_string(),
            when(e.at),
            e.kind.clone(),
            about,
            clip(&shown(&e.detail), 100),
        ]);
    }
    println!("{t}");
}

fn print_line(e: &StreamEvent, json: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(
            out,
            "{}",
            serde_json::to_string(e).unwrap_or_else(|_| "{}".into())
        )?;
    } else {
        let about = e
            .instance
            .as_deref()
            .or(e.execution.as_deref())
            .unwrap_or("-");
        writeln!(
            out,
            "{:>6}  {}  {:<20} {:<16} {}",
            e.seq,
            when(e.at),
            e.kind,
            about,
            shown(&e.detail)
        )?;
    }
    out.flush()
}

/// The shortest retention `events prune` and `serve --event-retention`
/// accept: rules' rate limits count the last hour's firings.
pub const MIN_RETENTION: Duration = Duration::from_secs(3600);

/// A retention (`30d`, `12h`), at least [`MIN_RETENTION`]; `what` names
/// the option in errors.
pub fn parse_retention(text: &str, what: &str) -> Result<Duration, CliError> {
    let d = drydock_runtime::duration::parse_duration(text).map_err(|e| {
        CliError::usage(format!(
            "{what} `{}`: {e} (a duration like 30d or 12h)",
            shown(text)
        ))
    })?;
    if d < MIN_RETENTION {
        return Err(CliError::usage(format!(
            "{what} `{}` is shorter than an hour; rules' rate limits count the last hour, so keep at least 1h",
            shown(text)
        )));
    }
    Ok(d)
}

/// `drydock events prune --older-than D`.
fn prune(ctx: &Context, older_than: &str) -> Result<i32, CliError> {
    let keep = parse_retention(older_than, "--older-than")?;
    let mut journal = ctx.executor.journal()?;
    let cut = drydock_runtime::journal::now_ms() - keep.as_millis() as i64;
    let removed = journal.prune_events(cut)?;
    let (oldest, left) = journal.event_span()?;
    if ctx.json {
        print_json(&serde_json::json!({
            "removed": removed,
            "left": left,
            "oldest_at": oldest,
        }));
    } else {
        let since = oldest.map_or_else(|| "-".to_string(), when);
        println!("removed {removed} events older than {older_than}; {left} left, the oldest from {since}");
    }
    Ok(0)
}

/// `drydock events [--type T]… [--instance ID] [--since WHEN] [--follow]`.
pub fn run(ctx: &Context, args: EventsArgs) -> Result<i32, CliError> {
    if let Some(EventsCommand::Prune { older_than }) = &args.command {
        return prune(ctx, older_than);
    }
    check_types(&args.types)?;
    if args.limit == 0 {
        return Err(CliError::usage("--limit must be at least 1"));
    }
    let mut filter = StreamFilter {
        after_seq: args.after,
        since_ms: args.since.as_deref().map(since_ms).transpose()?,
        kinds: args.types.clone(),
        instance: args.instance.clone(),
        // The newest `limit`, still oldest first.
        limit: Some(u32::try_from(args.limit).unwrap_or(u32::MAX)),
        newest: true,
    };
    let journal = ctx.executor.journal()?;
    // Taken before the first read: an event committed after it is read
    // again below (and filtered), never skipped.
    let before = journal.last_event_seq()?;
    let events = journal.stream_events(&filter)?;
    filter.limit = None;
    filter.newest = false;
    if !args.follow {
        if ctx.json {
            print_json(&serde_json::json!({ "events": events }));
        } else if events.is_empty() {
            println!("no events");
        } else {
            print_table(&events);
        }
        return Ok(0);
    }
    let mut last = before.max(events.last().map_or(0, |e| e.seq));
    for e in &events {
        if print_line(e, ctx.json).is_err() {
            return Ok(0);
        }
    }
    // Every event is read (the types are filtered here), so the cursor
    // moves only past events seen: one committed between two reads is
    // never skipped.
    let kinds = std::mem::take(&mut filter.kinds);
    loop {
        std::thread::sleep(FOLLOW_EVERY);
        filter.after_seq = Some(last);
        filter.since_ms = None;
        for e in journal.stream_events(&filter)? {
            last = e.seq;
            if !drydock_runtime::journal::stream::matches_kind(&e.kind, &kinds) {
                continue;
            }
            // The reader went away (`| head`): done.
            if print_line(&e, ctx.json).is_err() {
                return Ok(0);
            }
        }
    }
}
