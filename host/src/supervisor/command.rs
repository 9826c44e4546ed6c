//! What an instance process is asked to do over its control socket, as a
//! typed command with the one line that carries it.

use crate::HostError;

/// What an instance process is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlCommand {
    /// A clean stop without a guest agent: sync, remount read-only, power
    /// off over the serial line (magic SysRq), the VMM ended if the guest
    /// does not within its deadline.
    Stop,
    /// The VMM ended now.
    StopForce,
    /// Sync, remount read-only, reset: the same VMM boots again.
    Reboot,
    /// `running pid N backend NAME`.
    Status,
    /// Whether the vCPUs make progress, as JSON (`vm_health::VmHealth`).
    Health,
    /// The console's in-memory tail, as a JSON string.
    Tail,
    /// A magic SysRq key (a letter or digit) over the serial line.
    Sysrq(u8),
    /// A break condition on the serial line.
    Break,
    /// The vCPUs (or the whole VM, QEMU) paused for a consistent copy of
    /// the disks; resumed by [`ControlCommand::Resume`] or after a limit.
    Pause,
    Resume,
    /// A volume hot-plugged into (or out of) the running VM.
    Attach(String),
    Detach(String),
    /// A network interface hot-plugged into (or out of) the running VM.
    AttachNic(String),
    DetachNic(String),
}

impl ControlCommand {
    /// Parses one command line (without its newline).
    pub fn parse(line: &str) -> Result<Self, HostError> {
        let (word, arg) = match line.split_once(' ') {
            Some((w, a)) => (w, Some(a.trim())),
            None => (line, None),
        };
        let resource = |arg: Option<&str>, what: &str| {
            arg.filter(|v| {
                !v.is_empty()
                    && v.len() <= 64
                    && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
            .map(str::to_string)
            .ok_or_else(|| HostError::Invalid(format!("`{word}` needs {what}")))
        };
        let command = match (word, arg) {
            ("stop", None) => Self::Stop,
            ("stop-force", None) => Self::StopForce,
            ("reboot", None) => Self::Reboot,
            ("status", None) => Self::Status,
            ("health", None) => Self::Health,
            ("tail", None) => Self::Tail,
            ("break", None) => Self::Break,
            ("pause", None) => Self::Pause,
            ("resume", None) => Self::Resume,
            ("sysrq", Some(k)) => match k.as_bytes() {
                [key] if key.is_ascii_alphanumeric() => Self::Sysrq(*key),
                _ => return Err(HostError::Invalid("sysrq needs one letter or digit".into())),
            },
            ("attach", arg) => Self::Attach(resource(arg, "a volume id")?),
            ("detach", arg) => Self::Detach(resource(arg, "a volume id")?),
            ("attach-nic", arg) => Self::AttachNic(resource(arg, "an interface id")?),
            ("detach-nic", arg) => Self::DetachNic(resource(arg, "an interface id")?),
            _ => {
                return Err(HostError::Invalid(format!(
                    "unknown control command `{}`",
                    line.escape_debug()
                )))
            }
        };
        Ok(command)
    }
}

impl std::fmt::Display for ControlCommand {
    /// The command's line, as [`ControlCommand::parse`] reads it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stop => f.write_str("stop"),
            Self::StopForce => f.write_str("stop-force"),
            Self::Reboot => f.write_str("reboot"),
            Self::Status => f.write_str("status"),
            Self::Health => f.write_str("health"),
            Self::Tail => f.write_str("tail"),
            Self::Sysrq(key) => write!(f, "sysrq {}", *key as char),
            Self::Break => f.write_str("break"),
            Self::Pause => f.write_str("pause"),
            Self::Resume => f.write_str("resume"),
            Self::Attach(vol) => write!(f, "attach {vol}"),
            Self::Detach(vol) => write!(f, "detach {vol}"),
            Self::AttachNic(eni) => write!(f, "attach-nic {eni}"),
            Self::DetachNic(eni) => write!(f, "detach-nic {eni}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_reads_back_from_its_line() {
        for c in [
            ControlCommand::Stop,
            ControlCommand::StopForce,
            ControlCommand::Reboot,
            ControlCommand::Status,
            ControlCommand::Health,
            ControlCommand::Tail,
            ControlCommand::Sysrq(b's'),
            ControlCommand::Break,
            ControlCommand::Pause,
            ControlCommand::Resume,
            ControlCommand::Attach("vol-0123456789abcdef".into()),
            ControlCommand::Detach("vol-0123456789abcdef".into()),
            ControlCommand::AttachNic("eni-0123456789ab".into()),
            ControlCommand::DetachNic("eni-0123456789ab".into()),
        ] {
            assert_eq!(ControlCommand::parse(&c.to_string()).unwrap(), c);
        }
    }

    #[test]
    fn malformed_commands_are_refused_with_what_is_wrong() {
        for (line, want) in [
            ("", "unknown control command"),
            ("reboot now", "unknown control command"),
            ("sysrq", "unknown control command"),
            ("sysrq ss", "one letter or digit"),
            ("sysrq \u{1b}", "one letter or digit"),
            ("attach", "needs a volume id"),
            ("attach ../../etc/passwd", "needs a volume id"),
            ("detach vol 1", "needs a volume id"),
            ("\u{1b}[2J", "unknown control command"),
        ] {
            let e = ControlCommand::parse(line).unwrap_err().to_string();
            assert!(e.contains(want), "{line:?}: {e}");
            assert!(!e.contains('\u{1b}'), "{line:?}: {e}");
        }
    }
}
