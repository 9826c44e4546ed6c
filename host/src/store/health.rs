//! The last status-check verdict of each instance, its automatic-recovery
//! setting, and the recoveries made (for the limit per day).

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{now_ms, HostStore};
use crate::HostError;

/// An instance's status as last checked.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StoredStatus {
    pub instance_id: String,
    pub status: String,
    pub system: String,
    pub system_reason: String,
    #[serde(rename = "instance_check")]
    pub guest: String,
    #[serde(rename = "instance_reason")]
    pub guest_reason: String,
    /// When `status` last changed.
    pub since: i64,
    pub checked_at: i64,
}

impl HostStore {
    pub fn stored_status(&self, id: &str) -> Result<Option<StoredStatus>, HostError> {
        Ok(self
            .conn
            .query_row(
                "SELECT * FROM instance_status WHERE instance_id = ?1",
                [id],
                |r| {
                    Ok(StoredStatus {
                        instance_id: r.get("instance_id")?,
                        status: r.get("status")?,
                        system: r.get("system")?,
                        system_reason: r.get("system_reason")?,
                        guest: r.get("guest")?,
                        guest_reason: r.get("guest_reason")?,
                        since: r.get("since")?,
                        checked_at: r.get("checked_at")?,
                    })
                },
            )
            .optional()?)
    }

    /// Every instance's stored status, by instance.
    pub fn stored_statuses(
        &self,
    ) -> Result<std::collections::HashMap<String, StoredStatus>, HostError> {
        let mut st = self
            .conn
            .prepare("SELECT instance_id FROM instance_status")?;
        let ids: Vec<String> = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        let mut out = std::collections::HashMap::new();
        for id in ids {
            if let Some(s) = self.stored_status(&id)? {
                out.insert(id, s);
            }
        }
        Ok(out)
    }

    /// Records a verdict; returns the previous overall status when it
    /// changed (or `Some("")` for a first verdict), None when unchanged.
    pub fn record_status(&mut self, s: &StoredStatus) -> Result<Option<String>, HostError> {
        let before = self.stored_status(&s.instance_id)?;
        let changed = before
            .as_ref()
            .map(|b| b.status != s.status)
            .unwrap_or(true);
        let since = match (&before, changed) {
            (Some(b), false) => b.since,
            _ => s.checked_at,
        };
        self.conn.execute(
            "INSERT INTO instance_status (instance_id, status, system, system_reason, guest, guest_reason, since, checked_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (instance_id) DO UPDATE SET status = ?2, system = ?3, system_reason = ?4,
                 guest = ?5, guest_reason = ?6, since = ?7, checked_at = ?8",
            params![
                s.instance_id,
                s.status,
                s.system,
                s.system_reason,
                s.guest,
                s.guest_reason,
                since,
                s.checked_at
            ],
        )?;
        Ok(changed.then(|| before.map(|b| b.status).unwrap_or_default()))
    }

    pub fn auto_recovery(&self, id: &str) -> Result<bool, HostError> {
        Ok(self.conn.query_row(
            "SELECT auto_recovery FROM instances WHERE id = ?1",
            [id],
            |r| r.get(0),
        )?)
    }

    pub fn set_auto_recovery(&mut self, id: &str, on: bool) -> Result<(), HostError> {
        self.conn.execute(
            "UPDATE instances SET auto_recovery = ?2 WHERE id = ?1",
            params![id, on],
        )?;
        Ok(())
    }

    /// Records a recovery attempt's outcome.
    pub fn add_recovery(&mut self, id: &str, outcome: &str) -> Result<(), HostError> {
        self.conn.execute(
            "INSERT INTO instance_recoveries (instance_id, at, outcome) VALUES (?1, ?2, ?3)",
            params![id, now_ms(), outcome],
        )?;
        Ok(())
    }

    /// The latest recovery decision about an instance: when, and what.
    pub fn last_recovery(&self, id: &str) -> Result<Option<(i64, String)>, HostError> {
        Ok(self
            .conn
            .query_row(
                "SELECT at, outcome FROM instance_recoveries WHERE instance_id = ?1 ORDER BY at DESC, rowid DESC LIMIT 1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Recoveries started since `since_ms` (whatever their outcome).
    pub fn recoveries_since(&self, id: &str, since_ms: i64) -> Result<u32, HostError> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM instance_recoveries WHERE instance_id = ?1 AND at >= ?2 AND outcome != 'limit'",
            params![id, since_ms],
            |r| r.get(0),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_change_is_reported_once_and_recoveries_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = HostStore::open(dir.path()).unwrap();
        let mut s = StoredStatus {
            instance_id: "i-1".into(),
            status: "ok".into(),
            system: "ok".into(),
            system_reason: String::new(),
            guest: "ok".into(),
            guest_reason: String::new(),
            since: 0,
            checked_at: 10,
        };
        assert_eq!(store.record_status(&s).unwrap(), Some(String::new()));
        s.checked_at = 20;
        assert_eq!(store.record_status(&s).unwrap(), None, "unchanged");
        assert_eq!(store.stored_status("i-1").unwrap().unwrap().since, 10);
        s.status = "impaired".into();
        s.checked_at = 30;
        assert_eq!(store.record_status(&s).unwrap(), Some("ok".into()));
        assert_eq!(store.stored_status("i-1").unwrap().unwrap().since, 30);
        store.add_recovery("i-1", "recovered").unwrap();
        store.add_recovery("i-1", "limit").unwrap();
        assert_eq!(store.recoveries_since("i-1", 0).unwrap(), 1);
        assert_eq!(store.recoveries_since("i-1", now_ms() + 1000).unwrap(), 0);
    }
}
