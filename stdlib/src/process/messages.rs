//! Words and messages about commands: shell quoting, an argv shown as
//! words, why a command failed (its status, signal and the tail of its
//! output) or could not start.

use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;

use super::runner::{lossy, Invocation, RawOutput};
use super::words::{display_word, truncate};

pub(super) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    truncate(&all[all.len().saturating_sub(lines)..].join("\n"), 2000)
}

pub(super) fn signal_name(s: i32) -> String {
    let name = match s {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        _ => return format!("signal {s}"),
    };
    format!("signal {s} ({name})")
}

/// The error of a command that ran but failed: status or signal, and the
/// last lines of stderr (or of stdout when stderr is empty).
pub(super) fn failure_message(what: &str, out: &RawOutput) -> String {
    let how = match out.signal {
        Some(s) => format!("was killed by {}", signal_name(s)),
        None => format!("exited with status {}", out.exit_code),
    };
    let stderr = lossy(out.stderr.clone());
    let stdout = lossy(out.stdout.clone());
    let detail = if !stderr.trim().is_empty() {
        format!("; last lines of stderr:\n{}", tail(&stderr, 5))
    } else if !stdout.trim().is_empty() {
        format!(
            "; stderr was empty; last lines of stdout:\n{}",
            tail(&stdout, 5)
        )
    } else {
        "; it printed nothing".to_string()
    };
    format!("{what} {how}{detail}")
}

pub(super) fn spawn_message(inv: &Invocation, shown: &str, io: &std::io::Error) -> String {
    if let Some(dir) = &inv.cwd {
        if !dir.is_dir() {
            return format!(
                "cannot run {shown}: the working directory {} is not a directory",
                display_word(dir.as_os_str())
            );
        }
    }
    let has_slash = inv.program.as_bytes().contains(&b'/');
    match io.kind() {
        ErrorKind::NotFound if !has_slash => format!(
            "cannot run {shown}: no program named {} in PATH",
            display_word(&inv.program)
        ),
        ErrorKind::NotFound => format!(
            "cannot run {shown}: {} does not exist",
            display_word(&inv.program)
        ),
        ErrorKind::PermissionDenied => format!(
            "cannot run {shown}: permission denied (is {} executable?)",
            display_word(&inv.program)
        ),
        _ => format!("cannot run {shown}: {io}"),
    }
}
