//! The event stream (anchor: EventBridge's events, Rundeck's job
//! notifications): one ordered log of what happened on this host —
//! instances changing state, status checks failing and passing,
//! recoveries, executions starting and ending, approvals requested and
//! decided. `drydock events` reads it; rules follow it by sequence number,
//! so a reader that stopped (a serve restarted) goes on where it was.
//!
//! The per-execution `events` table (an execution's own notes) is not
//! this: those stay with their execution.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{now_ms, Journal, JournalError};

/// Event types, `thing.what`.
pub mod kind {
    pub const INSTANCE_STATE: &str = "instance.state";
    pub const INSTANCE_STATUS: &str = "instance.status";
    pub const INSTANCE_RECOVERY: &str = "instance.recovery";
    /// A line on an instance's serial console matched a console rule.
    pub const INSTANCE_CONSOLE: &str = "instance.console";
    pub const EXECUTION_STARTED: &str = "execution.started";
    pub const EXECUTION_ENDED: &str = "execution.ended";
    pub const APPROVAL_REQUESTED: &str = "approval.requested";
    pub const APPROVAL_DECIDED: &str = "approval.decided";
    /// A schedule's slot was not run (missed while serve was down or
    /// busy, or skipped: a closed calendar, a run still going).
    pub const SCHEDULE_SLOT: &str = "schedule.slot";
    /// A disaster-recovery drill's verdict (emitted by `dr-drill`).
    pub const DRILL_VERDICT: &str = "drill.verdict";
    /// Every type, for help and validation.
    pub const ALL: &[&str] = &[
        INSTANCE_STATE,
        INSTANCE_STATUS,
        INSTANCE_RECOVERY,
        INSTANCE_CONSOLE,
        EXECUTION_STARTED,
        EXECUTION_ENDED,
        APPROVAL_REQUESTED,
        APPROVAL_DECIDED,
        SCHEDULE_SLOT,
        DRILL_VERDICT,
    ];

    /// The family of a runbook's own events (`runbook.NAME`).
    pub const RUNBOOK_FAMILY: &str = "runbook";

    /// Whether `t` names events: a type, a family (its first part, as
    /// `instance`), or a runbook's own type (`runbook.NAME`).
    pub fn is_known(t: &str) -> bool {
        ALL.iter()
            .any(|k| *k == t || k.split('.').next() == Some(t))
            || t == RUNBOOK_FAMILY
            || (t.starts_with("runbook.") && runbook_may_emit(t))
    }

    /// Whether a runbook may emit `kind` with `event(…)`: a drill's
    /// verdict, or `runbook.NAME` (NAME: 1–40 of a-z, 0-9, `-`, `_`).
    /// Never a type the host emits (a runbook cannot fake an instance's
    /// state or a check).
    pub fn runbook_may_emit(kind: &str) -> bool {
        if kind == DRILL_VERDICT {
            return true;
        }
        kind.strip_prefix("runbook.").is_some_and(|name| {
            (1..=40).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
    }
}

/// An event to record.
#[derive(Debug, Clone, Default)]
pub struct NewStreamEvent<'a> {
    pub kind: &'a str,
    /// The instance it is about, if any.
    pub instance: Option<&'a str>,
    /// The execution it is about, if any.
    pub execution: Option<&'a str>,
    pub region: Option<&'a str>,
    /// One line for people.
    pub detail: &'a str,
    /// Fields for rules and machines (`state`, `status`, `reason`, …).
    pub data: serde_json::Value,
    /// When it happened (ms since the epoch); now when `None`. Events
    /// queued elsewhere first (the host store's outbox) keep their time.
    pub at: Option<i64>,
}

/// A recorded event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StreamEvent {
    /// Its place in the stream (strictly increasing).
    pub seq: i64,
    /// When (ms since the epoch).
    pub at: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub instance: Option<String>,
    pub execution: Option<String>,
    pub region: Option<String>,
    pub detail: String,
    pub data: serde_json::Value,
}

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct StreamFilter {
    /// Only after this sequence number.
    pub after_seq: Option<i64>,
    /// Only at or after this time (ms).
    pub since_ms: Option<i64>,
    /// Only these types (a type `instance` means every `instance.*`).
    pub kinds: Vec<String>,
    pub instance: Option<String>,
    /// At most this many, the oldest first.
    pub limit: Option<u32>,
    /// With `limit`: the newest that many (still returned oldest first).
    pub newest: bool,
}

