//! Directory handles: file work that a swapped path cannot redirect.
//!
//! A runbook that lists files, waits for an approval and then deletes them
//! by path can be turned against the runner: while it waits, whoever owns
//! the directory replaces it with a symlink to another one, and the
//! deletes (and a report written there) land elsewhere. A handle is the
//! directory itself, opened once without following links; everything done
//! through it stays in that directory (`openat`, `unlinkat`), files are
//! checked again right before acting (still the same inode, a regular
//! file, not a link), and a handle opened again after a crash can insist
//! that it is the same directory (device and inode) as the one listed.
//!
//! ```rhai
//! let d = dir::open("/var/log/app");
//! let files = d.list();                      // [#{ name, size, mtime, ino, kind }]
//! // … approval …
//! let d = dir::open("/var/log/app", #{ expect: d.id });   // after a resume
//! d.remove("old.log", #{ ino: files[0].ino });
//! d.write(".report", "done\n");
//! ```

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use rhai::{Array, Dynamic, Engine, EvalAltResult, Map, NativeCallContext, Position};

use crate::doc::doc;

type R<T> = Result<T, Box<EvalAltResult>>;

fn err(pos: Position, msg: String) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(msg.into(), pos).into()
}

/// An open directory.
#[derive(Clone)]
pub struct DirHandle {
    fd: std::sync::Arc<OwnedFd>,
    path: String,
    dev: u64,
    ino: u64,
    uid: u32,
}

