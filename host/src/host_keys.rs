//! The SSH host keys an instance announced on its serial console, between
//! the markers cloud-init prints (`-----BEGIN SSH HOST KEY KEYS-----`):
//! what the host pins when it connects to the instance over its network —
//! the console is the channel nobody else on the network can write to, so
//! nothing is trusted on first use.

use std::io::{Read, Seek, SeekFrom};

use crate::{supervisor, Host, HostError};

const BEGIN: &str = "-----BEGIN SSH HOST KEY KEYS-----";
const END: &str = "-----END SSH HOST KEY KEYS-----";

/// How much of the end of a boot's console log is searched.
const SEARCHED_BYTES: u64 = 8 << 20;
/// How many of the latest boots are searched.
const MAX_BOOTS_SEARCHED: usize = 8;

/// The keys (`TYPE BASE64`) of the last complete block in `text`. Lines
/// that are not a key type and base64 are ignored; a block without a key
/// does not count.
pub fn parse_announced(text: &str) -> Option<Vec<String>> {
    let mut found = None;
    let mut current: Option<Vec<String>> = None;
    for line in text.lines() {
        let line = line.trim_matches(|c: char| c == '\r' || c.is_whitespace());
        if line == BEGIN {
            current = Some(Vec::new());
        } else if line == END {
            if let Some(keys) = current.take().filter(|k| !k.is_empty()) {
                found = Some(keys);
            }
        } else if let Some(keys) = current.as_mut() {
            let mut words = line.split_whitespace();
            if let (Some(kind), Some(b64)) = (words.next(), words.next()) {
                let kind_ok = kind.len() <= 64
                    && (kind.starts_with("ssh-") || kind.starts_with("ecdsa-"))
                    && kind.bytes().all(|b| b.is_ascii_graphic());
                let b64_ok = b64.len() <= 16 * 1024
                    && b64
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
                if kind_ok && b64_ok && keys.len() < 16 {
                    keys.push(format!("{kind} {b64}"));
                }
            }
        }
    }
    found
}

impl Host {
    /// Records that `id` announced `keys`; a key another instance
    /// announced first is refused: an instance showing another's key on its
    /// console could relay the host's connection to that one.
    fn claim_host_keys(&self, id: &str, keys: &[String]) -> Result<(), HostError> {
        let store = self.store()?;
        for key in keys {
            store.conn.execute(
                "INSERT OR IGNORE INTO announced_host_keys (key, instance_id, first_seen) VALUES (?1, ?2, ?3)",
                rusqlite::params![key, id, crate::store::now_ms()],
            )?;
            let owner: String = store.conn.query_row(
                "SELECT instance_id FROM announced_host_keys WHERE key = ?1",
                [key],
                |r| r.get(0),
            )?;
            if owner != id {
                return Err(HostError::Conflict(format!(
                    "instance {id} announced on its console the SSH host key that {owner} announced first: it could relay a connection to {owner}; refusing to trust it"
                )));
            }
        }
        Ok(())
    }

    /// The SSH host keys instance `id` last announced on its console
    /// (`TYPE BASE64` each): from its latest boot that announced any.
    pub fn announced_host_keys(&self, id: &str) -> Result<Vec<String>, HostError> {
        let i = self.store()?.instance(id)?;
        let i = self.in_region(id, &i.region.clone(), i)?;
        let dir = self.instance_dir(id);
        // The last few boots: a guest rebooting in a loop does not make
        // every connection read thousands of logs.
        for boot in (1..=i.boots).rev().take(MAX_BOOTS_SEARCHED) {
            let path = supervisor::console_log_path(&dir, boot);
            let mut f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(HostError::io("open", &path, e)),
            };
            let len = f
                .metadata()
                .map_err(|e| HostError::io("stat", &path, e))?
                .len();
            f.seek(SeekFrom::Start(len.saturating_sub(SEARCHED_BYTES)))
                .map_err(|e| HostError::io("seek", &path, e))?;
            let mut bytes = Vec::new();
            f.take(SEARCHED_BYTES)
                .read_to_end(&mut bytes)
                .map_err(|e| HostError::io("read", &path, e))?;
            if let Some(keys) = parse_announced(&String::from_utf8_lossy(&bytes)) {
                self.claim_host_keys(id, &keys)?;
                return Ok(keys);
            }
        }
        Err(HostError::NotFound(format!(
            "instance {id} has not announced an SSH host key on its serial console (its sshd service prints one at start); see `drydock console-output {id}`"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_complete_block_counts_and_junk_is_ignored() {
        let text = format!(
            "boot\r\n{BEGIN}\r\nssh-ed25519 AAAAold\r\n{END}\r\nlater\n{BEGIN}\nssh-ed25519 AAAAnew host\n\x1b[31mjunk\nnot-a-type AAAA\n{END}\n{BEGIN}\nssh-ed25519 AAAAcut off\n"
        );
        assert_eq!(
            parse_announced(&text),
            Some(vec!["ssh-ed25519 AAAAnew".to_string()])
        );
        assert_eq!(parse_announced("nothing here"), None);
        assert_eq!(parse_announced(&format!("{BEGIN}\n{END}\n")), None);
        assert_eq!(
            parse_announced(&format!("{BEGIN}\nssh-ed25519 AA;rm\n{END}\n")),
            None
        );
    }
}
