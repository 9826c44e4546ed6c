//! `drydock console`: the instance's serial console in this terminal.
//! Raw mode on a terminal; Ctrl-] then `q` detaches, `b` sends a break,
//! `s` then a key sends that magic SysRq key.

use std::io::{Read, Write};

use drydock_vmm::host::console_client::{connect, ConsoleStart};

use super::host::open_host;
use super::Context;
use crate::failure::CliError;

const ESCAPE: u8 = 0x1d; // Ctrl-]

/// Puts the terminal in raw mode and restores it on drop.
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

/// `drydock console INSTANCE`.
pub fn attach(ctx: &Context, args: crate::cli::ConsoleArgs) -> Result<i32, CliError> {
    let host = open_host(ctx)?;
    let inst = host.store()?.instance(&args.instance)?;
    let inst = host.in_region(&args.instance, &inst.region.clone(), inst)?;
    let dir = host.instance_dir(&inst.id);
    let who = format!(
        "{} (drydock console, pid {})",
        drydock_runtime::identity::Identity::current().name,
        std::process::id()
    );
    let conn = connect(
        &dir,
        &inst.id,
        !args.read_only,
        &who,
        args.force,
        ConsoleStart::Tail,
    )?;
    let mode = if args.read_only {
        "read-only"
    } else {
        "interactive"
    };
    eprint!(
        "[console of {} in {}, {mode}; Ctrl-] then q detaches, b sends a break, s<key> sends SysRq <key>]\r\n",
        inst.id,
        host.region()
    );
    let raw = RawMode::enter();
    let mut from_guest = conn.stream.try_clone()?;
    let printer = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut out = std::io::stdout();
        while let Ok(n) = from_guest.read(&mut buf) {
            if n == 0 || out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                break;
            }
        }
    });
    let mut to_guest = conn.stream.try_clone()?;
    let mut stdin = std::io::stdin();
    let mut buf = [0u8; 1024];
    let mut escaped = false;
    let mut sysrq_next = false;
    'input: loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut plain = Vec::with_capacity(n);
        for &b in &buf[..n] {
            if sysrq_next {
                sysrq_next = false;
                let _ = drydock_vmm::host::supervisor::send_control(
                    &dir,
                    &format!("sysrq {}", b as char),
                );
                continue;
            }
            if escaped {
                escaped = false;
                match b {
                    b'q' | b'.' => break 'input,
                    b'b' => {
                        let _ = drydock_vmm::host::supervisor::send_control(&dir, "break");
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
        if args.read_only || plain.is_empty() {
            continue;
        }
        if to_guest.write_all(&plain).is_err() {
            break;
        }
    }
    let _ = conn.stream.shutdown(std::net::Shutdown::Both);
    let _ = printer.join();
    drop(raw);
    eprintln!("\r\n[detached from {}]", inst.id);
    Ok(0)
}
