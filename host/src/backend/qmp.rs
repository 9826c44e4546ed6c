//! A small QMP (QEMU Machine Protocol) client: JSON lines over a Unix
//! socket, commands with replies, and the events QEMU sends in between.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long a reply may take.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest QMP message read (one JSON line).
pub const MAX_MESSAGE_BYTES: u64 = 1 << 20;

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
        // Negotiation and replies are bounded in time; an events reader
        // lifts the limit with `set_read_timeout(None)`.
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        let writer = stream.try_clone()?;
        writer.set_write_timeout(Some(REPLY_TIMEOUT))?;
        let mut client = Self {
            reader: BufReader::new(stream),
            writer,
            events: Vec::new(),
        };
        client.read_message()?; // greeting
        client.execute("qmp_capabilities", json!({}))?;
        Ok(client)
    }

    /// How long a read may wait (`None`: forever, for an events reader).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        self.reader.get_ref().set_read_timeout(timeout)
    }

    /// Reads one message (reply or event) of at most [`MAX_MESSAGE_BYTES`].
    pub fn read_message(&mut self) -> std::io::Result<Value> {
        use std::io::Read;
        let mut line = String::new();
        if (&mut self.reader)
            .take(MAX_MESSAGE_BYTES)
            .read_line(&mut line)?
            == 0
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "QMP connection closed",
            ));
        }
        if !line.ends_with('\n') {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("QMP message longer than {MAX_MESSAGE_BYTES} bytes"),
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
        self.reply(command)
    }

    /// Runs a command with a file descriptor passed along (`SCM_RIGHTS`
    /// on the command's first bytes, as QEMU's `getfd`): drydock's VMM
    /// takes the volumes it hot-attaches this way, since it may open no
    /// file itself.
    pub fn execute_with_fd(
        &mut self,
        command: &str,
        arguments: Value,
        fd: std::os::fd::BorrowedFd<'_>,
    ) -> std::io::Result<Value> {
        use std::os::fd::AsRawFd;
        use vmm_sys_util::sock_ctrl_msg::ScmSocket;
        let msg = json!({ "execute": command, "arguments": arguments });
        let line = format!("{msg}\n");
        let sent = self
            .writer
            .send_with_fd(line.as_bytes(), fd.as_raw_fd())
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        self.writer.write_all(&line.as_bytes()[sent..])?;
        self.reply(command)
    }

    /// Reads until the reply to `command`, keeping events.
    fn reply(&mut self, command: &str) -> std::io::Result<Value> {
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
