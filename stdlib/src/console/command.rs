//! The line `run` sends to a console's shell: the command quoted as one
//! word, syntax-checked in a subshell, run with `eval`, its exit code
//! between sentinels; refused when a terminal would act on it.

/// The longest line a terminal in canonical mode takes (Linux: 4095
/// bytes), less the sentinels, for the command that appears twice on it.
pub(super) const MAX_COMMAND_LINE: usize = 1800;

/// The line `run` sends: the start sentinel, the command's syntax checked
/// in a subshell without running it (`if false; then CMD fi`: a syntax
/// error there ends only the subshell — in the shell itself it would
/// abort the rest of the line, end sentinel included), then the command
/// run by `eval` in the shell itself (so `cd` and variables stay), then the
/// end sentinel with the exit code (2 for a command the shell cannot
/// parse, as shells do).
pub fn command_line(n: &str, quoted: &str) -> String {
    format!(
        "echo \"__ds{n}\"\"__\"; \
         if (eval \"$(printf 'if false; then\\n%s\\nfi' {quoted})\") 2>/dev/null; \
         then eval {quoted}; \
         else echo 'drydock: the shell cannot parse this command' >&2; (exit 2); fi; \
         echo \"__dd{n}_\"$?\"__\""
    )
}

/// `cmd` as one single-quoted shell word (`'` becomes `'\''`), for `eval`.
/// Refuses what a terminal would act on instead of passing to the shell
/// (control characters other than tab and newline) and lines longer than
/// a terminal takes, with an error that says so.
pub fn quote_command(cmd: &str) -> Result<String, String> {
    if let Some(c) = cmd
        .chars()
        .find(|c| c.is_control() && *c != '\t' && *c != '\n')
    {
        return Err(format!(
            "run: the command contains the control character {:?}, which the terminal would act on; \
             use send() for control keys",
            c
        ));
    }
    // An empty command would be an empty `then` (a syntax error).
    let cmd = if cmd.trim().is_empty() { ":" } else { cmd };
    let quoted = format!("'{}'", cmd.replace('\'', "'\\''"));
    if let Some(line) = quoted.split('\n').find(|l| l.len() > MAX_COMMAND_LINE) {
        return Err(format!(
            "run: a line of the command is {} bytes once quoted; a terminal takes at most {MAX_COMMAND_LINE} \
             (split it, or upload a script)",
            line.len()
        ));
    }
    Ok(quoted)
}

#[cfg(test)]
mod quote_tests {
    use super::{command_line, quote_command};
    use std::io::Write;

    /// What an interactive `sh` (a console's shell is interactive) prints
    /// for the line `run` sends, sentinels turned into `start` / `end N`.
    fn through_sh(cmd: &str) -> (String, i32) {
        let q = quote_command(cmd).unwrap();
        let mut child = std::process::Command::new("sh")
            .arg("-i")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let line = command_line("X", &q);
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(format!("{line}\necho after\n").as_bytes())
            .unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout)
            .replace("__dsX__", "start")
            .replace("__ddX_", "end ")
            .replace("__\n", "\n");
        assert!(text.ends_with("after\n"), "the shell went on: {text}");
        let text = text.trim_end_matches("after\n").to_string();
        (text, out.status.code().unwrap_or(-1))
    }

    #[test]
    fn hashes_quotes_and_backslashes_stay_inside_the_command() {
        let (out, _) = through_sh("echo a # b");
        assert_eq!(out, "start\na\nend 0\n");
        let (out, _) = through_sh("echo 'it''s' \"x\" $((1+2))");
        assert_eq!(out, "start\nits x 3\nend 0\n");
        let (out, _) = through_sh("echo it\\'s");
        assert_eq!(out, "start\nit's\nend 0\n");
        // An unbalanced quote is a syntax error of the command, not a hang.
        let (out, _) = through_sh("echo 'unbalanced");
        assert_eq!(out, "start\nend 2\n");
        // A trailing backslash would continue the line: not a whole command.
        let (out, _) = through_sh("echo trailing \\");
        assert_eq!(out, "start\nend 2\n");
        let (out, _) = through_sh("false");
        assert_eq!(out, "start\nend 1\n");
        let (out, _) = through_sh("echo one\necho two");
        assert_eq!(out, "start\none\ntwo\nend 0\n");
        let (out, _) = through_sh("");
        assert_eq!(out, "start\nend 0\n");
        // The command runs in the shell itself: a cd stays.
        let (out, _) = through_sh("cd / && pwd # where");
        assert_eq!(out, "start\n/\nend 0\n");
        let (out, _) = through_sh("fi");
        assert_eq!(out, "start\nend 2\n");
    }

    #[test]
    fn control_characters_and_overlong_lines_are_refused() {
        assert!(quote_command("echo \u{3}")
            .unwrap_err()
            .contains("control character"));
        assert!(quote_command(&"x".repeat(5000))
            .unwrap_err()
            .contains("a terminal takes at most"));
        assert!(quote_command("a\tb").is_ok());
    }
}
