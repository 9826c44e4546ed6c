//! Host commands.
//!
//! - `shell(cmd)` runs `/bin/sh -c cmd`, returns stdout and fails on a
//!   non-zero exit; `shell_result(cmd)` returns `#{ exit_code, stdout,
//!   stderr }`.
//! - `exec(argv)` and `exec_result(argv)` do the same for a program run
//!   **without a shell**: `argv` is an array whose first element is the
//!   program (looked up in `PATH` when it has no `/`) and whose other
//!   elements are its arguments, passed as they are (strings, or blobs for
//!   bytes that are not UTF-8). Nothing in them is interpreted.
//! - Each of the four takes an optional map: `cwd`, `env` (a map; `()`
//!   removes a variable), `clear_env`, `stdin` (string or blob) and `bytes`
//!   (stdout and stderr as blobs instead of lossy UTF-8 strings).
//! - `shell_quote(s)` returns `s` as one single-quoted POSIX shell word;
//!   `shell_quote([a, b, …])` the words joined by spaces.
//!
//! Every command runs in a session (and process group) of its own. When the
//! step's deadline passes or the execution is cancelled, the whole group
//! gets SIGTERM, then SIGKILL after a short grace. Once the direct child has
//! exited, output is read until the pipes close or nothing is left in the
//! group that could still write (a daemon that left the group does not hold
//! the call).
//!
//! This file registers the primitives; `runner` runs a command, `words`
//! quotes and shows words, `messages` says why a command failed.

mod messages;
mod runner;
mod words;

use messages::*;
pub use runner::*;
pub use words::shell_quote;
use words::*;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::Arc;

use drydock_runtime::interrupt::Interrupt;
use drydock_runtime::secrets::Secrets;
use drydock_runtime::RunContext;

use crate::doc::doc;
use rhai::{Array, Blob, Dynamic, Engine, EvalAltResult, Map, NativeCallContext};

/// Options shared by `shell`, `shell_result`, `exec` and `exec_result`.
#[derive(Debug, Default)]
struct Options {
    bytes: bool,
}

const OPTION_KEYS: &str = "cwd, env, clear_env, stdin, bytes";

fn apply_options(inv: &mut Invocation, opts: &Map) -> Result<Options, String> {
    let mut o = Options::default();
    for (key, value) in opts {
        match key.as_str() {
            "cwd" => {
                let dir = value
                    .clone()
                    .into_immutable_string()
                    .map_err(|t| format!("option cwd must be a string, not {t}"))?;
                if dir.contains('\0') {
                    return Err("option cwd contains a NUL byte".into());
                }
                inv.cwd = Some(PathBuf::from(dir.as_str()));
            }
            "env" => {
                let vars = value.clone().try_cast::<Map>().ok_or(
                    "option env must be a map of variable names to strings (or () to remove)",
                )?;
                for (name, v) in vars {
                    if name.is_empty() || name.contains('=') || name.contains('\0') {
                        return Err(format!("option env: invalid variable name {name:?}"));
                    }
                    let v = if v.is_unit() {
                        None
                    } else {
                        let s = v.into_immutable_string().map_err(|t| {
                            format!(
                                "option env: the value of {name} must be a string or (), not {t}"
                            )
                        })?;
                        if s.contains('\0') {
                            return Err(format!(
                                "option env: the value of {name} contains a NUL byte"
                            ));
                        }
                        Some(OsString::from(s.as_str()))
                    };
                    inv.env.push((OsString::from(name.as_str()), v));
                }
            }
            "clear_env" => {
                inv.clear_env = value
                    .as_bool()
                    .map_err(|t| format!("option clear_env must be a bool, not {t}"))?;
            }
            "stdin" => {
                inv.stdin = Some(if value.is_blob() {
                    value.clone().cast::<Blob>()
                } else {
                    value
                        .clone()
                        .into_immutable_string()
                        .map_err(|t| format!("option stdin must be a string or a blob, not {t}"))?
                        .as_bytes()
                        .to_vec()
                });
            }
            "bytes" => {
                o.bytes = value
                    .as_bool()
                    .map_err(|t| format!("option bytes must be a bool, not {t}"))?;
            }
            other => {
                return Err(format!(
                    "unknown option `{other}` (known options: {OPTION_KEYS})"
                ))
            }
        }
    }
    Ok(o)
}

