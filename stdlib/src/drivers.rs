//! Drivers for instance-type migrations, in Rhai (module `drivers`):
//!
//! ```rhai
//! drivers::needed("n2.small")                    // ["virtio_pci", "virtio_blk"]
//! drivers::kernel_package("6.1.0-29-cloud-amd64") // "linux-image-…=VERSION", or an error naming the fix
//! let vol = drivers::volume("6.1.0-29-cloud-amd64", ["virtio_pci"]);
//! drivers::volume_kernel("vol-…")                // the release a (stopped) root volume boots
//! ```
//!
//! A driver volume holds the modules (and their dependencies) from the
//! Debian kernel package of that release, with `install.sh`; attach it,
//! mount it and run `sh install.sh` in the guest (or `sh install.sh ROOT`
//! on a helper holding the root volume). Acts in the execution's region.

use drydock_host::backend::DeviceGeneration;
use drydock_host::{instance_type, HostError};
use drydock_runtime::RunContext;
use rhai::{Array, Dynamic, Engine, EvalAltResult, Module, Position};

use crate::doc::doc;

type R<T> = Result<T, Box<EvalAltResult>>;

fn fail(e: impl std::fmt::Display) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(e.to_string().into(), Position::NONE).into()
}

/// The drivers a guest needs to find its disks on an instance type.
pub fn needed(type_name: &str) -> Result<Vec<&'static str>, String> {
    let t = instance_type(type_name)?;
    Ok(match t.generation {
        DeviceGeneration::Mmio => vec!["virtio_mmio", "virtio_blk"],
        DeviceGeneration::Pci => vec!["virtio_pci", "virtio_blk"],
    })
}

pub fn install(engine: &mut Engine, ctx: &RunContext) {
    let data_dir = ctx.data_dir.clone();
    let open_host = crate::instances::host_opener(ctx);
    let mut m = Module::new();
    doc("drivers::needed(instance_type)", &[
        "The kernel modules a guest needs to find its disks on an instance type.",
        "Fails on an unknown type. Example: `drivers::needed(\"n2.small\")` is `[\"virtio_pci\", \"virtio_blk\"]`",
    ])
    .set_in(&mut m, |t: &str| -> R<Array> {
        Ok(needed(t)
            .map_err(fail)?
            .into_iter()
            .map(Dynamic::from)
            .collect())
    });
    let dir = data_dir.clone();
    doc("drivers::kernel_package(release)", &[
        "The Debian package holding a kernel release, as `NAME=VERSION`.",
        "Fails, naming the fix, when no known package holds it. Example: `drivers::kernel_package(\"6.1.0-29-cloud-amd64\")`",
    ])
    .set_in(&mut m, move |release: &str| -> R<String> {
        let cache = drydock_images::images_dir(&dir).join("packages");
        let p = drydock_images::driver_pack::kernel_package(release, &cache).map_err(fail)?;
        Ok(format!("{}={}", p.name, p.version))
    });
    let sites = ctx.call_sites.clone();
    doc("drivers::volume(release, drivers)", &[
        "Builds a driver volume for a kernel release: the modules named (and their dependencies) from its Debian package, with `install.sh`; returns the volume's id (idempotent within a step).",
        "Attach it, mount it and run `sh install.sh` in the guest (or `sh install.sh ROOT` on a helper holding the root volume).",
    ])
    .set_in(
        &mut m,
        move |release: &str, drivers: Array| -> R<String> {
            let names: Vec<String> = drivers
                .into_iter()
                .map(|d| {
                    d.into_string().map_err(|t| {
                        fail(format!(
                            "drivers::volume: driver names are strings, not {t}"
                        ))
                    })
                })
                .collect::<R<_>>()?;
            let host = open_host().map_err(|e: HostError| fail(e))?;
            let token =
                crate::instances::token_for("drivers::volume", &sites, "driver-volume", None)?;
            let (vol, _) = host
                .create_driver_volume(
                    release,
                    &names,
                    &drydock_images::images_dir(&data_dir),
                    token.as_ref(),
                )
                .map_err(fail)?;
            Ok(vol.id)
        },
    );
    let open_host = crate::instances::host_opener(ctx);
    doc(
        "drivers::volume_kernel(volume)",
        &["The kernel release a stopped root volume boots."],
    )
    .set_in(&mut m, move |vol: &str| -> R<String> {
        let host = open_host().map_err(fail)?;
        host.volume_kernel_release(vol).map_err(fail)
    });
    engine.register_static_module("drivers", m.into());
}
