//! The event stream (anchor: EventBridge's events, Rundeck's job
//! notifications): one ordered log of what happened on this host —
//! instances changing state, status checks failing and passing,
//! recoveries, executions starting and ending, approvals requested and
//! decided. `drydock events` reads it; rules follow it by sequence number,
//! so a reader that stopped (a serve restarted) goes on where it was.
//!
//! The per-execution `events` table (an execution's own notes) is not
//! this: those stay with their execution.

use rusqlite::params;
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
    ];
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
            now_ms(),
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

    /// Events in order, as `filter` says.
    pub fn stream_events(&self, filter: &StreamFilter) -> Result<Vec<StreamEvent>, JournalError> {
        let mut st = self.conn.prepare(
            "SELECT seq, at, kind, instance, execution, region, detail, data FROM event_stream
             WHERE seq > ?1 AND at >= ?2 AND (?3 IS NULL OR instance = ?3)
             ORDER BY seq",
        )?;
        let rows = st.query_map(
            params![
                filter.after_seq.unwrap_or(0),
                filter.since_ms.unwrap_or(0),
                filter.instance
            ],
            |r| {
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
            },
        )?;
        let mut out = Vec::new();
        for r in rows {
            let e = r?;
            if !matches_kind(&e.kind, &filter.kinds) {
                continue;
            }
            out.push(e);
            if filter.limit.is_some_and(|l| out.len() >= l as usize) {
                break;
            }
        }
        Ok(out)
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
    }
}
