//! An expect session as runbooks hold it (`ExpectHandle`: cheap to
//! clone, shared): expecting patterns, sending, running a command with
//! its exit code between sentinels, and logging out when the last handle
//! of a console goes.

use crate::expect::{Outcome, Pattern, PatternSet};
use drydock_runtime::interrupt::Interrupt;
use rhai::{Array, Dynamic, EvalAltResult, Map, Position};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::command::{command_line, quote_command};
use super::*;

/// An expect session usable from Rhai (cheap to clone, shared).
#[derive(Clone)]
pub struct ExpectHandle {
    pub(super) inner: Arc<Mutex<HandleState>>,
}

pub(super) struct HandleState {
    pub(super) session: Session,
    pub(super) interrupt: Arc<Interrupt>,
    pub(super) seq: u64,
    /// Distinguishes this handle's sentinels from earlier sessions' output
    /// still in the console's tail.
    pub(super) nonce: u32,
    pub(super) default_timeout: Duration,
    /// `login` reached a shell through this handle: when the handle goes
    /// (the step or runbook that held it ended), the shell is left, so the
    /// next person on the console finds a login prompt, not a root shell.
    pub(super) logged_in: bool,
    /// For an instance's console: its id. Several handles of one process
    /// share the console's shell; the last one to go logs out.
    pub(super) instance: Option<String>,
}

/// Per instance console: how many handles of this process are open, and
/// whether one of them logged in.
pub(super) static CONSOLE_USERS: Mutex<Option<std::collections::HashMap<String, (usize, bool)>>> =
    Mutex::new(None);

pub(super) fn console_users<T>(
    f: impl FnOnce(&mut std::collections::HashMap<String, (usize, bool)>) -> T,
) -> T {
    let mut g = CONSOLE_USERS.lock().unwrap_or_else(|p| p.into_inner());
    f(g.get_or_insert_with(Default::default))
}

impl Drop for HandleState {
    fn drop(&mut self) {
        let logged_in = match &self.instance {
            None => self.logged_in,
            Some(id) => console_users(|m| {
                let last = match m.get_mut(id) {
                    Some(e) => {
                        e.0 = e.0.saturating_sub(1);
                        e.0 == 0
                    }
                    None => true,
                };
                if last {
                    m.remove(id).is_some_and(|e| e.1) || self.logged_in
                } else {
                    false
                }
            }),
        };
        if logged_in {
            // Ctrl-C stops a command left running (a step that timed out),
            // then the shell is left. Best effort: the console may be gone.
            let _ = self.session.send(b"\x03");
            std::thread::sleep(Duration::from_millis(100));
            let _ = self.session.send(b"exit\r");
            std::thread::sleep(Duration::from_millis(100));
            tracing::debug!("console: logged out as the handle ended");
        }
    }
}

/// A number that differs between console handles (time and process based).
pub(super) fn session_nonce() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or_default();
    t ^ std::process::id().rotate_left(16)
}

