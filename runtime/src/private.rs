//! Who may reach the host's files and sockets.
//!
//! The process umask (set by `crate::access::init`) makes what
//! drydock creates private: directories 0700, files 0600, or 2770 / 0660
//! with a sharing group. This module covers what the umask does not:
//! sockets get an explicit mode, connections are checked against the
//! peer's credentials, files written by other programs or copied with
//! their source's mode are narrowed, and state left by older versions of
//! drydock (a 0755 data directory, 0644 volumes) is tightened once.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// The permission bits drydock's files may never have: anything for
/// "others", and, without a sharing group, anything for the group.
pub fn forbidden_bits() -> u32 {
    match crate::access::sharing().group {
        Some(_) => 0o007,
        None => 0o077,
    }
}

/// The mode of a socket that members of the sharing group may use.
pub fn shared_socket_mode() -> u32 {
    match crate::access::sharing().group {
        Some(_) => 0o660,
        None => 0o600,
    }
}

/// The real uid of this process.
fn my_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Removes a stale socket at `path`, listens there and sets the socket's
/// mode (0600, or 0660 for a socket the sharing group may use). A socket
/// is connectable only with write permission on it, and until the chmod
/// the umask keeps it at least as private.
pub use drydock_sockets::listen;

/// Checks the peer of an accepted connection with
/// [`crate::access::check_peer`]. A refused peer is logged and
/// told why with `refusal` (one line in the socket's protocol); the
/// connection is then closed.
pub fn admit(
    socket: &str,
    stream: &UnixStream,
    refusal: impl FnOnce(&str) -> String,
) -> Option<u32> {
    match crate::access::check_peer(stream) {
        Ok(uid) => Some(uid),
        Err(why) => {
            tracing::warn!(socket, "connection refused: {why}");
            let mut line = refusal(&why);
            line.push('\n');
            let mut s = stream;
            let _ = s.set_write_timeout(Some(std::time::Duration::from_secs(1)));
            let _ = s.write_all(line.as_bytes());
            let _ = stream.shutdown(std::net::Shutdown::Both);
            None
        }
    }
}

/// Removes the forbidden bits from one file or directory this account
/// owns (never follows a symbolic link, never widens a mode).
pub fn tighten(path: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() || meta.uid() != my_uid() {
        return Ok(());
    }
    let mode = meta.permissions().mode() & 0o7777;
    let narrowed = mode & !forbidden_bits();
    if narrowed != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(narrowed))?;
        tracing::info!("tightened {} from {mode:o} to {narrowed:o}", path.display());
    }
    Ok(())
}

/// Tightens `root` and everything under it (see [`tighten`]); symbolic
/// links are not followed and entries of other accounts are left alone.
/// Errors are logged, not returned: this is best effort.
pub fn tighten_tree(root: &Path) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        if let Err(e) = tighten(&p) {
            tracing::debug!("cannot tighten {}: {e}", p.display());
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.file_type().is_dir() {
            if let Ok(entries) = std::fs::read_dir(&p) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
}

/// Marks a data directory whose older state was tightened.
const TIGHTENED_MARK: &str = ".modes-tightened-v1";

/// Tightens a data directory once: files and directories left by older
/// versions of drydock (which set no modes: 0755 directories, 0644
/// volumes and journals) lose the bits for others (and, without a
/// sharing group, for the group). Later runs only check the top level.
pub fn tighten_data_dir(data_dir: &Path) {
    let mark = data_dir.join(TIGHTENED_MARK);
    if mark.exists() {
        return;
    }
    tighten_tree(data_dir);
    if let Err(e) = std::fs::File::create(&mark) {
        tracing::debug!("cannot write {}: {e}", mark.display());
    }
}

/// Copies a file's contents to a new file created with the umask's mode
/// (`std::fs::copy` would keep the source's mode, e.g. 0644).
pub fn copy_private(from: &Path, to: &Path) -> std::io::Result<u64> {
    let mut src = std::fs::File::open(from)?;
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(to)?;
    // An existing file keeps its mode on open: narrow it too.
    tighten(to)?;
    std::io::copy(&mut src, &mut dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_get_the_mode_asked_for_and_a_stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        drop(listen(&path, 0o600).unwrap());
        let l = listen(&path, 0o600).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let c = UnixStream::connect(&path).unwrap();
        let (s, _) = l.accept().unwrap();
        assert!(admit("test", &s, |w| w.to_string()).is_some());
        drop(c);
    }

    #[test]
    fn tighten_narrows_and_never_widens_nor_follows_links() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("vol.raw");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let g = dir.path().join("exe");
        std::fs::write(&g, b"x").unwrap();
        std::fs::set_permissions(&g, std::fs::Permissions::from_mode(0o500)).unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::set_permissions(outside.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        tighten_tree(dir.path());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&f), 0o600);
        assert_eq!(mode(&g), 0o500);
        assert_eq!(mode(outside.path()), 0o644, "links are not followed");
    }

    #[test]
    fn a_private_copy_does_not_keep_the_sources_mode() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"kernel").unwrap();
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o644)).unwrap();
        let b = dir.path().join("b");
        std::fs::write(&b, b"old").unwrap();
        std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o644)).unwrap();
        copy_private(&a, &b).unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"kernel");
        let mode = std::fs::metadata(&b).unwrap().permissions().mode() & 0o077;
        assert_eq!(mode, 0, "no bits for group or others");
    }
}
