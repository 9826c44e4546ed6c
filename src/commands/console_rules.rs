//! The console side of event rules, part of `drydock serve`: every
//! running instance's serial console is read from where the last pass
//! stopped, and a line matching a console rule's pattern becomes an
//! `instance.console` event (the rule then fires from the stream,
//! `commands/rules.rs`).

use drydock_ops::rules::CONSOLE_EVENT;
use drydock_runtime::journal::rules::RuleRecord;
use drydock_runtime::journal::stream::NewStreamEvent;

use super::Context;
use crate::failure::CliError;

/// The longest unfinished console line kept for matching: past it, the
/// line is read as it stands and the watcher moves on.
const MAX_PARTIAL_LINE: usize = 4096;

/// Watches the consoles of running instances for the console rules'
/// patterns; a match becomes an `instance.console` event (the rule then
/// fires from the stream). Each boot's console is read from the first
/// line not read whole: an unfinished last line (a prompt waiting for an
/// answer has no newline) is matched now and read again with what
/// follows it, each rule firing on it once. The events and the watcher's
/// new place are recorded together. The boot before the current one is
/// finished first (what it printed just before a reboot).
pub fn console_tick(ctx: &Context) -> Result<(), CliError> {
    let mut journal = ctx.executor.journal()?;
    let rules: Vec<(RuleRecord, regex::Regex)> = journal
        .rules()?
        .into_iter()
        .filter_map(|r| {
            let re = regex::RegexBuilder::new(r.console_pattern.as_deref()?)
                .size_limit(1 << 20)
                .build()
                .ok()?;
            Some((r, re))
        })
        .collect();
    if rules.is_empty() {
        return Ok(());
    }
    for region in drydock_host::REGIONS {
        let host = drydock_ops::host::open(&drydock_ops::host::HostOptions {
            data_dir: &ctx.settings.data_dir,
            region,
            profile: &ctx.settings.profile,
        })?;
        for i in host.store()?.instances(Some(region))? {
            if i.state != drydock_host::InstanceState::Running || i.boots == 0 {
                continue;
            }
            for boot in [i.boots.saturating_sub(1), i.boots] {
                if boot == 0 || (boot < i.boots && journal.console_watch(&i.id, boot)?.is_none()) {
                    continue;
                }
                let (from, fired) = journal.console_watch(&i.id, boot)?.unwrap_or_default();
                let Ok((_, next, bytes)) = host.console_since(&i.id, Some(boot), from) else {
                    continue;
                };
                if bytes.is_empty() {
                    continue;
                }
                let watch = ConsoleRead {
                    instance: &i.id,
                    boot,
                    from,
                    next,
                };
                let (events, offset, still) = scan(&rules, &watch, &bytes, &fired);
                let refs: Vec<NewStreamEvent> = events
                    .iter()
                    .map(|(rule, line, pattern)| NewStreamEvent {
                        kind: CONSOLE_EVENT,
                        instance: Some(&i.id),
                        region: Some(region),
                        detail: line.1.as_str(),
                        data: serde_json::json!({
                            "rule": rule,
                            "pattern": pattern,
                            "line": line.0,
                            "boot": boot,
                        }),
                        ..Default::default()
                    })
                    .collect();
                journal.console_read(&i.id, boot, offset, &still, &refs)?;
            }
        }
    }
    Ok(())
}

struct ConsoleRead<'a> {
    instance: &'a str,
    boot: u32,
    from: u64,
    next: u64,
}

