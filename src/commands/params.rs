//! `drydock param`: the parameter store, and reading secrets without
//! putting them on a command line.

use std::io::{BufRead, IsTerminal, Read};
use std::path::Path;

use drydock_runtime::journal::Selector;
use drydock_runtime::secrets::{SecretKey, MASK};
use serde_json::json;

use super::{print_json, shown, table, when, Context};
use crate::cli::ParamCommand;
use crate::failure::CliError;

/// `drydock param …`.
pub fn run(ctx: &Context, cmd: ParamCommand) -> Result<i32, CliError> {
    let data_dir = &ctx.settings.data_dir;
    let mut journal = ctx.executor.journal()?;
    // Values sealed by an older drydock (bound to their name only) are
    // sealed again for their version by whoever holds the key.
    if SecretKey::path(data_dir).exists() {
        if let Ok(key) = SecretKey::load_or_create(data_dir) {
            match drydock_runtime::parameters::reseal_legacy_parameters(&key, &mut journal) {
                Ok(0) => {}
                Ok(n) => tracing::info!("resealed {n} parameter values for their versions"),
                Err(e) => tracing::warn!("cannot reseal older parameter values: {e}"),
            }
        }
    }
    match cmd {
        ParamCommand::Put {
            name,
            secure,
            value_file,
            value,
            description,
        } => {
            drydock_runtime::journal::check_parameter_name(&name).map_err(CliError::usage)?;
            if secure && value.is_some() {
                return Err(CliError::usage(
                    "--value is refused for a secure parameter: a command line is visible to every local user in `ps`. Use --value-file FILE, pipe the value on standard input, or type it at the prompt",
                ));
            }
            let value = match (value, value_file) {
                (Some(v), _) => v,
                (None, Some(file)) => read_secret_file(&file)?,
                (None, None) => read_stdin_or_prompt(&format!("value for {name}"))?,
            };
            if value.is_empty() {
                return Err(CliError::usage("the value is empty; nothing was stored"));
            }
            let me = drydock_runtime::identity::Identity::current();
            let version = if secure {
                // Sealed for its name and the version it gets: a ciphertext
                // copied over another version does not open.
                let key = SecretKey::load_or_create(data_dir)
                    .map_err(|e| CliError::failure(e.to_string()))?;
                journal.put_sealed_parameter(&name, &description, &me.name, |version| {
                    drydock_runtime::secrets::seal_parameter(&key, &name, version, &value)
                        .map_err(|e| e.to_string())
                })?
            } else {
                journal.put_parameter(&name, &value, secure, &description, &me.name)?
            };
            if ctx.json {
                print_json(&json!({ "name": name, "version": version, "secure": secure }));
            } else {
                println!(
                    "{name}: version {version} stored{}",
                    if secure {
                        " (secure, encrypted at rest)"
                    } else {
                        ""
                    }
                );
            }
        }
        ParamCommand::Get { name, decrypt } => {
            let (pname, which) = Selector::split(&name);
            let rec = journal.parameter(pname, &which)?;
            let value = if rec.secure && !decrypt {
                MASK.to_string()
            } else {
                drydock_runtime::parameters::read_parameter(data_dir, &journal, pname, &which)
                    .map_err(CliError::failure)?
                    .0
            };
            if ctx.json {
                let mut v = serde_json::to_value(&rec).unwrap_or_default();
                v["value"] = json!(value);
                print_json(&v);
            } else {
                println!("{value}");
            }
        }
        ParamCommand::List => {
            let list = journal.parameters()?;
            if ctx.json {
                print_json(&list);
                return Ok(0);
            }
            if list.is_empty() {
                println!("no parameters; store one with `drydock param put NAME [--secure]`");
                return Ok(0);
            }
            let mut t = table(&[
                "NAME",
                "TYPE",
                "VERSION",
                "LABELS",
                "MODIFIED",
                "BY",
                "DESCRIPTION",
            ]);
            for p in &list {
                t.add_row(vec![
                    shown(&p.name),
                    kind(p.secure).into(),
                    p.version.to_string(),
                    p.labels.join(", "),
                    when(p.created_at),
                    shown(&p.created_by),
                    shown(&p.description),
                ]);
            }
            println!("{t}");
        }
        ParamCommand::History { name } => {
            let list = journal.history(&name)?;
            if list.is_empty() {
                return Err(CliError::usage(format!(
                    "no parameter named {}; list them with `drydock param list`",
                    shown(&name)
                )));
            }
            if ctx.json {
                print_json(&list);
                return Ok(0);
            }
            let mut t = table(&["VERSION", "TYPE", "LABELS", "STORED", "BY"]);
            for p in &list {
                t.add_row(vec![
                    p.version.to_string(),
                    kind(p.secure).into(),
                    p.labels.join(", "),
                    when(p.created_at),
                    shown(&p.created_by),
                ]);
            }
            println!("{t}");
        }
        ParamCommand::Label {
            name,
            version,
            label,
        } => {
            journal.label_parameter(&name, version, &label)?;
            if ctx.json {
                print_json(&json!({ "name": name, "version": version, "label": label }));
            } else {
                println!("{name}: label {label} is on version {version}");
            }
        }
        ParamCommand::Delete { name } => {
            let n = journal.delete_parameter(&name)?;
            if ctx.json {
                print_json(&json!({ "name": name, "deleted": true, "versions": n }));
            } else {
                println!("{name}: deleted ({n} versions)");
            }
        }
    }
    Ok(0)
}

