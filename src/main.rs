//! The `drydock` command: a thin front end over drydock's library crates.

mod cli;
mod commands;
mod config;
mod failure;
mod progress;

use clap::Parser;
use drydock_runtime::{Catalog, Executor};

use cli::{Cli, Command};
use commands::Context;
use failure::CliError;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DRYDOCK_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let code = match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            e.code
        }
    };
    std::process::exit(code);
}

/// Commands that only read and print: when their reader goes away
/// (`drydock executions | head`) they end quietly, as Unix tools do, by
/// SIGPIPE. Runners, servers, the REPL and the VMM keep Rust's default (the
/// signal ignored, a write error instead) so a closed pipe never kills work.
fn only_prints(command: &Command) -> bool {
    matches!(
        command,
        Command::Executions(_)
            | Command::Events(_)
            | Command::Runbooks
            | Command::Approvals
            | Command::Images { action: None }
            | Command::Instances(_)
            | Command::Vpcs
            | Command::Subnets
            | Command::SecurityGroups
            | Command::NetworkInterfaces
            | Command::ConsoleOutput(_)
            | Command::Regions
            | Command::HostInfo
            | Command::InstanceTypes
            | Command::Volumes { action: None }
            | Command::Snapshots { action: None }
            | Command::Tags(_)
            | Command::Drill(_)
    )
}

