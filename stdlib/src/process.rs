//! Host commands: `shell(cmd)` returns stdout and fails on a non-zero exit;
//! `shell_result(cmd)` returns `#{ exit_code, stdout, stderr }`. Both stop
//! the command (SIGKILL to its process group) when the step's deadline
//! passes or the execution is cancelled.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use drydock_runtime::interrupt::{Interrupt, Interruption};
use drydock_runtime::RunContext;
use rhai::{Dynamic, Engine, EvalAltResult, Map, NativeCallContext};

/// What a finished command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
}

/// Why a command did not produce output.
#[derive(Debug)]
pub enum CommandError {
    Spawn(std::io::Error),
    Interrupted(Interruption),
}

/// Runs `/bin/sh -c script`, waking every 20 ms to honour `interrupt`.
pub fn run_command(script: &str, interrupt: &Interrupt) -> Result<CommandOutput, CommandError> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(CommandError::Spawn)?;
    let mut out = child.stdout.take().expect("stdout is piped");
    let mut err = child.stderr.take().expect("stderr is piped");
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let status = loop {
        if let Some(status) = child.try_wait().map_err(CommandError::Spawn)? {
            break status;
        }
        if let Err(why) = interrupt.check() {
            let pgid = child.id() as i32;
            // SAFETY: kill(2) with a negative pid signals the process group we
            // created for this child (process_group(0) above); no memory is touched.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            let _ = child.wait();
            return Err(CommandError::Interrupted(why));
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    let exit_code = status.code().map(i64::from).unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + i64::from(status.signal().unwrap_or(0))
    });
    Ok(CommandOutput {
        exit_code,
        stdout,
        stderr,
    })
}

fn to_rhai(ctx: &NativeCallContext, script: &str, e: CommandError) -> Box<EvalAltResult> {
    match e {
        CommandError::Spawn(io) => EvalAltResult::ErrorRuntime(
            format!("cannot start `{script}`: {io}").into(),
            ctx.call_position(),
        )
        .into(),
        CommandError::Interrupted(why) => why.into_rhai(ctx.call_position()),
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Registers `shell` and `shell_result`.
pub fn install(engine: &mut Engine, ctx: &RunContext) {
    let interrupt: Arc<Interrupt> = ctx.interrupt.clone();
    engine.register_fn(
        "shell",
        move |ctx: NativeCallContext, script: &str| -> Result<String, Box<EvalAltResult>> {
            let out = run_command(script, &interrupt).map_err(|e| to_rhai(&ctx, script, e))?;
            if out.exit_code != 0 {
                return Err(EvalAltResult::ErrorRuntime(
                    format!(
                        "command `{script}` exited with status {}; last lines of stderr:\n{}",
                        out.exit_code,
                        tail(&out.stderr, 5)
                    )
                    .into(),
                    ctx.call_position(),
                )
                .into());
            }
            Ok(out.stdout)
        },
    );
    let interrupt: Arc<Interrupt> = ctx.interrupt.clone();
    engine.register_fn(
        "shell_result",
        move |ctx: NativeCallContext, script: &str| -> Result<Map, Box<EvalAltResult>> {
            let out = run_command(script, &interrupt).map_err(|e| to_rhai(&ctx, script, e))?;
            let mut map = Map::new();
            map.insert("exit_code".into(), Dynamic::from(out.exit_code));
            map.insert("stdout".into(), out.stdout.into());
            map.insert("stderr".into(), out.stderr.into());
            Ok(map)
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn captures_output_and_status() {
        let out = run_command("echo out; echo err >&2; exit 3", &Interrupt::never()).unwrap();
        assert_eq!(
            out,
            CommandOutput {
                exit_code: 3,
                stdout: "out\n".into(),
                stderr: "err\n".into()
            }
        );
    }

    #[test]
    fn a_passed_deadline_kills_the_whole_group() {
        let i = Interrupt::never();
        i.push_deadline(Instant::now() + Duration::from_millis(100));
        let start = Instant::now();
        let r = run_command("sleep 30 & sleep 30; wait", &i);
        assert!(matches!(
            r,
            Err(CommandError::Interrupted(Interruption::DeadlinePassed))
        ));
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
