//! drydock's interactive shell for troubleshooting: a reedline line editor
//! over a Rhai engine with drydock's primitives. Variables and functions
//! persist between entries; history is kept in the data directory (secrets
//! masked); every entry is recorded in the journal as a REPL session.
//!
//! Beside Rhai, `:commands` reach consoles, runbooks, approvals and
//! executions without leaving (see [`complete::COMMANDS`]). Completion
//! knows functions (generated from the engine's metadata), resource ids of
//! the region, runbooks and their parameters, and paths.

mod commands;
mod complete;
mod functions;
mod history;
mod host_commands;
mod journal_commands;
mod lexer;
mod output;
mod prompt;
mod render;
mod save;
mod service_commands;
mod session;
mod sigint;
mod validator;

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::time::Instant;

use drydock_runtime::{Executor, RunContext};
use reedline::{
    default_emacs_keybindings, default_vi_insert_keybindings, default_vi_normal_keybindings,
    default_vi_visual_keybindings, ColumnarMenu, DefaultHinter, Emacs, FileBackedHistory, KeyCode,
    KeyModifiers, MenuBuilder, Reedline, ReedlineEvent, ReedlineMenu, Signal, Vi,
};
use rhai::Engine;

pub use commands::Repl;
pub use complete::{ReplCompleter, Resource, RhaiHighlighter, Shared};
pub use functions::{FnDoc, FunctionIndex};
pub use save::runbook as save_runbook;
pub use session::{with_focus_calls, Canceller, EvalError, ReplSession};
pub use validator::RhaiValidator;

/// How the REPL is started.
pub struct ReplOptions<'a> {
    pub data_dir: PathBuf,
    pub region: String,
    pub profile: String,
    /// Registers drydock's primitives into each engine.
    pub install: &'a (dyn Fn(&mut Engine, &RunContext) + Sync),
    /// Runs `:run` and lists runbooks; without it those commands say so.
    pub executor: Option<Executor>,
    /// Vi editing mode instead of Emacs (also `DRYDOCK_REPL_MODE=vi`).
    pub vi: bool,
    /// Entries given on the command line (`-c`): evaluated, then exit.
    pub commands: Vec<String>,
    /// Asks the running `drydock serve` for its status (`:serve`).
    pub serve_status: Option<service_commands::ServeStatus<'a>>,
}

/// Runs the REPL: interactive on a terminal, else entries from stdin (or
/// `-c`). Returns the exit code: 0, or 1 when an entry failed without a
/// terminal.
pub fn run(opts: ReplOptions) -> std::io::Result<i32> {
    let started = Instant::now();
    std::fs::create_dir_all(&opts.data_dir)?;
    let interactive = opts.commands.is_empty() && std::io::stdin().is_terminal();
    let vi =
        opts.vi || std::env::var("DRYDOCK_REPL_MODE").is_ok_and(|m| m.eq_ignore_ascii_case("vi"));
    let mut repl = Repl::new(&opts, interactive);
    let _sig = sigint::Watcher::start(repl.canceller(), repl.running_execution(), interactive);
    let code = if !opts.commands.is_empty() {
        let mut code = 0;
        for c in &opts.commands {
            let r = repl.entry(c);
            if !r.ok {
                code = 1;
            }
            if r.quit {
                break;
            }
        }
        code
    } else if interactive {
        interactive_loop(&mut repl, vi, started)?;
        0
    } else {
        script_loop(&mut repl)?
    };
    repl.finish();
    Ok(code)
}

/// Entries from a non-terminal stdin: lines gathered until the validator
/// says the entry is complete (as Enter would on a terminal).
fn script_loop(repl: &mut Repl) -> std::io::Result<i32> {
    let validator = RhaiValidator::default();
    let mut code = 0;
    let mut pending = String::new();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if pending.is_empty() && line.trim().is_empty() {
            continue;
        }
        if !pending.is_empty() {
            pending.push('\n');
        }
        pending.push_str(&line);
        if pending.trim_start().starts_with(':') || validator.is_complete(&pending) {
            let entry = std::mem::take(&mut pending);
            let r = repl.entry(&entry);
            if !r.ok {
                code = 1;
            }
            if r.quit || r.interrupted {
                return Ok(if r.interrupted { 130 } else { code });
            }
        }
    }
    if !pending.trim().is_empty() {
        let r = repl.entry(&pending);
        if !r.ok {
            code = 1;
        }
    }
    Ok(code)
}

fn interactive_loop(repl: &mut Repl, vi: bool, started: Instant) -> std::io::Result<()> {
    let shared = repl.shared();
    let history = FileBackedHistory::with_file(1000, repl.data_dir().join("repl-history.txt"))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let history = history::MaskedHistory::new(Box::new(history), repl.secrets());
    let menu = ColumnarMenu::default()
        .with_name("completion_menu")
        .with_columns(1);
    let tab = ReedlineEvent::UntilFound(vec![
        ReedlineEvent::Menu("completion_menu".to_string()),
        ReedlineEvent::MenuNext,
    ]);
    let edit_mode: Box<dyn reedline::EditMode> = if vi {
        let mut insert = default_vi_insert_keybindings();
        insert.add_binding(KeyModifiers::NONE, KeyCode::Tab, tab);
        Box::new(Vi::new(
            insert,
            default_vi_normal_keybindings(),
            default_vi_visual_keybindings(),
        ))
    } else {
        let mut keys = default_emacs_keybindings();
        keys.add_binding(KeyModifiers::NONE, KeyCode::Tab, tab);
        Box::new(Emacs::new(keys))
    };
    let mut editor = Reedline::create()
        .with_validator(Box::new(RhaiValidator::default()))
        .with_history(Box::new(history))
        .with_completer(Box::new(ReplCompleter {
            shared: shared.clone(),
        }))
        .with_highlighter(Box::new(RhaiHighlighter {
            shared: shared.clone(),
        }))
        .with_hinter(Box::new(
            DefaultHinter::default().with_style(
                nu_ansi_term::Style::new()
                    .italic()
                    .fg(nu_ansi_term::Color::DarkGray),
            ),
        ))
        .with_menu(ReedlineMenu::EngineCompleter(Box::new(menu)))
        .with_edit_mode(edit_mode);
    let prompt = prompt::ReplPrompt { shared };
    println!(
        "drydock repl — :help for help, Tab completes, Ctrl-C stops an entry, Ctrl-D leaves (ready in {} ms)",
        started.elapsed().as_millis()
    );
    tracing::debug!("repl: ready in {:?}", started.elapsed());
    loop {
        match editor.read_line(&prompt) {
            Ok(Signal::Success(line)) => {
                if line.trim().is_empty() {
                    continue;
                }
                if repl.entry(&line).quit {
                    break;
                }
            }
            Ok(Signal::CtrlD) => break,
            // Ctrl-C on the prompt clears the line; it never leaves.
            Ok(_) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
