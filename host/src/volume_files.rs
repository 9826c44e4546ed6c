//! Files inside a volume's ext4 file system, read and changed without
//! mounting it and without root privileges, through e2fsprogs' `debugfs`
//! (installed with `mke2fs`, which builds every image). Only for volumes
//! no VM uses: the caller holds the volume's lock.
//!
//! Paths are absolute, plain (letters, digits, `.`, `_`, `-`, `/`), with
//! no `..`: debugfs parses its own command line, so nothing else reaches
//! it.

use std::path::Path;
use std::process::{Command, Stdio};

use super::HostError;

/// What a path held before a change (to undo it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Previous {
    /// Nothing was there.
    Absent,
    /// A regular file: its bytes and mode.
    File { bytes: Vec<u8>, mode: u32 },
}

/// The largest file read back into memory.
const MAX_READ: usize = 16 << 20;

/// Checks that `path` is something debugfs gets as one plain argument.
pub fn check_path(path: &str) -> Result<(), HostError> {
    let plain = path.starts_with('/')
        && path.len() <= 256
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
        && !path.split('/').any(|p| p == "..")
        && path != "/";
    if plain {
        Ok(())
    } else {
        Err(HostError::Invalid(format!(
            "`{}` is not a plain absolute path inside the volume (letters, digits, . _ - /, no ..)",
            path.escape_debug()
        )))
    }
}

