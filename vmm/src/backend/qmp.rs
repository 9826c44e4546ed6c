//! A small QMP (QEMU Machine Protocol) client: JSON lines over a Unix
//! socket, commands with replies, and the events QEMU sends in between.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A connected QMP session.
pub struct QmpClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Events received while waiting for replies.
    pub events: Vec<Value>,
}

impl QmpClient {
    /// Connects (retrying until `timeout` while QEMU starts) and negotiates.
    pub fn connect(socket: &Path, timeout: Duration) -> std::io::Result<Self> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(e) if start.elapsed() < timeout => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        };
        let writer = stream.try_clone()?;
        let mut client = Self {
            reader: BufReader::new(stream),
            writer,
            events: Vec::new(),
        };
        client.read_message()?; // greeting
        client.execute("qmp_capabilities", json!({}))?;
        Ok(client)
    }

    /// Reads one message (reply or event).
    pub fn read_message(&mut self) -> std::io::Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "QMP connection closed",
            ));
        }
        serde_json::from_str(&line)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// Runs a command and returns its `return` value; events that arrive
    /// first are kept in `events`.
    pub fn execute(&mut self, command: &str, arguments: Value) -> std::io::Result<Value> {
        let msg = json!({ "execute": command, "arguments": arguments });
        self.writer.write_all(format!("{msg}\n").as_bytes())?;
        loop {
            let v = self.read_message()?;
            if v.get("event").is_some() {
                self.events.push(v);
                continue;
            }
            if let Some(err) = v.get("error") {
                return Err(std::io::Error::other(format!(
                    "QMP {command}: {}",
                    err.get("desc").and_then(Value::as_str).unwrap_or("error")
                )));
            }
            return Ok(v.get("return").cloned().unwrap_or(Value::Null));
        }
    }

    /// A second handle that reads events while this one sends commands.
    pub fn try_clone_stream(&self) -> std::io::Result<UnixStream> {
        self.writer.try_clone()
    }
}