/// What a read of console bytes raised: `(rule, (line, detail),
/// pattern)` per match (one per rule and read: the first matching line),
/// the offset of the first line not read whole, and the rules that fired
/// on that unfinished line. `fired_before` are the rules that fired on
/// the first line of this read when it was still unfinished.
#[allow(clippy::type_complexity)]
fn scan(
    rules: &[(RuleRecord, regex::Regex)],
    w: &ConsoleRead,
    bytes: &[u8],
    fired_before: &[String],
) -> (
    Vec<(String, (String, String), Option<String>)>,
    u64,
    Vec<String>,
) {
    let lines: Vec<&[u8]> = bytes.split_inclusive(|b| *b == b'\n').collect();
    let whole_len = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    let partial = bytes.len() > whole_len;
    // An unfinished line past the limit is taken as it stands.
    let too_long = bytes.len() - whole_len > MAX_PARTIAL_LINE;
    let partial_idx = (partial && !too_long).then(|| lines.len() - 1);
    let mut events = Vec::new();
    let mut still = Vec::new();
    for (r, re) in rules {
        for (idx, line) in lines.iter().enumerate() {
            let text = String::from_utf8_lossy(line);
            if !re.is_match(text.trim_end()) {
                continue;
            }
            // It fired on this line while it was unfinished.
            if idx == 0 && fired_before.contains(&r.name) {
                continue;
            }
            let line: String = text.trim().chars().take(300).collect();
            let detail = format!("{}'s console (boot {}): {line}", w.instance, w.boot);
            events.push((r.name.clone(), (line, detail), r.console_pattern.clone()));
            if Some(idx) == partial_idx {
                still.push(r.name.clone());
            }
            break;
        }
        // The same unfinished line is read again next time.
        if whole_len == 0 && partial_idx.is_some() && fired_before.contains(&r.name) {
            still.push(r.name.clone());
        }
    }
    let offset = if too_long {
        w.next
    } else {
        w.from + whole_len as u64
    };
    (events, offset, still)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, pattern: &str) -> (RuleRecord, regex::Regex) {
        (
            RuleRecord {
                name: name.into(),
                event_type: CONSOLE_EVENT.into(),
                matches: vec![],
                console_pattern: Some(pattern.into()),
                runbook: "r".into(),
                webhook: None,
                webhook_secret: None,
                webhook_private: false,
                params: Default::default(),
                approvers: vec![],
                max_per_hour: 6,
                created_by: "me".into(),
                created_by_uid: 0,
                created_at: 0,
            },
            regex::Regex::new(pattern).unwrap(),
        )
    }

    #[test]
    fn a_prompt_without_a_newline_fires_once_and_lines_are_read_whole() {
        let rules = [rule("fstab", "Press S to skip")];
        let read = |from: u64, bytes: &[u8]| ConsoleRead {
            instance: "i-1",
            boot: 1,
            from,
            next: from + bytes.len() as u64,
        };
        // The prompt arrives without a newline: fired, the offset stays
        // at its start, the rule is remembered on it.
        let first = b"boot ok\nPress S to skip mounting or M";
        let (ev, off, still) = scan(&rules, &read(0, first), first, &[]);
        assert_eq!(ev.len(), 1);
        assert!(ev[0].1 .0.starts_with("Press S"));
        assert_eq!(off, 8);
        assert_eq!(still, vec!["fstab".to_string()]);
        // Read again with more of the same line: not fired again.
        let again = b"Press S to skip mounting or M for manual recovery";
        let (ev, off, still) = scan(&rules, &read(8, again), again, &still);
        assert!(ev.is_empty());
        assert_eq!(off, 8);
        assert_eq!(still, vec!["fstab".to_string()]);
        // The line ends; a later prompt fires anew.
        let later =
            b"Press S to skip mounting or M for manual recovery\nfixed\nPress S to skip x\n";
        let (ev, off, still) = scan(&rules, &read(8, later), later, &still);
        assert_eq!(ev.len(), 1, "the second prompt only");
        assert_eq!(off, 8 + later.len() as u64);
        assert!(still.is_empty());
        // A pattern split across two reads is seen once it is whole.
        let half = b"Press S to sk";
        let (ev, off, still) = scan(&rules, &read(100, half), half, &[]);
        assert!(ev.is_empty());
        assert_eq!(off, 100);
        let whole = b"Press S to skip mounting\n";
        let (ev, _, _) = scan(&rules, &read(off, whole), whole, &still);
        assert_eq!(ev.len(), 1);
        // An endless line is taken as it stands.
        let long = vec![b'x'; MAX_PARTIAL_LINE + 10];
        let (_, off, still) = scan(&rules, &read(0, &long), &long, &[]);
        assert_eq!(off, long.len() as u64);
        assert!(still.is_empty());
    }
}
