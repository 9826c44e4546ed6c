//! `drydock vpcs` and `drydock subnets`: the region's networks.

use serde_json::json;

use super::host_common::open_host;
use super::{print_json, table, when, Context};
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
