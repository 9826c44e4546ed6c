//! REPL history that never keeps a secret: each entry is masked before it
//! is stored, with the values the session knows to be secret and any
//! literal given to `secret("…")` on that line.

use drydock_runtime::secrets::Secrets;
use reedline::{History, HistoryItem, HistoryItemId, HistorySessionId, ReedlineError, SearchQuery};

type Result<T> = std::result::Result<T, ReedlineError>;

/// Wraps a history store; masks secrets out of what it saves.
pub struct MaskedHistory {
    inner: Box<dyn History>,
    secrets: Secrets,
}

impl MaskedHistory {
    pub fn new(inner: Box<dyn History>, secrets: Secrets) -> Self {
        Self { inner, secrets }
    }
}

/// Registers the string literals passed to `secret(…)` in `line`.
pub fn register_secret_literals(line: &str, secrets: &Secrets) {
    static CALL: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = CALL.get_or_init(|| {
        regex::Regex::new(r#"secret\s*\(\s*(?:"((?:[^"\\]|\\.)*)"|`([^`]*)`)"#)
            .expect("valid regex")
    });
    for c in re.captures_iter(line) {
        if let Some(m) = c.get(1).or_else(|| c.get(2)) {
            secrets.add(m.as_str());
        }
    }
}

impl History for MaskedHistory {
    fn save(&mut self, mut h: HistoryItem) -> Result<HistoryItem> {
        register_secret_literals(&h.command_line, &self.secrets);
        h.command_line = self.secrets.mask(&h.command_line);
        self.inner.save(h)
    }
    fn load(&self, id: HistoryItemId) -> Result<HistoryItem> {
        self.inner.load(id)
    }
    fn count(&self, query: SearchQuery) -> Result<i64> {
        self.inner.count(query)
    }
    fn search(&self, query: SearchQuery) -> Result<Vec<HistoryItem>> {
        self.inner.search(query)
    }
    fn update(
        &mut self,
        id: HistoryItemId,
        updater: &dyn Fn(HistoryItem) -> HistoryItem,
    ) -> Result<()> {
        let secrets = self.secrets.clone();
        self.inner.update(id, &move |item| {
            let mut item = updater(item);
            item.command_line = secrets.mask(&item.command_line);
            item
        })
    }
    fn clear(&mut self) -> Result<()> {
        self.inner.clear()
    }
    fn delete(&mut self, h: HistoryItemId) -> Result<()> {
        self.inner.delete(h)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.inner.sync()
    }
    fn session(&self) -> Option<HistorySessionId> {
        self.inner.session()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reedline::FileBackedHistory;

    #[test]
    fn secrets_never_reach_the_history_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.txt");
        let secrets = Secrets::new();
        secrets.add("from-the-store");
        let mut h = MaskedHistory::new(
            Box::new(FileBackedHistory::with_file(100, path.clone()).unwrap()),
            secrets,
        );
        for line in [
            r#"let pw = secret("hunter2");"#,
            r#"c.login("root", "hunter2")"#,
            r#"print("from-the-store")"#,
            "let x = 1;",
        ] {
            h.save(HistoryItem::from_command_line(line)).unwrap();
        }
        h.sync().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("hunter2") && !text.contains("from-the-store"),
            "{text}"
        );
        assert!(
            text.contains(r#"secret("****")"#) && text.contains("let x = 1;"),
            "{text}"
        );
    }
}
