//! drydock's standard library: primitives registered into the Rhai engine
//! of every execution, one module per theme (like Rhai's own packages).
//!
//! - [`process`]: run host commands (`shell`, `shell_result`), honouring
//!   step timeouts and cancellation.
//! - [`files`]: read and write files on the host (`read_file`,
//!   `write_file` — atomic —, `append_file`, `file_exists`).
//! - [`host_env`]: the environment (`env`, `hostname`, `now_unix`, `now_ms`).
//! - [`drivers`]: driver volumes and what an instance type needs.
//! - [`network`]: the `net` module, checks over instances' networks.
//!
//! Every function carries its documentation where it is registered
//! ([`doc`]); docs/primitives.md and the REPL's help are generated from it.

pub mod console;
pub mod dirs;
pub mod doc;
pub mod drivers;
pub mod expect;
pub mod faults;
pub mod files;
pub mod host_env;
pub mod instances;
pub mod network;
pub mod process;
pub mod serial;
pub mod ssh;

use drydock_runtime::RunContext;
use rhai::Engine;

pub use doc::Section;

/// The stdlib's modules, in the order [`install`] registers them, with
/// what each holds: docs/primitives.md has a section for each.
pub const SECTIONS: &[Section] = &[
    Section {
        name: "process",
        about: "Host commands, with a shell (`shell`) or without one (`exec`, for anything built from data). Each runs in a process group of its own, killed whole (SIGTERM, then SIGKILL) when its step times out or the execution is cancelled; a secret in a command line is refused.",
        constants: &[],
        install: process::install,
    },
    Section {
        name: "console",
        about: "Instances' serial consoles as expect sessions (`ExpectSession`), and the methods every expect session has — console, serial port or SSH shell: leftmost match across patterns, ANSI escapes and `\\r\\n` normalized, a transcript under `DATA_DIR/transcripts/`, secrets masked.",
        constants: console::CONSTANTS,
        install: console::install,
    },
    Section {
        name: "serial",
        about: "Physical serial ports (or any tty) as expect sessions, for machines whose only way in is a cable.",
        constants: &[],
        install: serial::install,
    },
    Section {
        name: "ssh",
        about: "SSH connections (`SshSession`): the server's host key is checked before authenticating, against `DATA_DIR/ssh/known_hosts`; commands run as long as their step allows.",
        constants: &[],
        install: ssh::install,
    },
    Section {
        name: "instances",
        about: "Instances, volumes, snapshots and images of drydock's host, in the execution's region and profile. Creates are idempotent within a step (a client token derived from the execution, the step and the call).",
        constants: &[],
        install: instances::install,
    },
    Section {
        name: "net",
        about: "Checks over instances' networks, made from the host inside the instance's VPC (its network namespace on this host), as a user of the instance's service would.",
        constants: &[],
        install: network::install,
    },
    Section {
        name: "faults",
        about: "Faults put into the root volume of a stopped instance launched with `--allow-faults`, to practise recoveries on.",
        constants: &[],
        install: faults::install,
    },
    Section {
        name: "drivers",
        about: "Driver volumes and what an instance type's guests need, for instance-type migrations.",
        constants: &[],
        install: drivers::install,
    },
    Section {
        name: "files",
        about: "Files of the host, by path.",
        constants: &[],
        install: |engine, _| files::install(engine),
    },
    Section {
        name: "dir",
        about: "A directory opened once (`DirHandle`) and worked in by name, so that a path swapped for a symbolic link meanwhile cannot redirect a removal or a write.",
        constants: &[],
        install: |engine, _| dirs::install(engine),
    },
    Section {
        name: "host_env",
        about: "The host's environment and clocks. Values that change between runs belong inside steps, so a resumed execution replays what the first run saw.",
        constants: &[],
        install: |engine, _| host_env::install(engine),
    },
];

/// Registers every stdlib module into `engine`.
pub fn install(engine: &mut Engine, ctx: &RunContext) {
    for s in SECTIONS {
        (s.install)(engine, ctx);
    }
}
