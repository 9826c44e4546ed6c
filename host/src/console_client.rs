//! Connecting to an instance's console service (see [`super::console_hub`]).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::HostError;
use crate::supervisor::ControlCommand;

/// Where a new console connection starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleStart {
    /// Only what the guest writes from now on.
    Now,
    /// The in-memory tail of the current boot first.
    Tail,
    /// The current boot's log from this byte offset.
    Offset(u64),
}

/// A connection: the stream (raw console bytes) and where it started.
pub struct ConsoleConnection {
    pub stream: UnixStream,
    pub boot: u32,
    /// Byte offset in the boot's log of the first byte streamed.
    pub offset: u64,
}

/// Connects to the console of the instance whose directory is `dir`.
pub fn connect(
    dir: &Path,
    instance: &str,
    interactive: bool,
    who: &str,
    force: bool,
    start: ConsoleStart,
) -> Result<ConsoleConnection, HostError> {
    let path = dir.join("console.sock");
    let stream = UnixStream::connect(&path).map_err(|e| {
        HostError::Conflict(format!(
            "cannot reach the console of {instance} ({e}); is it running? (`drydock instances`)"
        ))
    })?;
    let from = match start {
        ConsoleStart::Now => json!("now"),
        ConsoleStart::Tail => json!("tail"),
        ConsoleStart::Offset(o) => json!(o),
    };
    let hello = json!({ "mode": if interactive { "write" } else { "read" }, "who": who, "force": force, "from": from });
    (&stream)
        .write_all(format!("{hello}\n").as_bytes())
        .map_err(|e| HostError::io("write to", &path, e))?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    // Read the reply one byte at a time so no console byte is swallowed by a buffer.
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match std::io::Read::read(&mut &stream, &mut byte) {
            Ok(1) if byte[0] == b'\n' => break,
            Ok(1) => line.push(byte[0]),
            Ok(_) => {
                return Err(HostError::Vmm(format!(
                    "the console of {instance} closed the connection"
                )))
            }
            Err(e) => return Err(HostError::io("read from", &path, e)),
        }
    }
    stream.set_read_timeout(None).ok();
    let reply: Value = serde_json::from_slice(&line)
        .map_err(|e| HostError::Vmm(format!("bad reply from the console of {instance}: {e}")))?;
    if reply["ok"] != true {
        return Err(HostError::Conflict(format!(
            "console of {instance}: {}",
            reply["error"].as_str().unwrap_or("refused")
        )));
    }
    Ok(ConsoleConnection {
        stream,
        boot: reply["boot"].as_u64().unwrap_or(0) as u32,
        offset: reply["offset"].as_u64().unwrap_or(0),
    })
}

/// The escape byte of an interactive console: Ctrl-].
pub const ESCAPE: u8 = 0x1d;

/// Puts the terminal on standard input in raw mode; restores it on drop.
struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    fn enter() -> Option<Self> {
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(0) } != 1 {
            return None;
        }
        // SAFETY: an all-zero termios is valid storage for tcgetattr to fill.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr writes into `saved`, which we own.
        if unsafe { libc::tcgetattr(0, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw edits the struct we pass.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: applies a termios derived from the terminal's own settings.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &raw) };
        Some(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `enter`.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.saved) };
    }
}

/// Why an interactive console session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detached {
    /// The person typed the escape then `q` (or `.`).
    ByUser,
    /// Standard input ended.
    InputClosed,
    /// The console closed the connection (the instance stopped).
    ConsoleClosed,
}

/// Reads what is available on standard input, waiting at most `wait`;
/// `Ok(None)` when nothing came. Unbuffered, so bytes typed after the
/// escape stay for whoever reads the terminal next.
fn read_stdin(buf: &mut [u8], wait: Duration) -> std::io::Result<Option<usize>> {
    let mut pfd = libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd we own, count 1.
    let rc = unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as libc::c_int) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        return if e.kind() == std::io::ErrorKind::Interrupted {
            Ok(None)
        } else {
            Err(e)
        };
    }
    if rc == 0 {
        return Ok(None);
    }
    // SAFETY: reads at most buf.len() bytes into the buffer we own.
    let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return if e.kind() == std::io::ErrorKind::Interrupted {
            Ok(None)
        } else {
            Err(e)
        };
    }
    Ok(Some(n as usize))
}

/// Runs an interactive console session on this process's terminal: raw
/// mode, the guest's bytes to stdout, keystrokes to the guest. Ctrl-] then
/// `q` (or `.`) detaches, `b` sends a break, `s` then a key sends that
/// magic SysRq key, Ctrl-] twice sends one Ctrl-]. `dir` is the instance's
/// directory (for break and SysRq). Returns when detached, when stdin ends
/// or when the console closes the connection.
pub fn run_terminal(
    conn: &ConsoleConnection,
    dir: &Path,
    read_only: bool,
) -> std::io::Result<Detached> {
    use std::io::Read;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let raw = RawMode::enter();
    let mut from_guest = conn.stream.try_clone()?;
    let closed = Arc::new(AtomicBool::new(false));
    let closed_by_printer = closed.clone();
    let printer = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut out = std::io::stdout();
        while let Ok(n) = from_guest.read(&mut buf) {
            if n == 0 || out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                break;
            }
        }
        closed_by_printer.store(true, Ordering::SeqCst);
    });
    let mut to_guest = conn.stream.try_clone()?;
    let mut buf = [0u8; 1024];
    let mut escaped = false;
    let mut sysrq_next = false;
    let why = 'input: loop {
        if closed.load(Ordering::SeqCst) {
            break Detached::ConsoleClosed;
        }
        let n = match read_stdin(&mut buf, Duration::from_millis(100)) {
            Ok(None) => continue,
            Ok(Some(0)) | Err(_) => break Detached::InputClosed,
            Ok(Some(n)) => n,
        };
        let mut plain = Vec::with_capacity(n);
        for &b in &buf[..n] {
            if sysrq_next {
                sysrq_next = false;
                if let Err(e) = super::supervisor::send_control(dir, &ControlCommand::Sysrq(b)) {
                    tracing::warn!("console: cannot send SysRq: {e}");
                }
                continue;
            }
            if escaped {
                escaped = false;
                match b {
                    b'q' | b'.' => break 'input Detached::ByUser,
                    b'b' => {
                        if let Err(e) = super::supervisor::send_control(dir, &ControlCommand::Break)
                        {
                            tracing::warn!("console: cannot send a break: {e}");
                        }
                    }
                    b's' => sysrq_next = true,
                    ESCAPE => plain.push(ESCAPE),
                    _ => {}
                }
                continue;
            }
            if b == ESCAPE {
                escaped = true;
                continue;
            }
            plain.push(b);
        }
        if read_only || plain.is_empty() {
            continue;
        }
        if to_guest.write_all(&plain).is_err() {
            break Detached::ConsoleClosed;
        }
    };
    let _ = conn.stream.shutdown(std::net::Shutdown::Both);
    let _ = printer.join();
    drop(raw);
    Ok(why)
}
