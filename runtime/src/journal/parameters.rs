//! The parameter store: named values with versions and labels, plain
//! (`String`) or sealed (`SecureString`, encrypted with the data
//! directory's key before it reaches the database).

use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};
use serde::Serialize;

use super::{now_ms, Journal, JournalError};

/// One version of a parameter. For a secure parameter `value` holds the
/// sealed text; [`crate::secrets::SecretKey::open`] with the name as
/// context gives the value.
#[derive(Debug, Clone, Serialize)]
pub struct ParameterRecord {
    pub name: String,
    pub version: i64,
    pub secure: bool,
    #[serde(skip)]
    pub value: String,
    pub description: String,
    pub labels: Vec<String>,
    pub created_by: String,
    pub created_at: i64,
}

impl ParameterRecord {
    fn from_row(row: &Row) -> rusqlite::Result<Self> {
        let labels: String = row.get("labels")?;
        Ok(Self {
            name: row.get("name")?,
            version: row.get("version")?,
            secure: row.get("secure")?,
            value: row.get("value")?,
            description: row.get("description")?,
            labels: serde_json::from_str(&labels).unwrap_or_default(),
            created_by: row.get("created_by")?,
            created_at: row.get("created_at")?,
        })
    }
}

/// Which version of a parameter: the latest, a number, or a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Latest,
    Version(i64),
    Label(String),
}

impl Selector {
    /// Parses `NAME`, `NAME:3` or `NAME:prod` into the name and selector.
    pub fn split(reference: &str) -> (&str, Selector) {
        match reference.rsplit_once(':') {
            Some((name, sel)) if !name.is_empty() && !sel.is_empty() => match sel.parse() {
                Ok(n) => (name, Selector::Version(n)),
                Err(_) => (name, Selector::Label(sel.to_string())),
            },
            _ => (reference, Selector::Latest),
        }
    }
}

/// Checks a parameter name: letters, digits and `_ . - /`, up to 128.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "parameter name {:?} is not valid: use letters, digits, `_`, `.`, `-` and `/` (up to 128, not starting with `-` or `.`)",
            crate::display::sanitize(name)
        ))
    }
}

fn check_label(label: &str) -> Result<(), String> {
    let ok = !label.is_empty()
        && label.len() <= 64
        && label
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "label {:?} is not valid: start with a letter; letters, digits, `_`, `.`, `-` (labels cannot be numbers, which name versions)",
            crate::display::sanitize(label)
        ))
    }
}

impl Journal {
    /// Stores a new version of `name` and returns its number. A parameter
    /// keeps its type: a secure one cannot become plain, nor the reverse.
    pub fn put_parameter(
        &mut self,
        name: &str,
        stored_value: &str,
        secure: bool,
        description: &str,
        by: &str,
    ) -> Result<i64, JournalError> {
        self.put_version(name, secure, description, by, |_| {
            Ok(stored_value.to_string())
        })
    }

    /// Stores a new version of a secure parameter whose value is sealed
    /// for the version it gets (`seal(version)`), in the same transaction.
    pub fn put_sealed_parameter(
        &mut self,
        name: &str,
        description: &str,
        by: &str,
        seal: impl FnOnce(i64) -> Result<String, String>,
    ) -> Result<i64, JournalError> {
        self.put_version(name, true, description, by, seal)
    }

