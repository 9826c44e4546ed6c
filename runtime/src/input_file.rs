//! The one reader for files a user names to drydock: runbooks, parameter
//! files, schedules and calendar files, SSH keys, user-data, parameter
//! values, configuration, keys.
//!
//! Each is opened without blocking (a FIFO named `x.rhai` must not hang the
//! command), checked to be a regular file after it is open (a symlink to
//! `/dev/zero` or a device must not be read until memory runs out), and read
//! up to a limit that depends on what it is. Errors name the file, what it
//! was for, the problem and what to do about it.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The largest runbook file drydock reads.
pub const MAX_RUNBOOK_BYTES: usize = 1024 * 1024;

/// What a file is read for: it sets the size limit and the words of errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// A runbook (`validate`, `run FILE`, runbook directories).
    Runbook,
    /// `run --params-file`: a JSON object of parameters.
    ParamsFile,
    /// A schedules file (TOML): `schedules import`, `serve --schedules`.
    Schedules,
    /// An iCalendar file: `calendar import`.
    Calendar,
    /// `--ssh-key`: a public key.
    SshKey,
    /// `--user-data`: a cloud-init document.
    UserData,
    /// `param put --value-file` and secret `file:PATH` values.
    Value,
    /// The encryption key of a data directory.
    SecretKey,
    /// drydock's configuration file.
    Config,
    /// The VM spec a VMM process is started with.
    VmSpec,
    /// A guest kernel (`image create --kernel`).
    Kernel,
    /// An SSH known-hosts file (`ssh::connect`'s `known_hosts`).
    KnownHosts,
}

impl InputKind {
    /// The most bytes a file of this kind may hold.
    pub fn limit(self) -> u64 {
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * KIB;
        match self {
            InputKind::Runbook => MAX_RUNBOOK_BYTES as u64,
            InputKind::ParamsFile => 4 * MIB,
            InputKind::Schedules => 4 * MIB,
            InputKind::Calendar => 16 * MIB,
            InputKind::SshKey => 64 * KIB,
            // cloud-init's own limit for user-data is 16 KiB on some clouds;
            // a generous one here, the guest's seed volume holds it.
            InputKind::UserData => MIB,
            InputKind::Value => MIB,
            InputKind::SecretKey => 64,
            InputKind::Config => MIB,
            InputKind::VmSpec => 4 * MIB,
            InputKind::Kernel => 512 * MIB,
            InputKind::KnownHosts => 16 * MIB,
        }
    }

    /// How errors name a file of this kind.
    pub fn what(self) -> &'static str {
        match self {
            InputKind::Runbook => "runbook",
            InputKind::ParamsFile => "--params-file",
            InputKind::Schedules => "schedules file",
            InputKind::Calendar => "calendar file",
            InputKind::SshKey => "--ssh-key",
            InputKind::UserData => "--user-data",
            InputKind::Value => "the value from",
            InputKind::SecretKey => "key file",
            InputKind::Config => "config file",
            InputKind::VmSpec => "VM spec",
            InputKind::Kernel => "--kernel",
            InputKind::KnownHosts => "known hosts file",
        }
    }

    /// Whether a symlink is refused rather than followed: only for files
    /// drydock itself keeps in its private data directory.
    fn no_follow(self) -> bool {
        matches!(self, InputKind::SecretKey)
    }
}

/// Why a file could not be read.
#[derive(Debug)]
pub enum Problem {
    /// Opening or reading failed.
    Io(std::io::Error),
    /// It is not a regular file (the string says what it is).
    NotRegular(&'static str),
    /// It holds more than the kind allows.
    TooLarge { size: u64, limit: u64 },
    /// It is not UTF-8 text.
    NotText,
}

/// A file that could not be read, with what it was for.
#[derive(Debug)]
pub struct InputFileError {
    pub path: PathBuf,
    pub kind: InputKind,
    pub problem: Problem,
}

impl InputFileError {
    /// Whether the file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(&self.problem, Problem::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }

    /// The problem and its fix, without the file's name (for callers whose
    /// own error already names it).
    pub fn problem_text(&self) -> String {
        match &self.problem {
            Problem::Io(e) => match e.kind() {
                std::io::ErrorKind::NotFound => {
                    format!("{e}; check the path")
                }
                std::io::ErrorKind::PermissionDenied => {
                    format!("{e}; give this account read access to it")
                }
                _ if e.raw_os_error() == Some(libc::ELOOP) => format!(
                    "{e} (a symbolic link where drydock keeps only its own files); remove the link"
                ),
                _ => e.to_string(),
            },
            Problem::NotRegular(found) => format!(
                "not a regular file (it is {found}); name a regular file (copy what you mean to give into one)"
            ),
            Problem::TooLarge { size, limit } => format!(
                "the file is {size} bytes; drydock reads at most {limit} bytes for the {} (is this the file you meant?)",
                self.kind.what().trim_start_matches("the ")
            ),
            Problem::NotText => {
                "not UTF-8 text; save it as UTF-8 (is this the file you meant?)".to_string()
            }
        }
    }

