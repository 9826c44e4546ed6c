//! A power loss: every process of a data directory stopped at once, then
//! killed. Standalone (the soak bench includes this file too).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The pids of every process but this one whose command line names `data`
/// (runners, supervisors, VMMs).
pub fn processes_naming(data: &Path) -> Vec<u32> {
    let needle = data.display().to_string();
    let me = std::process::id();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            pids.push(pid);
        }
    }
    pids
}

/// Stops every one of `pids` at the same instant (SIGSTOP to all), then
/// kills them (SIGKILL to all); whether all were gone (or zombies) within
/// `limit`.
pub fn stop_and_kill(pids: &[u32], limit: Duration) -> bool {
    if pids.is_empty() {
        return true;
    }
    let list: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
    for sig in ["-STOP", "-KILL"] {
        let _ = Command::new("kill")
            .arg(sig)
            .args(&list)
            .stderr(Stdio::null())
            .status();
    }
    let start = Instant::now();
    while pids
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}/cmdline")).exists() && !is_zombie(*p))
    {
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}
