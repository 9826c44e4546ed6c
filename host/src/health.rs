//! Status checks (anchor: EC2's system and instance status checks).
//!
//! The **system check** asks whether the host side of an instance works:
//! its instance process answers, its VMM runs (a VMM that died takes the
//! instance to `stopped` with the reason, which counts as impaired) and
//! its vCPUs make progress (the VMM answers a status query in time, the
//! VM is not paused by an error, no vCPU is held up in a device), its
//! volumes are reachable. The **instance check** asks whether the guest
//! answers: its kernel's network stack at its private address (a refused
//! connection is an answer), or, without a network, a boot that reached
//! its login prompt; a kernel panic or a boot stuck at a prompt on the
//! console is impaired, with the console line that says so.
//!
//! A check of a stopped, pending or terminated instance has no data,
//! except a stop the instance did not ask for (its VMM died, the host went
//! down): the system check is then impaired, which is what automatic
//! recovery acts on.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use super::*;
use crate::supervisor::ControlCommand;

/// Until a running instance's checks pass for the first time after a
/// boot, it is `initializing` rather than `impaired` for this long.
pub const INITIALIZING_GRACE: Duration = Duration::from_secs(600);

/// How long the instance check waits for the guest's network stack.
const REACH_TIMEOUT: Duration = Duration::from_secs(3);

/// Console lines that mean the guest is not coming up by itself.
const STUCK: &[(&str, &str)] = &[
    ("Kernel panic", "kernel panic"),
    (
        "Press S to skip mounting or M for manual recovery",
        "boot stuck at a mount prompt",
    ),
    (
        "Give root password for maintenance",
        "boot stuck in maintenance mode",
    ),
    ("emergency shell", "boot dropped to an emergency shell"),
    (
        "Out of memory: Killed process",
        "the guest ran out of memory",
    ),
];

/// One check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Ok,
    Impaired,
    Initializing,
    InsufficientData,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Impaired => "impaired",
            Self::Initializing => "initializing",
            Self::InsufficientData => "insufficient-data",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A check's verdict and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub status: Status,
    pub reason: String,
}

impl Check {
    fn new(status: Status, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }
}

/// Both checks of one instance.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub instance: String,
    pub state: String,
    pub system: Check,
    #[serde(rename = "instance_check")]
    pub guest: Check,
    /// The worse of the two.
    pub status: Status,
    pub checked_at: i64,
}

/// Whether a stop reason is one the instance did not ask for.
pub fn unplanned_stop(reason: &str) -> bool {
    reason == RECONCILE_REASON || reason.starts_with("VMM exited unexpectedly")
}

/// The console line (of `tail`, the latest output) that shows the guest
/// stuck, and what it means.
pub fn stuck_line(tail: &str) -> Option<(String, &'static str)> {
    // Only what the latest boot printed.
    let boot = tail
        .rfind("Linux version")
        .map(|at| &tail[at..])
        .unwrap_or(tail);
    boot.lines().rev().find_map(|line| {
        STUCK
            .iter()
            .find(|(pattern, _)| line.contains(pattern))
            .map(|(_, why)| (line.trim().chars().take(200).collect(), *why))
    })
}

fn worse(a: Status, b: Status) -> Status {
    let rank = |s: Status| match s {
        Status::Impaired => 3,
        Status::Initializing => 2,
        Status::InsufficientData => 1,
        Status::Ok => 0,
    };
    if rank(a) >= rank(b) {
        a
    } else {
        b
    }
}

impl Host {
    /// Runs both status checks of `id` now.
    pub fn status_checks(&self, id: &str) -> Result<StatusReport, HostError> {
        let i = self.store()?.instance(id)?;
        let i = self.in_region(id, &i.region.clone(), i)?;
        let (system, guest) = match i.state {
            InstanceState::Running => {
                let system = self.system_check(&i)?;
                let guest = if system.status == Status::Ok {
                    self.instance_check(&i)?
                } else {
                    Check::new(Status::InsufficientData, "the system check fails")
                };
                (system, guest)
            }
            InstanceState::Stopped if unplanned_stop(&i.state_reason) => (
                Check::new(Status::Impaired, i.state_reason.clone()),
                Check::new(Status::InsufficientData, "the instance is not running"),
            ),
            other => (
                Check::new(Status::InsufficientData, format!("the instance is {other}")),
                Check::new(Status::InsufficientData, format!("the instance is {other}")),
            ),
        };
        Ok(StatusReport {
            instance: i.id.clone(),
            state: i.state.to_string(),
            status: worse(system.status, guest.status),
            system,
            guest,
            checked_at: now_ms(),
        })
    }

