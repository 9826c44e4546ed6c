//! Host files: `read_file`, `write_file` (atomic: temp file + rename),
//! `append_file`, `file_exists`.

use std::fs;
use std::io::Write;
use std::path::Path;

use rhai::{Engine, EvalAltResult, NativeCallContext};

fn io_error(
    ctx: &NativeCallContext,
    what: &str,
    path: &str,
    e: std::io::Error,
) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(
        format!("cannot {what} {path}: {e}").into(),
        ctx.call_position(),
    )
    .into()
}

/// Writes `contents` to `path` so that readers see the old or the new file,
/// never a half-written one.
pub fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile_in(dir, path)?;
    tmp.1.write_all(contents)?;
    tmp.1.sync_all()?;
    fs::rename(&tmp.0, path)
}

fn tempfile_in(dir: &Path, target: &Path) -> std::io::Result<(std::path::PathBuf, fs::File)> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for n in 0..100u32 {
        let candidate = dir.join(format!(".{name}.tmp.{}.{n}", std::process::id()));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&candidate)
        {
            Ok(f) => return Ok((candidate, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free temporary file name"))
}

/// Registers the file functions.
pub fn install(engine: &mut Engine) {
    engine.register_fn(
        "read_file",
        |ctx: NativeCallContext, path: &str| -> Result<String, Box<EvalAltResult>> {
            fs::read_to_string(path).map_err(|e| io_error(&ctx, "read", path, e))
        },
    );
    engine.register_fn(
        "write_file",
        |ctx: NativeCallContext, path: &str, text: &str| -> Result<(), Box<EvalAltResult>> {
            write_atomically(Path::new(path), text.as_bytes())
                .map_err(|e| io_error(&ctx, "write", path, e))
        },
    );
    engine.register_fn(
        "append_file",
        |ctx: NativeCallContext, path: &str, text: &str| -> Result<(), Box<EvalAltResult>> {
            let mut f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| io_error(&ctx, "open", path, e))?;
            f.write_all(text.as_bytes())
                .map_err(|e| io_error(&ctx, "append to", path, e))?;
            f.sync_data().map_err(|e| io_error(&ctx, "sync", path, e))
        },
    );
    engine.register_fn("file_exists", |path: &str| Path::new(path).exists());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write_atomically(&p, b"one").unwrap();
        write_atomically(&p, b"two").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
