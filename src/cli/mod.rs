//! The command-line interface: every command and flag, the top level
//! here and the arguments of each group of commands beside it
//! ([`runbooks`], [`service`], [`host`]).

mod host;
mod runbooks;
mod service;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use host::*;
pub use runbooks::*;
pub use service::*;

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
    /// Event rules: an event (or a pattern on any instance's console) starts a runbook, run by `drydock serve`
    Rules {
        #[command(subcommand)]
        action: Option<RulesCommand>,
    },
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
    /// The host's events, oldest first: instances' states and status
    /// checks, recoveries, executions, approvals (`--follow` to watch)
    Events(EventsArgs),
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
    /// List the region's VPCs (a default one is made on first use) and the network namespace holding each
    Vpcs,
    /// Create a VPC, give it a way out (uplink), delete it
    #[command(subcommand)]
    Vpc(VpcCommand),
    /// List the region's subnets: range, kind, router address, addresses in use
    Subnets,
    /// Create or delete a subnet (public: out through the VPC's uplink; --private: never out)
    #[command(subcommand)]
    Subnet(SubnetCommand),
    /// List the region's security groups with their rules and members
    SecurityGroups,
    /// Create a security group, authorize or revoke its rules, delete it
    #[command(subcommand)]
    SecurityGroup(SecurityGroupCommand),
    /// List the region's network interfaces: address, subnet, instance and device index, or available
    NetworkInterfaces,
    /// Create, attach (to a running n2 on QEMU, or a stopped instance), detach or delete a network interface
    #[command(subcommand)]
    NetworkInterface(NetworkInterfaceCommand),
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
    /// SSH to an instance (OpenSSH's client, from inside its VPC; its host key pinned to the one its console announced): drydock ssh i-… [-i KEY] [-- COMMAND]
    Ssh(SshArgs),
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
    /// Status checks, run now: system (instance process, VMM, volumes) and
    /// instance (the guest answers; no kernel panic or stuck boot on its
    /// console) — ok, impaired, initializing or insufficient-data; exit 1
    /// when one is impaired
    InstanceStatus {
        /// One instance [default: every running one of the region]
        instance: Option<String>,
    },
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
    /// Benchmarks drydock's VMM against QEMU microvm (boot to init,
    /// memory beyond guest RAM, start to first instruction)
    #[command(hide = true)]
    VmmBench(crate::commands::vmm_bench::VmmBenchArgs),
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
