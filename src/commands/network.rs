//! `drydock vpcs` and `drydock subnets`: the region's networks.

use serde_json::json;

use drydock_host::SubnetKind;

use super::host_common::open_host;
use super::{print_json, table, when, Context};
use crate::cli::{SubnetCommand, VpcCommand};
use crate::failure::CliError;

/// `drydock vpcs`: the region's VPCs (the default one is made on first
/// use), with the network namespace that holds each on this host.
pub fn vpcs(ctx: &Context) -> Result<i32, CliError> {
    let host = open_host(ctx)?;
    let mut store = host.store()?;
    store.default_subnet(host.region())?;
    let data_dir = &ctx.settings.data_dir;
    let list: Vec<_> = store
        .vpcs(host.region())?
        .into_iter()
        .map(|v| {
            let ns = drydock_host::network::namespace_name(data_dir, &v.id);
            let mut value = serde_json::to_value(&v).unwrap_or_default();
            value["namespace"] = json!(ns);
            value
        })
        .collect();
    if ctx.json {
        print_json(&json!({ "region": host.region(), "vpcs": list }));
        return Ok(0);
    }
    let mut t = table(&[
        "VPC",
        "CIDR",
        "DEFAULT",
        "NAMESPACE ON THIS HOST",
        "CREATED",
    ]);
    for v in &list {
        t.add_row(vec![
            v["id"].as_str().unwrap_or_default().to_string(),
            v["cidr"].as_str().unwrap_or_default().to_string(),
            if v["is_default"] == true { "yes" } else { "no" }.to_string(),
            v["namespace"].as_str().unwrap_or_default().to_string(),
            when(v["created_at"].as_i64().unwrap_or_default()),
        ]);
    }
    println!("region {}\n{t}", host.region());
    Ok(0)
}

/// `drydock subnets`: the region's subnets, their routers and how many
/// addresses are in use.
pub fn subnets(ctx: &Context) -> Result<i32, CliError> {
    let host = open_host(ctx)?;
    let mut store = host.store()?;
    store.default_subnet(host.region())?;
    let interfaces = store.primary_interfaces()?;
    let list: Vec<_> = store
        .subnets(host.region())?
        .into_iter()
        .map(|s| {
            let used = interfaces.values().filter(|i| i.subnet_id == s.id).count();
            let mut value = serde_json::to_value(&s).unwrap_or_default();
            value["gateway"] = json!(s.gateway().to_string());
            value["addresses_in_use"] = json!(used);
            value
        })
        .collect();
    if ctx.json {
        print_json(&json!({ "region": host.region(), "subnets": list }));
        return Ok(0);
    }
    let mut t = table(&[
        "SUBNET", "VPC", "CIDR", "KIND", "ROUTER", "IN USE", "DEFAULT",
    ]);
    for s in &list {
        let text = |k: &str| s[k].as_str().unwrap_or_default().to_string();
        t.add_row(vec![
            text("id"),
            text("vpc_id"),
            text("cidr"),
            text("kind"),
            text("gateway"),
            s["addresses_in_use"].to_string(),
            if s["is_default"] == true { "yes" } else { "no" }.to_string(),
        ]);
    }
    println!("region {}\n{t}", host.region());
    Ok(0)
}

/// `drydock vpc …`.
pub fn vpc(ctx: &Context, cmd: VpcCommand) -> Result<i32, CliError> {
    let host = open_host(ctx)?;
    let (verb, vpc) = match cmd {
        VpcCommand::Create { cidr } => ("created", host.create_vpc(&cidr)?),
        VpcCommand::Uplink { vpc, netns, none } => {
            let uplink = if none { None } else { netns };
            ("changed", host.set_vpc_uplink(&vpc, uplink.as_deref())?)
        }
        VpcCommand::Delete { vpc } => {
            host.delete_vpc(&vpc)?;
            if ctx.json {
                print_json(&json!({ "deleted": vpc }));
            } else {
                println!("{vpc} deleted");
            }
            return Ok(0);
        }
    };
    if ctx.json {
        print_json(&vpc);
    } else {
        let uplink = match &vpc.uplink {
            Some(u) => format!("out through {u}"),
            None => "no way out".to_string(),
        };
        println!(
            "{} {verb}: {} in {}, {uplink}",
            vpc.id, vpc.cidr, vpc.region
        );
    }
    Ok(0)
}

/// `drydock subnet …`.
pub fn subnet(ctx: &Context, cmd: SubnetCommand) -> Result<i32, CliError> {
    let host = open_host(ctx)?;
    match cmd {
        SubnetCommand::Create { vpc, cidr, private } => {
            let kind = if private {
                SubnetKind::Private
            } else {
                SubnetKind::Public
            };
            let s = host.create_subnet(&vpc, &cidr, kind)?;
            if ctx.json {
                let mut v = serde_json::to_value(&s).unwrap_or_default();
                v["gateway"] = json!(s.gateway().to_string());
                print_json(&v);
            } else {
                println!(
                    "{} created: {} ({}) in {}, router {}",
                    s.id,
                    s.cidr,
                    s.kind.as_str(),
                    s.vpc_id,
                    s.gateway()
                );
            }
        }
        SubnetCommand::Delete { subnet } => {
            host.delete_subnet(&subnet)?;
            if ctx.json {
                print_json(&json!({ "deleted": subnet }));
            } else {
                println!("{subnet} deleted");
            }
        }
    }
    Ok(0)
}
