//! `drydock console`: the instance's serial console in this terminal.
//! Raw mode on a terminal; Ctrl-] then `q` detaches, `b` sends a break,
//! `s` then a key sends that magic SysRq key. The session itself is
//! [`drydock_host::console_client::run_terminal`], shared with the
//! REPL's `:console`.

use drydock_host::console_client::{connect, run_terminal, ConsoleStart, Detached};

use super::host_common::open_host;
use super::Context;
use crate::failure::CliError;

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
    let why = run_terminal(&conn, &dir, args.read_only)?;
    match why {
        Detached::ConsoleClosed => eprintln!("\r\n[the console of {} closed]", inst.id),
        _ => eprintln!("\r\n[detached from {}]", inst.id),
    }
    Ok(0)
}
