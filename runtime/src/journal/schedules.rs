//! Schedules and the slots they fired (or missed): a slot is recorded
//! once, in the same transaction that claims it, so no slot ever runs
//! twice, even across restarts of `drydock serve`.

use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};
use serde::{Deserialize, Serialize};

use super::{now_ms, Journal, JournalError};

/// What to do with slots that passed while nothing was scheduling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MissedPolicy {
    /// Record them as missed; run the next slot on time.
    Skip,
    /// Run the latest missed slot once, if it is at most
    /// `max_lateness` late; record the others as missed.
    CatchUp,
}

impl MissedPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::CatchUp => "catch-up",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "skip" => Some(Self::Skip),
            "catch-up" | "catchup" | "catch_up" => Some(Self::CatchUp),
            _ => None,
        }
    }
}

/// A schedule as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleRecord {
    pub name: String,
    pub runbook: String,
    pub expression: String,
    pub timezone: String,
    pub params: serde_json::Map<String, serde_json::Value>,
    /// No slot before this (ms since the epoch).
    pub start_at: Option<i64>,
    /// No slot after this.
    pub end_at: Option<i64>,
    pub paused: bool,
    pub missed: MissedPolicy,
    pub max_lateness_ms: i64,
    /// A change calendar that must be open for a slot to run.
    pub calendar: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    /// Where it was defined: `cli` or `file:PATH`.
    pub source: String,
    /// The latest slot handled (run, missed or skipped).
    pub last_slot_at: Option<i64>,
    /// Run as a fleet: targets and limits (JSON), resolved at each run.
    #[serde(default)]
    pub fleet: Option<serde_json::Value>,
    /// The SHA-256 of the runbook's source when the schedule was added or
    /// last approved (`schedules update`): a slot runs only that code.
    #[serde(default)]
    pub runbook_sha256: Option<String>,
    /// The account that added or last changed it: scheduled runs are
    /// requested by it (separation of duties applies to it).
    #[serde(default)]
    pub created_by_uid: Option<u32>,
}

impl ScheduleRecord {
    fn from_row(row: &Row) -> rusqlite::Result<Self> {
        let params: String = row.get("params")?;
        let missed: String = row.get("missed")?;
        Ok(Self {
            name: row.get("name")?,
            runbook: row.get("runbook")?,
            expression: row.get("expression")?,
            timezone: row.get("timezone")?,
            params: serde_json::from_str(&params).unwrap_or_default(),
            start_at: row.get("start_at")?,
            end_at: row.get("end_at")?,
            paused: row.get("paused")?,
            missed: MissedPolicy::parse(&missed).unwrap_or(MissedPolicy::Skip),
            max_lateness_ms: row.get("max_lateness_ms")?,
            calendar: row.get("calendar")?,
            created_by: row.get("created_by")?,
            created_at: row.get("created_at")?,
            source: row.get("source")?,
            last_slot_at: row.get("last_slot_at")?,
            fleet: row
                .get::<_, Option<String>>("fleet")?
                .and_then(|f| serde_json::from_str(&f).ok()),
            runbook_sha256: row.get("runbook_sha256")?,
            created_by_uid: row.get("created_by_uid")?,
        })
    }
}

/// What happened to one slot.
#[derive(Debug, Clone, Serialize)]
pub struct SlotRecord {
    pub schedule: String,
    pub slot_at: i64,
    /// `started`, `missed` or `skipped`.
    pub state: String,
    pub execution_id: Option<String>,
    pub reason: Option<String>,
    pub recorded_at: i64,
}

