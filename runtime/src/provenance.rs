//! Where a runbook file comes from, and whether to trust it (anchors:
//! OpenSSH's StrictModes, sudo's checks of sudoers, systemd's unit
//! directories).
//!
//! A runbook runs with the rights of whoever runs it. A file that another
//! account could have written — the file itself, or a directory it sits in
//! (whoever can write a directory can swap the file) — would let that
//! account run code as the caller. So a runbook file is loaded only if it,
//! and every directory above it up to its runbook directory (for a path
//! given on the command line: the directory holding it), is owned by a
//! trusted account (the caller, root, or in group mode the data
//! directory's owner) and writable by nobody else. A directory with the
//! sticky bit (`/tmp`) may be writable by others when root or a trusted
//! account owns it: others cannot rename or remove entries they do not own.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The accounts whose files a caller may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    uids: Vec<u32>,
}

impl Trust {
    /// The caller (effective uid), root, and `extra` (the data directory's
    /// owner in group mode).
    pub fn for_caller(extra: Option<u32>) -> Self {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        let mut uids = vec![me, 0];
        uids.extend(extra);
        uids.sort_unstable();
        uids.dedup();
        Self { uids }
    }

    pub fn trusts(&self, uid: u32) -> bool {
        self.uids.contains(&uid)
    }

    /// The trusted accounts by name, for messages.
    pub fn names(&self) -> String {
        self.uids
            .iter()
            .map(|u| crate::identity::user_name(*u).unwrap_or_else(|| format!("uid {u}")))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Default for Trust {
    fn default() -> Self {
        Self::for_caller(None)
    }
}

/// Who wrote a runbook file, and what it held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provenance {
    pub path: PathBuf,
    pub owner_uid: u32,
    pub owner: String,
    pub mode: u32,
    pub sha256: String,
}

fn mode_text(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

/// Checks an open runbook file and the directories above it up to `top`
/// (inclusive). `shown` is the path as the user gave it. Returns the
/// file's owner and mode, or a refusal naming the file or directory, its
/// owner and mode, and the fix.
pub fn check(
    file: &File,
    shown: &Path,
    canonical: &Path,
    top: &Path,
    trust: &Trust,
) -> Result<(u32, u32), String> {
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot check runbook {}: {e}", shown.display()))?;
    let (uid, mode) = (meta.uid(), meta.mode());
    if !trust.trusts(uid) {
        return Err(format!(
            "runbook {} is owned by {} (uid {uid}, mode {}); drydock runs only runbooks owned by you or root ({}), since the owner of the file decides what runs as you. \
             If you trust it, copy it to a file of your own (`install -m 0644 {} ~/runbooks/`) after reading it",
            shown.display(),
            crate::identity::user_name(uid).unwrap_or_else(|| format!("uid {uid}")),
            mode_text(mode),
            trust.names(),
            shown.display()
        ));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "runbook {} is writable by {} (mode {}): anyone who can write it decides what runs as you. Fix: chmod go-w {}",
            shown.display(),
            if mode & 0o002 != 0 { "everyone" } else { "its group" },
            mode_text(mode),
            shown.display()
        ));
    }
    let top = std::fs::canonicalize(top).unwrap_or_else(|_| top.to_path_buf());
    let mut dir = canonical.parent();
    while let Some(d) = dir {
        let m = std::fs::symlink_metadata(d).map_err(|e| {
            format!(
                "cannot check directory {} of runbook {}: {e}",
                d.display(),
                shown.display()
            )
        })?;
        let (duid, dmode) = (m.uid(), m.mode());
        if !trust.trusts(duid) {
            return Err(format!(
                "runbook {} is in directory {}, owned by {} (uid {duid}, mode {}): its owner can replace the runbook. Keep runbooks in directories owned by you or root ({})",
                shown.display(),
                d.display(),
                crate::identity::user_name(duid).unwrap_or_else(|| format!("uid {duid}")),
                mode_text(dmode),
                trust.names()
            ));
        }
        let sticky = dmode & 0o1000 != 0;
        if dmode & 0o022 != 0 && !sticky {
            return Err(format!(
                "runbook {} is in directory {}, which is writable by {} (mode {}): anyone who can write it can replace the runbook. Fix: chmod go-w {} (or keep runbooks elsewhere)",
                shown.display(),
                d.display(),
                if dmode & 0o002 != 0 { "everyone" } else { "its group" },
                mode_text(dmode),
                d.display()
            ));
        }
        if d == top {
            break;
        }
        dir = d.parent();
    }
    Ok((uid, mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn set_mode(p: &Path, m: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }

    #[test]
    fn writable_files_and_directories_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let rb = dir.path().join("runbooks");
        std::fs::create_dir(&rb).unwrap();
        set_mode(&rb, 0o755);
        let f = rb.join("x.rhai");
        std::fs::write(&f, "x").unwrap();
        set_mode(&f, 0o644);
        let trust = Trust::for_caller(None);
        let check_it = || {
            let file = File::open(&f).unwrap();
            check(&file, &f, &std::fs::canonicalize(&f).unwrap(), &rb, &trust)
        };
        assert!(check_it().is_ok());
        set_mode(&f, 0o664);
        let e = check_it().unwrap_err();
        assert!(
            e.contains("writable by its group") && e.contains("chmod go-w"),
            "{e}"
        );
        set_mode(&f, 0o644);
        set_mode(&rb, 0o777);
        let e = check_it().unwrap_err();
        assert!(e.contains("directory") && e.contains("everyone"), "{e}");
        // Sticky (like /tmp): others cannot replace the file.
        set_mode(&rb, 0o1777);
        assert!(check_it().is_ok());
        set_mode(&rb, 0o755);
    }

    #[test]
    fn a_file_owned_by_another_account_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.rhai");
        std::fs::write(&f, "x").unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return; // chown needs root; the root CI runs it
        }
        std::os::unix::fs::chown(&f, Some(65534), None).unwrap();
        let file = File::open(&f).unwrap();
        let trust = Trust::for_caller(None);
        let e = check(&file, &f, &f, dir.path(), &trust).unwrap_err();
        assert!(e.contains("uid 65534"), "{e}");
        // Trusted when it is the data directory owner's (group mode).
        let trust = Trust::for_caller(Some(65534));
        assert!(check(&file, &f, &f, dir.path(), &trust).is_ok());
    }
}
