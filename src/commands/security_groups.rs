//! `drydock security-groups` and `drydock security-group …`: stateful
//! firewalls of instances' network interfaces, as EC2's.

use drydock_host::{Direction, GroupRecord, Peer, Protocol, RuleSpec};
use serde_json::json;

use super::host_common::open_host;
use super::{print_json, table, Context};
use crate::cli::{RuleArgs, SecurityGroupCommand};
use crate::failure::CliError;

fn rule_text(r: &drydock_host::RuleRecord) -> String {
    let ports = match r.ports {
        Some((a, b)) if a == b => format!(" {a}"),
        Some((a, b)) => format!(" {a}-{b}"),
        None => String::new(),
    };
    let (dir, word) = match r.direction {
        Direction::Ingress => ("in", "from"),
        Direction::Egress => ("out", "to"),
    };
    let peer = match &r.peer {
        Peer::Cidr(c) => c.clone(),
        Peer::Group(g) => g.clone(),
    };
    format!("{dir} {}{ports} {word} {peer}", r.protocol.as_str())
}

/// `drydock security-groups`.
pub fn list(ctx: &Context) -> Result<i32, CliError> {
    let host = open_host(ctx)?;
    let groups = host.security_groups()?;
    if ctx.json {
        print_json(&json!({ "region": host.region(), "security_groups": groups }));
        return Ok(0);
    }
    let mut t = table(&["GROUP", "NAME", "VPC", "RULES"]);
    for g in &groups {
        t.add_row(vec![
            g.id.clone(),
            drydock_ops::display::shown(&g.name),
            g.vpc_id.clone(),
            g.rules.iter().map(rule_text).collect::<Vec<_>>().join("\n"),
        ]);
    }
    println!("region {}\n{t}", host.region());
    Ok(0)
}

fn spec(args: &RuleArgs) -> Result<RuleSpec, CliError> {
    let peer = match (&args.cidr, &args.source_group) {
        (Some(c), None) => Peer::Cidr(c.clone()),
        (None, Some(g)) => Peer::Group(g.clone()),
        _ => {
            return Err(CliError::usage(
                "name the other side with --cidr CIDR or --source-group SG-ID",
            ))
        }
    };
    let direction = if args.egress {
        Direction::Egress
    } else {
        Direction::Ingress
    };
    Ok(RuleSpec::new(
        direction,
        Protocol::parse(&args.protocol)?,
        args.port.as_deref(),
        peer,
    )?)
}

fn show(ctx: &Context, verb: &str, g: &GroupRecord) {
    if ctx.json {
        print_json(g);
    } else {
        println!("{} ({}) {verb}", g.id, drydock_ops::display::shown(&g.name));
        for r in &g.rules {
            println!("  {}", rule_text(r));
        }
    }
}

/// `drydock security-group …`.
pub fn run(ctx: &Context, cmd: SecurityGroupCommand) -> Result<i32, CliError> {
    let host = open_host(ctx)?;
    match cmd {
        SecurityGroupCommand::Create {
            name,
            description,
            vpc,
        } => {
            let g = host.create_security_group(&name, &description, vpc.as_deref())?;
            show(ctx, "created", &g);
        }
        SecurityGroupCommand::Authorize(args) => {
            let g = host.authorize(&args.group, &spec(&args)?)?;
            show(ctx, "rule added", &g);
        }
        SecurityGroupCommand::Revoke(args) => {
            let g = host.revoke(&args.group, &spec(&args)?)?;
            show(ctx, "rule removed", &g);
        }
        SecurityGroupCommand::Delete { group } => {
            host.delete_security_group(&group)?;
            if ctx.json {
                print_json(&json!({ "deleted": group }));
            } else {
                println!("{group} deleted");
            }
        }
    }
    Ok(0)
}