impl Journal {
    /// Adds a schedule, or replaces the one of the same name (its slots
    /// and last slot are kept, so a redefinition never reruns a slot).
    pub fn put_schedule(&mut self, s: &ScheduleRecord) -> Result<(), JournalError> {
        self.conn.execute(
            "INSERT INTO schedules (name, runbook, expression, timezone, params, start_at, end_at,
                paused, missed, max_lateness_ms, calendar, created_by, created_at, source, last_slot_at,
                fleet, runbook_sha256, created_by_uid)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)
             ON CONFLICT(name) DO UPDATE SET runbook = ?2, expression = ?3, timezone = ?4,
                params = ?5, start_at = ?6, end_at = ?7, missed = ?9, max_lateness_ms = ?10,
                calendar = ?11, source = ?14, fleet = ?16, runbook_sha256 = ?17,
                created_by = ?12, created_by_uid = ?18",
            params![
                s.name,
                s.runbook,
                s.expression,
                s.timezone,
                serde_json::Value::Object(s.params.clone()).to_string(),
                s.start_at,
                s.end_at,
                s.paused,
                s.missed.as_str(),
                s.max_lateness_ms,
                s.calendar,
                s.created_by,
                s.created_at,
                s.source,
                s.last_slot_at,
                s.fleet.as_ref().map(|f| f.to_string()),
                s.runbook_sha256,
                s.created_by_uid,
            ],
        )?;
        Ok(())
    }

    /// Approves a schedule's runbook as it is now: its slots run code of
    /// this SHA-256, requested by `by`.
    pub fn pin_schedule_runbook(
        &mut self,
        name: &str,
        sha256: &str,
        by: &crate::identity::Identity,
    ) -> Result<(), JournalError> {
        let n = self.conn.execute(
            "UPDATE schedules SET runbook_sha256 = ?2, created_by = ?3, created_by_uid = ?4 WHERE name = ?1",
            params![name, sha256, by.name, by.uid],
        )?;
        if n == 0 {
            return Err(JournalError::Conflict(format!(
                "no schedule named {}; list them with `drydock schedules`",
                crate::display::sanitize(name)
            )));
        }
        Ok(())
    }

    /// Every schedule, by name.
    pub fn schedules(&self) -> Result<Vec<ScheduleRecord>, JournalError> {
        let mut stmt = self.conn.prepare("SELECT * FROM schedules ORDER BY name")?;
        let rows = stmt
            .query_map([], ScheduleRecord::from_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// One schedule.
    pub fn schedule(&self, name: &str) -> Result<ScheduleRecord, JournalError> {
        self.conn
            .query_row(
                "SELECT * FROM schedules WHERE name = ?1",
                [name],
                ScheduleRecord::from_row,
            )
            .optional()?
            .ok_or_else(|| {
                JournalError::Conflict(format!(
                    "no schedule named {}; list them with `drydock schedules`",
                    crate::display::sanitize(name)
                ))
            })
    }

    /// Removes a schedule (its slot history stays).
    pub fn remove_schedule(&mut self, name: &str) -> Result<(), JournalError> {
        let n = self
            .conn
            .execute("DELETE FROM schedules WHERE name = ?1", [name])?;
        if n == 0 {
            return Err(JournalError::Conflict(format!(
                "no schedule named {}",
                crate::display::sanitize(name)
            )));
        }
        Ok(())
    }

    /// Pauses or resumes a schedule. Slots that pass while it is paused
    /// are recorded as skipped by the scheduler, not caught up.
    pub fn set_schedule_paused(&mut self, name: &str, paused: bool) -> Result<(), JournalError> {
        let n = self.conn.execute(
            "UPDATE schedules SET paused = ?2 WHERE name = ?1",
            params![name, paused],
        )?;
        if n == 0 {
            return Err(JournalError::Conflict(format!(
                "no schedule named {}",
                crate::display::sanitize(name)
            )));
        }
        Ok(())
    }

    /// Claims a slot: records it with `state` and (for scheduled slots,
    /// `advance`) moves the schedule's last slot forward, in one
    /// transaction. Returns false when the slot was already recorded (by
    /// this or another process).
    pub fn claim_slot(
        &mut self,
        schedule: &str,
        slot_at: i64,
        state: &str,
        reason: Option<&str>,
        advance: bool,
    ) -> Result<bool, JournalError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO schedule_slots (schedule, slot_at, state, reason, recorded_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![schedule, slot_at, state, reason, now_ms()],
        )?;
        // A slot not run is an event (a started one is the execution's).
        if inserted == 1 && state != "started" {
            let when = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(slot_at)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default();
            super::stream::emit_on(
                &tx,
                self.masker.as_ref(),
                &super::stream::NewStreamEvent {
                    kind: super::stream::kind::SCHEDULE_SLOT,
                    detail: &format!(
                        "schedule {schedule}: slot {when} {state}: {}",
                        reason.unwrap_or("")
                    ),
                    data: serde_json::json!({
                        "schedule": schedule,
                        "slot_at": slot_at,
                        "state": state,
                        "reason": reason,
                    }),
                    ..Default::default()
                },
            )?;
        }
        if advance {
            tx.execute(
                "UPDATE schedules SET last_slot_at = MAX(COALESCE(last_slot_at, 0), ?2) WHERE name = ?1",
                params![schedule, slot_at],
            )?;
        }
        tx.commit()?;
        Ok(inserted == 1)
    }

    /// Links a started slot to the execution it started.
    pub fn set_slot_execution(
        &mut self,
        schedule: &str,
        slot_at: i64,
        execution: &str,
    ) -> Result<(), JournalError> {
        self.conn.execute(
            "UPDATE schedule_slots SET execution_id = ?3 WHERE schedule = ?1 AND slot_at = ?2",
            params![schedule, slot_at, execution],
        )?;
        Ok(())
    }

    /// Records why a claimed slot did not start after all.
    pub fn set_slot_failed(
        &mut self,
        schedule: &str,
        slot_at: i64,
        reason: &str,
    ) -> Result<(), JournalError> {
        self.conn.execute(
            "UPDATE schedule_slots SET state = 'failed', reason = ?3 WHERE schedule = ?1 AND slot_at = ?2",
            params![schedule, slot_at, reason],
        )?;
        Ok(())
    }

    /// The latest slots of a schedule, newest first.
    pub fn slots(&self, schedule: &str, limit: usize) -> Result<Vec<SlotRecord>, JournalError> {
        let mut stmt = self.conn.prepare(
            "SELECT * FROM schedule_slots WHERE schedule = ?1 ORDER BY slot_at DESC LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![schedule, limit as i64], |r| {
                Ok(SlotRecord {
                    schedule: r.get("schedule")?,
                    slot_at: r.get("slot_at")?,
                    state: r.get("state")?,
                    execution_id: r.get("execution_id")?,
                    reason: r.get("reason")?,
                    recorded_at: r.get("recorded_at")?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}