/// The argv of `exec` from a Rhai array: strings, or blobs for raw bytes.
fn argv_from_rhai(argv: &Array) -> Result<Invocation, String> {
    let mut words = Vec::with_capacity(argv.len());
    for (i, item) in argv.iter().enumerate() {
        if item.is_blob() {
            words.push(OsString::from_vec(item.clone().cast::<Blob>()));
        } else if item.is_string() {
            let s = item.clone().into_immutable_string().unwrap_or_default();
            words.push(OsString::from(s.as_str()));
        } else {
            return Err(format!(
                "argv[{i}] is {} ({item}); every element must be a string (or a blob of bytes)",
                item.type_name()
            ));
        }
    }
    Invocation::argv(words)
}

fn runtime_error(ctx: &NativeCallContext, msg: String) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(msg.into(), ctx.call_position()).into()
}

/// Runs `inv` for a Rhai call; `shown` names the command in messages.
fn call(
    ctx: &NativeCallContext,
    interrupt: &Interrupt,
    inv: &Invocation,
    shown: &str,
) -> Result<RawOutput, Box<EvalAltResult>> {
    run(inv, interrupt).map_err(|e| match e {
        CommandError::Spawn(io) => runtime_error(ctx, spawn_message(inv, shown, &io)),
        CommandError::Interrupted(why) => why.into_rhai(ctx.call_position()),
    })
}

fn output_value(bytes: Vec<u8>, as_bytes: bool) -> Dynamic {
    if as_bytes {
        Dynamic::from_blob(bytes)
    } else {
        lossy(bytes).into()
    }
}

fn result_map(out: RawOutput, as_bytes: bool) -> Map {
    let mut map = Map::new();
    map.insert("exit_code".into(), Dynamic::from(out.exit_code));
    map.insert("stdout".into(), output_value(out.stdout, as_bytes));
    map.insert("stderr".into(), output_value(out.stderr, as_bytes));
    map
}

/// What a Rhai call runs, and how the result is returned.
struct Prepared {
    inv: Invocation,
    shown: String,
    opts: Options,
}

fn prepare_shell(script: &str, opts: Option<&Map>) -> Result<Prepared, String> {
    if script.contains('\0') {
        return Err("the shell command contains a NUL byte".into());
    }
    let mut inv = Invocation::shell(script);
    let opts = match opts {
        Some(m) => apply_options(&mut inv, m)?,
        None => Options::default(),
    };
    Ok(Prepared {
        inv,
        shown: format!("command `{}`", truncate(script, 300)),
        opts,
    })
}

fn prepare_exec(argv: &Array, opts: Option<&Map>) -> Result<Prepared, String> {
    let mut inv = argv_from_rhai(argv)?;
    let opts = match opts {
        Some(m) => apply_options(&mut inv, m)?,
        None => Options::default(),
    };
    let shown = format!("command `{}`", inv.display());
    Ok(Prepared { inv, shown, opts })
}

/// Refuses a command whose command line holds a secret value (or a form
/// of one, see [`Secrets`]): every local user can read a command line in
/// `ps` and /proc while it runs.
fn no_secret_in_argv(p: Prepared, secrets: &Secrets) -> Result<Prepared, String> {
    let words = std::iter::once(&p.inv.program).chain(p.inv.args.iter());
    for (i, w) in words.enumerate() {
        if secrets.contains_secret(&w.to_string_lossy()) {
            let which = if i == 0 {
                "its program name".to_string()
            } else {
                format!("its argument {i}")
            };
            return Err(format!(
                "{} was not run: {which} holds a secret value, and every local user can read a command line (`ps`, /proc) while it runs. \
                 Pass the secret in the environment (`#{{ env: #{{ PASSWORD: value }} }}`, then \"$PASSWORD\" in the shell) or on standard input (`#{{ stdin: value }}`)",
                secrets.mask(&p.shown)
            ));
        }
    }
    Ok(p)
}

/// Runs and returns stdout, or fails when the command did not exit with 0.
fn checked(
    ctx: &NativeCallContext,
    interrupt: &Interrupt,
    p: Result<Prepared, String>,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let p = p.map_err(|m| runtime_error(ctx, m))?;
    let out = call(ctx, interrupt, &p.inv, &p.shown)?;
    if out.exit_code != 0 {
        return Err(runtime_error(ctx, failure_message(&p.shown, &out)));
    }
    Ok(output_value(out.stdout, p.opts.bytes))
}