fn fstat(fd: i32) -> std::io::Result<libc::stat> {
    // SAFETY: an all-zero `stat` is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is an open descriptor and st points to writable memory.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

fn fstatat(dirfd: i32, name: &CString) -> std::io::Result<libc::stat> {
    // SAFETY: an all-zero `stat` is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: dirfd is open, name is NUL-terminated, st is writable; the
    // flag keeps a symlink from being followed.
    if unsafe { libc::fstatat(dirfd, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

fn kind_of(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "file",
        libc::S_IFDIR => "directory",
        libc::S_IFLNK => "symlink",
        _ => "other",
    }
}

/// A single name inside the directory: no `/`, not `.` or `..`, no NUL.
fn entry_name(pos: Position, name: &str) -> R<CString> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(err(
            pos,
            format!(
                "{:?} is not a name inside the directory (no `/`, not `.` or `..`)",
                name
            ),
        ));
    }
    CString::new(name).map_err(|_| err(pos, format!("{name:?} holds a NUL byte")))
}

impl DirHandle {
    /// Opens `path` as a directory without following a final symlink.
    pub fn open(path: &str) -> std::io::Result<Self> {
        let c = CString::new(path)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
        // SAFETY: c is NUL-terminated; the result is checked.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd was just opened and is owned by nobody else.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let st = fstat(owned.as_raw_fd())?;
        Ok(Self {
            fd: std::sync::Arc::new(owned),
            path: path.to_string(),
            dev: st.st_dev,
            ino: st.st_ino,
            uid: st.st_uid,
        })
    }

    fn raw(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// `#{ dev, ino, uid }`: what identifies the directory.
    pub fn id(&self) -> Map {
        let mut m = Map::new();
        m.insert("dev".into(), (self.dev as i64).into());
        m.insert("ino".into(), (self.ino as i64).into());
        m.insert("uid".into(), (self.uid as i64).into());
        m
    }

    /// The entries (not `.`/`..`), each `#{ name, kind, size, mtime, ino }`,
    /// by name; names that are not UTF-8 are left out (they cannot be named
    /// exactly from a script) and returned, made readable, in `skipped`.
    pub fn list(&self, pos: Position) -> R<(Array, Array)> {
        // A second descriptor for reading: readdir moves its position.
        // SAFETY: dup of an open descriptor; the result is checked.
        let dup = unsafe { libc::fcntl(self.raw(), libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(err(
                pos,
                format!(
                    "cannot list {}: {}",
                    self.path,
                    std::io::Error::last_os_error()
                ),
            ));
        }
        // SAFETY: dup is a directory descriptor we own; fdopendir takes it.
        let dirp = unsafe { libc::fdopendir(dup) };
        if dirp.is_null() {
            // SAFETY: fdopendir failed, so dup is still ours to close.
            unsafe { libc::close(dup) };
            return Err(err(
                pos,
                format!(
                    "cannot list {}: {}",
                    self.path,
                    std::io::Error::last_os_error()
                ),
            ));
        }
        // SAFETY: dirp is a valid DIR*; rewind to the start.
        unsafe { libc::rewinddir(dirp) };
        let mut out = Array::new();
        let mut skipped = Array::new();
        loop {
            // SAFETY: dirp is valid until closedir below.
            let ent = unsafe { libc::readdir(dirp) };
            if ent.is_null() {
                break;
            }
            // SAFETY: d_name of a returned dirent is a NUL-terminated string.
            let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) };
            let bytes = name.to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            let Ok(text) = std::str::from_utf8(bytes) else {
                skipped.push(String::from_utf8_lossy(bytes).into_owned().into());
                continue;
            };
            let Ok(st) = fstatat(self.raw(), &name.to_owned()) else {
                continue; // gone meanwhile
            };
            let mut m = Map::new();
            m.insert("name".into(), text.into());
            m.insert("kind".into(), kind_of(st.st_mode).into());
            m.insert("size".into(), st.st_size.into());
            m.insert("mtime".into(), st.st_mtime.into());
            m.insert("ino".into(), (st.st_ino as i64).into());
            out.push(m.into());
        }
        // SAFETY: dirp came from fdopendir and is closed once.
        unsafe { libc::closedir(dirp) };
        out.sort_by(|a, b| {
            let n = |d: &Dynamic| {
                d.clone()
                    .try_cast::<Map>()
                    .and_then(|m| m.get("name").map(|v| v.to_string()))
                    .unwrap_or_default()
            };
            n(a).cmp(&n(b))
        });
        Ok((out, skipped))
    }

    /// Removes the regular file `name` of this directory, if it is still
    /// the file (`ino`, when given) it was; a link, a directory or another
    /// file under that name is left alone and reported.
    pub fn remove(&self, pos: Position, name: &str, ino: Option<i64>) -> R<()> {
        let c = entry_name(pos, name)?;
        let st = fstatat(self.raw(), &c).map_err(|e| {
            err(
                pos,
                format!("cannot remove {name:?} from {}: {e}", self.path),
            )
        })?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(err(
                pos,
                format!(
                    "{name:?} in {} is now a {}, not a regular file: left alone",
                    self.path,
                    kind_of(st.st_mode)
                ),
            ));
        }
        if let Some(want) = ino {
            if st.st_ino as i64 != want {
                return Err(err(
                    pos,
                    format!(
                        "{name:?} in {} was replaced by another file since it was listed: left alone",
                        self.path
                    ),
                ));
            }
        }
        // SAFETY: the descriptor is open and c is NUL-terminated; flag 0
        // removes a non-directory entry of this directory only.
        if unsafe { libc::unlinkat(self.raw(), c.as_ptr(), 0) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(err(
                pos,
                format!("cannot remove {name:?} from {}: {e}", self.path),
            ));
        }
        Ok(())
    }

    /// Writes `text` to the file `name` of this directory (created 0600, or
    /// truncated), never through a symlink.
    pub fn write(&self, pos: Position, name: &str, text: &str) -> R<()> {
        use std::io::Write;
        let c = entry_name(pos, name)?;
        // SAFETY: the descriptor is open, c is NUL-terminated; O_NOFOLLOW
        // refuses a symlink planted under that name.
        let fd = unsafe {
            libc::openat(
                self.raw(),
                c.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            )
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            return Err(err(
                pos,
                format!("cannot write {name:?} in {}: {e}", self.path),
            ));
        }
        // SAFETY: fd was just opened and is ours.
        let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
        let st = fstat(f.as_raw_fd()).map_err(|e| err(pos, e.to_string()))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(err(
                pos,
                format!("{name:?} in {} is not a regular file", self.path),
            ));
        }
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_data())
            .map_err(|e| err(pos, format!("cannot write {name:?} in {}: {e}", self.path)))
    }
}