    /// As an `io::Error` carrying the same message (for callers whose
    /// error types hold one).
    pub fn into_io(self) -> std::io::Error {
        let kind = match &self.problem {
            Problem::Io(e) => e.kind(),
            Problem::NotRegular(_) => std::io::ErrorKind::InvalidInput,
            Problem::TooLarge { .. } | Problem::NotText => std::io::ErrorKind::InvalidData,
        };
        std::io::Error::new(kind, self.problem_text())
    }
}

impl fmt::Display for InputFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot read {} {}: {}",
            self.kind.what(),
            self.path.display(),
            self.problem_text()
        )
    }
}

impl std::error::Error for InputFileError {}

/// Opens `path` for reading without blocking and makes sure it is a
/// regular file; returns it with its size.
pub fn open(path: &Path, kind: InputKind) -> Result<(File, u64), InputFileError> {
    let err = |problem| InputFileError {
        path: path.to_path_buf(),
        kind,
        problem,
    };
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC;
    if kind.no_follow() {
        flags |= libc::O_NOFOLLOW;
    }
    // O_NONBLOCK: opening a FIFO for reading returns at once instead of
    // waiting for a writer; the type check below then refuses it.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| err(Problem::Io(e)))?;
    let meta = file.metadata().map_err(|e| err(Problem::Io(e)))?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let found = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_block_device() {
            "a block device"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        return Err(err(Problem::NotRegular(found)));
    }
    let limit = kind.limit();
    if meta.len() > limit {
        return Err(err(Problem::TooLarge {
            size: meta.len(),
            limit,
        }));
    }
    Ok((file, meta.len()))
}

/// Reads a whole regular file of at most `kind`'s limit.
pub fn read(path: &Path, kind: InputKind) -> Result<Vec<u8>, InputFileError> {
    let (file, size) = open(path, kind)?;
    let err = |problem| InputFileError {
        path: path.to_path_buf(),
        kind,
        problem,
    };
    let limit = kind.limit();
    let mut bytes = Vec::with_capacity(size as usize);
    // At most one byte past the limit: a file that grew since it was
    // measured is refused, never read whole.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(Problem::Io(e)))?;
    if bytes.len() as u64 > limit {
        return Err(err(Problem::TooLarge {
            size: bytes.len() as u64,
            limit,
        }));
    }
    Ok(bytes)
}

/// Reads a whole regular file of at most `kind`'s limit as UTF-8 text.
pub fn read_to_string(path: &Path, kind: InputKind) -> Result<String, InputFileError> {
    let bytes = read(path, kind)?;
    String::from_utf8(bytes).map_err(|_| InputFileError {
        path: path.to_path_buf(),
        kind,
        problem: Problem::NotText,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_regular_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        std::fs::write(&p, "{}").unwrap();
        assert_eq!(read_to_string(&p, InputKind::ParamsFile).unwrap(), "{}");
    }

    #[test]
    fn devices_fifos_and_directories_are_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let zero = dir.path().join("zero.rhai");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let fifo = dir.path().join("fifo.rhai");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let start = Instant::now();
        for (p, found) in [
            (&zero, "a character device"),
            (&fifo, "a FIFO"),
            (&dir.path().to_path_buf(), "a directory"),
        ] {
            let e = read_to_string(p, InputKind::Runbook).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("not a regular file"), "{msg}");
            assert!(msg.contains(found), "{msg}");
            assert!(msg.contains(&p.display().to_string()), "{msg}");
        }
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_file_over_the_limit_is_refused_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("id.pub");
        std::fs::write(&p, vec![b'a'; 64 * 1024 + 1]).unwrap();
        let msg = read(&p, InputKind::SshKey).unwrap_err().to_string();
        assert!(msg.contains("at most 65536 bytes"), "{msg}");
    }

    #[test]
    fn a_symlinked_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::write(&real, [0u8; 32]).unwrap();
        let link = dir.path().join("secret.key");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(read(&link, InputKind::SecretKey).is_err());
        assert_eq!(read(&real, InputKind::SecretKey).unwrap().len(), 32);
    }
}
