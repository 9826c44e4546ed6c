//! REPL sessions: every entry an operator evaluates, recorded like an
//! execution's steps so a troubleshooting session can be reviewed later.

use rusqlite::{params, Row};
use serde::Serialize;

use super::{now_ms, Journal, JournalError};

/// One REPL session.
#[derive(Debug, Clone, Serialize)]
pub struct ReplSessionRecord {
    pub id: String,
    pub started_by: String,
    pub region: String,
    pub profile: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub entries: i64,
}

/// One evaluated entry (input and output masked of known secrets).
#[derive(Debug, Clone, Serialize)]
pub struct ReplEntryRecord {
    pub session_id: String,
    pub seq: i64,
    pub at: i64,
    pub input: String,
    pub ok: bool,
    pub output: Option<String>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

impl ReplSessionRecord {
    fn from_row(row: &Row) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get("id")?,
            started_by: row.get("started_by")?,
            region: row.get("region")?,
            profile: row.get("profile")?,
            started_at: row.get("started_at")?,
            ended_at: row.get("ended_at")?,
            entries: row.get("entries")?,
        })
    }
}

impl Journal {
    /// Records the start of a REPL session and returns its id (`repl-…`).
    pub fn start_repl_session(
        &mut self,
        started_by: &str,
        region: &str,
        profile: &str,
    ) -> Result<String, JournalError> {
        let id = crate::ids::new_id("repl");
        self.conn.execute(
            "INSERT INTO repl_sessions (id, started_by, region, profile, started_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, started_by, region, profile, now_ms()],
        )?;
        Ok(id)
    }

    /// Records one evaluated entry; texts are masked of known secrets.
    #[allow(clippy::too_many_arguments)]
    pub fn add_repl_entry(
        &mut self,
        session: &str,
        input: &str,
        ok: bool,
        output: Option<&str>,
        error: Option<&str>,
        duration_ms: i64,
    ) -> Result<i64, JournalError> {
        let input = self.masked(input).into_owned();
        let output = output.map(|o| self.masked(o).into_owned());
        let error = error.map(|e| self.masked(e).into_owned());
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let seq: i64 = tx.query_row(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM repl_entries WHERE session_id = ?1",
            [session],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO repl_entries (session_id, seq, at, input, ok, output, error, duration_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                session,
                seq,
                now_ms(),
                input,
                ok,
                output,
                error,
                duration_ms
            ],
        )?;
        tx.commit()?;
        Ok(seq)
    }

    /// Records the end of a REPL session.
    pub fn end_repl_session(&mut self, session: &str) -> Result<(), JournalError> {
        self.conn.execute(
            "UPDATE repl_sessions SET ended_at = ?2 WHERE id = ?1 AND ended_at IS NULL",
            params![session, now_ms()],
        )?;
        Ok(())
    }

    /// REPL sessions, newest first.
    pub fn repl_sessions(&self, limit: usize) -> Result<Vec<ReplSessionRecord>, JournalError> {
        let mut stmt = self.conn.prepare(
            "SELECT s.*, (SELECT COUNT(*) FROM repl_entries e WHERE e.session_id = s.id) AS entries
             FROM repl_sessions s ORDER BY s.started_at DESC, s.id LIMIT ?1",
        )?;
        let rows = stmt
            .query_map([limit as i64], ReplSessionRecord::from_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// One REPL session by id (a unique prefix is enough).
    pub fn repl_session(&self, prefix: &str) -> Result<Option<ReplSessionRecord>, JournalError> {
        let prefix = prefix.trim();
        if !prefix.starts_with("repl-")
            || !prefix[5..].chars().all(|c| c.is_ascii_hexdigit())
            || prefix.len() == 5
        {
            return Ok(None);
        }
        let mut stmt = self.conn.prepare(
            "SELECT s.*, (SELECT COUNT(*) FROM repl_entries e WHERE e.session_id = s.id) AS entries
             FROM repl_sessions s WHERE substr(s.id, 1, length(?1)) = ?1 LIMIT 2",
        )?;
        let mut rows: Vec<ReplSessionRecord> = stmt
            .query_map([prefix], ReplSessionRecord::from_row)?
            .collect::<Result<_, _>>()?;
        match rows.len() {
            1 => Ok(rows.pop()),
            0 => Ok(None),
            _ => Err(JournalError::AmbiguousExecution {
                prefix: prefix.to_string(),
                matches: rows
                    .into_iter()
                    .map(|r| r.id)
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// The entries of a REPL session, in order.
    pub fn repl_entries(&self, session: &str) -> Result<Vec<ReplEntryRecord>, JournalError> {
        let mut stmt = self
            .conn
            .prepare("SELECT * FROM repl_entries WHERE session_id = ?1 ORDER BY seq")?;
        let rows = stmt
            .query_map([session], |r| {
                Ok(ReplEntryRecord {
                    session_id: r.get("session_id")?,
                    seq: r.get("seq")?,
                    at: r.get("at")?,
                    input: r.get("input")?,
                    ok: r.get("ok")?,
                    output: r.get("output")?,
                    error: r.get("error")?,
                    duration_ms: r.get("duration_ms")?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_and_entries_are_recorded_and_masked() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        let secrets = crate::secrets::Secrets::new();
        secrets.add("hunter2");
        j.set_masker(secrets);
        let id = j.start_repl_session("root", "region-a", "default").unwrap();
        j.add_repl_entry(&id, "let x = 1;", true, None, None, 3)
            .unwrap();
        j.add_repl_entry(
            &id,
            "login(\"hunter2\")",
            false,
            None,
            Some("bad hunter2"),
            5,
        )
        .unwrap();
        j.end_repl_session(&id).unwrap();
        let s = j.repl_session(&id[..8]).unwrap().unwrap();
        assert_eq!(s.entries, 2);
        assert!(s.ended_at.is_some());
        let e = j.repl_entries(&id).unwrap();
        assert_eq!(e[1].input, "login(\"****\")");
        assert_eq!(e[1].error.as_deref(), Some("bad ****"));
        assert_eq!(j.repl_sessions(10).unwrap().len(), 1);
    }
}
