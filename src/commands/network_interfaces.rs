//! `drydock network-interfaces` and `drydock network-interface …`:
//! interfaces of their own, attached to instances as their second or
//! third interface (EC2's elastic network interfaces).

use drydock_host::store::InterfaceRecord;
use serde_json::json;

use super::host_common::open_host;
use super::{print_json, table, Context};
use crate::cli::NetworkInterfaceCommand;
use crate::failure::CliError;

fn print_one(ctx: &Context, eni: &InterfaceRecord, said: &str) {
    if ctx.json {
        print_json(&json!(eni));
    } else {
        println!("{said}");
    }
}

fn attachment(eni: &InterfaceRecord) -> String {
    match &eni.instance_id {
        Some(i) => format!("{i} (eth{})", eni.device_index),
        None => "available".into(),
    }
}

/// `drydock network-interfaces`.
pub fn list(ctx: &Context) -> Result<i32, CliError> {
    let host = open_host(ctx)?;
    let all = host.network_interfaces()?;
    if ctx.json {
        print_json(&json!({ "region": host.region(), "network_interfaces": all }));
        return Ok(0);
    }
    let store = host.store()?;
    let mut t = table(&[
        "INTERFACE",
        "PRIVATE IP",
        "MAC",
        "SUBNET",
        "ATTACHED TO",
        "GROUPS",
    ]);
    for e in &all {
        t.add_row(vec![
            e.id.clone(),
            e.private_ip.clone(),
            e.mac.clone(),
            e.subnet_id.clone(),
            attachment(e),
            store.groups_of(&e.id)?.join(", "),
        ]);
    }
    println!("region {}\n{t}", host.region());
    Ok(0)
}

/// `drydock network-interface create|attach|detach|delete`.
pub fn run(ctx: &Context, cmd: NetworkInterfaceCommand) -> Result<i32, CliError> {
    let host = open_host(ctx)?;
    match cmd {
        NetworkInterfaceCommand::Create {
            subnet,
            security_groups,
        } => {
            let eni = host.create_network_interface(subnet.as_deref(), &security_groups)?;
            print_one(
                ctx,
                &eni,
                &format!(
                    "created {} ({} in {}, {})",
                    eni.id, eni.private_ip, eni.subnet_id, eni.mac
                ),
            );
        }
        NetworkInterfaceCommand::Attach {
            interface,
            instance,
        } => {
            let eni = host.attach_network_interface(&interface, &instance)?;
            print_one(
                ctx,
                &eni,
                &format!(
                    "attached {} to {} as eth{} ({})",
                    eni.id, instance, eni.device_index, eni.private_ip
                ),
            );
        }
        NetworkInterfaceCommand::Detach { interface } => {
            let eni = host.detach_network_interface(&interface)?;
            print_one(ctx, &eni, &format!("detached {}", eni.id));
        }
        NetworkInterfaceCommand::Delete { interface } => {
            host.delete_network_interface(&interface)?;
            if ctx.json {
                print_json(&json!({ "deleted": interface }));
            } else {
                println!("deleted {interface}");
            }
        }
    }
    Ok(0)
}
