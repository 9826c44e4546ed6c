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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

/// How much of the current boot's console is kept in memory (EC2 keeps 64 KiB).
pub const CONSOLE_TAIL_BYTES: usize = 64 * 1024;

/// Bytes of guest output queued for one reader. A reader whose queue is
/// full is dropped with a message saying the offset to resume from; the
/// hub never waits for a reader.
pub const READER_QUEUE_BYTES: usize = 4 << 20;

/// Console clients served at once; more are refused.
pub const MAX_CONSOLE_CLIENTS: usize = 64;

/// The longest hello line accepted.
const HELLO_MAX_BYTES: u64 = 4096;

/// Chunks of console input queued for the guest (a client reads 1 KiB at a
/// time: 64 KiB). Input beyond it is refused, never queued without bound.
pub const INPUT_QUEUE_CHUNKS: usize = 64;

/// How long a write to one client may block before the client is dropped.
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

struct Subscriber {
    id: u64,
    queue: Sender<Arc<[u8]>>,
    /// Bytes sent to `queue` and not yet written to the client.
    queued: Arc<AtomicUsize>,
    /// Set (offset + 1) when the reader fell behind and was dropped.
    dropped: Arc<AtomicU64>,
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
    input: Mutex<Option<SyncSender<Vec<u8>>>>,
    writer: Mutex<Option<WriterSlot>>,
    next_id: AtomicU64,
    clients: AtomicUsize,
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

/// What a new reader is sent before the live stream.
enum CatchUp {
    None,
    Bytes(Vec<u8>),
    /// A byte range of a boot's log file, read by the reader's own thread.
    File {
        path: std::path::PathBuf,
        from: u64,
        to: u64,
    },
}

/// Counts a console client for as long as it is served.
struct ClientSlot(Arc<ConsoleHub>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Feeds queued input to the VMM's stdin on its own thread: a guest that
/// does not read its serial line never blocks the hub.
fn spawn_input_writer(stdin: ChildStdin) -> SyncSender<Vec<u8>> {
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(INPUT_QUEUE_CHUNKS);
    std::thread::spawn(move || {
        let mut stdin = stdin;
        for chunk in rx {
            if stdin.write_all(&chunk).and_then(|_| stdin.flush()).is_err() {
                return;
            }
        }
    });
    tx
}

/// Sends one reader its reply line, its catch-up and then the live
/// stream, on its own thread. Ends when the hub drops the reader (with a
/// message if it fell behind), the client goes away or a write blocks for
/// [`CLIENT_WRITE_TIMEOUT`].
fn reader_thread(
    mut stream: UnixStream,
    reply: String,
    catch_up: CatchUp,
    queue: Receiver<Arc<[u8]>>,
    queued: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
) {
    let _ = stream.set_write_timeout(Some(CLIENT_WRITE_TIMEOUT));
    let sent = (|| -> std::io::Result<()> {
        stream.write_all(reply.as_bytes())?;
        match catch_up {
            CatchUp::None => {}
            CatchUp::Bytes(b) => stream.write_all(&b)?,
            CatchUp::File { path, from, to } => copy_range(&path, from, to, &mut stream)?,
        }
        for chunk in queue.iter() {
            stream.write_all(&chunk)?;
            queued.fetch_sub(chunk.len(), Ordering::SeqCst);
        }
        Ok(())
    })();
    if sent.is_ok() {
        let at = dropped.load(Ordering::SeqCst);
        if at > 0 {
            let _ = stream.write_all(
                format!(
                    "\r\n[drydock: this reader fell behind the console and was disconnected; \
                     continue from offset {}]\r\n",
                    at - 1
                )
                .as_bytes(),
            );
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
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
            input: Mutex::new(input.map(spawn_input_writer)),
            writer: Mutex::new(None),
            next_id: AtomicU64::new(1),
            clients: AtomicUsize::new(0),
        }
    }

    /// Takes bytes the guest wrote: log, tail, every reader's queue. Never
    /// waits for a reader: one whose queue is full is dropped (it is told
    /// the offset to continue from).
    pub fn output(&self, bytes: &[u8]) {
        let mut out = self.output.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = out.log.write_all(bytes) {
            tracing::warn!("cannot write the console log: {e}");
        }
        let at = out.offset;
        out.offset += bytes.len() as u64;
        out.tail.extend(bytes);
        let excess = out.tail.len().saturating_sub(CONSOLE_TAIL_BYTES);
        out.tail.drain(..excess);
        if out.subscribers.is_empty() {
            return;
        }
        let chunk: Arc<[u8]> = Arc::from(bytes);
        out.subscribers.retain(|s| {
            if s.queued.load(Ordering::SeqCst) + chunk.len() > READER_QUEUE_BYTES {
                tracing::info!(reader = s.id, "console reader fell behind; dropped");
                s.dropped.store(at + 1, Ordering::SeqCst);
                return false;
            }
            s.queued.fetch_add(chunk.len(), Ordering::SeqCst);
            s.queue.send(chunk.clone()).is_ok()
        });
    }

    /// Starts the log of a new boot (after a reset); readers keep streaming.
    pub fn new_boot(&self, boot: u32, log: File, log_path: std::path::PathBuf) {
        let mut out = self.output.lock().unwrap_or_else(|e| e.into_inner());
        out.log = log;
        out.log_path = log_path;
        out.boot = boot;
        out.offset = 0;
        out.tail.clear();
    }

    /// The in-memory tail of the current boot.
    pub fn tail(&self) -> Vec<u8> {
        let out = self.output.lock().unwrap_or_else(|e| e.into_inner());
        let (a, b) = out.tail.as_slices();
        [a, b].concat()
    }

    /// Queues bytes for the guest's serial input; refused when
    /// [`INPUT_QUEUE_CHUNKS`] are already waiting (the guest is not reading).
    pub fn input(&self, bytes: &[u8]) -> std::io::Result<()> {
        let guard = self.input.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = guard.as_ref() else {
            return Err(std::io::Error::other("the VMM has no console input"));
        };
        match tx.try_send(bytes.to_vec()) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "the guest is not reading its console input (the input queue is full)",
            )),
            Err(TrySendError::Disconnected(_)) => {
                Err(std::io::Error::other("the VMM's console input is closed"))
            }
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
            let Some(uid) = drydock_runtime::private::admit("console", &stream, refused) else {
                continue;
            };
            if self.clients.fetch_add(1, Ordering::SeqCst) >= MAX_CONSOLE_CLIENTS {
                self.clients.fetch_sub(1, Ordering::SeqCst);
                let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = (&stream).write_all(
                    format!(
                        "{}\n",
                        refused(&format!(
                            "too many console clients ({MAX_CONSOLE_CLIENTS}); try again when one has gone"
                        ))
                    )
                    .as_bytes(),
                );
                continue;
            }
            let slot = ClientSlot(self.clone());
            let hub = self.clone();
            std::thread::spawn(move || {
                let _slot = slot;
                hub.client(stream, uid)
            });
        }
    }

    fn client(self: Arc<Self>, stream: UnixStream, uid: u32) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = stream.set_write_timeout(Some(CLIENT_WRITE_TIMEOUT));
        let mut line = String::new();
        let Ok(reader_stream) = stream.try_clone() else {
            return;
        };
        let mut reader = BufReader::new(reader_stream);
        if (&mut reader)
            .take(HELLO_MAX_BYTES)
            .read_line(&mut line)
            .is_err()
        {
            return;
        }
        let reply = |s: &UnixStream, v: serde_json::Value| {
            let mut s = s;
            s.write_all(format!("{v}\n").as_bytes())
        };
        if !line.ends_with('\n') {
            let _ = reply(
                &stream,
                json!({ "ok": false, "error": format!("the hello line must be one JSON line of at most {HELLO_MAX_BYTES} bytes") }),
            );
            return;
        }
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
            let mut slot = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(holder) = slot.as_ref() {
                // The same holder (one execution, one account) opening the
                // console again takes it over from itself.
                if !hello.force && holder.who != who {
                    let _ = reply(
                        &stream,
                        json!({ "ok": false, "error": format!(
                            "the console is held by {} (since {}); use --force to take it over, or --read-only to watch",
                            holder.who, holder.since
                        ) }),
                    );
                    return;
                }
                // Best effort: an old writer that does not read is not waited for.
                let _ = holder.stream.set_nonblocking(true);
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
        // between the catch-up bytes and the live stream. Nothing is
        // written to the client here: its own thread sends the reply, the
        // catch-up (read from the log file in chunks) and the live queue.
        {
            let Ok(live) = stream.try_clone() else {
                return;
            };
            let mut out = self.output.lock().unwrap_or_else(|e| e.into_inner());
            let (catch_up, start) = match &hello.from {
                serde_json::Value::String(s) if s == "tail" => {
                    let (a, b) = out.tail.as_slices();
                    let bytes = [a, b].concat();
                    let start = out.offset - bytes.len() as u64;
                    (CatchUp::Bytes(bytes), start)
                }
                serde_json::Value::Number(n) => {
                    let from = n.as_u64().unwrap_or(0).min(out.offset);
                    (
                        CatchUp::File {
                            path: out.log_path.clone(),
                            from,
                            to: out.offset,
                        },
                        from,
                    )
                }
                _ => (CatchUp::None, out.offset),
            };
            let ok = json!({ "ok": true, "boot": out.boot, "offset": start });
            let (tx, rx) = mpsc::channel();
            let dropped = Arc::new(AtomicU64::new(0));
            let queued = Arc::new(AtomicUsize::new(0));
            out.subscribers.push(Subscriber {
                id,
                queue: tx,
                queued: queued.clone(),
                dropped: dropped.clone(),
            });
            drop(out);
            let reply = format!("{ok}\n");
            std::thread::spawn(move || reader_thread(live, reply, catch_up, rx, queued, dropped));
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
                        .unwrap_or_else(|e| e.into_inner())
                        .as_ref()
                        .is_some_and(|w| w.id == id);
                    if writer && holds {
                        if let Err(e) = self.input(&buf[..n]) {
                            tracing::debug!("console input dropped: {e}");
                        }
                    }
                }
            }
        }
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .subscribers
            .retain(|s| s.id != id);
        let mut slot = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|w| w.id == id) {
            *slot = None;
        }
    }
}