/// Runs and returns `#{ exit_code, stdout, stderr }` whatever the status.
fn unchecked(
    ctx: &NativeCallContext,
    interrupt: &Interrupt,
    p: Result<Prepared, String>,
) -> Result<Map, Box<EvalAltResult>> {
    let p = p.map_err(|m| runtime_error(ctx, m))?;
    let out = call(ctx, interrupt, &p.inv, &p.shown)?;
    Ok(result_map(out, p.opts.bytes))
}

const OPTIONS_DOC: &str = "Options: `cwd` (a directory), `env` (`#{ NAME: \"value\" }`, `()` removes one), `clear_env` (start from an empty environment), `stdin` (a string or a blob), `bytes` (blobs instead of text).";

/// Registers `shell`, `shell_result`, `exec`, `exec_result` and `shell_quote`.
pub fn install(engine: &mut Engine, ctx: &RunContext) {
    let i: Arc<Interrupt> = ctx.interrupt.clone();
    let sec = ctx.secrets.clone();
    doc("shell(script)", &[
        "Runs a shell script (`sh -c`) on this host; returns its stdout.",
        "Fails on a non-zero exit (the error has the status and the output), a step timeout or a cancellation.",
        "Example: `shell(\"df -h /\")`",
    ])
    .register(engine, move |ctx: NativeCallContext, script: &str| {
        checked(
            &ctx,
            &i,
            prepare_shell(script, None).and_then(|p| no_secret_in_argv(p, &sec)),
        )
    });
    let i: Arc<Interrupt> = ctx.interrupt.clone();
    let sec = ctx.secrets.clone();
    doc(
        "shell(script, options)",
        &[
            "Runs a shell script on this host, with options; returns its stdout.",
            OPTIONS_DOC,
            "Example: `shell(\"make\", #{ cwd: \"/srv/app\", env: #{ CC: \"gcc\" } })`",
        ],
    )
    .register(
        engine,
        move |ctx: NativeCallContext, script: &str, opts: Map| {
            checked(
                &ctx,
                &i,
                prepare_shell(script, Some(&opts)).and_then(|p| no_secret_in_argv(p, &sec)),
            )
        },
    );
    let i: Arc<Interrupt> = ctx.interrupt.clone();
    let sec = ctx.secrets.clone();
    doc("shell_result(script)", &[
        "Runs a shell script on this host: `#{ exit_code, stdout, stderr }`, whatever its exit status.",
        "Fails only when it cannot run, on a step timeout or a cancellation.",
        "Example: `if shell_result(\"systemctl is-active nginx\").exit_code != 0 { … }`",
    ])
    .register(
        engine,
        move |ctx: NativeCallContext, script: &str| {
            unchecked(
                &ctx,
                &i,
                prepare_shell(script, None).and_then(|p| no_secret_in_argv(p, &sec)),
            )
        },
    );
    let i: Arc<Interrupt> = ctx.interrupt.clone();
    let sec = ctx.secrets.clone();
    doc(
        "shell_result(script, options)",
        &[
            "Runs a shell script on this host, with options: `#{ exit_code, stdout, stderr }`.",
            OPTIONS_DOC,
        ],
    )
    .register(
        engine,
        move |ctx: NativeCallContext, script: &str, opts: Map| {
            unchecked(
                &ctx,
                &i,
                prepare_shell(script, Some(&opts)).and_then(|p| no_secret_in_argv(p, &sec)),
            )
        },
    );
    let i: Arc<Interrupt> = ctx.interrupt.clone();
    let sec = ctx.secrets.clone();
    doc("exec(argv)", &[
        "Runs a program without a shell (arguments passed as they are, nothing interpreted); returns its stdout.",
        "Use it for anything built from data. Fails on a non-zero exit, a missing program, a step timeout or a cancellation.",
        "Example: `exec([\"rm\", \"-f\", \"--\", name])`",
    ])
    .register(engine, move |ctx: NativeCallContext, argv: Array| {
        checked(
            &ctx,
            &i,
            prepare_exec(&argv, None).and_then(|p| no_secret_in_argv(p, &sec)),
        )
    });
    let i: Arc<Interrupt> = ctx.interrupt.clone();
    let sec = ctx.secrets.clone();
    doc(
        "exec(argv, options)",
        &[
            "Runs a program without a shell, with options; returns its stdout.",
            OPTIONS_DOC,
        ],
    )
    .register(
        engine,
        move |ctx: NativeCallContext, argv: Array, opts: Map| {
            checked(
                &ctx,
                &i,
                prepare_exec(&argv, Some(&opts)).and_then(|p| no_secret_in_argv(p, &sec)),
            )
        },
    );
    let i: Arc<Interrupt> = ctx.interrupt.clone();
    let sec = ctx.secrets.clone();
    doc("exec_result(argv)", &[
        "Runs a program without a shell: `#{ exit_code, stdout, stderr }`, whatever its exit status.",
        "Fails only when it cannot run, on a step timeout or a cancellation.",
    ])
    .register(engine, move |ctx: NativeCallContext, argv: Array| {
        unchecked(
            &ctx,
            &i,
            prepare_exec(&argv, None).and_then(|p| no_secret_in_argv(p, &sec)),
        )
    });
    let i: Arc<Interrupt> = ctx.interrupt.clone();
    let sec = ctx.secrets.clone();
    doc(
        "exec_result(argv, options)",
        &[
            "Runs a program without a shell, with options: `#{ exit_code, stdout, stderr }`.",
            OPTIONS_DOC,
        ],
    )
    .register(
        engine,
        move |ctx: NativeCallContext, argv: Array, opts: Map| {
            unchecked(
                &ctx,
                &i,
                prepare_exec(&argv, Some(&opts)).and_then(|p| no_secret_in_argv(p, &sec)),
            )
        },
    );
    doc(
        "shell_quote(word)",
        &[
            "One single-quoted POSIX shell word holding `word` exactly.",
            "Fails on a NUL byte, which no shell word can hold.",
            "Example: `shell(\"ls -l \" + shell_quote(path))`",
        ],
    )
    .register(
        engine,
        |ctx: NativeCallContext, s: &str| -> Result<String, Box<EvalAltResult>> {
            shell_quote(s).map_err(|m| runtime_error(&ctx, m))
        },
    );
    doc(
        "shell_quote(words)",
        &[
            "Quoted POSIX shell words, separated by spaces, one for each string of the array.",
            "Fails on an element that is not a string or holds a NUL byte.",
            "Example: `shell_quote([\"printf\", \"%s\", name])`",
        ],
    )
    .register(
        engine,
        |ctx: NativeCallContext, words: Array| -> Result<String, Box<EvalAltResult>> {
            let mut out = Vec::with_capacity(words.len());
            for (i, w) in words.into_iter().enumerate() {
                let s = w.into_immutable_string().map_err(|t| {
                    runtime_error(
                        &ctx,
                        format!("shell_quote: element {i} is {t}, not a string"),
                    )
                })?;
                out.push(shell_quote(&s).map_err(|m| runtime_error(&ctx, m))?);
            }
            Ok(out.join(" "))
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use drydock_runtime::interrupt::Interruption;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::time::{Duration, Instant};

    fn argv(words: &[&str]) -> Invocation {
        Invocation::argv(words.iter().map(OsString::from).collect()).unwrap()
    }

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

    #[test]
    fn a_background_job_holding_the_pipes_does_not_outlive_the_deadline() {
        let i = Interrupt::never();
        i.push_deadline(Instant::now() + Duration::from_millis(300));
        let start = Instant::now();
        let r = run_command("sleep 30 &", &i);
        assert!(
            matches!(
                r,
                Err(CommandError::Interrupted(Interruption::DeadlinePassed))
            ),
            "{r:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_stopped_job_is_woken_to_take_its_sigterm() {
        let i = Interrupt::never();
        i.push_deadline(Instant::now() + Duration::from_millis(300));
        let start = Instant::now();
        let r = run_command("sleep 30 & kill -STOP $!; sleep 30", &i);
        assert!(matches!(r, Err(CommandError::Interrupted(_))), "{r:?}");
        assert!(
            start.elapsed() < KILL_GRACE,
            "waited for the grace: {:?}",
            start.elapsed()
        );
    }

    #[test]
    fn a_background_job_with_its_output_elsewhere_does_not_hold_the_call() {
        let start = Instant::now();
        let out = run_command("sleep 3 >/dev/null 2>&1 & echo done", &Interrupt::never()).unwrap();
        assert_eq!(out.stdout, "done\n");
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn output_written_by_a_background_job_before_the_pipes_close_is_kept() {
        let out = run_command("(sleep 0.3; echo late) & echo early", &Interrupt::never()).unwrap();
        assert_eq!(out.stdout, "early\nlate\n");
    }

    #[test]
    fn exec_passes_arguments_verbatim() {
        let hostile = [
            "a';touch PWNED;echo '",
            "$(touch X)",
            "`id`",
            "-rf",
            "a\nb",
            " ",
            "",
        ];
        let mut words = vec!["printf", "<%s>"];
        words.extend(hostile);
        let out = run(&argv(&words), &Interrupt::never()).unwrap();
        let expected: String = hostile.iter().map(|h| format!("<{h}>")).collect();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
    }

    #[test]
    fn exec_options_cwd_env_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let mut inv = argv(&["sh", "-c", "pwd; echo \"$DD_X\"; cat"]);
        inv.cwd = Some(dir.path().to_path_buf());
        inv.env.push(("DD_X".into(), Some("x y".into())));
        inv.stdin = Some(b"from stdin".to_vec());
        let out = run(&inv, &Interrupt::never()).unwrap();
        let expected = format!(
            "{}\nx y\nfrom stdin",
            dir.path().canonicalize().unwrap().display()
        );
        assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
    }

    #[test]
    fn large_stdin_and_output_do_not_deadlock() {
        let mut inv = argv(&["cat"]);
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        inv.stdin = Some(big.clone());
        let out = run(&inv, &Interrupt::never()).unwrap();
        assert_eq!(out.stdout, big);
    }

    #[test]
    fn nul_bytes_and_empty_argv_are_refused() {
        assert!(Invocation::argv(vec![]).unwrap_err().contains("empty"));
        assert!(Invocation::argv(vec!["".into()])
            .unwrap_err()
            .contains("empty"));
        let e = Invocation::argv(vec!["rm".into(), "a\0b".into()]).unwrap_err();
        assert!(e.contains("argv[1] contains a NUL byte"), "{e}");
        assert!(shell_quote("a\0b").is_err());
    }

    #[test]
    fn shell_quote_round_trips_through_sh() {
        let hostile = [
            "plain",
            "",
            "it's",
            "''",
            "a';touch PWNED;echo '",
            "$(touch X)",
            "`touch Y`",
            "-rf",
            "--",
            "new\nline",
            "back\\slash",
            "*",
            "~root",
            "${HOME}",
            "é ü \u{1F600}",
            "!event",
        ];
        for h in hostile {
            let script = format!("printf '%s' {}", shell_quote(h).unwrap());
            let out = run_command(&script, &Interrupt::never()).unwrap();
            assert_eq!(out.stdout, h, "{script}");
            assert_eq!(out.exit_code, 0);
        }
    }

    #[test]
    fn messages_name_the_command_and_what_went_wrong() {
        let out = run(&argv(&["sh", "-c", "kill -TERM $$"]), &Interrupt::never()).unwrap();
        assert_eq!(out.signal, Some(libc::SIGTERM));
        let m = failure_message("command `x`", &out);
        assert!(m.contains("killed by signal 15 (SIGTERM)"), "{m}");
        let out = run_command("echo only-stdout; exit 4", &Interrupt::never()).unwrap();
        let raw = RawOutput {
            exit_code: out.exit_code,
            signal: None,
            stdout: out.stdout.into_bytes(),
            stderr: vec![],
        };
        let m = failure_message("command `x`", &raw);
        assert!(m.contains("status 4") && m.contains("only-stdout"), "{m}");
        let inv = argv(&["drydock-no-such-program-xyz"]);
        let Err(CommandError::Spawn(io)) = run(&inv, &Interrupt::never()) else {
            panic!("spawned a program that does not exist");
        };
        let m = spawn_message(&inv, "command `x`", &io);
        assert!(
            m.contains("no program named drydock-no-such-program-xyz in PATH"),
            "{m}"
        );
        assert_eq!(display_word(OsStr::new("a\nb")), "$'a\\nb'");
        assert_eq!(display_word(OsStr::from_bytes(b"a\xffb")), "$'a\\xffb'");
        assert_eq!(display_word(OsStr::new("it's")), "'it'\\''s'");
    }
}
