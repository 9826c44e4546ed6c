//! `drydock driver-volume create`: a volume holding the kernel modules an
//! instance needs for another device generation, built on the host from
//! the Debian kernel package of the guest's kernel.

use serde_json::json;

use super::host_common::open_host;
use super::{print_json, Context};
use crate::cli::DriverVolumeCommand;
use crate::failure::CliError;

/// `drydock driver-volume`.
pub fn run(ctx: &Context, cmd: DriverVolumeCommand) -> Result<i32, CliError> {
    match cmd {
        DriverVolumeCommand::Create { kernel, drivers } => {
            let host = open_host(ctx)?;
            let images_dir = drydock_images::images_dir(&ctx.settings.data_dir);
            let (volume, pack) = host.create_driver_volume(&kernel, &drivers, &images_dir, None)?;
            if ctx.json {
                print_json(&json!({ "volume": volume, "drivers": pack }));
            } else {
                println!(
                    "{} ({}, kernel {}, modules {}; from {})",
                    volume.id,
                    volume.region,
                    pack.release,
                    pack.modules.join(","),
                    pack.package
                );
            }
            Ok(0)
        }
    }
}
