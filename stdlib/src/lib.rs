//! drydock's standard library: primitives registered into the Rhai engine
//! of every execution, one module per theme (like Rhai's own packages).
//!
//! - [`process`]: run host commands (`shell`, `shell_result`), honouring
//!   step timeouts and cancellation.
//! - [`files`]: read and write files on the host (`read_file`,
//!   `write_file` — atomic —, `append_file`, `file_exists`).
//! - [`host_env`]: the environment (`env`, `hostname`, `now_unix`, `now_ms`).
//! - [`drivers`]: driver volumes and what an instance type needs.

pub mod console;
pub mod dirs;
pub mod drivers;
pub mod expect;
pub mod faults;
pub mod files;
pub mod host_env;
pub mod instances;
pub mod process;
pub mod serial;
pub mod ssh;

use drydock_runtime::RunContext;
use rhai::Engine;

/// Registers every stdlib module into `engine`.
pub fn install(engine: &mut Engine, ctx: &RunContext) {
    process::install(engine, ctx);
    console::install(engine, ctx);
    serial::install(engine, ctx);
    ssh::install(engine, ctx);
    instances::install(engine, ctx);
    faults::install(engine, ctx);
    drivers::install(engine, ctx);
    files::install(engine);
    dirs::install(engine);
    host_env::install(engine);
}
