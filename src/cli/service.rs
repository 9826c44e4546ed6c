//! `drydock serve` and what it runs: schedules, maintenance windows,
//! change calendars, API tokens.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::runbooks::FleetArgs;

#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// Every schedule with its next run and last result (the default)
    List,
    /// Add (or replace) a schedule
    Add(Box<ScheduleAddArgs>),
    /// A schedule's definition and its recent slots (run, missed, skipped, and why)
    Show { name: String },
    /// Remove a schedule (its history stays)
    Remove { name: String },
    /// Skip a schedule's slots until it is resumed
    Pause { name: String },
    /// Resume a paused schedule
    Resume { name: String },
    /// Run a schedule's runbook now, in the background
    RunNow { name: String },
    /// Approve a schedule's runbook as it is now, after it changed (its slots are skipped until then); its runs are then requested by you
    Update { name: String },
    /// Add or replace the schedules of a TOML file ([[schedule]] tables)
    Import { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum WindowsCommand {
    /// Every window (the default)
    List,
    /// Add or redefine a window
    Add {
        name: String,
        /// When it opens: cron(…), rate(…) or at(…)
        #[arg(long)]
        schedule: String,
        /// How long it stays open
        #[arg(long)]
        duration: String,
        /// No task starts in the last CUTOFF of the window
        #[arg(long, default_value = "0s")]
        cutoff: String,
        /// IANA time zone [default: UTC]
        #[arg(long)]
        timezone: Option<String>,
        /// At the end: finish (running tasks go on) or cancel
        #[arg(long, default_value = "finish")]
        at_end: String,
    },
    /// Register a task (lower priority runs first; equal priorities run together)
    Task {
        window: String,
        task: String,
        #[arg(long)]
        runbook: String,
        #[arg(short, long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        #[arg(long, default_value_t = 1)]
        priority: i64,
    },
    /// A window, its tasks and its recent openings
    Show { name: String },
    /// Remove a window and its tasks
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
pub enum CalendarCommand {
    /// Every calendar and whether it is open now (the default)
    List,
    /// Add or redefine a calendar
    Add {
        name: String,
        /// open: events are freezes; closed: events are change windows
        #[arg(long, default_value = "open")]
        default: String,
        /// A scheduled run while it is closed: skip, or approval (waits for an override)
        #[arg(long, default_value = "skip")]
        on_closed: String,
    },
    /// Add an event (times in UTC unless they carry an offset)
    Event {
        name: String,
        #[arg(long)]
        start: String,
        #[arg(long)]
        end: String,
        #[arg(long, default_value = "")]
        summary: String,
    },
    /// Add the events of an iCalendar (.ics) file
    Import { name: String, file: PathBuf },
    /// A calendar and its events
    Show { name: String },
    /// open or closed (exit code 0 or 1), now or --at a time
    State {
        name: String,
        #[arg(long)]
        at: Option<String>,
    },
    /// Remove a calendar and its events
    Remove { name: String },
}

#[derive(Debug, Args)]
pub struct ScheduleAddArgs {
    pub name: String,
    /// Runbook name or path
    #[arg(long)]
    pub runbook: String,
    /// cron(MIN HOUR DOM MON DOW [YEAR]), the five cron fields, rate(N minutes|hours|days) or at(YYYY-MM-DDTHH:MM:SS)
    #[arg(long)]
    pub schedule: String,
    /// A parameter as NAME=VALUE (repeatable); secrets as NAME=param:STORED
    #[arg(short, long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// IANA time zone the schedule is read in [default: UTC]
    #[arg(long)]
    pub timezone: Option<String>,
    /// No run before this date (YYYY-MM-DD[THH:MM])
    #[arg(long)]
    pub start: Option<String>,
    /// No run after this date
    #[arg(long)]
    pub end: Option<String>,
    /// Missed slots: skip (default) or catch-up (the latest, once, within --max-lateness)
    #[arg(long)]
    pub missed: Option<String>,
    /// How late a caught-up slot may be [default: 1h]
    #[arg(long)]
    pub max_lateness: Option<String>,
    /// A change calendar that must be open
    #[arg(long)]
    pub calendar: Option<String>,
    #[command(flatten)]
    pub fleet: FleetArgs,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServeArgs {
    /// A schedules file (TOML) re-read whenever it changes [default: DATA_DIR/schedules.toml]
    #[arg(long)]
    pub schedules: Option<PathBuf>,
    /// Where the web console and HTTP API listen (`off` for none; port 0 picks one)
    #[arg(long, default_value = "127.0.0.1:8450")]
    pub listen: String,
    /// Allow --listen on an address other machines can reach (plain HTTP carries tokens in clear: put a TLS proxy in front)
    #[arg(long)]
    pub listen_public: bool,
    /// How often every instance's status checks run (`off` for never); changes become instance.status events, and instances with --auto-recovery on whose system check fails are started again
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub check_interval: String,
    /// Automatic recoveries of one instance allowed within --recovery-window; past that it stays stopped, and an event says why
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub max_recoveries: u32,
    /// The window --max-recoveries counts in
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub recovery_window: String,
    /// How long the event stream keeps events (`off` for ever); older ones no rule still needs are removed every hour
    #[arg(long, value_name = "DURATION", default_value = "30d")]
    pub event_retention: String,
    #[command(subcommand)]
    pub action: Option<ServeCommand>,
}

#[derive(Debug, Subcommand)]
pub enum ServeCommand {
    /// Ask the running serve of this data directory how it is doing (over
    /// its Unix socket, DATA_DIR/serve.sock); exit 1 when none runs
    Status,
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// The rules (the default)
    List,
    /// A rule: when an event matches, `drydock serve` starts the runbook
    /// (once per event, whatever restarts), with fields of the event as
    /// parameters: -p instance='{{event.instance}}'
    Add(RuleAddArgs),
    /// Remove a rule
    Remove { name: String },
    /// A rule and its latest firings (which event, which execution)
    Show { name: String },
}

/// `drydock rules add`.
#[derive(Debug, Args)]
pub struct RuleAddArgs {
    /// The rule's name
    pub name: String,
    /// The event: TYPE [VALUE], like 'instance.status impaired',
    /// 'instance.recovery limit', 'execution.ended Failed'
    #[arg(
        long,
        value_name = "SPEC",
        required_unless_present = "console",
        conflicts_with = "console"
    )]
    pub event: Option<String>,
    /// A regular expression watched for on every instance's serial
    /// console (its instance.console event fires the rule), like
    /// 'Press S to skip mounting'
    #[arg(long, value_name = "REGEX")]
    pub console: Option<String>,
    /// More fields the event must have (repeatable): instance=i-…, region=…, data.KEY=VALUE
    #[arg(long = "match", value_name = "KEY=VALUE")]
    pub matches: Vec<String>,
    /// The runbook to start
    #[arg(long, required_unless_present = "webhook", conflicts_with = "webhook")]
    pub runbook: Option<String>,
    /// Or: POST the event (JSON) to this URL, signed (X-Drydock-Signature: sha256=HMAC), tried again with backoff
    #[arg(long, value_name = "URL", requires = "webhook_secret")]
    pub webhook: Option<String>,
    /// The webhook's signing key, from the parameter store: param:NAME (`drydock param put NAME --secure`)
    #[arg(long, value_name = "param:NAME")]
    pub webhook_secret: Option<String>,
    /// Let the webhook be on a loopback, private or link-local address (refused by default: a rule must not make the host probe its own network)
    #[arg(long, requires = "webhook")]
    pub allow_private: bool,
    /// A parameter (repeatable): a value, or text with {{event.instance}}, {{event.data.…}}
    #[arg(long = "param", short = 'p', value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// Who approves each run before it starts (comma-separated; default: it starts at once)
    #[arg(long, value_delimiter = ',')]
    pub approvers: Vec<String>,
    /// At most this many runs per hour (more matching events are recorded, not run)
    #[arg(long, default_value_t = 6)]
    pub max_per_hour: u32,
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Your tokens (the default; root sees everyone's)
    List,
    /// A new token that acts as you in the web console and HTTP API (shown once)
    Create {
        #[arg(long, default_value = "")]
        label: String,
        /// How long it is accepted (e.g. 30d, 12h; at most 366d); there is no "never"
        #[arg(long, value_name = "DURATION", default_value = "90d")]
        expires: String,
        /// What it may do besides reading: read (only read), approve
        /// (approve and reject), run (start, cancel, resume), console
        /// (instances' consoles), admin (all of these)
        #[arg(long, value_name = "SCOPE", default_value = "read")]
        scope: String,
    },
    /// Revoke a token by id
    Revoke { id: String },
}
