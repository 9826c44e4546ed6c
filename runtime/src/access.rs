//! Who may touch drydock's state: file modes and socket peers.
//!
//! By default everything drydock creates is private to the account that
//! runs it (umask 077: directories 0700, files 0600) and its sockets
//! accept only that account (and root). With a sharing group configured
//! (`group` in the config file or `DRYDOCK_GROUP`), the data directory is
//! group-owned with the set-gid bit, files are created 0660 / 0770, and
//! sockets also accept members of the group.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::OnceLock;

use crate::identity::{group_id, Identity};

/// The sharing policy of this process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sharing {
    /// The group whose members share the data directory.
    pub group: Option<String>,
    /// The account that owns a shared data directory (`owner` in the
    /// config), trusted besides the caller and root.
    pub owner: Option<u32>,
}

static SHARING: OnceLock<Sharing> = OnceLock::new();

/// The policy set by [`init`], or private by default.
pub fn sharing() -> Sharing {
    SHARING.get().cloned().unwrap_or_default()
}

/// Sets the process's umask and the data directory's mode for `sharing`.
/// Call once, first thing: child processes (supervisors, VMMs, shell
/// commands) inherit the umask.
pub fn init(data_dir: &Path, sharing: Sharing) -> std::io::Result<()> {
    let (umask, dir_mode) = match &sharing.group {
        Some(_) => (0o007, 0o2770),
        None => (0o077, 0o700),
    };
    // SAFETY: umask has no preconditions and cannot fail.
    unsafe { libc::umask(umask) };
    let gid = match &sharing.group {
        Some(g) => Some(group_id(g).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("the sharing group `{g}` does not exist"),
            )
        })?),
        None => None,
    };
    let _ = SHARING.set(sharing);
    std::fs::create_dir_all(data_dir)?;
    let meta = std::fs::metadata(data_dir)?;
    if let Err(e) = std::fs::read_dir(data_dir) {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            return Err(std::io::Error::new(
                e.kind(),
                format!(
                    "permission denied: it belongs to {} (mode {:o}); use a data directory of your own (--data-dir), or ask its owner to share it with a group (`group` in the config, DRYDOCK_GROUP)",
                    Identity::of_uid(meta.uid()).name,
                    meta.permissions().mode() & 0o7777
                ),
            ));
        }
    }
    // Only the owner may change the directory; others live with its mode.
    if meta.uid() == Identity::current().uid {
        if let Some(gid) = gid {
            if meta.gid() != gid {
                std::os::unix::fs::chown(data_dir, None, Some(gid))?;
            }
        }
        if meta.permissions().mode() & 0o7777 != dir_mode {
            std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(dir_mode))?;
        }
    }
    check_data_dir(data_dir, gid)
}

/// Refuses a data directory another account could have planted or can
/// change behind the caller's back: one owned by someone other than the
/// caller, root or (in group mode) the configured `owner`, or writable by
/// others (or, without a sharing group, by its group); and a journal, host
/// database, key or runbook directory in it that others may write. It
/// never loosens anything; the caller's own older state was tightened
/// above.
fn check_data_dir(data_dir: &Path, gid: Option<u32>) -> std::io::Result<()> {
    let me = Identity::current();
    let owner = sharing().owner;
    let refuse = |msg: String| {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            msg,
        ))
    };
    let trusted = |uid: u32| uid == me.uid || uid == 0 || Some(uid) == owner;
    let meta = std::fs::symlink_metadata(data_dir)?;
    let mode = meta.permissions().mode() & 0o7777;
    if !trusted(meta.uid()) {
        return refuse(format!(
            "it belongs to {} (mode {mode:04o}), not to you: its owner decides what is in it (runbooks, the journal your parameters go to).              Use a data directory of your own (--data-dir), or, to share one, set `group` and the directory's owner (`owner = \"{}\"` in the config)",
            Identity::of_uid(meta.uid()).name,
            Identity::of_uid(meta.uid()).name,
        ));
    }
    let forbidden = if gid.is_some() { 0o002 } else { 0o022 };
    if mode & forbidden != 0 {
        return refuse(format!(
            "it is writable by {} (mode {mode:04o}): anyone who can write it can plant runbooks or read what you store. Fix: chmod {} {}",
            if mode & 0o002 != 0 { "everyone" } else { "its group" },
            if gid.is_some() { "o-w" } else { "go-w" },
            data_dir.display()
        ));
    }
    for name in [
        "journal.sqlite3",
        "host.sqlite3",
        "keys",
        "keys/secrets.key",
        "runbooks",
    ] {
        let p = data_dir.join(name);
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let mode = m.permissions().mode() & 0o7777;
        if m.file_type().is_symlink() {
            return refuse(format!(
                "{} is a symbolic link; drydock keeps its state in plain files. Remove it (or use another data directory)",
                p.display()
            ));
        }
        if mode & forbidden != 0 {
            return refuse(format!(
                "{} is writable by {} (mode {mode:04o}); anyone who can write it can change what drydock runs or stores. Fix: chmod {} {}",
                p.display(),
                if mode & 0o002 != 0 { "everyone" } else { "its group" },
                if gid.is_some() { "o-w" } else { "go-w" },
                p.display()
            ));
        }
    }
    Ok(())
}

/// Whether a socket peer with `uid` may use drydock's sockets: the same
/// account, root, or a member of the sharing group.
pub fn peer_allowed(uid: u32) -> bool {
    let me = Identity::current();
    if uid == me.uid || uid == 0 {
        return true;
    }
    match sharing().group {
        Some(g) => Identity::of_uid(uid).in_group(&g),
        None => false,
    }
}

/// Checks the peer of a Unix socket connection; the error says who was
/// refused and why.
pub fn check_peer(stream: &std::os::unix::net::UnixStream) -> Result<u32, String> {
    use std::os::fd::AsFd;
    let uid = crate::identity::peer_uid(stream.as_fd())
        .map_err(|e| format!("cannot read the peer's credentials: {e}"))?;
    if peer_allowed(uid) {
        Ok(uid)
    } else {
        Err(format!(
            "{} may not use this socket: it belongs to {}{}",
            Identity::of_uid(uid).name,
            Identity::current().name,
            match sharing().group {
                Some(g) => format!(" and group {g}"),
                None => String::new(),
            }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_account_and_root_are_allowed() {
        assert!(peer_allowed(Identity::current().uid));
        assert!(peer_allowed(0));
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(check_peer(&a).unwrap(), Identity::current().uid);
    }
}