fn debugfs(image: &Path, write: bool, commands: &[String]) -> Result<String, HostError> {
    let mut cmd = Command::new("debugfs");
    if write {
        cmd.arg("-w");
    }
    let script = commands.join("\n") + "\n";
    let mut child = cmd
        .arg("-f")
        .arg("-")
        .arg(image)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            HostError::Vmm(format!(
                "cannot run debugfs (e2fsprogs; `scripts/setup` installs it): {e}"
            ))
        })?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| HostError::io("write to debugfs for", image, e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| HostError::io("run debugfs on", image, e))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // debugfs exits 0 even when a command fails; its complaints go to
    // stderr after the version banner.
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .collect();
    if !out.status.success() || !complaints.is_empty() {
        return Err(HostError::Vmm(format!(
            "debugfs on {}: {}",
            image.display(),
            if complaints.is_empty() {
                stderr.trim().to_string()
            } else {
                complaints.join("; ")
            }
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The names in directory `dir` (not `.` and `..`), at most 4096; names
/// that are not plain (see [`check_path`]) are left out.
pub fn list(image: &Path, dir: &str) -> Result<Vec<String>, HostError> {
    check_path(dir)?;
    let out = debugfs(image, false, &[format!("ls -p {dir}")])?;
    // One `/inode/mode/uid/gid/name/size/` line per entry.
    Ok(out
        .lines()
        .filter_map(|l| l.strip_prefix('/')?.split('/').nth(4).map(str::to_string))
        .filter(|n| n != "." && n != ".." && check_path(&format!("/{n}")).is_ok())
        .take(4096)
        .collect())
}

/// The mode of `path` (file type bits included), None when absent.
pub fn mode(image: &Path, path: &str) -> Result<Option<u32>, HostError> {
    check_path(path)?;
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("stat {path}"))
        .arg(image)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| HostError::Vmm(format!("cannot run debugfs: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().find(|l| l.starts_with("Inode:")) else {
        return Ok(None);
    };
    let perm = line
        .split("Mode:")
        .nth(1)
        .and_then(|m| m.split_whitespace().next())
        .and_then(|m| u32::from_str_radix(m, 8).ok())
        .unwrap_or(0o644);
    let kind = if line.contains("Type: regular") {
        0o100000
    } else if line.contains("Type: directory") {
        0o040000
    } else if line.contains("Type: symlink") {
        0o120000
    } else {
        0
    };
    Ok(Some(kind | perm))
}

/// The bytes of the regular file at `path`, None when absent.
pub fn read(image: &Path, path: &str) -> Result<Option<Vec<u8>>, HostError> {
    match mode(image, path)? {
        None => return Ok(None),
        Some(m) if m & 0o170000 != 0o100000 => {
            return Err(HostError::Conflict(format!(
                "{path} on the volume is not a regular file"
            )))
        }
        Some(_) => {}
    }
    let tmp = tempfile::NamedTempFile::new()
        .map_err(|e| HostError::io("create", Path::new("/tmp"), e))?;
    let target = tmp.path().to_string_lossy().into_owned();
    debugfs(image, false, &[format!("dump {path} {target}")])?;
    let bytes = std::fs::read(tmp.path()).map_err(|e| HostError::io("read", tmp.path(), e))?;
    if bytes.len() > MAX_READ {
        return Err(HostError::Conflict(format!(
            "{path} on the volume is larger than {} MiB",
            MAX_READ >> 20
        )));
    }
    Ok(Some(bytes))
}

/// What `path` holds now, to restore it later.
pub fn previous(image: &Path, path: &str) -> Result<Previous, HostError> {
    Ok(match mode(image, path)? {
        None => Previous::Absent,
        Some(mode) => Previous::File {
            bytes: read(image, path)?.unwrap_or_default(),
            mode: mode & 0o7777,
        },
    })
}

/// Writes a regular file (replacing what was there), owned by root.
pub fn write(image: &Path, path: &str, bytes: &[u8], mode: u32) -> Result<(), HostError> {
    check_path(path)?;
    let mut tmp = tempfile::NamedTempFile::new()
        .map_err(|e| HostError::io("create", Path::new("/tmp"), e))?;
    {
        use std::io::Write;
        tmp.write_all(bytes)
            .map_err(|e| HostError::io("write", tmp.path(), e))?;
    }
    let source = tmp.path().to_string_lossy().into_owned();
    let mut commands = Vec::new();
    if self::mode(image, path)?.is_some() {
        commands.push(format!("rm {path}"));
    }
    commands.extend([
        format!("write {source} {path}"),
        format!("sif {path} mode 0{:o}", 0o100000 | (mode & 0o7777)),
        format!("sif {path} uid 0"),
        format!("sif {path} gid 0"),
    ]);
    debugfs(image, true, &commands).map(|_| ())
}

/// Removes a regular file (nothing to do when absent).
pub fn remove(image: &Path, path: &str) -> Result<(), HostError> {
    if mode(image, path)?.is_none() {
        return Ok(());
    }
    debugfs(image, true, &[format!("rm {path}")]).map(|_| ())
}

/// Renames an entry (any type) within the file system.
pub fn rename(image: &Path, from: &str, to: &str) -> Result<(), HostError> {
    check_path(from)?;
    check_path(to)?;
    if mode(image, from)?.is_none() {
        return Err(HostError::Conflict(format!("{from} is not on the volume")));
    }
    if mode(image, to)?.is_some() {
        return Err(HostError::Conflict(format!(
            "{to} already exists on the volume"
        )));
    }
    debugfs(
        image,
        true,
        &[format!("ln {from} {to}"), format!("unlink {from}")],
    )
    .map(|_| ())
}

/// Creates a file of `bytes` allocated (not written) blocks: space used
/// as a full disk uses it.
pub fn allocate(image: &Path, path: &str, blocks: u64) -> Result<(), HostError> {
    write(image, path, b"", 0o600)?;
    debugfs(
        image,
        true,
        &[format!("fallocate {path} 0 {}", blocks.saturating_sub(1))],
    )
    .map(|_| ())
}

/// Takes the space of a full disk: every block an ordinary user could
/// use (df shows 100 %), leaving half of root's reserve (or a few blocks)
/// so the file system itself can still work. Returns the blocks taken.
pub fn fill(image: &Path, path: &str) -> Result<u64, HostError> {
    let (free, reserved, _) = space(image)?;
    let mut keep = (reserved / 2).max(32);
    for _ in 0..4 {
        let blocks = free.saturating_sub(keep);
        match allocate(image, path, blocks) {
            Ok(()) => return Ok(blocks),
            // The file's own extent tree needs blocks too: leave more.
            Err(e) => {
                tracing::debug!("fill {path}: {e}; leaving more room");
                remove(image, path)?;
                keep = keep * 2 + 64;
            }
        }
    }
    Err(HostError::Conflict(format!(
        "cannot fill the file system of {}: debugfs could not allocate the space",
        image.display()
    )))
}

/// Free blocks, blocks reserved for root, and the block size.
pub fn space(image: &Path) -> Result<(u64, u64, u64), HostError> {
    let (free, size) = free_blocks(image)?;
    let out = Command::new("dumpe2fs")
        .arg("-h")
        .arg(image)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| HostError::Vmm(format!("cannot run dumpe2fs: {e}")))?;
    let reserved = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("Reserved block count:"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Ok((free, reserved, size))
}

/// Free blocks and the block size of the file system.
pub fn free_blocks(image: &Path) -> Result<(u64, u64), HostError> {
    let out = Command::new("dumpe2fs")
        .arg("-h")
        .arg(image)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| HostError::Vmm(format!("cannot run dumpe2fs: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    match (field("Free blocks:"), field("Block size:")) {
        (Some(free), Some(size)) => Ok((free, size)),
        _ => Err(HostError::Conflict(format!(
            "{} does not hold an ext4 file system drydock can read",
            image.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        std::fs::create_dir_all(tree.join("sbin")).unwrap();
        std::fs::write(tree.join("etc/fstab"), "/dev/vda / ext4 rw 0 1\n").unwrap();
        std::os::unix::fs::symlink("../bin/busybox", tree.join("sbin/init")).unwrap();
        let image = dir.path().join("vol.raw");
        let f = std::fs::File::create(&image).unwrap();
        f.set_len(32 << 20).unwrap();
        let ok = Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-d"])
            .arg(&tree)
            .arg(&image)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        (dir, image)
    }

    #[test]
    fn files_are_read_written_renamed_and_removed_without_mounting() {
        let (_dir, img) = volume();
        assert_eq!(
            read(&img, "/etc/fstab").unwrap().unwrap(),
            b"/dev/vda / ext4 rw 0 1\n"
        );
        assert_eq!(read(&img, "/etc/nothing").unwrap(), None);
        let before = previous(&img, "/etc/fstab").unwrap();
        write(&img, "/etc/fstab", b"changed\n", 0o640).unwrap();
        assert_eq!(read(&img, "/etc/fstab").unwrap().unwrap(), b"changed\n");
        assert_eq!(mode(&img, "/etc/fstab").unwrap(), Some(0o100640));
        let Previous::File { bytes, mode: m } = before else {
            panic!("{before:?}")
        };
        write(&img, "/etc/fstab", &bytes, m).unwrap();
        assert_eq!(read(&img, "/etc/fstab").unwrap().unwrap(), bytes);
        rename(&img, "/sbin/init", "/sbin/init.moved").unwrap();
        assert_eq!(mode(&img, "/sbin/init").unwrap(), None);
        assert_eq!(
            mode(&img, "/sbin/init.moved").unwrap().unwrap() & 0o170000,
            0o120000
        );
        rename(&img, "/sbin/init.moved", "/sbin/init").unwrap();
        let (free, reserved, bs) = space(&img).unwrap();
        let taken = fill(&img, "/fill").unwrap();
        let (left, _) = free_blocks(&img).unwrap();
        assert!(
            left <= reserved.max(64),
            "{left} of {free} blocks ({bs} B) left, {taken} taken, {reserved} reserved"
        );
        remove(&img, "/fill").unwrap();
        assert!(free_blocks(&img).unwrap().0 + 16 >= free);
        let fsck = Command::new("e2fsck")
            .args(["-fn"])
            .arg(&img)
            .output()
            .unwrap();
        assert!(
            fsck.status.success(),
            "{}",
            String::from_utf8_lossy(&fsck.stdout)
        );
    }

    #[test]
    fn paths_that_are_not_plain_are_refused() {
        for bad in [
            "etc/fstab",
            "/etc/../x",
            "/etc/a b",
            "/etc/a\nrm /x",
            "/",
            "/a\"b",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
        assert!(check_path("/etc/fstab").is_ok());
    }
}
