//! Embedding drydock's runtime in another Rust program: register a custom
//! primitive next to the stdlib, run a runbook, read the outcome.
//!
//! Run with `cargo run --example embed -- [PATH]`.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::PathBuf;
use std::sync::Arc;

use drydock_runtime::{Catalog, Executor, QuietObserver, RunOptions, StartOptions, SuppliedValue};
use rhai::{EvalAltResult, NativeCallContext};

/// Percentage of free space on the filesystem holding `path`.
fn disk_free_percent(ctx: NativeCallContext, path: &str) -> Result<i64, Box<EvalAltResult>> {
    let c_path = CString::new(path).map_err(|e| e.to_string())?;
    // SAFETY: an all-zero statvfs is a valid value for this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is NUL-terminated and st is a valid, writable statvfs.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut st) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(EvalAltResult::ErrorRuntime(
            format!("statvfs {path}: {err}").into(),
            ctx.call_position(),
        )
        .into());
    }
    Ok((st.f_bavail * 100).checked_div(st.f_blocks).unwrap_or(0) as i64)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/".to_string());
    let data_dir = tempfile::tempdir()?;
    let runbooks = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/runbooks");
    let catalog = Catalog::new(Vec::new(), vec![runbooks]);
    let executor = Executor::new(data_dir.path().to_path_buf(), catalog)
        .with_primitives(drydock_stdlib::install)
        .with_primitives(|engine, _ctx| {
            engine.register_fn("disk_free_percent", disk_free_percent);
        });
    let runbook = executor.catalog().find("disk-check")?;
    let mut params = BTreeMap::new();
    params.insert("path".to_string(), SuppliedValue::Text(path));
    let id = executor.create_execution(
        &runbook,
        &params,
        // Requested by the account running this program.
        &StartOptions::default(),
    )?;
    let outcome = executor.run(&id, Arc::new(QuietObserver), RunOptions::default())?;
    println!(
        "{} ended {}: {}",
        outcome.execution_id, outcome.state, outcome.output
    );
    Ok(())
}
