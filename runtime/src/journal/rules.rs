//! Event rules (anchor: EventBridge rules with an SSM Automation target):
//! an event of the stream that matches a rule starts a runbook, with
//! fields of the event as parameters. Each (rule, event) fires at most
//! once — the firing is claimed here before anything is started, and the
//! execution it started is recorded with it — and the rules' reader keeps
//! its place in the stream, so a serve restarted or killed in between
//! loses no event and runs none twice.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{now_ms, Journal, JournalError};

/// A rule.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RuleRecord {
    pub name: String,
    /// The event type (or family) it follows.
    pub event_type: String,
    /// `(field, value)` pairs the event must have (`data.status`,
    /// `instance`, …), compared as text.
    pub matches: Vec<(String, String)>,
    /// For `instance.console` rules: the regular expression the serve
    /// watches every instance's console for.
    pub console_pattern: Option<String>,
    /// The runbook it starts (empty for a webhook rule).
    pub runbook: String,
    /// A webhook it POSTs the event to instead (http:// or https://).
    pub webhook: Option<String>,
    /// The parameter-store reference (`param:NAME`) of the webhook's
    /// signing key: never the key itself.
    pub webhook_secret: Option<String>,
    /// The webhook may be on a loopback, private or link-local address
    /// (refused unless the rule's author said so).
    pub webhook_private: bool,
    /// Parameters: literal JSON values, or text with `{{event.…}}`
    /// placeholders filled from the event.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Who approves a run before it starts (empty: it starts at once).
    pub approvers: Vec<String>,
    /// At most this many runs started per hour.
    pub max_per_hour: u32,
    pub created_by: String,
    pub created_by_uid: u32,
    pub created_at: i64,
}

/// What became of one (rule, event).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FiringRecord {
    pub rule: String,
    pub event_seq: i64,
    pub at: i64,
    /// `claimed` (being started), `started`, `rate-limited`, `failed: …`.
    pub outcome: String,
    pub execution_id: Option<String>,
}

fn rule_from_row(r: &rusqlite::Row) -> rusqlite::Result<RuleRecord> {
    let matches: String = r.get("matches")?;
    let params: String = r.get("params")?;
    let approvers: String = r.get("approvers")?;
    Ok(RuleRecord {
        name: r.get("name")?,
        event_type: r.get("event_type")?,
        matches: serde_json::from_str(&matches).unwrap_or_default(),
        console_pattern: r.get("console_pattern")?,
        runbook: r.get("runbook")?,
        webhook: r.get("webhook")?,
        webhook_secret: r.get("webhook_secret")?,
        webhook_private: r.get("webhook_private")?,
        params: serde_json::from_str(&params).unwrap_or_default(),
        approvers: serde_json::from_str(&approvers).unwrap_or_default(),
        max_per_hour: r.get("max_per_hour")?,
        created_by: r.get("created_by")?,
        created_by_uid: r.get("created_by_uid")?,
        created_at: r.get("created_at")?,
    })
}

fn firing_from_row(r: &rusqlite::Row) -> rusqlite::Result<FiringRecord> {
    Ok(FiringRecord {
        rule: r.get("rule")?,
        event_seq: r.get("event_seq")?,
        at: r.get("at")?,
        outcome: r.get("outcome")?,
        execution_id: r.get("execution_id")?,
    })
}