fn kind(secure: bool) -> &'static str {
    if secure {
        "SecureString"
    } else {
        "String"
    }
}

/// A secret given as `param:NAME[:VERSION|:LABEL]` (the parameter
/// store), `file:PATH`, `env:VAR` or `prompt`; anything else is the value
/// itself, with a warning that a command line is visible in `ps`.
pub fn secret_text(ctx: &Context, what: &str, text: &str) -> Result<String, CliError> {
    if let Some(reference) = text.strip_prefix("param:") {
        let (name, which) = Selector::split(reference);
        let journal = ctx.executor.journal()?;
        return drydock_runtime::parameters::read_parameter(
            &ctx.settings.data_dir,
            &journal,
            name,
            &which,
        )
        .map(|(v, _)| v)
        .map_err(|e| CliError::usage(format!("{what}: {e}")));
    }
    if let Some(path) = text.strip_prefix("file:") {
        return read_secret_file(Path::new(path));
    }
    if let Some(var) = text.strip_prefix("env:") {
        return std::env::var(var).map_err(|_| {
            CliError::usage(format!("{what}: environment variable {var} is not set"))
        });
    }
    if text == "prompt" {
        return prompt_hidden(what);
    }
    if std::env::var("DRYDOCK_ROOT_PASSWORD").ok().as_deref() != Some(text) {
        eprintln!(
            "warning: {what} given on the command line is visible to every local user in `ps`; use param:NAME, file:PATH, env:VAR or prompt"
        );
    }
    Ok(text.to_string())
}

/// A secret from a file: the whole file, without one trailing newline.
pub fn read_secret_file(path: &Path) -> Result<String, CliError> {
    let mut text = drydock_runtime::input_file::read_to_string(
        path,
        drydock_runtime::input_file::InputKind::Value,
    )
    .map_err(|e| CliError::usage(e.to_string()))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

/// A value from standard input when it is not a terminal, else typed at
/// a prompt without echo.
pub fn read_stdin_or_prompt(what: &str) -> Result<String, CliError> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut text = String::new();
        stdin
            .lock()
            .take(1 << 20)
            .read_to_string(&mut text)
            .map_err(|e| CliError::usage(format!("cannot read {what} from standard input: {e}")))?;
        if text.ends_with('\n') {
            text.pop();
        }
        return Ok(text);
    }
    prompt_hidden(what)
}

/// Asks on the terminal with echo off.
pub fn prompt_hidden(what: &str) -> Result<String, CliError> {
    use std::os::fd::AsRawFd;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| {
            CliError::usage(format!(
                "{what} must be typed at a terminal, but there is none ({e}); use a file or standard input"
            ))
        })?;
    let fd = tty.as_raw_fd();
    // SAFETY: zeroed termios is a valid out-parameter for tcgetattr.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is an open terminal and saved is valid for writes.
    let have = unsafe { libc::tcgetattr(fd, &mut saved) } == 0;
    if have {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        // SAFETY: applies a termios derived from the terminal's own settings.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    eprint!("{what}: ");
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    if have {
        // SAFETY: restores the settings read above on the same terminal.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    }
    read.map_err(|e| CliError::usage(format!("cannot read {what}: {e}")))?;
    while line.ends_with('\n') || line.ends_with('\r') {
        line.pop();
    }
    Ok(line)
}