    fn system_check(&self, i: &InstanceRecord) -> Result<Check, HostError> {
        let alive = supervisor::identity(i).is_some_and(|s| s.is_alive());
        if !alive {
            return Ok(Check::new(
                Status::Impaired,
                "the instance process is gone (its VMM with it)",
            ));
        }
        match supervisor::send_control(&self.instance_dir(&i.id), &ControlCommand::Health) {
            Ok(reply) => match serde_json::from_str::<supervisor::VmHealth>(&reply) {
                Ok(vm) if !vm.progressing => {
                    return Ok(Check::new(Status::Impaired, vm.reason));
                }
                Ok(_) => {}
                Err(e) => {
                    return Ok(Check::new(
                        Status::InsufficientData,
                        format!("the instance process's health report is unreadable: {e}"),
                    ))
                }
            },
            // An instance process started by an older drydock.
            Err(e) if e.to_string().contains("unknown control command") => {
                if let Err(e) =
                    supervisor::send_control(&self.instance_dir(&i.id), &ControlCommand::Status)
                {
                    return Ok(Check::new(
                        Status::Impaired,
                        format!("the instance process does not answer: {e}"),
                    ));
                }
            }
            Err(e) => {
                return Ok(Check::new(
                    Status::Impaired,
                    format!("the instance process does not answer: {e}"),
                ));
            }
        }
        for v in self.store()?.attached(&i.id)? {
            if v.kind == VolumeKind::InstanceStore {
                continue;
            }
            if let Err(e) = std::fs::metadata(&v.path) {
                return Ok(Check::new(
                    Status::Impaired,
                    format!("volume {} is unreachable: {e}", v.id),
                ));
            }
        }
        Ok(Check::new(
            Status::Ok,
            "instance process and VMM run, vCPUs make progress, volumes reachable",
        ))
    }

    fn instance_check(&self, i: &InstanceRecord) -> Result<Check, HostError> {
        let young = now_ms() - i.state_since < INITIALIZING_GRACE.as_millis() as i64;
        let not_yet = |why: String| {
            if young {
                Check::new(Status::Initializing, why)
            } else {
                Check::new(Status::Impaired, why)
            }
        };
        let tail = self
            .console_output(&i.id, None, Some(200))
            .unwrap_or_default();
        if let Some((line, why)) = stuck_line(&tail) {
            return Ok(Check::new(Status::Impaired, format!("{why}: {line}")));
        }
        let interfaces = self.store()?.interfaces(&i.id)?;
        if let Some(eni) = interfaces.first() {
            let Ok(ip) = eni.private_ip.parse() else {
                return Ok(Check::new(
                    Status::InsufficientData,
                    "a stored address is damaged",
                ));
            };
            let addr = SocketAddr::new(ip, 22);
            return Ok(
                match network::connect(&self.data_dir, &eni.vpc_id, addr, REACH_TIMEOUT) {
                    Ok(_) => Check::new(Status::Ok, format!("{ip} answers")),
                    // A refusal comes from the guest's kernel: it answers.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        Check::new(Status::Ok, format!("{ip} answers (port 22 closed)"))
                    }
                    Err(e) => not_yet(format!("no answer from {ip}: {e}")),
                },
            );
        }
        // No network: the boot reached its login prompt.
        if tail.contains("login:") {
            Ok(Check::new(Status::Ok, "the console shows a login prompt"))
        } else {
            Ok(not_yet(
                "the console shows no login prompt yet (no network to reach)".to_string(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuck_consoles_are_named_by_the_latest_boot_only() {
        let fstab =
            "Linux version 6.1\n[  OK  ] x\nPress S to skip mounting or M for manual recovery\n";
        let (line, why) = stuck_line(fstab).unwrap();
        assert_eq!(why, "boot stuck at a mount prompt");
        assert!(line.starts_with("Press S"));
        let panic = "Linux version 6.1\nKernel panic - not syncing: VFS: Unable to mount root fs\n";
        assert_eq!(stuck_line(panic).unwrap().1, "kernel panic");
        // A panic of an earlier boot, then a clean boot.
        let recovered = format!("{panic}Linux version 6.1\nwelcome\ndrydock login: ");
        assert!(stuck_line(&recovered).is_none());
        assert!(stuck_line("drydock login: ").is_none());
    }

    #[test]
    fn unplanned_stops_are_told_from_asked_ones() {
        assert!(unplanned_stop(RECONCILE_REASON));
        assert!(unplanned_stop(
            "VMM exited unexpectedly (signal: 9 (SIGKILL)); see x"
        ));
        assert!(!unplanned_stop("stopped by user"));
        assert!(!unplanned_stop("guest powered off"));
        assert_eq!(worse(Status::Ok, Status::Impaired), Status::Impaired);
        assert_eq!(
            worse(Status::Initializing, Status::Ok),
            Status::Initializing
        );
    }
}
