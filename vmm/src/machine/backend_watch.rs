//! One thread per network card that waits for frames on the card's TAP
//! and hands them to the card (which interrupts the guest). While the
//! card holds a frame for lack of receive buffers it does not watch the
//! TAP (it would spin on a readable descriptor); the card wakes it when
//! the guest gives buffers again. The thread lives for one boot.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vmm_sys_util::eventfd::EventFd;

use crate::devices::virtio::device::BackendInput;

/// How long a wait lasts before the stop flag is looked at again (a stop
/// also writes the wake descriptor; this is the fallback).
const POLL_MS: i32 = 500;

pub(super) struct BackendWatcher {
    stop: Arc<AtomicBool>,
    wake: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

impl BackendWatcher {
    /// Starts watching `backend` for card `index`; `wake` is the card's.
    pub(super) fn spawn(
        index: usize,
        backend: Arc<File>,
        wake: Arc<EventFd>,
        transport: Arc<Mutex<dyn BackendInput>>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, w) = (stop.clone(), wake.clone());
        let thread = std::thread::Builder::new()
            .name(format!("net{index}"))
            .spawn(move || watch(&backend, &w, &s, &transport))?;
        Ok(Self {
            stop,
            wake,
            thread: Some(thread),
        })
    }

    /// Ends the thread and waits for it.
    pub(super) fn stop(self) {
        drop(self)
    }
}

impl Drop for BackendWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.wake.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn watch(backend: &File, wake: &EventFd, stop: &AtomicBool, transport: &Mutex<dyn BackendInput>) {
    let lock = || {
        transport
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    while !stop.load(Ordering::SeqCst) {
        let want = lock().wants_backend_input();
        let mut fds = [
            libc::pollfd {
                fd: wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: backend.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let n: libc::nfds_t = if want { 2 } else { 1 };
        // SAFETY: `fds` holds `n` initialised pollfd entries and lives for
        // the call; poll writes only their `revents`.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), n, POLL_MS) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!("network card: waiting for frames failed: {e}");
            return;
        }
        if fds[0].revents != 0 {
            let _ = wake.read();
        }
        if want && fds[1].revents != 0 && !stop.load(Ordering::SeqCst) {
            lock().backend_input();
        }
    }
}
