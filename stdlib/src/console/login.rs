//! Logging in on a console (answering only prompts that follow drydock's
//! own input, typing the password after a quiet console) and out.

use rhai::{Array, Dynamic, EvalAltResult, Position};
use std::time::Duration;

use super::*;

impl ExpectHandle {
    /// Logs in on a getty, whether the login prompt is already shown, not
    /// yet shown, or a shell is already open.
    ///
    /// Only prompts that follow its own input are answered: what the
    /// console showed before (the prompts of a run cut off by a crash,
    /// someone else's typing) is dropped, and `Password: ` is answered
    /// only right after this call typed the user name — a password prompt
    /// it did not cause gets an empty answer (which fails it and brings a
    /// fresh login prompt), never the password. The password is typed
    /// once the console has been quiet for a moment (echo off); refused,
    /// it is typed once more after a longer quiet (a slow guest's `login`
    /// may not have turned echo off yet) before the refusal is an error.
    pub fn login(
        &self,
        pos: Position,
        user: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<(), Box<EvalAltResult>> {
        // Drop what the console shows until it is quiet (the tail a new
        // connection starts with, a getty being respawned), then ask for a
        // fresh prompt.
        self.wait_quiet(pos, Duration::from_millis(700), Duration::from_secs(30))?;
        self.inner.lock().unwrap().session.clear();
        self.send(pos, "\r")?;
        let prompts: Array = vec![
            "login: ".into(),
            "Password: ".into(),
            Dynamic::from(regex_map(r"[#$] $")),
            "Login incorrect".into(),
        ];
        let mut sent_user = false;
        let mut sent_password = false;
        let mut user_sent_at = std::time::Instant::now();
        // A refused password is typed once more, after a longer quiet: on
        // a slow guest (nested emulation) `login` can turn echo off after
        // the quiet it was given, and the password typed then is lost.
        let mut retried = false;
        let mut min_quiet = Duration::from_millis(500);
        for _ in 0..12 {
            let m = self.expect_one(pos, prompts.clone(), timeout)?;
            match m["index"].as_int().unwrap_or(-1) {
                0 => {
                    self.send(pos, &format!("{user}\r"))?;
                    sent_user = true;
                    sent_password = false;
                    user_sent_at = std::time::Instant::now();
                }
                1 if sent_user && !sent_password => {
                    // `login` prints its prompt, then turns echo off and
                    // flushes input: typed before that, the password would
                    // be echoed on the console and thrown away. A slow
                    // guest (one under emulation, a loaded host) takes
                    // longer for both: the quiet asked for grows with how
                    // long the prompt took to come.
                    let quiet =
                        (user_sent_at.elapsed() * 2).clamp(min_quiet, Duration::from_secs(5));
                    self.wait_quiet(pos, quiet, Duration::from_secs(10))?;
                    self.send(pos, &format!("{password}\r"))?;
                    sent_password = true;
                }
                // A password prompt this call did not cause.
                1 => self.send(pos, "\r")?,
                2 => {
                    let mut st = self.inner.lock().unwrap();
                    st.logged_in = true;
                    if let Some(id) = &st.instance {
                        console_users(|m| m.entry(id.clone()).or_insert((1, false)).1 = true);
                    }
                    return Ok(());
                }
                3 if sent_password && !retried => {
                    retried = true;
                    sent_user = false;
                    sent_password = false;
                    min_quiet = Duration::from_secs(2);
                }
                _ if sent_password => {
                    return Err(err(
                        pos,
                        format!(
                            "login as {user} failed: the password was refused (Login incorrect)"
                        ),
                    ))
                }
                _ => {}
            }
        }
        Err(err(
            pos,
            format!("login as {user} did not reach a shell prompt"),
        ))
    }

    /// Leaves the shell `login` opened (the console shows a login prompt
    /// again); nothing when this handle did not log in.
    pub fn logout(&self, pos: Position) -> Result<(), Box<EvalAltResult>> {
        let was = {
            let mut st = self.inner.lock().unwrap();
            let shared = match &st.instance {
                Some(id) => console_users(|m| {
                    m.get_mut(id)
                        .map(|e| std::mem::replace(&mut e.1, false))
                        .unwrap_or(false)
                }),
                None => false,
            };
            std::mem::replace(&mut st.logged_in, false) || shared
        };
        if was {
            self.send(pos, "\x03")?;
            self.send(pos, "exit\r")?;
            self.expect_one(pos, vec!["login: ".into()], Duration::from_secs(60))?;
        }
        Ok(())
    }
}
