//! Change calendars (as SSM Change Calendar): open by default, where
//! events are freezes, or closed by default, where events are change
//! windows.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{now_ms, Journal, JournalError};

/// A change calendar.
#[derive(Debug, Clone, Serialize)]
pub struct CalendarRecord {
    pub name: String,
    /// `open` (events close it) or `closed` (events open it).
    pub default_state: String,
    /// What a scheduled run does while it is closed: `skip` or `approval`
    /// (it waits for an override approval).
    pub on_closed: String,
    pub created_by: String,
    pub created_at: i64,
}

/// One event of a calendar.
#[derive(Debug, Clone, Serialize)]
pub struct CalendarEvent {
    pub id: i64,
    pub calendar: String,
    pub starts_at: i64,
    pub ends_at: i64,
    pub summary: String,
}

impl Journal {
    /// Adds or redefines a calendar (its events stay).
    pub fn put_calendar(&mut self, c: &CalendarRecord) -> Result<(), JournalError> {
        self.conn.execute(
            "INSERT INTO calendars (name, default_state, on_closed, created_by, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(name) DO UPDATE SET default_state = ?2, on_closed = ?3",
            params![
                c.name,
                c.default_state,
                c.on_closed,
                c.created_by,
                c.created_at
            ],
        )?;
        Ok(())
    }

    pub fn calendars(&self) -> Result<Vec<CalendarRecord>, JournalError> {
        let mut stmt = self.conn.prepare("SELECT * FROM calendars ORDER BY name")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(CalendarRecord {
                    name: r.get("name")?,
                    default_state: r.get("default_state")?,
                    on_closed: r.get("on_closed")?,
                    created_by: r.get("created_by")?,
                    created_at: r.get("created_at")?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    pub fn calendar(&self, name: &str) -> Result<Option<CalendarRecord>, JournalError> {
        Ok(self
            .conn
            .query_row("SELECT * FROM calendars WHERE name = ?1", [name], |r| {
                Ok(CalendarRecord {
                    name: r.get("name")?,
                    default_state: r.get("default_state")?,
                    on_closed: r.get("on_closed")?,
                    created_by: r.get("created_by")?,
                    created_at: r.get("created_at")?,
                })
            })
            .optional()?)
    }

    /// Removes a calendar and its events.
    pub fn remove_calendar(&mut self, name: &str) -> Result<(), JournalError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM calendar_events WHERE calendar = ?1", [name])?;
        let n = tx.execute("DELETE FROM calendars WHERE name = ?1", [name])?;
        tx.commit()?;
        if n == 0 {
            return Err(JournalError::Conflict(format!(
                "no change calendar named {}",
                crate::display::sanitize(name)
            )));
        }
        Ok(())
    }

    /// Adds an event; returns its id.
    pub fn add_calendar_event(
        &mut self,
        calendar: &str,
        starts_at: i64,
        ends_at: i64,
        summary: &str,
    ) -> Result<i64, JournalError> {
        if self.calendar(calendar)?.is_none() {
            return Err(JournalError::Conflict(format!(
                "no change calendar named {}; add it with `drydock calendar add`",
                crate::display::sanitize(calendar)
            )));
        }
        self.conn.execute(
            "INSERT INTO calendar_events (calendar, starts_at, ends_at, summary, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![calendar, starts_at, ends_at, summary, now_ms()],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// A calendar's events, by start.
    pub fn calendar_events(&self, calendar: &str) -> Result<Vec<CalendarEvent>, JournalError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, calendar, starts_at, ends_at, summary FROM calendar_events
             WHERE calendar = ?1 ORDER BY starts_at",
        )?;
        let rows = stmt
            .query_map([calendar], |r| {
                Ok(CalendarEvent {
                    id: r.get(0)?,
                    calendar: r.get(1)?,
                    starts_at: r.get(2)?,
                    ends_at: r.get(3)?,
                    summary: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}
