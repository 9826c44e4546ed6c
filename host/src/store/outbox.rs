//! The host store's outbox of events (the transactional-outbox pattern):
//! an instance's state change and the event that reports it are written
//! in one transaction here, then moved into the journal's event stream,
//! which lives in another database. The journal records the outbox's high
//! mark with the events it takes, so a move cut off by a crash is redone
//! whole and no event is recorded twice or lost.

use rusqlite::{params, Connection};

use super::{now_ms, HostStore};
use crate::HostError;

/// The outbox's name in the journal's record of sources.
const SOURCE: &str = "host-store";

/// Queues, on `conn` (inside the transaction of the change it reports),
/// the event that instance `id` entered `state` for `reason`.
pub(crate) fn queue_state_event(
    conn: &Connection,
    id: &str,
    state: &str,
    reason: &str,
) -> Result<(), HostError> {
    let region: Option<String> = conn
        .query_row("SELECT region FROM instances WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .ok();
    let detail = if reason.is_empty() {
        format!("{id} is {state}")
    } else {
        format!("{id} is {state} ({reason})")
    };
    conn.execute(
        "INSERT INTO event_outbox (at, kind, instance, region, detail, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            now_ms(),
            drydock_runtime::journal::stream::kind::INSTANCE_STATE,
            id,
            region,
            detail,
            serde_json::json!({ "state": state, "reason": reason }).to_string()
        ],
    )?;
    Ok(())
}

struct Queued {
    seq: i64,
    at: i64,
    kind: String,
    instance: Option<String>,
    region: Option<String>,
    detail: String,
    data: serde_json::Value,
}

impl HostStore {
    /// Moves the queued events into the journal's event stream and empties
    /// the outbox of what the journal took. A journal that cannot be
    /// written leaves them queued, for the next call (every state change
    /// and every turn of `drydock serve` makes one).
    pub fn flush_events(&self) -> Result<usize, HostError> {
        let queued = {
            let mut st = self.conn.prepare(
                "SELECT seq, at, kind, instance, region, detail, data FROM event_outbox
                 ORDER BY seq LIMIT 1000",
            )?;
            let rows = st.query_map([], |r| {
                let data: String = r.get(6)?;
                Ok(Queued {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    kind: r.get(2)?,
                    instance: r.get(3)?,
                    region: r.get(4)?,
                    detail: r.get(5)?,
                    data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
                })
            })?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        if queued.is_empty() {
            return Ok(0);
        }
        let events: Vec<_> = queued
            .iter()
            .map(|q| {
                (
                    q.seq,
                    drydock_runtime::journal::stream::NewStreamEvent {
                        kind: &q.kind,
                        instance: q.instance.as_deref(),
                        region: q.region.as_deref(),
                        detail: &q.detail,
                        data: q.data.clone(),
                        at: Some(q.at),
                        ..Default::default()
                    },
                )
            })
            .collect();
        let mark = drydock_runtime::Journal::open(&self.data_dir)
            .and_then(|mut j| j.emit_queued(SOURCE, &events))
            .map_err(|e| HostError::Journal(e.to_string()))?;
        self.conn
            .execute("DELETE FROM event_outbox WHERE seq <= ?1", [mark])?;
        Ok(queued.len())
    }

    /// [`Self::flush_events`], a failure logged: the change it follows
    /// stands, and its event waits in the outbox.
    pub(crate) fn flush_events_or_warn(&self) {
        if let Err(e) = self.flush_events() {
            tracing::warn!("instance events wait in the host store's outbox: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drydock_runtime::journal::stream::StreamFilter;

    #[test]
    fn queued_events_reach_the_journal_once_even_when_a_move_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let store = HostStore::open(dir.path()).unwrap();
        queue_state_event(&store.conn, "i-1", "running", "").unwrap();
        queue_state_event(&store.conn, "i-1", "stopped", "VMM exited unexpectedly").unwrap();
        // A move cut off after the journal took the events, before the
        // outbox was emptied: the journal already has them.
        let queued: Vec<(i64, String)> = {
            let mut st = store
                .conn
                .prepare("SELECT seq, detail FROM event_outbox ORDER BY seq")
                .unwrap();
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
            rows.map(Result::unwrap).collect()
        };
        let mut j = drydock_runtime::Journal::open(dir.path()).unwrap();
        let events: Vec<_> = queued
            .iter()
            .map(|(n, d)| {
                (
                    *n,
                    drydock_runtime::journal::stream::NewStreamEvent {
                        kind: "instance.state",
                        detail: d,
                        ..Default::default()
                    },
                )
            })
            .collect();
        j.emit_queued(SOURCE, &events).unwrap();
        // The next flush moves nothing twice, and empties the outbox.
        assert_eq!(store.flush_events().unwrap(), 2);
        assert_eq!(store.flush_events().unwrap(), 0);
        let all = j.stream_events(&StreamFilter::default()).unwrap();
        let details: Vec<_> = all.iter().map(|e| e.detail.as_str()).collect();
        assert_eq!(
            details,
            vec!["i-1 is running", "i-1 is stopped (VMM exited unexpectedly)"]
        );
        // A later event still goes through.
        queue_state_event(&store.conn, "i-1", "pending", "starting").unwrap();
        assert_eq!(store.flush_events().unwrap(), 1);
        let all = j.stream_events(&StreamFilter::default()).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[2].data["state"], "pending");
    }
}