/// Copies bytes `from..to` of a log file to `to_stream` in 64 KiB chunks
/// (a log can be far larger than memory should hold). A log that is
/// shorter than expected ends the copy early.
fn copy_range(
    path: &std::path::Path,
    from: u64,
    to: u64,
    to_stream: &mut impl Write,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let Ok(f) = File::open(path) else {
        return Ok(());
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = from;
    while at < to {
        let want = usize::try_from(to - at)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = f.read_at(&mut buf[..want], at)?;
        if n == 0 {
            break;
        }
        to_stream.write_all(&buf[..n])?;
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_range_streams_in_chunks_and_stops_at_the_end_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let mut out = Vec::new();
        copy_range(&path, 10, 200_010, &mut out).unwrap();
        assert_eq!(out, &data[10..200_010]);
        let mut out = Vec::new();
        copy_range(&path, 299_990, 400_000, &mut out).unwrap();
        assert_eq!(out, &data[299_990..]);
    }

    #[test]
    fn a_reader_that_never_reads_is_dropped_and_never_blocks_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("boot-0001.log");
        let log = File::create(&path).unwrap();
        let hub = Arc::new(ConsoleHub::new(log, path.clone(), 1, None));
        let sock = dir.path().join("console.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        {
            let hub = hub.clone();
            std::thread::spawn(move || hub.serve(listener));
        }
        // A megabyte of output already in the log before the reader comes.
        let line = [b'x'; 8192];
        for _ in 0..128 {
            hub.output(&line);
        }
        let mut stalled = UnixStream::connect(&sock).unwrap();
        stalled
            .write_all(b"{\"mode\": \"read\", \"from\": 0}\n")
            .unwrap();
        // Wait until it is registered.
        let start = std::time::Instant::now();
        while hub.output.lock().unwrap().subscribers.is_empty() {
            assert!(start.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(5));
        }
        // The guest goes on printing: never blocked by the reader.
        let start = std::time::Instant::now();
        for _ in 0..(READER_QUEUE_BYTES * 2 / line.len()) {
            hub.output(&line);
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "output waited for a reader: {:?}",
            start.elapsed()
        );
        assert!(
            hub.output.lock().unwrap().subscribers.is_empty(),
            "the reader that fell behind was dropped"
        );
        // It can read what it got, then the message that says where to go on.
        let mut got = Vec::new();
        stalled
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let _ = stalled.read_to_end(&mut got);
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("{\"boot\":1,\"offset\":0,\"ok\":true}\n")
                || text.contains("\"ok\":true")
        );
        assert!(
            text.contains("fell behind the console"),
            "{}",
            &text[text.len().saturating_sub(200)..]
        );
    }

    #[test]
    fn input_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("boot-0001.log");
        // A child that never reads its stdin.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let hub = ConsoleHub::new(File::create(&path).unwrap(), path, 1, child.stdin.take());
        let chunk = [b'a'; 1024];
        let mut refused = None;
        for n in 0..10_000 {
            if let Err(e) = hub.input(&chunk) {
                refused = Some((n, e));
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        let (n, e) = refused.expect("input beyond the queue is refused");
        assert!(n < 200, "{n} chunks were queued");
        assert!(e.to_string().contains("not reading"), "{e}");
    }
}
