//! The journal of an ext4 volume left by an unclean stop (a forced stop, a
//! crash of the guest or of the host) holds transactions that must be
//! replayed before the file system is read. The guest's kernel does that
//! when it mounts the volume; the host reads the volume before the guest
//! runs (the boot files, fault injection), and its reader does not replay
//! every journal (revoke records, 64-bit or checksummed journals), so the
//! host replays it first, exactly as the kernel would at mount, with
//! e2fsprogs' `e2fsck -E journal_only` (nothing else is checked or
//! repaired). Call this only while the volume is locked and no VM has it.

use std::path::Path;
use std::process::Command;

/// Where the superblock starts.
const SUPERBLOCK: u64 = 1024;
const MAGIC_OFFSET: usize = 0x38;
const COMPAT_OFFSET: usize = 0x5c;
const INCOMPAT_OFFSET: usize = 0x60;
const EXT4_MAGIC: u16 = 0xef53;
const COMPAT_HAS_JOURNAL: u32 = 0x4;
const INCOMPAT_RECOVER: u32 = 0x4;

/// Whether `volume` is ext4 (or ext3) with a journal that needs recovery.
/// Anything that is not such a file system (too short, another magic
/// number) does not.
pub fn needs_recovery(volume: &Path) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(volume)?;
    let mut sb = [0u8; 1024];
    f.seek(SeekFrom::Start(SUPERBLOCK))?;
    if f.read_exact(&mut sb).is_err() {
        return Ok(false);
    }
    let u16_at = |o: usize| u16::from_le_bytes([sb[o], sb[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
    Ok(u16_at(MAGIC_OFFSET) == EXT4_MAGIC
        && u32_at(COMPAT_OFFSET) & COMPAT_HAS_JOURNAL != 0
        && u32_at(INCOMPAT_OFFSET) & INCOMPAT_RECOVER != 0)
}

/// Replays the journal of `volume` when it needs recovery; `Ok(true)` when
/// it did. The error names what e2fsck said.
pub fn replay_if_needed(volume: &Path) -> Result<bool, String> {
    match needs_recovery(volume) {
        Ok(false) => return Ok(false),
        Ok(true) => {}
        Err(e) => return Err(format!("cannot read {}: {e}", volume.display())),
    }
    let out = Command::new("e2fsck")
        .args(["-p", "-E", "journal_only"])
        .arg(volume)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| format!("cannot run e2fsck (install e2fsprogs): {e}"))?;
    // 0: nothing to do, 1: the file system was changed (the replay).
    match out.status.code() {
        Some(0 | 1) if !needs_recovery(volume).unwrap_or(true) => {
            tracing::info!(volume = %volume.display(), "replayed the ext4 journal");
            Ok(true)
        }
        code => {
            let said = String::from_utf8_lossy(&out.stdout).to_string()
                + String::from_utf8_lossy(&out.stderr).as_ref();
            let said: String = said.trim().chars().take(2000).collect();
            Err(format!(
                "the journal of {} needs recovery and e2fsck -E journal_only failed (exit {}): {said}",
                volume.display(),
                code.map_or("by a signal".to_string(), |c| c.to_string())
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ext4 image whose journal holds a transaction with a revoke record,
    /// written by debugfs' journal commands (as a guest stopped
    /// mid-transaction leaves it).
    fn journal_needing_recovery(dir: &Path) -> std::path::PathBuf {
        let img = dir.join("j.ext4");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let mk = Command::new("mke2fs")
            .args(["-q", "-t", "ext4", "-F"])
            .arg(&img)
            .status()
            .unwrap();
        assert!(mk.success());
        let cmds = dir.join("j.cmd");
        std::fs::write(&cmds, "jo\njw -b 300,301 -r 302 /dev/zero\njc\n").unwrap();
        let w = Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&cmds)
            .arg(&img)
            .output()
            .unwrap();
        assert!(w.status.success());
        img
    }

    #[test]
    fn a_journal_with_revoke_records_is_replayed_and_then_readable() {
        let dir = tempfile::tempdir().unwrap();
        let img = journal_needing_recovery(dir.path());
        assert!(needs_recovery(&img).unwrap());
        // What the host's reader says of it before the replay.
        let before = ext4_view::Ext4::load_from_path(&img).map(|_| ());
        assert!(before.is_err(), "ext4-view now replays such journals");
        assert!(replay_if_needed(&img).unwrap());
        assert!(!needs_recovery(&img).unwrap());
        ext4_view::Ext4::load_from_path(&img).unwrap();
        // Nothing more to do the next time.
        assert!(!replay_if_needed(&img).unwrap());
    }

    #[test]
    fn what_is_not_ext4_needs_no_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, b"tiny").unwrap();
        assert!(!needs_recovery(&short).unwrap());
        let zeros = dir.path().join("zeros");
        std::fs::write(&zeros, vec![0u8; 4096]).unwrap();
        assert!(!replay_if_needed(&zeros).unwrap());
        assert!(replay_if_needed(&dir.path().join("missing")).is_err());
    }
}
