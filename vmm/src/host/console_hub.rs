//! The console service of one instance: every byte the guest writes goes
//! to the boot's log file, an in-memory tail and every attached reader;
//! one interactive writer at a time feeds the guest's serial input.
//!
//! Clients connect to `console.sock` in the instance directory and send
//! one JSON line: `{"mode": "read"|"write", "who": NAME, "force": BOOL,
//! "from": "now"|"tail"|OFFSET}`. The reply is one JSON line (`{"ok": true,
//! "boot": N, "offset": BYTES}` or `{"ok": false, "error": ...}`), then the
//! raw console stream. A writer's bytes go to the guest. Readers keep
//! streaming across guest reboots. Only the owner's account, root and the
//! sharing group may connect (checked on the peer's credentials); the
//! holder of the console is named by its account, `who` is only a label.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::ChildStdin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

/// How much of the current boot's console is kept in memory (EC2 keeps 64 KiB).
pub const CONSOLE_TAIL_BYTES: usize = 64 * 1024;

struct Subscriber {
    id: u64,
    stream: UnixStream,
}

struct WriterSlot {
    id: u64,
    who: String,
    since: String,
    stream: UnixStream,
}

struct Output {
    log: File,
    log_path: std::path::PathBuf,
    boot: u32,
    offset: u64,
    tail: VecDeque<u8>,
    subscribers: Vec<Subscriber>,
}

/// The console of one running instance.
pub struct ConsoleHub {
    output: Mutex<Output>,
    input: Mutex<Option<ChildStdin>>,
    writer: Mutex<Option<WriterSlot>>,
    next_id: AtomicU64,
}

#[derive(Deserialize)]
struct Hello {
    mode: String,
    #[serde(default)]
    who: String,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    from: serde_json::Value,
}