    /// One new version: its number chosen and its value made (`value`) in
    /// one transaction.
    fn put_version(
        &mut self,
        name: &str,
        secure: bool,
        description: &str,
        by: &str,
        value: impl FnOnce(i64) -> Result<String, String>,
    ) -> Result<i64, JournalError> {
        check_name(name).map_err(JournalError::Conflict)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let last: Option<(i64, bool, bool, String)> = tx
            .query_row(
                "SELECT version, secure, deleted, description FROM parameters WHERE name = ?1
                 ORDER BY version DESC LIMIT 1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let version = match &last {
            Some((_, was_secure, false, _)) if *was_secure != secure => {
                return Err(JournalError::Conflict(format!(
                    "parameter {name} is {}; a new version must be too ({})",
                    if *was_secure { "secure" } else { "plain" },
                    if *was_secure {
                        "pass --secure"
                    } else {
                        "delete it first to change its type"
                    }
                )))
            }
            Some((v, _, _, _)) => v + 1,
            None => 1,
        };
        let description = match (&last, description.is_empty()) {
            (Some((_, _, false, d)), true) => d.clone(),
            _ => description.to_string(),
        };
        let stored = value(version).map_err(JournalError::Conflict)?;
        tx.execute(
            "INSERT INTO parameters (name, version, secure, value, description, labels, created_by, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, '[]', ?6, ?7)",
            params![name, version, secure, stored, description, by, now_ms()],
        )?;
        tx.commit()?;
        Ok(version)
    }

    /// Secure values sealed before versions were bound: (name, version, value).
    pub fn legacy_sealed_parameters(&self) -> Result<Vec<(String, i64, String)>, JournalError> {
        let mut stmt = self.conn.prepare(
            "SELECT name, version, value FROM parameters
             WHERE secure = 1 AND deleted = 0 AND value NOT LIKE 'v2:%' AND value != ''",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Replaces one stored value, if it is still `old`.
    pub fn replace_sealed_value(
        &mut self,
        name: &str,
        version: i64,
        old: &str,
        new: &str,
    ) -> Result<(), JournalError> {
        self.conn.execute(
            "UPDATE parameters SET value = ?4 WHERE name = ?1 AND version = ?2 AND value = ?3",
            params![name, version, old, new],
        )?;
        Ok(())
    }

    /// One version of a parameter.
    pub fn parameter(&self, name: &str, which: &Selector) -> Result<ParameterRecord, JournalError> {
        let rec = match which {
            Selector::Latest => self
                .conn
                .query_row(
                    "SELECT * FROM parameters WHERE name = ?1 AND deleted = 0 ORDER BY version DESC LIMIT 1",
                    [name],
                    ParameterRecord::from_row,
                )
                .optional()?,
            Selector::Version(v) => self
                .conn
                .query_row(
                    "SELECT * FROM parameters WHERE name = ?1 AND version = ?2 AND deleted = 0",
                    params![name, v],
                    ParameterRecord::from_row,
                )
                .optional()?,
            Selector::Label(l) => self
                .history(name)?
                .into_iter()
                .find(|p| p.labels.iter().any(|x| x == l)),
        };
        rec.ok_or_else(|| {
            JournalError::Conflict(match which {
                Selector::Latest => format!(
                    "no parameter named {}; list them with `drydock param list`",
                    crate::display::sanitize(name)
                ),
                Selector::Version(v) => format!(
                    "parameter {} has no version {v}; see `drydock param history {}`",
                    crate::display::sanitize(name),
                    crate::display::sanitize(name)
                ),
                Selector::Label(l) => format!(
                    "no version of parameter {} has the label {}; see `drydock param history {}`",
                    crate::display::sanitize(name),
                    crate::display::sanitize(l),
                    crate::display::sanitize(name)
                ),
            })
        })
    }

    /// Every version of a parameter, newest first.
    pub fn history(&self, name: &str) -> Result<Vec<ParameterRecord>, JournalError> {
        let mut stmt = self.conn.prepare(
            "SELECT * FROM parameters WHERE name = ?1 AND deleted = 0 ORDER BY version DESC",
        )?;
        let rows = stmt
            .query_map([name], ParameterRecord::from_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// The latest version of every parameter, by name.
    pub fn parameters(&self) -> Result<Vec<ParameterRecord>, JournalError> {
        let mut stmt = self.conn.prepare(
            "SELECT p.* FROM parameters p
             WHERE p.deleted = 0 AND p.version =
                (SELECT MAX(version) FROM parameters q WHERE q.name = p.name AND q.deleted = 0)
             ORDER BY p.name",
        )?;
        let rows = stmt
            .query_map([], ParameterRecord::from_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Moves a label to one version (a label names one version at a time).
    pub fn label_parameter(
        &mut self,
        name: &str,
        version: i64,
        label: &str,
    ) -> Result<(), JournalError> {
        check_label(label).map_err(JournalError::Conflict)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut stmt =
            tx.prepare("SELECT version, labels FROM parameters WHERE name = ?1 AND deleted = 0")?;
        let rows: Vec<(i64, String)> = stmt
            .query_map([name], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        drop(stmt);
        if !rows.iter().any(|(v, _)| *v == version) {
            return Err(JournalError::Conflict(format!(
                "parameter {} has no version {version}",
                crate::display::sanitize(name)
            )));
        }
        for (v, labels) in rows {
            let mut list: Vec<String> = serde_json::from_str(&labels).unwrap_or_default();
            list.retain(|l| l != label);
            if v == version {
                list.push(label.to_string());
            }
            tx.execute(
                "UPDATE parameters SET labels = ?3 WHERE name = ?1 AND version = ?2",
                params![
                    name,
                    v,
                    serde_json::to_string(&list).unwrap_or_else(|_| "[]".into())
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes a parameter with all its versions; returns how many.
    pub fn delete_parameter(&mut self, name: &str) -> Result<usize, JournalError> {
        // Sealed values are overwritten, not only hidden.
        let n = self.conn.execute(
            "UPDATE parameters SET deleted = 1, value = '' WHERE name = ?1 AND deleted = 0",
            [name],
        )?;
        if n == 0 {
            return Err(JournalError::Conflict(format!(
                "no parameter named {}",
                crate::display::sanitize(name)
            )));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_labels_and_types() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        assert_eq!(
            j.put_parameter("db/pass", "a", true, "db", "root").unwrap(),
            1
        );
        assert_eq!(
            j.put_parameter("db/pass", "b", true, "", "root").unwrap(),
            2
        );
        assert!(j.put_parameter("db/pass", "c", false, "", "root").is_err());
        assert_eq!(
            j.parameter("db/pass", &Selector::Latest).unwrap().value,
            "b"
        );
        assert_eq!(
            j.parameter("db/pass", &Selector::Latest)
                .unwrap()
                .description,
            "db"
        );
        j.label_parameter("db/pass", 1, "prod").unwrap();
        assert_eq!(
            j.parameter("db/pass", &Selector::Label("prod".into()))
                .unwrap()
                .version,
            1
        );
        j.label_parameter("db/pass", 2, "prod").unwrap();
        assert_eq!(
            j.parameter("db/pass", &Selector::Label("prod".into()))
                .unwrap()
                .version,
            2
        );
        assert!(j.label_parameter("db/pass", 2, "7").is_err());
        assert_eq!(j.history("db/pass").unwrap().len(), 2);
        assert_eq!(j.delete_parameter("db/pass").unwrap(), 2);
        assert!(j.parameter("db/pass", &Selector::Latest).is_err());
        assert!(check_name("../x").is_err() && check_name("a\nb").is_err());
        assert_eq!(Selector::split("a/b:3"), ("a/b", Selector::Version(3)));
        assert_eq!(
            Selector::split("a:prod"),
            ("a", Selector::Label("prod".into()))
        );
        assert_eq!(Selector::split("a"), ("a", Selector::Latest));
    }
}