/// Records `e` on `conn` (a journal's connection, or a transaction on it,
/// so that an event is recorded with the change it reports), its text
/// masked by `masker`.
pub(super) fn emit_on(
    conn: &rusqlite::Connection,
    masker: Option<&crate::secrets::Secrets>,
    e: &NewStreamEvent,
) -> Result<i64, JournalError> {
    let mask = |t: &str| match masker {
        Some(m) if m.contains_secret(t) => m.mask(t),
        _ => t.to_string(),
    };
    // Every text in the data masked, before it is written as JSON (a
    // secret escaped in JSON text would not be found there).
    fn mask_value(v: &serde_json::Value, mask: &dyn Fn(&str) -> String) -> serde_json::Value {
        match v {
            serde_json::Value::String(s) => serde_json::Value::String(mask(s)),
            serde_json::Value::Array(a) => a.iter().map(|x| mask_value(x, mask)).collect(),
            serde_json::Value::Object(o) => o
                .iter()
                .map(|(k, x)| (k.clone(), mask_value(x, mask)))
                .collect(),
            other => other.clone(),
        }
    }
    let data = serde_json::to_string(&mask_value(&e.data, &mask)).unwrap_or_else(|_| "null".into());
    conn.execute(
        "INSERT INTO event_stream (at, kind, instance, execution, region, detail, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            e.at.unwrap_or_else(now_ms),
            e.kind,
            e.instance,
            e.execution,
            e.region,
            mask(e.detail),
            data
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Whether an event type is one of `wanted` (a type or a family); any
/// when `wanted` is empty.
pub fn matches_kind(kind: &str, wanted: &[String]) -> bool {
    wanted.is_empty()
        || wanted.iter().any(|w| {
            kind == w
                || kind
                    .strip_prefix(w.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
        })
}

impl Journal {
    /// Records an event; returns its sequence number. Secrets are masked
    /// out of its text as everywhere this handle writes.
    pub fn emit(&self, e: &NewStreamEvent) -> Result<i64, JournalError> {
        emit_on(&self.conn, self.masker.as_ref(), e)
    }

    /// Events in order, as `filter` says. Types are filtered in the
    /// database, so a long stream costs only what is returned.
    pub fn stream_events(&self, filter: &StreamFilter) -> Result<Vec<StreamEvent>, JournalError> {
        let mut sql = String::from(
            "SELECT seq, at, kind, instance, execution, region, detail, data FROM event_stream
             WHERE seq > ?1 AND at >= ?2 AND (?3 IS NULL OR instance = ?3)",
        );
        let mut values: Vec<rusqlite::types::Value> = vec![
            filter.after_seq.unwrap_or(0).into(),
            filter.since_ms.unwrap_or(0).into(),
            filter.instance.clone().into(),
        ];
        if !filter.kinds.is_empty() {
            let mut alternatives = Vec::new();
            for k in &filter.kinds {
                values.push(k.clone().into());
                let n = values.len();
                values.push(format!("{k}.").into());
                // A type, or a family: `instance` is every `instance.*`.
                alternatives.push(format!(
                    "kind = ?{n} OR substr(kind, 1, length(?{})) = ?{}",
                    n + 1,
                    n + 1
                ));
            }
            sql.push_str(&format!(" AND ({})", alternatives.join(" OR ")));
        }
        let newest = filter.newest && filter.limit.is_some();
        sql.push_str(if newest {
            " ORDER BY seq DESC"
        } else {
            " ORDER BY seq"
        });
        if let Some(limit) = filter.limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        let mut st = self.conn.prepare(&sql)?;
        let rows = st.query_map(rusqlite::params_from_iter(values), |r| {
            let data: String = r.get(7)?;
            Ok(StreamEvent {
                seq: r.get(0)?,
                at: r.get(1)?,
                kind: r.get(2)?,
                instance: r.get(3)?,
                execution: r.get(4)?,
                region: r.get(5)?,
                detail: r.get(6)?,
                data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
            })
        })?;
        let mut out = rows.collect::<Result<Vec<_>, _>>()?;
        if newest {
            out.reverse();
        }
        Ok(out)
    }

    /// Records events queued in another database (`source`, e.g. the host
    /// store's outbox), each given with its number there: those numbered
    /// above what `source` already delivered are recorded, with the new
    /// high mark, in one transaction. A delivery cut off by a crash is
    /// delivered again whole, and nothing twice. Returns the high mark.
    pub fn emit_queued(
        &mut self,
        source: &str,
        events: &[(i64, NewStreamEvent)],
    ) -> Result<i64, JournalError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut mark: i64 = tx
            .query_row(
                "SELECT seq FROM stream_sources WHERE source = ?1",
                [source],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        for (n, e) in events {
            if *n > mark {
                emit_on(&tx, self.masker.as_ref(), e)?;
                mark = *n;
            }
        }
        tx.execute(
            "INSERT INTO stream_sources (source, seq) VALUES (?1, ?2)
             ON CONFLICT(source) DO UPDATE SET seq = MAX(seq, excluded.seq)",
            params![source, mark],
        )?;
        tx.commit()?;
        Ok(mark)
    }

    /// Removes events older than `before_ms` that nothing still needs:
    /// rules have read them (the rules' cursor is past them) and no
    /// firing of theirs is still being started or delivered; finished
    /// firings that old go too. Returns how many events went.
    pub fn prune_events(&mut self, before_ms: i64) -> Result<usize, JournalError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "DELETE FROM event_stream
             WHERE at < ?1
               AND seq <= COALESCE((SELECT seq FROM rules_cursor WHERE id = 1), 0)
               AND seq NOT IN (SELECT event_seq FROM rule_firings
                               WHERE outcome IN ('claimed', 'delivering'))",
            [before_ms],
        )?;
        tx.execute(
            "DELETE FROM rule_firings
             WHERE at < ?1 AND outcome NOT IN ('claimed', 'delivering')",
            [before_ms],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// The oldest event kept, and how many there are.
    pub fn event_span(&self) -> Result<(Option<i64>, i64), JournalError> {
        Ok(self
            .conn
            .query_row("SELECT MIN(at), COUNT(*) FROM event_stream", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?)
    }

    /// The last sequence number recorded (0 when none).
    pub fn last_event_seq(&self) -> Result<i64, JournalError> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM event_stream", [], |r| {
                r.get(0)
            })?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_back_in_order_filtered_by_type_instance_and_place() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.last_event_seq().unwrap(), 0);
        let a = j
            .emit(&NewStreamEvent {
                kind: kind::INSTANCE_STATE,
                instance: Some("i-1"),
                region: Some("region-a"),
                detail: "i-1 is running",
                data: serde_json::json!({ "state": "running" }),
                ..Default::default()
            })
            .unwrap();
        let b = j
            .emit(&NewStreamEvent {
                kind: kind::EXECUTION_STARTED,
                execution: Some("exec-1"),
                detail: "exec-1 started",
                ..Default::default()
            })
            .unwrap();
        let c = j
            .emit(&NewStreamEvent {
                kind: kind::INSTANCE_STATUS,
                instance: Some("i-2"),
                detail: "i-2 impaired",
                data: serde_json::json!({ "status": "impaired" }),
                ..Default::default()
            })
            .unwrap();
        assert!(a < b && b < c);
        assert_eq!(j.last_event_seq().unwrap(), c);
        let all = j.stream_events(&StreamFilter::default()).unwrap();
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![a, b, c]);
        assert_eq!(all[0].data["state"], "running");
        let instances = j
            .stream_events(&StreamFilter {
                kinds: vec!["instance".into()],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(instances.len(), 2, "a prefix names the family");
        let none = j
            .stream_events(&StreamFilter {
                kinds: vec!["inst".into()],
                ..Default::default()
            })
            .unwrap();
        assert!(none.is_empty(), "only whole parts of a type match");
        let after = j
            .stream_events(&StreamFilter {
                after_seq: Some(a),
                instance: Some("i-2".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].kind, "instance.status");
        let first = j
            .stream_events(&StreamFilter {
                limit: Some(1),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].seq, a);
        let newest = j
            .stream_events(&StreamFilter {
                limit: Some(2),
                newest: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(newest.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![b, c]);
        let family_and_type = j
            .stream_events(&StreamFilter {
                kinds: vec!["execution".into(), "instance.status".into()],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            family_and_type.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![b, c]
        );
    }

    #[test]
    fn queued_events_are_recorded_once_with_their_time_across_redeliveries() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        let ev = |detail: &'static str, at: i64| NewStreamEvent {
            kind: kind::INSTANCE_STATE,
            instance: Some("i-1"),
            detail,
            at: Some(at),
            ..Default::default()
        };
        assert_eq!(
            j.emit_queued("host", &[(1, ev("a", 10)), (2, ev("b", 20))])
                .unwrap(),
            2
        );
        // The outbox was not emptied (a crash): 1 and 2 come again with 3.
        let mark = j
            .emit_queued(
                "host",
                &[(1, ev("a", 10)), (2, ev("b", 20)), (3, ev("c", 30))],
            )
            .unwrap();
        assert_eq!(mark, 3);
        let all = j.stream_events(&StreamFilter::default()).unwrap();
        let seen: Vec<_> = all.iter().map(|e| (e.detail.as_str(), e.at)).collect();
        assert_eq!(seen, vec![("a", 10), ("b", 20), ("c", 30)]);
        // Another source counts on its own.
        j.emit_queued("other", &[(1, ev("x", 40))]).unwrap();
        assert_eq!(j.stream_events(&StreamFilter::default()).unwrap().len(), 4);
    }

    #[test]
    fn pruning_keeps_what_rules_have_not_read_or_still_deliver() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        let mut seqs = Vec::new();
        for at in [100, 200, 300, 400] {
            seqs.push(
                j.emit(&NewStreamEvent {
                    kind: kind::INSTANCE_STATE,
                    detail: "old",
                    at: Some(at),
                    ..Default::default()
                })
                .unwrap(),
            );
        }
        // Rules have read up to the third; the second is being delivered.
        j.set_rules_cursor(seqs[2]).unwrap();
        assert!(j.claim_firing("hook", seqs[1]).unwrap());
        j.set_firing("hook", seqs[1], "delivering", None).unwrap();
        let gone = j.prune_events(1_000).unwrap();
        assert_eq!(gone, 2, "the first and third");
        let left: Vec<_> = j
            .stream_events(&StreamFilter::default())
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(left, vec![seqs[1], seqs[3]]);
        assert_eq!(j.event_span().unwrap(), (Some(200), 2));
        // Nothing newer than the cut goes.
        assert_eq!(j.prune_events(150).unwrap(), 0);
    }
}
