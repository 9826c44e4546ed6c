//! One module per group of commands; each returns the process exit code.

pub mod approvals;
pub mod calendar;
pub mod console;
pub mod console_rules;
pub mod drill;
pub mod drill_timeline;
pub mod drivers;
pub mod events;
pub mod executions;
pub mod faults;
pub mod fleet;
pub mod host;
pub mod host_common;
pub mod leftovers;
pub mod network;
pub mod network_interfaces;
pub mod params;
pub mod recover;
pub mod rules;
pub mod run;
pub mod runbooks;
pub mod schedules;
pub mod security_groups;
pub mod serve;
pub mod serve_socket;
pub mod setup_network;
pub mod ssh;
pub mod status_checks;
pub mod tokens;
pub mod vmm_bench;
pub mod volumes;
pub mod web;
pub mod webhook;
pub mod windows;

use std::time::Duration;

use comfy_table::{presets::NOTHING, Table};
use drydock_runtime::Executor;

use crate::config::Settings;

/// Text from outside shown escaped, and clipped for a table cell: the
/// operations layer's display functions, the same in every front end.
pub use drydock_ops::display::{clip, shown, shown_path};

/// What every command works with.
pub struct Context {
    pub settings: Settings,
    pub executor: Executor,
    pub json: bool,
}

/// A timestamp (ms since the epoch) for people.
pub fn when(ms: i64) -> String {
    drydock_runtime::display::timestamp(ms)
}

/// An elapsed time between two timestamps, or since `from` when unfinished.
pub fn took(from: Option<i64>, to: Option<i64>) -> String {
    match from {
        Some(f) => {
            let end = to.unwrap_or_else(drydock_runtime::journal::now_ms);
            let d = Duration::from_millis((end - f).max(0) as u64);
            drydock_runtime::duration::format_duration(d)
        }
        None => "-".into(),
    }
}

/// A table in drydock's style.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(NOTHING);
    t.set_header(header.iter().copied());
    t
}

/// Prints a value as pretty JSON on stdout.
/// A reader that went away (`| head`) is not an error: the work is done
/// and journaled either way.
pub fn print_json(value: &impl serde::Serialize) {
    use std::io::Write;
    let text =
        serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}
