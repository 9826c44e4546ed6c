//! drydock's interactive shell for troubleshooting: a reedline line editor
//! over a Rhai engine with drydock's primitives. Variables and functions
//! persist between entries; history is kept in the data directory.

mod history;
mod validator;

use std::path::Path;
use std::sync::Arc;

use drydock_runtime::interrupt::Interrupt;
use drydock_runtime::secrets::Secrets;
use drydock_runtime::RunContext;
use reedline::{DefaultPrompt, DefaultPromptSegment, FileBackedHistory, Reedline, Signal};
use rhai::{Dynamic, Engine, Scope, AST};

pub use validator::RhaiValidator;

const HELP: &str = "\
Enter Rhai statements; variables and functions persist between entries.
Primitives: shell(cmd), shell_result(cmd), read_file(p), write_file(p, s),
append_file(p, s), file_exists(p), env(name), hostname(), now_unix(), sleep(seconds).
Commands: :help, :quit (or Ctrl-D). An unfinished block continues on the next line.";

/// An evaluation session: the engine, the variables and the functions
/// defined so far.
pub struct ReplSession {
    engine: Engine,
    /// Secret values seen in this session: masked in output and history.
    secrets: Secrets,
    scope: Scope<'static>,
    functions: AST,
}

impl ReplSession {
    /// A session whose engine has the primitives `install` registers.
    pub fn new(
        data_dir: &Path,
        region: &str,
        profile: &str,
        install: &dyn Fn(&mut Engine, &RunContext),
    ) -> Self {
        let mut engine = Engine::new();
        let interrupt = Arc::new(Interrupt::never());
        let secrets = Secrets::new();
        let ctx = RunContext {
            execution_id: "repl".into(),
            data_dir: data_dir.to_path_buf(),
            interrupt,
            region: region.to_string(),
            profile: profile.to_string(),
            secrets: secrets.clone(),
        };
        install(&mut engine, &ctx);
        drydock_runtime::secrets::install_primitives(
            &mut engine,
            data_dir.to_path_buf(),
            secrets.clone(),
        );
        let s = secrets.clone();
        engine.on_print(move |line| println!("{}", s.mask(line)));
        Self {
            engine,
            secrets,
            scope: Scope::new(),
            functions: AST::empty(),
        }
    }

    /// Evaluates one entry; returns what to show (nothing for `()`), with
    /// secrets masked.
    pub fn eval(&mut self, input: &str) -> Result<Option<String>, String> {
        history::register_secret_literals(input, &self.secrets);
        self.eval_unmasked(input)
            .map(|shown| shown.map(|s| self.secrets.mask(&s)))
            .map_err(|e| self.secrets.mask(&e))
    }

    fn eval_unmasked(&mut self, input: &str) -> Result<Option<String>, String> {
        let ast = self
            .engine
            .compile_with_scope(&self.scope, input)
            .map_err(|e| format!("syntax error: {e}"))?;
        let program = self.functions.merge(&ast);
        let value: Dynamic = self
            .engine
            .eval_ast_with_scope(&mut self.scope, &program)
            .map_err(|e| drydock_runtime::executor::describe_error(&e))?;
        self.functions = self.functions.merge(&ast.clone_functions_only());
        Ok((!value.is_unit()).then(|| value.to_string()))
    }
}

/// Runs the interactive loop; `where_` (region and profile) is shown in the prompt.
pub fn run(
    data_dir: &Path,
    region: &str,
    profile: &str,
    install: &dyn Fn(&mut Engine, &RunContext),
) -> std::io::Result<()> {
    let where_ = format!("{region}/{profile}");
    let mut session = ReplSession::new(data_dir, region, profile, install);
    std::fs::create_dir_all(data_dir)?;
    let history = FileBackedHistory::with_file(1000, data_dir.join("repl-history.txt"))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let history = history::MaskedHistory::new(Box::new(history), session.secrets.clone());
    let mut editor = Reedline::create()
        .with_validator(Box::new(RhaiValidator::default()))
        .with_history(Box::new(history));
    let prompt = DefaultPrompt::new(
        DefaultPromptSegment::Basic(format!("drydock {where_}")),
        DefaultPromptSegment::Empty,
    );
    println!("drydock repl — :help for help, Ctrl-D to leave");
    loop {
        match editor.read_line(&prompt) {
            Ok(Signal::Success(line)) => {
                let line = line.trim();
                match line {
                    "" => {}
                    ":quit" | ":q" | ":exit" => break,
                    ":help" | ":h" => println!("{HELP}"),
                    _ => match session.eval(line) {
                        Ok(Some(shown)) => println!("{shown}"),
                        Ok(None) => {}
                        Err(e) => eprintln!("error: {e}"),
                    },
                }
            }
            Ok(Signal::CtrlD) => break,
            Ok(_) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_and_functions_persist_between_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ReplSession::new(dir.path(), "region-a", "default", &drydock_stdlib::install);
        assert_eq!(s.eval("let x = 40;").unwrap(), None);
        assert_eq!(s.eval("fn add2(v) { v + 2 }").unwrap(), None);
        assert_eq!(s.eval("add2(x)").unwrap(), Some("42".into()));
        assert_eq!(s.eval("shell(\"echo hi\")").unwrap(), Some("hi\n".into()));
        assert!(s.eval("nope()").unwrap_err().contains("nope"));
    }

    #[test]
    fn secrets_are_masked_in_what_the_repl_shows() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ReplSession::new(dir.path(), "region-a", "default", &drydock_stdlib::install);
        assert_eq!(
            s.eval(r#"let pw = secret("hunter2"); "user:" + pw"#)
                .unwrap(),
            Some("user:****".into())
        );
        assert!(!s
            .eval(r#"throw "bad " + pw"#)
            .unwrap_err()
            .contains("hunter2"));
    }
}