impl ExpectHandle {
    pub fn new(session: Session, interrupt: Arc<Interrupt>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(HandleState {
                session,
                interrupt,
                seq: 0,
                nonce: session_nonce(),
                default_timeout: Duration::from_secs(60),
                logged_in: false,
                instance: None,
            })),
        }
    }

    /// `expect(patterns, timeout)`: a map #{ index, before, matched, captures }.
    pub fn expect(
        &self,
        pos: Position,
        list: Dynamic,
        timeout: Duration,
    ) -> Result<Map, Box<EvalAltResult>> {
        let (patterns, timeout_at, eof_at) = parse_patterns(pos, list)?;
        let mut st = self.inner.lock().unwrap();
        let set = if patterns.is_empty() {
            None
        } else {
            Some(PatternSet::new(&patterns).map_err(|e| err(pos, e))?)
        };
        let start = Instant::now();
        loop {
            st.interrupt.check().map_err(|i| i.into_rhai(pos))?;
            let left = timeout.saturating_sub(start.elapsed());
            let slice = left.min(Duration::from_millis(200));
            let outcome = match &set {
                Some(set) => st.session.expect(set, slice),
                None => {
                    let never =
                        PatternSet::new(&[Pattern::Regex(r"[^\s\S]".into())]).expect("valid");
                    st.session.expect(&never, slice)
                }
            }
            .map_err(|e| err(pos, format!("{}: {e}", st.session.describe())))?;
            let mut map = Map::new();
            match outcome {
                Outcome::Matched(m) => {
                    map.insert("index".into(), (m.index as i64).into());
                    map.insert("before".into(), m.before.into());
                    map.insert("matched".into(), m.matched.into());
                    let caps: Array = m
                        .captures
                        .into_iter()
                        .map(|c| c.map(Dynamic::from).unwrap_or(Dynamic::UNIT))
                        .collect();
                    map.insert("captures".into(), caps.into());
                    return Ok(map);
                }
                Outcome::Timeout { tail, .. } if left <= slice => {
                    if let Some(i) = timeout_at {
                        map.insert("index".into(), (i as i64).into());
                        map.insert("before".into(), tail.into());
                        return Ok(map);
                    }
                    let wanted = set.as_ref().map(|s| s.describe()).unwrap_or_default();
                    return Err(err(
                        pos,
                        format!(
                            "{}: no match for {wanted} within {}; last lines seen:\n{tail}",
                            st.session.describe(),
                            drydock_runtime::duration::format_duration(timeout)
                        ),
                    ));
                }
                Outcome::Timeout { .. } => continue,
                Outcome::Eof { before } => {
                    if let Some(i) = eof_at {
                        map.insert("index".into(), (i as i64).into());
                        map.insert("before".into(), before.into());
                        return Ok(map);
                    }
                    return Err(err(
                        pos,
                        format!(
                            "{}: the stream ended; last output:\n{before}",
                            st.session.describe()
                        ),
                    ));
                }
            }
        }
    }

    pub fn send(&self, pos: Position, text: &str) -> Result<(), Box<EvalAltResult>> {
        let mut st = self.inner.lock().unwrap();
        st.session
            .send(text.as_bytes())
            .map_err(|e| err(pos, format!("{}: cannot send: {e}", st.session.describe())))
    }

    pub(super) fn timeout(&self) -> Duration {
        self.inner.lock().unwrap().default_timeout
    }

    pub(super) fn expect_one(
        &self,
        pos: Position,
        patterns: Array,
        timeout: Duration,
    ) -> Result<Map, Box<EvalAltResult>> {
        self.expect(pos, Dynamic::from_array(patterns), timeout)
    }

    /// Waits until the console has been quiet for `quiet` (at most
    /// `limit`): after `Password: ` busybox's login turns echo off only a
    /// moment later, and a password typed before that would be echoed to
    /// the console (and its log) in clear.
    pub(super) fn wait_quiet(
        &self,
        pos: Position,
        quiet: Duration,
        limit: Duration,
    ) -> Result<(), Box<EvalAltResult>> {
        let start = Instant::now();
        let any: Array = vec![Dynamic::from(regex_map(r"(?s).+")), TIMEOUT.into()];
        while start.elapsed() < limit {
            let m = self.expect(pos, Dynamic::from_array(any.clone()), quiet)?;
            if m["index"].as_int().unwrap_or(-1) == 1 {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Runs a shell command and returns #{ stdout, exit_code }. The end is
    /// found by a sentinel the command prints, not by guessing the prompt.
    pub fn run(
        &self,
        pos: Position,
        cmd: &str,
        timeout: Duration,
    ) -> Result<Map, Box<EvalAltResult>> {
        let quoted = quote_command(cmd).map_err(|e| err(pos, e))?;
        let n = {
            let mut st = self.inner.lock().unwrap();
            st.seq += 1;
            st.session.clear();
            format!("{:x}x{}", st.nonce, st.seq)
        };
        // The echoed command line shows `"__ds7""__"` and `__dd7_"$?"__`; only
        // the output has `__ds7__` (where the output starts) and `__dd7_0__`
        // (where it ends, with the exit code). This holds however the line
        // editor wraps or redraws a long echoed command. The command itself
        // is single-quoted and run by `eval` (see [`command_line`]): a `#`,
        // an unbalanced quote or a trailing backslash stays inside it and
        // never swallows the end sentinel.
        self.send(pos, &format!("{}\r", command_line(&n, &quoted)))?;
        let m = self.expect_one(
            pos,
            vec![Dynamic::from(regex_map(&format!(r"__dd{n}_(\d+)__")))],
            timeout,
        )?;
        let before = m["before"].clone().into_string().unwrap_or_default();
        let start = format!("__ds{n}__");
        let stdout = match before.rfind(&start) {
            Some(i) => {
                let rest = &before[i + start.len()..];
                rest.strip_prefix("\r\n")
                    .or_else(|| rest.strip_prefix('\n'))
                    .unwrap_or(rest)
                    .to_string()
            }
            None => before,
        };
        // Line editors redraw with a carriage return at the start of a line.
        let stdout = stdout.trim_start_matches('\r').replace("\n\r", "\n");
        let code: i64 = m["captures"]
            .clone()
            .into_array()
            .ok()
            .and_then(|c| c.first().cloned())
            .and_then(|c| c.into_string().ok())
            .and_then(|c| c.parse().ok())
            .unwrap_or(-1);
        let mut out = Map::new();
        out.insert("stdout".into(), stdout.into());
        out.insert("exit_code".into(), code.into());
        Ok(out)
    }
}