impl Journal {
    /// Adds a rule; a rule of that name already there is a conflict.
    pub fn add_rule(&mut self, rule: &RuleRecord) -> Result<(), JournalError> {
        let n = self.conn.execute(
            "INSERT OR IGNORE INTO rules (name, event_type, matches, console_pattern, runbook, params,
                approvers, max_per_hour, created_by, created_by_uid, created_at, starts_after,
                webhook, webhook_secret, webhook_private)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,
                (SELECT COALESCE(MAX(seq), 0) FROM event_stream), ?12, ?13, ?14)",
            params![
                rule.name,
                rule.event_type,
                serde_json::to_string(&rule.matches).unwrap_or_else(|_| "[]".into()),
                rule.console_pattern,
                rule.runbook,
                serde_json::to_string(&rule.params).unwrap_or_else(|_| "{}".into()),
                serde_json::to_string(&rule.approvers).unwrap_or_else(|_| "[]".into()),
                rule.max_per_hour,
                rule.created_by,
                rule.created_by_uid,
                now_ms(),
                rule.webhook,
                rule.webhook_secret,
                rule.webhook_private,
            ],
        )?;
        if n == 0 {
            return Err(JournalError::Conflict(format!(
                "a rule named {} exists; remove it first (`drydock rules remove {}`) or choose another name",
                rule.name, rule.name
            )));
        }
        Ok(())
    }

    pub fn remove_rule(&mut self, name: &str) -> Result<(), JournalError> {
        let n = self
            .conn
            .execute("DELETE FROM rules WHERE name = ?1", [name])?;
        if n == 0 {
            return Err(JournalError::Conflict(format!(
                "no rule named {name} (see `drydock rules`)"
            )));
        }
        Ok(())
    }

    pub fn rules(&self) -> Result<Vec<RuleRecord>, JournalError> {
        let mut st = self.conn.prepare("SELECT * FROM rules ORDER BY name")?;
        let rows = st.query_map([], rule_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn rule(&self, name: &str) -> Result<RuleRecord, JournalError> {
        self.conn
            .query_row("SELECT * FROM rules WHERE name = ?1", [name], rule_from_row)
            .optional()?
            .ok_or_else(|| {
                JournalError::Conflict(format!("no rule named {name} (see `drydock rules`)"))
            })
    }

    /// The last event a rule was added at: it follows only later ones.
    pub fn rule_starts_after(&self, name: &str) -> Result<i64, JournalError> {
        Ok(self.conn.query_row(
            "SELECT starts_after FROM rules WHERE name = ?1",
            [name],
            |r| r.get(0),
        )?)
    }

    /// Where the rules' reader is in the stream.
    pub fn rules_cursor(&self) -> Result<i64, JournalError> {
        Ok(self
            .conn
            .query_row("SELECT seq FROM rules_cursor WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or(0))
    }

    pub fn set_rules_cursor(&mut self, seq: i64) -> Result<(), JournalError> {
        self.conn.execute(
            "INSERT INTO rules_cursor (id, seq) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET seq = MAX(seq, ?1)",
            [seq],
        )?;
        Ok(())
    }

    /// The firing of `rule` for event `seq`, if any.
    pub fn firing(&self, rule: &str, seq: i64) -> Result<Option<FiringRecord>, JournalError> {
        Ok(self
            .conn
            .query_row(
                "SELECT * FROM rule_firings WHERE rule = ?1 AND event_seq = ?2",
                params![rule, seq],
                firing_from_row,
            )
            .optional()?)
    }

    /// Claims the firing of `rule` for event `seq`; false when it was
    /// claimed before.
    pub fn claim_firing(&mut self, rule: &str, seq: i64) -> Result<bool, JournalError> {
        Ok(self.conn.execute(
            "INSERT OR IGNORE INTO rule_firings (rule, event_seq, at, outcome) VALUES (?1, ?2, ?3, 'claimed')",
            params![rule, seq, now_ms()],
        )? == 1)
    }

    /// Records what a claimed firing became.
    pub fn set_firing(
        &mut self,
        rule: &str,
        seq: i64,
        outcome: &str,
        execution: Option<&str>,
    ) -> Result<(), JournalError> {
        self.conn.execute(
            "UPDATE rule_firings SET outcome = ?3, execution_id = COALESCE(?4, execution_id)
             WHERE rule = ?1 AND event_seq = ?2",
            params![rule, seq, outcome, execution],
        )?;
        Ok(())
    }

    /// Runs a rule started since `since_ms` (for its hourly limit).
    pub fn firings_started_since(&self, rule: &str, since_ms: i64) -> Result<u32, JournalError> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM rule_firings WHERE rule = ?1 AND at >= ?2 AND outcome != 'rate-limited'",
            params![rule, since_ms],
            |r| r.get(0),
        )?)
    }

    /// A rule's latest firings, newest first.
    pub fn firings(&self, rule: &str, limit: u32) -> Result<Vec<FiringRecord>, JournalError> {
        let mut st = self.conn.prepare(
            "SELECT * FROM rule_firings WHERE rule = ?1 ORDER BY event_seq DESC LIMIT ?2",
        )?;
        let rows = st.query_map(params![rule, limit], firing_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Where the console watcher is in an instance's boot: the offset of
    /// the first line not read whole yet, and the rules that already
    /// fired on that unfinished line (a prompt waits without a newline).
    pub fn console_watch(
        &self,
        instance: &str,
        boot: u32,
    ) -> Result<Option<(u64, Vec<String>)>, JournalError> {
        Ok(self
            .conn
            .query_row(
                "SELECT offset, fired FROM console_watch WHERE instance = ?1 AND boot = ?2",
                params![instance, boot],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
            )
            .optional()?
            .map(|(o, f)| {
                (
                    o.max(0) as u64,
                    serde_json::from_str(&f).unwrap_or_default(),
                )
            }))
    }

    /// Moves the console watcher and records the events its read raised,
    /// in one transaction (a crash records both or neither).
    pub fn console_read(
        &mut self,
        instance: &str,
        boot: u32,
        offset: u64,
        fired: &[String],
        events: &[super::stream::NewStreamEvent],
    ) -> Result<(), JournalError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for e in events {
            super::stream::emit_on(&tx, self.masker.as_ref(), e)?;
        }
        tx.execute(
            "INSERT INTO console_watch (instance, boot, offset, fired) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (instance, boot) DO UPDATE SET offset = ?3, fired = ?4",
            params![
                instance,
                boot,
                offset as i64,
                serde_json::to_string(fired).unwrap_or_else(|_| "[]".into())
            ],
        )?;
        tx.commit()?;
        Ok(())
    }
}
