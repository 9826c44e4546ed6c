//! Connecting to an instance's console service (see [`super::console_hub`]).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::HostError;

/// Where a new console connection starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleStart {
    /// Only what the guest writes from now on.
    Now,
    /// The in-memory tail of the current boot first.
    Tail,
    /// The current boot's log from this byte offset.
    Offset(u64),
}

/// A connection: the stream (raw console bytes) and where it started.
pub struct ConsoleConnection {
    pub stream: UnixStream,
    pub boot: u32,
    /// Byte offset in the boot's log of the first byte streamed.
    pub offset: u64,
}

/// Connects to the console of the instance whose directory is `dir`.
pub fn connect(
    dir: &Path,
    instance: &str,
    interactive: bool,
    who: &str,
    force: bool,
    start: ConsoleStart,
) -> Result<ConsoleConnection, HostError> {
    let path = dir.join("console.sock");
    let stream = UnixStream::connect(&path).map_err(|e| {
        HostError::Conflict(format!(
            "cannot reach the console of {instance} ({e}); is it running? (`drydock instances`)"
        ))
    })?;
    let from = match start {
        ConsoleStart::Now => json!("now"),
        ConsoleStart::Tail => json!("tail"),
        ConsoleStart::Offset(o) => json!(o),
    };
    let hello = json!({ "mode": if interactive { "write" } else { "read" }, "who": who, "force": force, "from": from });
    (&stream)
        .write_all(format!("{hello}\n").as_bytes())
        .map_err(|e| HostError::io("write to", &path, e))?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    // Read the reply one byte at a time so no console byte is swallowed by a buffer.
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match std::io::Read::read(&mut &stream, &mut byte) {
            Ok(1) if byte[0] == b'\n' => break,
            Ok(1) => line.push(byte[0]),
            Ok(_) => {
                return Err(HostError::Vmm(format!(
                    "the console of {instance} closed the connection"
                )))
            }
            Err(e) => return Err(HostError::io("read from", &path, e)),
        }
    }
    stream.set_read_timeout(None).ok();
    let reply: Value = serde_json::from_slice(&line)
        .map_err(|e| HostError::Vmm(format!("bad reply from the console of {instance}: {e}")))?;
    if reply["ok"] != true {
        return Err(HostError::Conflict(format!(
            "console of {instance}: {}",
            reply["error"].as_str().unwrap_or("refused")
        )));
    }
    Ok(ConsoleConnection {
        stream,
        boot: reply["boot"].as_u64().unwrap_or(0) as u32,
        offset: reply["offset"].as_u64().unwrap_or(0),
    })
}
