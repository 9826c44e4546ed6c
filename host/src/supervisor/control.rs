//! The control socket of an instance process: one command per
//! connection, one line each way (a [`ControlCommand`]'s line; the reply,
//! or `error: …`). The client is [`send_control`], the server
//! [`serve_control`].

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::command::ControlCommand;
use super::running::Shared;
use crate::HostError;

/// Control connections served at once; more are refused.
const MAX_CONTROL_CLIENTS: usize = 32;

/// The longest control command line accepted.
const MAX_CONTROL_LINE: u64 = 4096;

/// How a reply marks a conflict (the instance's state does not allow the
/// command) after `error: `.
const CONFLICT: &str = "conflict: ";

/// Sends one command to an instance's supervisor and returns its reply.
pub fn send_control(instance_dir: &Path, command: &ControlCommand) -> Result<String, HostError> {
    let path = instance_dir.join("control.sock");
    let mut stream = UnixStream::connect(&path).map_err(|e| {
        HostError::Vmm(format!(
            "cannot reach the instance process at {}: {e}",
            path.display()
        ))
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    stream
        .write_all(format!("{command}\n").as_bytes())
        .map_err(|e| HostError::io("write to", &path, e))?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .map_err(|e| HostError::io("read from", &path, e))?;
    let reply = reply.trim().to_string();
    match reply.strip_prefix("error: ") {
        Some(e) => Err(match e.strip_prefix(CONFLICT) {
            Some(why) => HostError::Conflict(why.to_string()),
            None => HostError::Vmm(e.to_string()),
        }),
        None => Ok(reply),
    }
}

pub(super) fn serve_control(shared: Arc<Shared>, listener: UnixListener) {
    let clients = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
        if clients.fetch_add(1, Ordering::SeqCst) >= MAX_CONTROL_CLIENTS {
            clients.fetch_sub(1, Ordering::SeqCst);
            let _ = (&stream).write_all(
                format!("error: too many control connections ({MAX_CONTROL_CLIENTS}); try again\n")
                    .as_bytes(),
            );
            continue;
        }
        let shared = shared.clone();
        let clients = clients.clone();
        std::thread::spawn(move || {
            control_session(&shared, &stream);
            clients.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

fn control_session(shared: &Arc<Shared>, stream: &UnixStream) {
    if drydock_runtime::private::admit("control", stream, |why| format!("error: {why}")).is_none() {
        return;
    }
    let mut line = String::new();
    let mut reader = BufReader::new(stream).take(MAX_CONTROL_LINE);
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let reply = if !line.ends_with('\n') {
        format!("error: a control command is one line of at most {MAX_CONTROL_LINE} bytes")
    } else {
        match ControlCommand::parse(line.trim()).and_then(|c| shared.handle(c)) {
            Ok(r) => r,
            // What the asker must change (the instance's state) is told
            // apart from a failure, so it reaches the user as one.
            Err(e @ HostError::Conflict(_)) => format!("error: {CONFLICT}{e}"),
            Err(e) => format!("error: {e}"),
        }
    };
    let _ = (&*stream).write_all(format!("{reply}\n").as_bytes());
}
