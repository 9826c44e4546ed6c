//! The command-line interface: every command and flag in one place.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// drydock: runbooks for operators who keep virtual machines alive.
#[derive(Debug, Parser)]
#[command(name = "drydock", version, about, long_about = None)]
pub struct Cli {
    /// Where the journal and other state live [default: $XDG_DATA_HOME/drydock]
    #[arg(long, global = true, env = "DRYDOCK_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Extra directory of runbooks (repeatable; also DRYDOCK_RUNBOOK_PATH, colon-separated, and `runbook_dirs` in the config file)
    #[arg(long = "runbook-dir", global = true, value_name = "DIR")]
    pub runbook_dirs: Vec<PathBuf>,

    /// Config file [default: $XDG_CONFIG_HOME/drydock/config.toml]
    #[arg(long, global = true, env = "DRYDOCK_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print machine-readable JSON instead of tables and progress lines
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start an execution of a runbook (by name or path) and follow it
    Run(RunArgs),
    /// Continue an execution whose runner stopped (crash, kill, reboot), replaying completed steps
    Resume(ResumeArgs),
    /// Ask an execution to stop at its next safe point; its cleanups run
    Cancel(CancelArgs),
    /// List pending approvals
    Approvals,
    /// Approve (or reject) the pending approval of an execution
    Approve(ApproveArgs),
    /// List executions, or show one
    Executions(ExecutionsArgs),
    /// List the runbooks drydock knows: bundled and from runbook directories
    Runbooks,
    /// Check runbook files: syntax, metadata and parameter declarations
    Validate(ValidateArgs),
    /// Interactive troubleshooting shell: evaluate Rhai with drydock's primitives
    Repl,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Runbook name (see `drydock runbooks`) or path to a .rhai file
    pub runbook: String,
    /// A parameter as NAME=VALUE (repeatable)
    #[arg(short, long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Parameters from a JSON object file (command-line --param wins)
    #[arg(long, value_name = "FILE")]
    pub params_file: Option<PathBuf>,
    /// Start the execution in the background and return its id
    #[arg(long)]
    pub detach: bool,
    /// Approve every approval automatically (for drills); recorded as such in the journal
    #[arg(long)]
    pub auto_approve: bool,
    /// Who is starting it [default: $DRYDOCK_USER or $USER]
    #[arg(long = "as", value_name = "NAME")]
    pub as_user: Option<String>,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Execution id (a unique prefix is enough)
    pub execution: String,
    /// Reopen a Failed, TimedOut or Cancelled execution and run its failed part again
    #[arg(long)]
    pub retry: bool,
    /// Resume in the background
    #[arg(long)]
    pub detach: bool,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// Execution id (a unique prefix is enough)
    pub execution: String,
    /// Return once the request is recorded instead of waiting for the execution to stop
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// Execution id (a unique prefix is enough)
    pub execution: String,
    /// Reject instead of approving
    #[arg(long)]
    pub reject: bool,
    /// Why
    #[arg(long, default_value = "")]
    pub comment: String,
    /// Approver name [default: $DRYDOCK_USER or $USER]
    #[arg(long = "as", value_name = "NAME")]
    pub as_user: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExecutionsArgs {
    #[command(subcommand)]
    pub show: Option<ExecutionsCommand>,
    /// Only executions in this state
    #[arg(long)]
    pub state: Option<String>,
    /// Only executions of this runbook
    #[arg(long)]
    pub runbook: Option<String>,
    /// Include child executions
    #[arg(long)]
    pub all: bool,
    /// At most this many, newest first
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

#[derive(Debug, Subcommand)]
pub enum ExecutionsCommand {
    /// Steps, attempts, outputs, errors, approvals and printed lines of one execution
    Show {
        /// Execution id (a unique prefix is enough)
        execution: String,
    },
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Runbook files
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}
