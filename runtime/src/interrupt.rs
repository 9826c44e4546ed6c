//! Deadlines and cancellation, shared by the engine and by primitives that
//! wait (sleep, retries, approvals, commands), so a step timeout or a
//! `drydock cancel` stops them at the next safe point.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why a wait or a script was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// Someone asked the execution to stop (`drydock cancel`).
    Cancelled,
    /// The deadline of the running step passed.
    DeadlinePassed,
}

/// Marker values carried by the non-catchable Rhai error that stops a script.
pub(crate) const CANCELLED_MARK: &str = "drydock:cancelled";
pub(crate) const DEADLINE_MARK: &str = "drydock:deadline";

impl Interruption {
    /// The Rhai error that unwinds the script for this interruption; a
    /// runbook's `try`/`catch` cannot swallow it.
    pub fn into_rhai(self, pos: rhai::Position) -> Box<rhai::EvalAltResult> {
        let mark = match self {
            Self::Cancelled => CANCELLED_MARK,
            Self::DeadlinePassed => DEADLINE_MARK,
        };
        rhai::EvalAltResult::ErrorTerminated(mark.into(), pos).into()
    }
}

type CancelProbe = Box<dyn Fn() -> bool + Send + Sync>;

/// Shared deadline stack and cancellation flag of one execution.
pub struct Interrupt {
    deadlines: Mutex<Vec<(u64, Instant)>>,
    next_token: Mutex<u64>,
    probe: Option<CancelProbe>,
    last_probe: Mutex<Option<Instant>>,
    cancelled: AtomicBool,
    shielded: AtomicBool,
}

const PROBE_EVERY: Duration = Duration::from_millis(200);
const SLEEP_SLICE: Duration = Duration::from_millis(20);

impl Interrupt {
    /// An interrupt that is never cancelled (REPL, tests, validation).
    pub fn never() -> Self {
        Self::with_probe(None)
    }

    /// An interrupt whose cancellation is read from `probe` (at most every 200 ms).
    pub fn with_probe(probe: Option<CancelProbe>) -> Self {
        Self {
            deadlines: Mutex::new(Vec::new()),
            next_token: Mutex::new(0),
            probe,
            last_probe: Mutex::new(None),
            cancelled: AtomicBool::new(false),
            shielded: AtomicBool::new(false),
        }
    }

    /// Pushes a deadline; returns a token for [`Interrupt::pop_deadline`].
    pub fn push_deadline(&self, at: Instant) -> u64 {
        let mut next = self.next_token.lock().unwrap();
        *next += 1;
        self.deadlines.lock().unwrap().push((*next, at));
        *next
    }

    /// Removes a deadline pushed earlier.
    pub fn pop_deadline(&self, token: u64) {
        self.deadlines.lock().unwrap().retain(|(t, _)| *t != token);
    }

    /// Whether the deadline with this token has passed.
    pub fn deadline_passed(&self, token: u64) -> bool {
        let now = Instant::now();
        self.deadlines
            .lock()
            .unwrap()
            .iter()
            .any(|(t, at)| *t == token && *at <= now)
    }

    /// The nearest deadline, if any step set one.
    pub fn nearest_deadline(&self) -> Option<Instant> {
        self.deadlines
            .lock()
            .unwrap()
            .iter()
            .map(|(_, at)| *at)
            .min()
    }

    /// While shielded (cleanups running), cancellation is not reported.
    pub fn set_shielded(&self, shielded: bool) {
        self.shielded.store(shielded, Ordering::SeqCst);
    }

    /// Marks the execution cancelled from inside this process.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// Whether cancellation was requested (probing the journal if due).
    pub fn is_cancelled(&self) -> bool {
        if self.shielded.load(Ordering::SeqCst) {
            return false;
        }
        if self.cancelled.load(Ordering::SeqCst) {
            return true;
        }
        if let Some(probe) = &self.probe {
            let mut last = self.last_probe.lock().unwrap();
            if last.is_none_or(|t| t.elapsed() >= PROBE_EVERY) {
                *last = Some(Instant::now());
                drop(last);
                if probe() {
                    self.cancelled.store(true, Ordering::SeqCst);
                    return true;
                }
            }
        }
        false
    }

    /// Checks for cancellation and passed deadlines.
    pub fn check(&self) -> Result<(), Interruption> {
        if self.is_cancelled() {
            return Err(Interruption::Cancelled);
        }
        if self.nearest_deadline().is_some_and(|d| d <= Instant::now()) {
            return Err(Interruption::DeadlinePassed);
        }
        Ok(())
    }

    /// Sleeps for `d`, waking early when cancelled or a deadline passes.
    pub fn sleep(&self, d: Duration) -> Result<(), Interruption> {
        let end = Instant::now() + d;
        loop {
            self.check()?;
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            std::thread::sleep((end - now).min(SLEEP_SLICE));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_stops_at_the_deadline() {
        let i = Interrupt::never();
        let t = i.push_deadline(Instant::now() + Duration::from_millis(50));
        let start = Instant::now();
        assert_eq!(
            i.sleep(Duration::from_secs(5)),
            Err(Interruption::DeadlinePassed)
        );
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(i.deadline_passed(t));
        i.pop_deadline(t);
        assert_eq!(i.sleep(Duration::from_millis(1)), Ok(()));
    }

    #[test]
    fn probe_cancels_unless_shielded() {
        let i = Interrupt::with_probe(Some(Box::new(|| true)));
        i.set_shielded(true);
        assert!(i.check().is_ok());
        i.set_shielded(false);
        assert_eq!(i.check(), Err(Interruption::Cancelled));
    }
}
