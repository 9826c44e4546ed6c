//! The local side of `drydock serve`: one serve per data directory (a lock
//! held for its lifetime), its Unix socket `DATA_DIR/serve.sock` where the
//! CLI, the REPL and local tools reach the same API as over HTTP without a
//! token (the caller is the socket peer's OS account, read with
//! SO_PEERCRED), and the client the CLI uses on it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;

use crate::failure::CliError;

/// The socket of the serve of `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("serve.sock")
}

/// Held while this process is the data directory's serve.
pub struct ServeLock {
    _file: File,
    socket: PathBuf,
}

impl Drop for ServeLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Becomes the serve of `data_dir`, or says which serve already is.
pub fn take_lock(data_dir: &Path) -> Result<ServeLock, CliError> {
    let path = data_dir.join("serve.lock");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| CliError::failure(format!("cannot open {}: {e}", path.display())))?;
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor we own; no memory is shared.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(CliError::failure(format!(
                "cannot lock {}: {e}",
                path.display()
            )));
        }
        let holder = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        return Err(CliError::failure(format!(
            "another drydock serve{} already serves {}; stop it first (or use another --data-dir)",
            match holder {
                Some(pid) => format!(" (pid {pid})"),
                None => String::new(),
            },
            data_dir.display()
        )));
    }
    use std::io::{Seek, Write};
    let _ = file.set_len(0);
    let _ = file.seek(std::io::SeekFrom::Start(0));
    let _ = writeln!(file, "{}", std::process::id());
    let _ = file.sync_all();
    Ok(ServeLock {
        _file: file,
        socket: socket_path(data_dir),
    })
}

/// Binds the socket (a stale one left by a serve that died is replaced:
/// the lock proves nobody serves it). Its mode follows the data
/// directory's sharing (0600, or 0660 with a sharing group); peers are
/// checked on every request anyway.
pub fn bind(data_dir: &Path) -> Result<tokio::net::UnixListener, CliError> {
    let path = socket_path(data_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(CliError::failure(format!(
                "cannot remove the stale socket {}: {e}",
                path.display()
            )))
        }
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .map_err(|e| CliError::failure(format!("cannot listen on {}: {e}", path.display())))?;
    // The umask leaves a socket at 0700 (0770): set the documented mode,
    // 0600 (0660 with a sharing group). Connecting needs write permission,
    // so until this chmod it is at least as private.
    use std::os::unix::fs::PermissionsExt;
    let mode = drydock_runtime::private::shared_socket_mode();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(|e| {
        CliError::failure(format!(
            "cannot set the mode of {} to {mode:o}: {e}; check that this account owns the data directory",
            path.display()
        ))
    })?;
    Ok(listener)
}

/// The largest answer the client reads (a status or a list of executions).
const MAX_ANSWER: usize = 16 << 20;

/// GET `path` from the serve of `data_dir`: its status and JSON body.
/// `Ok(None)` when no serve runs there.
pub fn get(data_dir: &Path, path: &str) -> Result<Option<(u16, serde_json::Value)>, CliError> {
    let socket = socket_path(data_dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(format!("cannot start a client runtime: {e}")))?;
    rt.block_on(async {
        let stream = match tokio::net::UnixStream::connect(&socket).await {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Ok(None)
            }
            Err(e) => {
                return Err(CliError::failure(format!(
                    "cannot reach {}: {e}",
                    socket.display()
                )))
            }
        };
        let exchange = async {
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let request = hyper::Request::get(path)
                .header(hyper::header::HOST, "drydock")
                .body(Empty::<Bytes>::new())
                .expect("a GET with a fixed header is a valid request");
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?
                .to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, body))
        };
        let (status, body) = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| {
                CliError::failure(format!(
                    "the serve on {} did not answer within 10 s",
                    socket.display()
                ))
            })?
            .map_err(|e| {
                CliError::failure(format!("talking to the serve on {}: {e}", socket.display()))
            })?;
        let value = serde_json::from_slice(&body).map_err(|e| {
            CliError::failure(format!(
                "the serve on {} answered something that is not JSON: {e}",
                socket.display()
            ))
        })?;
        Ok(Some((status, value)))
    })
}
