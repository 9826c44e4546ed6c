//! Host files: `read_file`, `write_file` (atomic: temp file + rename +
//! directory fsync; keeps an existing file's mode and owner), `append_file`,
//! `file_exists`.

use std::fs;
use std::io::Write;
use std::path::Path;

use rhai::{Engine, EvalAltResult, NativeCallContext};

use crate::doc::doc;

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
/// never a half-written one, and the new contents survive a crash once this
/// returns (the file and then its directory are fsynced).
///
/// An existing regular file keeps its permission bits (setuid/setgid/sticky
/// included) and its owner and group; a new file (or one that replaces a
/// symlink, which is replaced rather than followed) gets `0666 & !umask`,
/// as `open(2)` gives. When the owner cannot be kept (a runner that is not
/// root writing someone else's file), nothing is written and the error says
/// so.
pub fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let existing = match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => Some(m),
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    // An existing file's contents never pass through a file more open than
    // it: the temporary file starts at 0600 and gets the old mode at the end.
    let create_mode = if existing.is_some() { 0o600 } else { 0o666 };
    let (tmp_path, mut tmp) = tempfile_in(dir, path, create_mode)?;
    let result = (|| {
        tmp.write_all(contents)?;
        if let Some(old) = &existing {
            keep_owner_and_mode(&tmp, old, path)?;
        }
        tmp.sync_all()?;
        fs::rename(&tmp_path, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp_path);
        return Err(e);
    }
    drop(tmp);
    // The rename is durable only once the directory entry is on disk.
    fs::File::open(dir)?.sync_all()
}

/// Gives the temporary file `old`'s owner, group and mode (in that order:
/// a chown clears the setuid and setgid bits).
fn keep_owner_and_mode(tmp: &fs::File, old: &fs::Metadata, path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{fchown, MetadataExt, PermissionsExt};
    let now = tmp.metadata()?;
    if now.uid() != old.uid() || now.gid() != old.gid() {
        fchown(tmp, Some(old.uid()), Some(old.gid())).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "{} is owned by {}:{}, which this runner (uid {}) cannot give the new file ({e}); nothing was written",
                    path.display(),
                    old.uid(),
                    old.gid(),
                    now.uid()
                ),
            )
        })?;
    }
    tmp.set_permissions(fs::Permissions::from_mode(old.mode() & 0o7777))
}

fn tempfile_in(
    dir: &Path,
    target: &Path,
    mode: u32,
) -> std::io::Result<(std::path::PathBuf, fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for n in 0..100u32 {
        let candidate = dir.join(format!(".{name}.tmp.{}.{n}", std::process::id()));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
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
    doc(
        "read_file(path)",
        &[
            "A file's text.",
            "Fails when it cannot be read or is not UTF-8; the error names the file.",
        ],
    )
    .register(
        engine,
        |ctx: NativeCallContext, path: &str| -> Result<String, Box<EvalAltResult>> {
            fs::read_to_string(path).map_err(|e| io_error(&ctx, "read", path, e))
        },
    );
    doc("write_file(path, text)", &[
        "Writes a file atomically (a temporary file renamed over it, synced); an existing file keeps its mode and owner.",
        "Example: `write_file(\"/etc/motd\", \"maintenance until 14:00\\n\")`",
    ])
    .register(
        engine,
        |ctx: NativeCallContext, path: &str, text: &str| -> Result<(), Box<EvalAltResult>> {
            write_atomically(Path::new(path), text.as_bytes())
                .map_err(|e| io_error(&ctx, "write", path, e))
        },
    );
    doc(
        "append_file(path, text)",
        &["Appends text to a file (created when missing), synced before it returns."],
    )
    .register(
        engine,
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
    doc(
        "file_exists(path)",
        &["Whether a path exists (a symbolic link: whether its target does)."],
    )
    .volatile()
    .register(engine, |path: &str| Path::new(path).exists());
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

    #[test]
    fn an_existing_file_keeps_its_mode_and_owner() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        fs::write(&p, "old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        // As root (CI), give it an owner other than the runner.
        let root = euid() == 0;
        if root {
            std::os::unix::fs::chown(&p, Some(4242), Some(4343)).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o2640)).unwrap();
        }
        let before = fs::metadata(&p).unwrap();
        write_atomically(&p, b"new").unwrap();
        let after = fs::metadata(&p).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "new");
        assert_ne!(
            before.ino(),
            after.ino(),
            "replaced, not rewritten in place"
        );
        assert_eq!(after.mode() & 0o7777, before.mode() & 0o7777);
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_symlink_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, "keep").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_atomically(&link, b"new").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_file());
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // Renaming a file over a directory fails after the temporary exists.
        fs::create_dir(dir.path().join("d")).unwrap();
        assert!(write_atomically(&dir.path().join("d"), b"x").is_err());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    fn euid() -> u32 {
        use std::os::unix::fs::MetadataExt;
        // The owner of a file this process just created is its euid.
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().metadata().unwrap().uid()
    }
}
