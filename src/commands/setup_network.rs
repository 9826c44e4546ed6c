//! `drydock host setup-network` (as root): the network agent that makes
//! instance networks for accounts without CAP_NET_ADMIN; and the agent
//! itself (`drydock host network-agent`, started by it).

use serde_json::json;

use super::{print_json, Context};
use crate::failure::CliError;
use drydock_host::network::agent::setup;

pub fn setup(
    ctx: &Context,
    users: &[String],
    uplinks: &[String],
    remove: bool,
) -> Result<i32, CliError> {
    let said = if remove {
        setup::remove()?
    } else {
        setup::setup(users, uplinks)?
    };
    if ctx.json {
        print_json(&json!({ "network_agent": !remove, "message": said }));
    } else {
        println!("{said}");
    }
    Ok(0)
}

pub fn agent() -> Result<i32, CliError> {
    setup::run()?;
    Ok(0)
}
