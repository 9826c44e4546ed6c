//! Who is running an execution, and whether that process is still alive.
//!
//! A runner is identified by its pid plus the boot id and the process start
//! time, so a pid reused after a crash or a reboot is never mistaken for the
//! runner that died.

use std::fs;

/// The identity of a runner process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerIdentity {
    pub pid: u32,
    pub token: String,
}

impl RunnerIdentity {
    /// The identity of this process.
    pub fn current() -> Self {
        let pid = std::process::id();
        Self {
            pid,
            token: token_of(pid).unwrap_or_default(),
        }
    }

    /// Whether the process this identity names is still running.
    pub fn is_alive(&self) -> bool {
        match token_of(self.pid) {
            Some(token) => token == self.token,
            None => false,
        }
    }
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `boot_id:starttime` of a live process, or `None` when it is gone (or a zombie).
fn token_of(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces or parentheses: split after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 (state); starttime is field 22.
    if fields.first() == Some(&"Z") {
        return None;
    }
    let start = fields.get(19)?;
    Some(format!("{}:{start}", boot_id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_forged_token_is_not() {
        let me = RunnerIdentity::current();
        assert!(me.is_alive());
        let forged = RunnerIdentity {
            pid: me.pid,
            token: "other-boot:1".into(),
        };
        assert!(!forged.is_alive());
    }

    #[test]
    fn an_exited_child_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let id = RunnerIdentity {
            pid: child.id(),
            token: token_of(child.id()).unwrap_or_default(),
        };
        child.wait().unwrap();
        assert!(!id.is_alive());
    }
}
