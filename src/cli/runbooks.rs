//! Running runbooks and following them: run, resume, cancel, approve,
//! executions, validate, and the parameter store.

use std::path::PathBuf;

use clap::{Args, Subcommand};

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
    /// Settle approvals automatically where the runbook allows it (auto_approve: "allowed"), or every approval when you are an admin; recorded with your name
    #[arg(long)]
    pub auto_approve: bool,
    /// Only your own account name is accepted: drydock acts as the OS account that runs it
    #[arg(long = "as", value_name = "NAME", hide = true)]
    pub as_user: Option<String>,
    #[command(flatten)]
    pub fleet: FleetArgs,
}

/// Running one runbook over many instances or volumes, as a fleet
/// (`run`, `schedules add`).
#[derive(Debug, Clone, Default, Args)]
pub struct FleetArgs {
    /// Run once per target, as a fleet: ids (comma-separated), tag:KEY=VALUE, tag:KEY or name:GLOB (the Name tag); a schedule resolves them at each run
    #[arg(long, value_name = "TARGETS")]
    pub targets: Option<String>,
    /// The parameter each target is given in [default: the runbook's first instance (or volume) parameter]
    #[arg(long, requires = "targets")]
    pub target_param: Option<String>,
    /// At most this many targets at once: a number or a percentage of the targets [default: 1]
    #[arg(long, requires = "targets")]
    pub max_concurrency: Option<String>,
    /// Stop starting targets once more than this many failed: a number or a percentage [default: 0]
    #[arg(long, requires = "targets")]
    pub max_errors: Option<String>,
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
    /// Only your own account name is accepted: you approve as the OS account that runs drydock
    #[arg(long = "as", value_name = "NAME", hide = true)]
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

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EventsArgs {
    /// Only events of this type (instance.state, instance.status,
    /// instance.recovery, instance.console, execution.started, execution.ended,
    /// approval.requested, approval.decided) or family (instance); repeatable
    #[arg(long = "type", value_name = "TYPE")]
    pub types: Vec<String>,
    /// Only events about this instance
    #[arg(long, value_name = "ID")]
    pub instance: Option<String>,
    /// Only events since then: a duration back from now (90m, 2h) or a time (2026-12-07T10:00:00Z)
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only events after this sequence number
    #[arg(long, value_name = "SEQ")]
    pub after: Option<i64>,
    /// At most this many (the newest)
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Keep printing events as they happen (one line each; with --json one object per line)
    #[arg(long, short = 'f')]
    pub follow: bool,
    #[command(subcommand)]
    pub command: Option<EventsCommand>,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Remove events older than a duration that no rule still needs
    /// (`drydock serve --event-retention` does it by itself)
    Prune {
        /// Remove events older than this (e.g. 30d, 12h; at least 1h)
        #[arg(long, value_name = "DURATION")]
        older_than: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ExecutionsCommand {
    /// Steps, attempts, outputs, errors, approvals and printed lines of one execution
    Show {
        /// Execution id (a unique prefix is enough)
        execution: String,
        /// Draw the steps on a time axis (width from COLUMNS, default 100); with --json, start/end offsets in ms
        #[arg(long)]
        timeline: bool,
    },
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Runbook files
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ParamCommand {
    /// Store a new version; the value comes from --value-file, standard input, or a prompt
    Put {
        name: String,
        /// A SecureString: encrypted at rest, shown as **** unless `get --decrypt`
        #[arg(long)]
        secure: bool,
        /// Read the value from this file (one trailing newline is dropped)
        #[arg(long, value_name = "FILE")]
        value_file: Option<PathBuf>,
        /// The value itself, for plain parameters only (a command line is visible in `ps`)
        #[arg(long, conflicts_with = "value_file")]
        value: Option<String>,
        /// What it is for
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Show one version (NAME, NAME:VERSION or NAME:LABEL); secure values as **** unless --decrypt
    Get {
        name: String,
        #[arg(long)]
        decrypt: bool,
    },
    /// The latest version of every parameter (values not shown)
    List,
    /// Every version of a parameter, with who stored it and its labels
    History { name: String },
    /// Put a label on a version (it moves from any other version)
    Label {
        name: String,
        version: i64,
        label: String,
    },
    /// Delete a parameter and all its versions
    Delete { name: String },
}
