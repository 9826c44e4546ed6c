//! Ctrl-C while an entry runs: the terminal sends SIGINT (the line editor
//! is not in raw mode then). The handler only sets a flag; a watcher
//! thread turns it into an interruption of the running entry, or a
//! cancel request for the execution `:run` is running.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::session::Canceller;

static PENDING: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    PENDING.store(true, Ordering::SeqCst);
}

/// The execution `:run` is running, with its data directory.
pub type Running = Arc<Mutex<Option<(std::path::PathBuf, String)>>>;

/// Watches for Ctrl-C until dropped.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    pub fn start(canceller: Canceller, running: Running, interactive: bool) -> Self {
        // SAFETY: an all-zero sigaction is a valid starting value; we set
        // a handler that only stores to an atomic, with an empty mask.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigint as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
                if !PENDING.swap(false, Ordering::SeqCst) {
                    continue;
                }
                let exec = running.lock().ok().and_then(|r| r.clone());
                if let Some((dir, id)) = exec {
                    tracing::info!("repl: Ctrl-C: cancelling {id}");
                    match drydock_runtime::Journal::open(&dir)
                        .and_then(|mut j| j.request_cancel(&id))
                    {
                        Ok(()) => eprintln!("\r\n[Ctrl-C: cancelling {id}; its cleanups run]"),
                        Err(e) => eprintln!("\r\n[Ctrl-C: cannot cancel {id}: {e}]"),
                    }
                } else if canceller.busy() {
                    canceller.fire();
                } else if !interactive {
                    // A script reading its entries: Ctrl-C ends it.
                    std::process::exit(130);
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