fn now_text() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl ConsoleHub {
    pub fn new(
        log: File,
        log_path: std::path::PathBuf,
        boot: u32,
        input: Option<ChildStdin>,
    ) -> Self {
        Self {
            output: Mutex::new(Output {
                log,
                log_path,
                boot,
                offset: 0,
                tail: VecDeque::with_capacity(CONSOLE_TAIL_BYTES),
                subscribers: Vec::new(),
            }),
            input: Mutex::new(input),
            writer: Mutex::new(None),
            next_id: AtomicU64::new(1),
        }
    }

    /// Takes bytes the guest wrote: log, tail, every reader. A reader that
    /// cannot keep up for two seconds is dropped (it can resume by offset).
    pub fn output(&self, bytes: &[u8]) {
        let mut out = self.output.lock().unwrap();
        let _ = out.log.write_all(bytes);
        out.offset += bytes.len() as u64;
        out.tail.extend(bytes);
        let excess = out.tail.len().saturating_sub(CONSOLE_TAIL_BYTES);
        out.tail.drain(..excess);
        out.subscribers
            .retain_mut(|s| s.stream.write_all(bytes).is_ok());
    }

    /// Starts the log of a new boot (after a reset); readers keep streaming.
    pub fn new_boot(&self, boot: u32, log: File, log_path: std::path::PathBuf) {
        let mut out = self.output.lock().unwrap();
        out.log = log;
        out.log_path = log_path;
        out.boot = boot;
        out.offset = 0;
        out.tail.clear();
    }

    /// The in-memory tail of the current boot.
    pub fn tail(&self) -> Vec<u8> {
        let out = self.output.lock().unwrap();
        let (a, b) = out.tail.as_slices();
        [a, b].concat()
    }

    /// Sends bytes to the guest's serial input.
    pub fn input(&self, bytes: &[u8]) -> std::io::Result<()> {
        match self.input.lock().unwrap().as_mut() {
            Some(stdin) => {
                stdin.write_all(bytes)?;
                stdin.flush()
            }
            None => Err(std::io::Error::other("the VMM has no console input")),
        }
    }

    /// Accepts console clients until the listener closes. A client whose
    /// account may not use the console (see
    /// [`drydock_runtime::access::check_peer`]) gets one refusal line
    /// (`{"ok": false, "error": ...}`) and is disconnected.
    pub fn serve(self: Arc<Self>, listener: UnixListener) {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let refused = |why: &str| json!({ "ok": false, "error": why }).to_string();
            let Some(uid) = crate::private::admit("console", &stream, refused) else {
                continue;
            };
            let hub = self.clone();
            std::thread::spawn(move || hub.client(stream, uid));
        }
    }

    fn client(self: Arc<Self>, stream: UnixStream, uid: u32) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut line = String::new();
        let Ok(reader_stream) = stream.try_clone() else {
            return;
        };
        let mut reader = BufReader::new(reader_stream);
        if reader.read_line(&mut line).is_err() {
            return;
        }
        let reply = |s: &UnixStream, v: serde_json::Value| {
            let mut s = s;
            s.write_all(format!("{v}\n").as_bytes())
        };
        let hello: Hello = match serde_json::from_str(&line) {
            Ok(h) => h,
            Err(e) => {
                let _ = reply(
                    &stream,
                    json!({ "ok": false, "error": format!("bad hello line: {e}") }),
                );
                return;
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        // The name a client gives is a label; the account is the peer's.
        let account = drydock_runtime::identity::Identity::of_uid(uid).name;
        let label = drydock_runtime::display::sanitize(&hello.who).into_owned();
        let who = if label.is_empty() {
            format!("{account} (client {id})")
        } else if label == account || label.starts_with(&format!("{account} (")) {
            label
        } else {
            format!("{label} (account {account})")
        };
        let writer = match hello.mode.as_str() {
            "read" => false,
            "write" => true,
            other => {
                let _ = reply(
                    &stream,
                    json!({ "ok": false, "error": format!("unknown mode `{other}`; use read or write") }),
                );
                return;
            }
        };
        if writer {
            let mut slot = self.writer.lock().unwrap();
            if let Some(holder) = slot.as_ref() {
                if !hello.force {
                    let _ = reply(
                        &stream,
                        json!({ "ok": false, "error": format!(
                            "the console is held by {} (since {}); use --force to take it over, or --read-only to watch",
                            holder.who, holder.since
                        ) }),
                    );
                    return;
                }
                let mut old = &holder.stream;
                let _ = old.write_all(
                    format!("\r\n[drydock: console taken over by {who}]\r\n").as_bytes(),
                );
                let _ = holder.stream.shutdown(std::net::Shutdown::Both);
            }
            let Ok(notify) = stream.try_clone() else {
                return;
            };
            *slot = Some(WriterSlot {
                id,
                who: who.clone(),
                since: now_text(),
                stream: notify,
            });
        }
        // Register under the output lock: nothing is lost or sent twice
        // between the catch-up bytes and the live stream.
        {
            let mut out = self.output.lock().unwrap();
            let catch_up: Vec<u8> = match &hello.from {
                serde_json::Value::String(s) if s == "tail" => {
                    let (a, b) = out.tail.as_slices();
                    [a, b].concat()
                }
                serde_json::Value::Number(n) => {
                    let from = n.as_u64().unwrap_or(0).min(out.offset);
                    read_range(&out.log_path, from, out.offset)
                }
                _ => Vec::new(),
            };
            let ok = json!({ "ok": true, "boot": out.boot, "offset": out.offset - catch_up.len() as u64 });
            let Ok(mut live) = stream.try_clone() else {
                return;
            };
            if reply(&live, ok).is_err() || live.write_all(&catch_up).is_err() {
                return;
            }
            let _ = live.set_write_timeout(Some(Duration::from_secs(2)));
            out.subscribers.push(Subscriber { id, stream: live });
        }
        // Input from the client: a writer's bytes go to the guest; any
        // client's end (EOF) unregisters it.
        let _ = stream.set_read_timeout(None);
        let mut buf = [0u8; 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let holds = self
                        .writer
                        .lock()
                        .unwrap()
                        .as_ref()
                        .is_some_and(|w| w.id == id);
                    if writer && holds {
                        let _ = self.input(&buf[..n]);
                    }
                }
            }
        }
        self.output
            .lock()
            .unwrap()
            .subscribers
            .retain(|s| s.id != id);
        let mut slot = self.writer.lock().unwrap();
        if slot.as_ref().is_some_and(|w| w.id == id) {
            *slot = None;
        }
    }
}

fn read_range(path: &std::path::Path, from: u64, to: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let Ok(f) = File::open(path) else {
        return Vec::new();
    };
    let mut buf = vec![0u8; (to - from) as usize];
    match f.read_exact_at(&mut buf, from) {
        Ok(()) => buf,
        Err(_) => Vec::new(),
    }
}
