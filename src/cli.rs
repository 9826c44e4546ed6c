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

    /// Region to act in [default: $DRYDOCK_REGION, `region` in the config file, else region-a]
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,

    /// Profile acting (owns the images it makes) [default: $DRYDOCK_PROFILE, `profile` in the config file, else default]
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,

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
    /// The parameter store: named values with versions and labels, secure ones encrypted at rest
    #[command(subcommand)]
    Param(ParamCommand),
    /// Runbooks on a schedule (cron, rate, at; time zones), run by `drydock serve`
    Schedules {
        #[command(subcommand)]
        action: Option<SchedulesCommand>,
    },
    /// The long-running side: runs schedules, resumes what it started after a restart
    Serve(ServeArgs),
    /// Access tokens for the web console and HTTP API; each acts as the account that created it
    Tokens {
        #[command(subcommand)]
        action: Option<TokensCommand>,
    },
    /// Maintenance windows: a schedule, a duration and a cutoff, with tasks by priority
    Windows {
        #[command(subcommand)]
        action: Option<WindowsCommand>,
    },
    /// Change calendars: open by default (events are freezes) or closed (events are change windows)
    Calendar {
        #[command(subcommand)]
        action: Option<CalendarCommand>,
    },
    /// List executions, or show one
    Executions(ExecutionsArgs),
    /// List the runbooks drydock knows: bundled and from runbook directories
    Runbooks,
    /// Check runbook files: syntax, metadata and parameter declarations
    Validate(ValidateArgs),
    /// Interactive troubleshooting shell: Rhai with drydock's primitives,
    /// completion, consoles, runbooks and approvals (`:help` inside)
    Repl {
        /// Vi editing mode (default Emacs; also DRYDOCK_REPL_MODE=vi)
        #[arg(long)]
        vi: bool,
        /// Evaluate this entry (Rhai or a `:command`) and exit; repeatable.
        /// Without a terminal, entries are read from stdin
        #[arg(short = 'c', long = "command", value_name = "ENTRY")]
        command: Vec<String>,
    },
    /// Build guest images, list them
    #[command(subcommand)]
    Image(ImageCommand),
    /// List images of the region (`drydock images build|create|copy|…` works too)
    Images {
        #[command(subcommand)]
        action: Option<ImageCommand>,
    },
    /// List instances of the region
    Instances(InstancesArgs),
    /// Launch, start, stop, reboot, terminate or modify an instance
    #[command(subcommand)]
    Instance(InstanceCommand),
    /// Put real faults into instances launched with --allow-faults (to practise recoveries and drills), list and revert them
    #[command(subcommand)]
    Fault(FaultCommand),
    /// Driver volumes: kernel modules for another instance generation, from the Debian kernel package of the guest's kernel (no network in the guest)
    #[command(subcommand)]
    DriverVolume(DriverVolumeCommand),
    /// Disaster-recovery drills (the dr-drill runbook): their reports
    #[command(subcommand)]
    Drill(DrillCommand),
    /// What one boot of an instance printed on its serial console
    ConsoleOutput(ConsoleOutputArgs),
    /// Attach to an instance's serial console (Ctrl-] then q detaches)
    Console(ConsoleArgs),
    /// List regions and what each holds
    Regions,
    /// The host after an outage: reconcile every region, restart instances, resume executions
    #[command(subcommand)]
    Host(HostCommand),
    /// What this machine's KVM is and which VMM backend instances get
    HostInfo,
    /// Instance types: vCPUs, memory, device generation
    InstanceTypes,
    /// List volumes of the region (`drydock volumes create|attach|…` works too)
    Volumes {
        #[command(subcommand)]
        action: Option<VolumeCommand>,
    },
    /// Create, attach, detach, delete or modify a volume
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// List snapshots of the region (`drydock snapshots create|delete` works too)
    Snapshots {
        #[command(subcommand)]
        action: Option<SnapshotCommand>,
    },
    /// Create or delete a snapshot
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Tag an instance or volume: drydock tag RESOURCE-ID KEY=VALUE…
    Tag(TagArgs),
    /// Remove tags from an instance or volume: drydock untag RESOURCE-ID KEY…
    Untag(UntagArgs),
    /// Instances and volumes of the region with their tags, optionally only those matching tag:KEY=VALUE
    Tags(TagsArgs),
    /// Runs one instance's VM (started by drydock itself)
    #[command(hide = true)]
    InstanceSupervisor { instance: String },
    /// Benchmarks drydock's VMM against QEMU microvm (boot to init,
    /// memory beyond guest RAM, start to first instruction)
    #[command(hide = true)]
    VmmBench(crate::commands::vmm_bench::VmmBenchArgs),
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build an image from Debian packages (cached by package versions) and register it in the region
    Build(ImageBuildArgs),
    /// Make an image from an instance's root volume (stops and restarts a running instance unless --no-stop)
    Create {
        instance: String,
        #[arg(long)]
        name: String,
        /// Image a running instance as it is (crash-consistent)
        #[arg(long)]
        no_stop: bool,
        /// Make the call idempotent: a retry with the same token returns what the first call made
        #[arg(long, value_name = "TOKEN")]
        client_token: Option<String>,
    },
    /// Copy an image to another region
    Copy {
        image: String,
        #[arg(long, value_name = "REGION")]
        to_region: String,
        /// Make the call idempotent: a retry with the same token returns what the first call made
        #[arg(long, value_name = "TOKEN")]
        client_token: Option<String>,
    },
    /// Everything about one image
    Describe { image: String },
    /// Remove an image (instances launched from it keep running)
    Deregister { image: String },
    /// Launch permissions: public or private, and profiles allowed to launch it
    Modify {
        image: String,
        #[arg(long, conflicts_with = "private")]
        public: bool,
        #[arg(long)]
        private: bool,
        #[arg(long = "add-profile", value_name = "PROFILE")]
        add_profiles: Vec<String>,
        #[arg(long = "remove-profile", value_name = "PROFILE")]
        remove_profiles: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct ImageBuildArgs {
    /// Image name
    #[arg(long, default_value = "debian-cloud")]
    pub name: String,
    /// Guest drivers the initramfs loads (comma-separated) [default: virtio_mmio,virtio_pci,virtio_blk]
    #[arg(long, value_delimiter = ',')]
    pub drivers: Vec<String>,
    /// Root volume size in MiB
    #[arg(long, default_value_t = 256)]
    pub root_size: u64,
    /// Your own kernel (bzImage or ELF vmlinux) with the virtio drivers built in, instead of Debian's cloud kernel (scripts/minimal-kernel builds one)
    #[arg(long, value_name = "FILE", conflicts_with = "drivers")]
    pub kernel: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct InstancesArgs {
    /// List every region
    #[arg(long)]
    pub all_regions: bool,
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// After a host restart (power loss, crash): find instances whose process died, start those
    /// launched with --after-host-failure start, record the outage in each interrupted
    /// execution's journal and resume them in the background
    Recover {
        /// Only report and restart instances; leave interrupted executions for `drydock resume`
        #[arg(long)]
        no_resume: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum InstanceCommand {
    /// Launch a new instance from an image
    Launch(LaunchArgs),
    /// Start a stopped instance
    Start { instance: String },
    /// Stop a running instance (the guest syncs and powers off; --force pulls the plug)
    Stop {
        instance: String,
        #[arg(long)]
        force: bool,
    },
    /// Reboot in place: same VM, same volumes
    Reboot { instance: String },
    /// Terminate: stop, delete DeleteOnTermination volumes, detach the rest
    Terminate { instance: String },
    /// Change the type of a stopped instance, or what a host outage leaves it as
    Modify {
        instance: String,
        #[arg(
            long = "type",
            value_name = "TYPE",
            required_unless_present = "after_host_failure"
        )]
        instance_type: Option<String>,
        /// stop (stays stopped after a host outage, as EC2) or start (started again by `drydock host recover`)
        #[arg(long, value_name = "stop|start")]
        after_host_failure: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// Image id (see `drydock images`)
    #[arg(long)]
    pub image: String,
    /// Instance type (see `drydock instance-types`)
    #[arg(long = "type", default_value = "m1.small")]
    pub instance_type: String,
    /// Root password for console login (stored only as a SHA-512 crypt hash): param:NAME, file:PATH, env:VAR or prompt keep it off the command line
    #[arg(long, env = "DRYDOCK_ROOT_PASSWORD", hide_env_values = true)]
    pub root_password: Option<String>,
    /// Public SSH key file to authorize for root (repeatable)
    #[arg(long = "ssh-key", value_name = "FILE")]
    pub ssh_keys: Vec<std::path::PathBuf>,
    /// Script the guest runs once at first boot
    #[arg(long, value_name = "FILE")]
    pub user_data: Option<std::path::PathBuf>,
    /// Guest host name [default: the instance id]
    #[arg(long)]
    pub hostname: Option<String>,
    /// Keep the root volume when the instance is terminated
    #[arg(long)]
    pub keep_root_volume: bool,
    /// Allow `drydock fault` to break this instance (tags it allow-faults=true)
    #[arg(long)]
    pub allow_faults: bool,
    /// What a host outage leaves it as: stop (default, as EC2) or start (started again by `drydock host recover`)
    #[arg(long, value_name = "stop|start", default_value = "stop")]
    pub after_host_failure: String,
    /// Tag it at launch (repeatable); written with the instance's record
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// Make the launch idempotent: a retry with the same token returns (and starts) the instance the first launch made
    #[arg(long, value_name = "TOKEN")]
    pub client_token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum FaultCommand {
    /// The faults drydock can put into an instance, and what they look like
    Kinds,
    /// Put a fault into the root volume of a stopped instance
    Inject {
        instance: String,
        /// One of `drydock fault kinds`
        fault: String,
        /// What the fault acts on, for the faults that take it (stop-service: the service's name)
        target: Option<String>,
    },
    /// Undo a fault (by id or kind), or every fault of the instance (stopped)
    Revert {
        instance: String,
        fault: Option<String>,
    },
    /// Faults put into this region's instances (or one instance's)
    List { instance: Option<String> },
}

#[derive(Debug, Subcommand)]
pub enum DriverVolumeCommand {
    /// Build a driver volume in the region (prints its id)
    Create {
        /// The guest's kernel release (`uname -r` in the guest)
        #[arg(long, value_name = "RELEASE")]
        kernel: String,
        /// Kernel modules to carry, comma-separated (their dependencies are added)
        #[arg(long, value_delimiter = ',', required = true)]
        drivers: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// A drill's verdict, RTO and RPO per instance against the targets, and its timeline
    Report {
        /// The dr-drill execution (any unique prefix)
        execution: String,
        /// Also write the report as a page with the timeline drawn (SVG inside)
        #[arg(long, value_name = "FILE")]
        html: Option<std::path::PathBuf>,
        /// Also write the timeline alone as an SVG picture
        #[arg(long, value_name = "FILE")]
        svg: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct ConsoleOutputArgs {
    pub instance: String,
    /// Only the last N lines
    #[arg(long)]
    pub tail: Option<usize>,
    /// Which boot (1 = first) [default: the latest]
    #[arg(long)]
    pub boot: Option<u32>,
    /// Only output from this byte offset of the boot's log (the reply says the next offset)
    #[arg(long, conflicts_with = "tail")]
    pub since: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    pub instance: String,
    /// Watch only; others may type
    #[arg(long)]
    pub read_only: bool,
    /// Take the console over from whoever holds it
    #[arg(long, conflicts_with = "read_only")]
    pub force: bool,
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
    },
    /// Revoke a token by id
    Revoke { id: String },
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
pub enum VolumeCommand {
    /// Create a network volume: empty, formatted ext4, or from a snapshot
    Create {
        /// Size in MiB (default with --snapshot: the snapshot's size)
        #[arg(long)]
        size: Option<u64>,
        /// Restore this snapshot into the new volume
        #[arg(long)]
        snapshot: Option<String>,
        /// Format it ext4 with this label
        #[arg(long, value_name = "LABEL")]
        ext4: Option<String>,
        /// Tag it at creation (repeatable)
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
        /// Make the call idempotent: a retry with the same token returns what the first call made
        #[arg(long, value_name = "TOKEN")]
        client_token: Option<String>,
    },
    /// Attach to an instance (stopped, or running for new-generation types)
    Attach {
        volume: String,
        instance: String,
        /// Attach as the root volume of a stopped instance that has none
        #[arg(long)]
        root: bool,
    },
    /// Detach (root volumes only from stopped instances; never instance storage)
    Detach {
        volume: String,
        /// Detach from a running instance even if the guest still has it mounted
        #[arg(long)]
        force: bool,
    },
    /// Delete a detached volume
    Delete { volume: String },
    /// Change whether the volume is deleted when its instance terminates
    Modify {
        volume: String,
        #[arg(long, value_name = "true|false", action = clap::ArgAction::Set)]
        delete_on_termination: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot a volume (only its allocated extents are copied)
    Create {
        volume: String,
        /// Make the call idempotent: a retry with the same token returns what the first call made
        #[arg(long, value_name = "TOKEN")]
        client_token: Option<String>,
    },
    /// Delete a snapshot
    Delete { snapshot: String },
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// An instance (i-…) or volume (vol-…)
    pub resource: String,
    /// KEY=VALUE (an empty value is allowed: KEY=)
    #[arg(required = true, value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UntagArgs {
    /// An instance (i-…) or volume (vol-…)
    pub resource: String,
    #[arg(required = true, value_name = "KEY")]
    pub keys: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TagsArgs {
    /// tag:KEY=VALUE or tag:KEY
    pub filter: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("drydock").chain(args.iter().copied()))
    }

    #[test]
    fn the_fleet_flags_are_the_same_for_run_and_schedules() {
        let flags = [
            "--targets",
            "tag:role=web",
            "--target-param",
            "instance",
            "--max-concurrency",
            "25%",
            "--max-errors",
            "1",
        ];
        let expect = |f: &FleetArgs| {
            assert_eq!(f.targets.as_deref(), Some("tag:role=web"));
            assert_eq!(f.target_param.as_deref(), Some("instance"));
            assert_eq!(f.max_concurrency.as_deref(), Some("25%"));
            assert_eq!(f.max_errors.as_deref(), Some("1"));
        };
        let run = parse(&[&["run", "rb"][..], &flags].concat()).unwrap();
        let Command::Run(args) = run.command else {
            panic!("not a run: {run:?}")
        };
        expect(&args.fleet);
        let add = parse(
            &[
                &[
                    "schedules",
                    "add",
                    "s",
                    "--runbook",
                    "rb",
                    "--schedule",
                    "rate(1 hours)",
                ][..],
                &flags,
            ]
            .concat(),
        )
        .unwrap();
        let Command::Schedules {
            action: Some(SchedulesCommand::Add(args)),
        } = add.command
        else {
            panic!("not a schedules add: {add:?}")
        };
        expect(&args.fleet);
        // The counts mean nothing without targets, in both.
        for cmd in [
            &["run", "rb"][..],
            &[
                "schedules",
                "add",
                "s",
                "--runbook",
                "rb",
                "--schedule",
                "rate(1 hours)",
            ],
        ] {
            let e = parse(&[cmd, &["--max-errors", "1"]].concat()).unwrap_err();
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::MissingRequiredArgument,
                "{e}"
            );
        }
        let plain = parse(&["run", "rb"]).unwrap();
        let Command::Run(args) = plain.command else {
            panic!()
        };
        assert!(args.fleet.targets.is_none());
    }
}