fn dispatch(cli: Cli) -> Result<i32, CliError> {
    if only_prints(&cli.command) {
        // SAFETY: setting a signal's disposition to the default is
        // async-signal-safe and done before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let settings = config::resolve(
        cli.data_dir,
        cli.runbook_dirs,
        cli.config,
        cli.region,
        cli.profile,
    )?;
    drydock_runtime::access::init(
        &settings.data_dir,
        drydock_runtime::access::Sharing {
            group: settings.group.clone(),
            owner: settings.owner,
        },
    )
    .map_err(|e| {
        CliError::usage(format!(
            "cannot set up the data directory {}: {e}",
            settings.data_dir.display()
        ))
    })?;
    // State left by older versions of drydock (0755 directories, 0644
    // journals and logs) is tightened by the first command of any kind,
    // not only by host commands (once: a mark file records it).
    drydock_runtime::private::tighten_data_dir(&settings.data_dir);
    if let Some(why) = &settings.ignored_admins {
        eprintln!("drydock: {why}");
    }
    // Runbook files run only when written by the caller, root or the
    // shared data directory's owner (runtime/src/provenance.rs).
    let catalog = Catalog::new(drydock_runbooks::bundled(), settings.runbook_dirs.clone())
        .with_trust(drydock_runtime::provenance::Trust::for_caller(
            settings.owner,
        ))
        .with_overrides(settings.override_bundled.clone());
    let executor = Executor::new(settings.data_dir.clone(), catalog)
        .with_location(&settings.region, &settings.profile)
        .with_admins(settings.admins.clone())
        .with_primitives(drydock_stdlib::install);
    let ctx = Context {
        settings,
        executor,
        json: cli.json,
    };
    match cli.command {
        Command::Run(args) => commands::run::run(&ctx, args),
        Command::Resume(args) => commands::run::resume(&ctx, args),
        Command::Cancel(args) => commands::run::cancel(&ctx, args),
        Command::Approvals => commands::approvals::list(&ctx),
        Command::Approve(args) => commands::approvals::decide(&ctx, args),
        Command::Param(cmd) => commands::params::run(&ctx, cmd),
        Command::Schedules { action } => commands::schedules::run(&ctx, action),
        Command::Serve(args) => commands::serve::run(&ctx, args),
        Command::Calendar { action } => commands::calendar::run(&ctx, action),
        Command::Windows { action } => commands::windows::run(&ctx, action),
        Command::Tokens { action } => commands::tokens::run(&ctx, action),
        Command::Rules { action } => commands::rules::run(&ctx, action),
        Command::Executions(args) => commands::executions::run(&ctx, args),
        Command::Events(args) => commands::events::run(&ctx, args),
        Command::Runbooks => commands::runbooks::list(&ctx),
        Command::Validate(args) => commands::runbooks::validate(&ctx, args),
        Command::Image(cli::ImageCommand::Build(args)) => commands::host::image_build(&ctx, args),
        Command::Image(cmd) => commands::host::image(&ctx, cmd),
        Command::Images { action: None } => commands::host::images(&ctx),
        Command::Images {
            action: Some(cli::ImageCommand::Build(args)),
        } => commands::host::image_build(&ctx, args),
        Command::Images { action: Some(cmd) } => commands::host::image(&ctx, cmd),
        Command::Instances(args) => commands::host::instances(&ctx, args),
        Command::Instance(cmd) => commands::host::instance(&ctx, cmd),
        Command::ConsoleOutput(args) => commands::host::console_output(&ctx, args),
        Command::Regions => commands::host::regions(&ctx),
        Command::Host(cli::HostCommand::Recover { no_resume }) => {
            commands::recover::run(&ctx, no_resume)
        }
        Command::Host(cli::HostCommand::SetupNetwork {
            users,
            uplinks,
            remove,
        }) => commands::setup_network::setup(&ctx, &users, &uplinks, remove),
        Command::Host(cli::HostCommand::NetworkAgent) => commands::setup_network::agent(),
        Command::Host(cli::HostCommand::SshProxy { vpc, addr }) => {
            commands::ssh::proxy(&ctx, &vpc, &addr)
        }
        Command::Console(args) => commands::console::attach(&ctx, args),
        Command::Ssh(args) => commands::ssh::run(&ctx, args),
        Command::HostInfo => commands::host::host_info(&ctx),
        Command::InstanceTypes => commands::host::instance_types(&ctx),
        Command::InstanceStatus { instance } => commands::status_checks::run(&ctx, instance),
        Command::Vpcs => commands::network::vpcs(&ctx),
        Command::Subnets => commands::network::subnets(&ctx),
        Command::Vpc(cmd) => commands::network::vpc(&ctx, cmd),
        Command::Subnet(cmd) => commands::network::subnet(&ctx, cmd),
        Command::SecurityGroups => commands::security_groups::list(&ctx),
        Command::NetworkInterfaces => commands::network_interfaces::list(&ctx),
        Command::NetworkInterface(cmd) => commands::network_interfaces::run(&ctx, cmd),
        Command::SecurityGroup(cmd) => commands::security_groups::run(&ctx, cmd),
        Command::Volumes { action: None } => commands::volumes::volumes(&ctx),
        Command::Volumes { action: Some(cmd) } => commands::volumes::volume(&ctx, cmd),
        Command::Volume(cmd) => commands::volumes::volume(&ctx, cmd),
        Command::Snapshots { action: None } => commands::volumes::snapshots(&ctx),
        Command::Snapshots { action: Some(cmd) } => commands::volumes::snapshot(&ctx, cmd),
        Command::Snapshot(cmd) => commands::volumes::snapshot(&ctx, cmd),
        Command::Fault(cmd) => commands::faults::run(&ctx, cmd),
        Command::Drill(cmd) => commands::drill::run(&ctx, cmd),
        Command::DriverVolume(cmd) => commands::drivers::run(&ctx, cmd),
        Command::Tag(args) => commands::volumes::tag(&ctx, args),
        Command::Untag(args) => commands::volumes::untag(&ctx, args),
        Command::Tags(args) => commands::volumes::tags(&ctx, args),
        Command::VmmBench(args) => commands::vmm_bench::run(&ctx, args),
        Command::Repl { vi, command } => {
            let s = &ctx.settings;
            Ok(drydock_repl::run(drydock_repl::ReplOptions {
                data_dir: s.data_dir.clone(),
                region: s.region.clone(),
                profile: s.profile.clone(),
                install: &drydock_stdlib::install,
                executor: Some(ctx.executor.clone()),
                vi,
                commands: command,
                serve_status: Some(
                    &|| match commands::serve_socket::get(&s.data_dir, "/api/serve") {
                        Ok(Some((200, v))) => Ok(Some(v)),
                        Ok(Some((_, v))) => Err(format!(
                            "the serve refused: {}",
                            v["error"].as_str().unwrap_or("no reason given")
                        )),
                        Ok(None) => Ok(None),
                        Err(e) => Err(e.to_string()),
                    },
                ),
            })?)
        }
    }
}