fn opt_i64(pos: Position, opts: &Map, key: &str, what: &str) -> R<Option<i64>> {
    match opts.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_int()
            .map(Some)
            .map_err(|t| err(pos, format!("{what}: `{key}` must be a number, not {t}"))),
    }
}

/// Registers `dir::open` and the handle's methods.
pub fn install(engine: &mut Engine) {
    engine.register_type_with_name::<DirHandle>("DirHandle");
    let mut m = rhai::Module::new();
    doc("dir::open(path)", &[
        "Opens a directory (a symbolic link is not followed) as a handle whose work stays in that directory.",
        "Fails when the path is not a directory or is a symbolic link.",
        "Example: `let d = dir::open(\"/var/log/app\"); let files = d.list().entries;`",
    ])
    .set_in(&mut m, |path: &str| -> R<DirHandle> {
        DirHandle::open(path).map_err(|e| {
            err(
                Position::NONE,
                format!("dir::open({path:?}): {e} (a symlink is not followed)"),
            )
        })
    });
    doc("dir::open(path, options)", &[
        "Opens a directory again, insisting with `#{ expect: handle.id }` that it is the one listed before (same device, inode and owner).",
        "Fails, doing nothing, when it was replaced, moved, changed owner or became a symbolic link. Example: `dir::open(path, #{ expect: d.id })` after a resume.",
    ])
    .set_in(&mut m, |path: &str, opts: Map| -> R<DirHandle> {
        for k in opts.keys() {
            if k.as_str() != "expect" {
                return Err(err(Position::NONE, format!("dir::open: unknown option `{k}`; the only option is `expect` (a handle's id)")));
            }
        }
        let d = DirHandle::open(path).map_err(|e| {
            let link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
            if link && opts.contains_key("expect") {
                err(Position::NONE, format!("{path} is no longer the directory that was listed (it is now a symbolic link): nothing done there"))
            } else {
                err(Position::NONE, format!("dir::open({path:?}): {e} (a symlink is not followed)"))
            }
        })?;
        if let Some(expect) = opts.get("expect").and_then(|v| v.clone().try_cast::<Map>()) {
            let num = |k: &str| expect.get(k).and_then(|v| v.as_int().ok());
            if num("dev") != Some(d.dev as i64) || num("ino") != Some(d.ino as i64) {
                return Err(err(
                    Position::NONE,
                    format!("{path} is no longer the directory that was listed (it was replaced or moved): nothing done there"),
                ));
            }
            if num("uid") != Some(d.uid as i64) {
                return Err(err(
                    Position::NONE,
                    format!("{path} changed owner since it was listed: nothing done there"),
                ));
            }
        }
        Ok(d)
    });
    engine.register_static_module("dir", m.into());
    doc("DirHandle.id", &[
        "`#{ dev, ino, uid }`: what identifies the directory, for `dir::open(path, #{ expect: … })`.",
    ])
    .register(engine, |d: &mut DirHandle| d.id());
    doc("DirHandle.path", &["The path the directory was opened by."])
        .register(engine, |d: &mut DirHandle| d.path.clone());
    doc("DirHandle.list()", &[
        "The directory's entries: `#{ entries: [#{ name, kind, size, mtime, ino }], skipped: [names] }`, by name.",
        "Names that are not UTF-8 cannot be named exactly from a script: they are left out of `entries` and shown, made readable, in `skipped`.",
    ])
    .register(
        engine,
        |ctx: NativeCallContext, d: &mut DirHandle| -> R<Map> {
            let (entries, skipped) = d.list(ctx.call_position())?;
            let mut m = Map::new();
            m.insert("entries".into(), entries.into());
            m.insert("skipped".into(), skipped.into());
            Ok(m)
        },
    );
    doc("DirHandle.remove(name)", &[
        "Removes the regular file `name` of this directory; a link, a directory or another kind of file under that name is left alone and reported.",
    ])
    .register(
        engine,
        |ctx: NativeCallContext, d: &mut DirHandle, name: &str| -> R<()> {
            d.remove(ctx.call_position(), name, None)
        },
    );
    doc("DirHandle.remove(name, options)", &[
        "Removes the regular file `name` if it is still the file listed: `#{ ino }` (from `list`); another file under that name is left alone and reported.",
        "Example: `d.remove(f.name, #{ ino: f.ino })`",
    ])
    .register(
        engine,
        |ctx: NativeCallContext, d: &mut DirHandle, name: &str, opts: Map| -> R<()> {
            let pos = ctx.call_position();
            for k in opts.keys() {
                if k.as_str() != "ino" {
                    return Err(err(
                        pos,
                        format!("remove: unknown option `{k}`; the only option is `ino`"),
                    ));
                }
            }
            let ino = opt_i64(pos, &opts, "ino", "remove")?;
            d.remove(pos, name, ino)
        },
    );
    doc("DirHandle.write(name, text)", &[
        "Writes `text` to the file `name` of this directory (created 0600, or truncated), never through a symbolic link.",
    ])
    .register(
        engine,
        |ctx: NativeCallContext, d: &mut DirHandle, name: &str, text: &str| -> R<()> {
            d.write(ctx.call_position(), name, text)
        },
    );
    doc(
        "glob_match(pattern, name)",
        &[
            "Whether a name matches a shell glob (`fnmatch`: `*`, `?`, `[…]`).",
            "Example: `glob_match(\"*.log\", f.name)`",
        ],
    )
    .register(engine, |pattern: &str, name: &str| -> bool {
        let (Ok(p), Ok(n)) = (CString::new(pattern), CString::new(name)) else {
            return false;
        };
        // SAFETY: both strings are NUL-terminated; fnmatch only reads them.
        unsafe { libc::fnmatch(p.as_ptr(), n.as_ptr(), 0) == 0 }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_stays_with_its_directory_when_the_path_is_swapped() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        let other = tmp.path().join("other");
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&other).unwrap();
        std::fs::write(a.join("old.log"), "x").unwrap();
        std::fs::write(other.join("old.log"), "keep").unwrap();
        let d = DirHandle::open(a.to_str().unwrap()).unwrap();
        let (list, _) = d.list(Position::NONE).unwrap();
        assert_eq!(list.len(), 1);
        // The directory is swapped for a symlink to another one.
        std::fs::rename(&a, tmp.path().join("a-moved")).unwrap();
        std::os::unix::fs::symlink(&other, &a).unwrap();
        d.remove(Position::NONE, "old.log", None).unwrap();
        d.write(Position::NONE, "report", "done").unwrap();
        assert_eq!(
            std::fs::read_to_string(other.join("old.log")).unwrap(),
            "keep"
        );
        assert!(!other.join("report").exists());
        assert!(tmp.path().join("a-moved/report").exists());
        // Reopened by path, it is not the same directory.
        assert!(
            DirHandle::open(a.to_str().unwrap()).is_err(),
            "a symlink is not followed"
        );
    }

    #[test]
    fn links_replaced_files_and_bad_names_are_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DirHandle::open(tmp.path().to_str().unwrap()).unwrap();
        std::fs::write(tmp.path().join("f"), "x").unwrap();
        let ino = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(tmp.path().join("f")).unwrap().ino() as i64
        };
        std::fs::remove_file(tmp.path().join("f")).unwrap();
        std::fs::write(tmp.path().join("other"), "y").unwrap();
        std::fs::write(tmp.path().join("f"), "new file, same name").unwrap();
        let e = d
            .remove(Position::NONE, "f", Some(ino + 1_000_000))
            .unwrap_err();
        assert!(e.to_string().contains("replaced"), "{e}");
        std::os::unix::fs::symlink("/etc/passwd", tmp.path().join("link")).unwrap();
        let e = d.remove(Position::NONE, "link", None).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        assert!(d.write(Position::NONE, "link", "x").is_err());
        assert!(d.remove(Position::NONE, "../x", None).is_err());
        assert!(d.remove(Position::NONE, "..", None).is_err());
        assert!(tmp.path().join("f").exists());
    }
}
