//! `image build`, `images`, `instances`, `instance …`, `console-output`,
//! `regions`, `instance-types`: the embedded host. Every listing names the
//! region it shows.

use drydock_host::{
    AfterHostFailure, ClientToken, Host, InstanceConfig, InstanceRecord, LaunchRequest,
    INSTANCE_TYPES, REGIONS,
};
use drydock_images::ImageRecipe;
use serde_json::json;

use super::host_common::{count_by_region, empty_hint, open_host};
use super::{print_json, table, when, Context};
use crate::cli::{
    ConsoleOutputArgs, ImageBuildArgs, ImageCommand, InstanceCommand, InstancesArgs, LaunchArgs,
};
use crate::failure::CliError;

fn progress(ctx: &Context) -> impl Fn(&str) + '_ {
    move |msg: &str| {
        if !ctx.json {
            eprintln!("  {msg}");
        }
    }
}

/// `drydock image build`.
pub fn image_build(ctx: &Context, args: ImageBuildArgs) -> Result<i32, CliError> {
    let host = open_host(ctx)?;
    let mut recipe = ImageRecipe {
        root_size_mib: args.root_size,
        ..ImageRecipe::default()
    };
    if !args.drivers.is_empty() {
        recipe.drivers = args.drivers;
    }
    if let Some(kernel) = args.kernel {
        // Only a regular file of a kernel's size: the image build reads it.
        drydock_runtime::input_file::open(&kernel, drydock_runtime::input_file::InputKind::Kernel)
            .map_err(|e| {
                CliError::usage(format!(
                    "{e}; give a bzImage or vmlinux (scripts/minimal-kernel builds one)"
                ))
            })?;
        // A kernel of one's own has its drivers built in: no modules.
        recipe.drivers.clear();
        recipe.kernel = Some(std::path::absolute(&kernel).unwrap_or(kernel));
    }
    if !ctx.json {
        let kernel = match &recipe.kernel {
            Some(path) => format!("kernel {}, drivers built in", path.display()),
            None => format!(
                "Debian's cloud kernel, drivers: {}",
                recipe.drivers.join(", ")
            ),
        };
        eprintln!(
            "building image `{}` in {} ({kernel})",
            args.name,
            host.region()
        );
    }
    let images_dir = drydock_images::images_dir(&ctx.settings.data_dir);
    std::fs::create_dir_all(&images_dir)?;
    let built = drydock_images::build(&images_dir, &recipe, &progress(ctx))?;
    let rec = host.register_image(&built, &args.name)?;
    if ctx.json {
        print_json(&json!({ "image": rec, "manifest": built.manifest, "cached": built.cached }));
    } else {
        let how = if built.cached {
            "cached build"
        } else {
            "new build"
        };
        let drivers = if built.manifest.recipe.kernel.is_some() {
            let f = &built.manifest.features;
            let disks = if f.virtio_mmio_on_cmdline() {
                "disks on the command line"
            } else {
                "disks in ACPI"
            };
            format!("drivers built in, {disks}")
        } else {
            format!("drivers {}", built.manifest.load_order.join(","))
        };
        println!(
            "{} ({}, {how}: kernel {}, {drivers})",
            rec.id, rec.region, built.manifest.kernel_release
        );
    }
    Ok(0)
}

/// `drydock images`: those the profile may launch in the region.
pub fn images(ctx: &Context) -> Result<i32, CliError> {
    let host = open_host(ctx)?;
    let store = host.store()?;
    let list: Vec<_> = store
        .images(Some(host.region()))?
        .into_iter()
        .filter(|i| i.launchable_by(host.profile()))
        .collect();
    if ctx.json {
        print_json(&json!({ "region": host.region(), "profile": host.profile(), "images": list }));
        return Ok(0);
    }
    if list.is_empty() {
        println!(
            "{}",
            empty_hint("images", host.region(), &count_by_region(&store, "images")?)
        );
        return Ok(0);
    }
    let mut t = table(&[
        "IMAGE", "NAME", "OWNER", "LAUNCH", "SOURCE", "DRIVERS", "CREATED",
    ]);
    for i in &list {
        t.add_row(vec![
            i.id.clone(),
            i.name.clone(),
            i.owner.clone(),
            launch_text(i),
            i.source.clone(),
            i.drivers.join(","),
            when(i.created_at),
        ]);
    }
    println!("region {}, profile {}\n{t}", host.region(), host.profile());
    Ok(0)
}

fn launch_text(i: &drydock_host::ImageRecord) -> String {
    if i.public {
        "public".to_string()
    } else if i.shared_with.is_empty() {
        "private".to_string()
    } else {
        format!("private + {}", i.shared_with.join(","))
    }
}

/// `drydock image create|copy|describe|deregister|modify`.
pub fn image(ctx: &Context, cmd: ImageCommand) -> Result<i32, CliError> {
    let host = open_host(ctx)?;
    let (verb, rec) = match cmd {
        ImageCommand::Build(_) => unreachable!("image build is dispatched to image_build"),
        ImageCommand::Create {
            instance,
            name,
            no_stop,
            client_token,
        } => {
            let token = client_token
                .as_deref()
                .map(ClientToken::given)
                .transpose()?;
            if !ctx.json && !no_stop {
                eprintln!("imaging {instance}: a running instance is stopped for a clean copy and started again");
            }
            (
                "created",
                host.create_image(&instance, &name, no_stop, token.as_ref())?,
            )
        }
        ImageCommand::Copy {
            image,
            to_region,
            client_token,
        } => {
            let token = client_token
                .as_deref()
                .map(ClientToken::given)
                .transpose()?;
            (
                "copied",
                host.copy_image(&image, &to_region, token.as_ref())?,
            )
        }
        ImageCommand::Describe { image } => {
            let rec = host.store()?.image(&image)?;
            let rec = host.in_region(&image, &rec.region.clone(), rec)?;
            ("described", rec)
        }
        ImageCommand::Deregister { image } => {
            host.deregister_image(&image)?;
            if ctx.json {
                print_json(&json!({ "deregistered": image }));
            } else {
                println!("{image} deregistered from {}", host.region());
            }
            return Ok(0);
        }
        ImageCommand::Modify {
            image,
            public,
            private,
            add_profiles,
            remove_profiles,
        } => {
            let visibility = if public {
                Some(true)
            } else if private {
                Some(false)
            } else {
                None
            };
            (
                "modified",
                host.set_image_permissions(&image, visibility, &add_profiles, &remove_profiles)?,
            )
        }
    };
    if ctx.json {
        print_json(&rec);
    } else if verb == "described" {
        println!("image      {}", rec.id);
        println!("name       {}", rec.name);
        println!("region     {}", rec.region);
        println!("owner      {}", rec.owner);
        println!("launch     {}", launch_text(&rec));
        println!("source     {}", rec.source);
        println!("drivers    {}", rec.drivers.join(", "));
        println!("created    {}", when(rec.created_at));
        println!("boot files {}", rec.boot_dir.display());
    } else {
        println!(
            "{} {verb} in {} (owner {}, {})",
            rec.id,
            rec.region,
            rec.owner,
            launch_text(&rec)
        );
    }
    Ok(0)
}

/// `drydock instances`.
pub fn instances(ctx: &Context, args: InstancesArgs) -> Result<i32, CliError> {
    let host = open_host(ctx)?;
    let store = host.store()?;
    let region = (!args.all_regions).then(|| host.region().to_string());
    let list = store.instances(region.as_deref())?;
    let tags = store.all_tags(drydock_host::TagKind::Instance)?;
    let interfaces = store.primary_interfaces()?;
    // The status checks' last verdicts (`drydock serve` runs them).
    let statuses = store.stored_statuses()?;
    let status_of = |i: &InstanceRecord| -> Option<String> {
        let watched = i.state == drydock_host::InstanceState::Running
            || (i.state == drydock_host::InstanceState::Stopped
                && drydock_host::health::unplanned_stop(&i.state_reason));
        watched
            .then(|| statuses.get(&i.id).map(|s| s.status.clone()))
            .flatten()
    };
    let leftovers =
        super::leftovers::unreferenced(&ctx.executor.journal()?, &store, region.as_deref())?;
    if ctx.json {
        let list: Vec<_> = list
            .iter()
            .map(|i| {
                let mut v = drydock_host::tags::with_tags(i, tags.get(&i.id));
                let eni = interfaces.get(&i.id);
                v["private_ip"] = json!(eni.map(|e| &e.private_ip));
                v["subnet_id"] = json!(eni.map(|e| &e.subnet_id));
                v["status"] = json!(status_of(i));
                v
            })
            .collect();
        print_json(&json!({ "region": region, "instances": list, "leftovers": leftovers }));
        return Ok(0);
    }
    if !leftovers.is_empty() {
        eprint!("{}", super::leftovers::describe(&leftovers));
    }
    if list.is_empty() {
        if args.all_regions {
            println!(
                "no instances in any region ({}); launch one with `drydock instance launch --image IMAGE`",
                REGIONS.join(", ")
            );
        } else {
            println!(
                "{}",
                empty_hint(
                    "instances",
                    host.region(),
                    &count_by_region(&store, "instances")?
                )
            );
        }
        return Ok(0);
    }
    let mut t = table(&[
        "INSTANCE",
        "REGION",
        "TYPE",
        "IMAGE",
        "STATE",
        "STATUS",
        "PRIVATE IP",
        "REASON",
        "BOOTS",
        "LAUNCHED",
        "TAGS",
    ]);
    for i in &list {
        t.add_row(vec![
            i.id.clone(),
            i.region.clone(),
            i.instance_type.clone(),
            i.image_id.clone(),
            i.state.to_string(),
            status_of(i).unwrap_or_else(|| "-".into()),
            interfaces
                .get(&i.id)
                .map(|e| e.private_ip.clone())
                .unwrap_or_else(|| "-".into()),
            i.state_reason.clone(),
            i.boots.to_string(),
            when(i.created_at),
            super::host_common::tags_text(tags.get(&i.id)),
        ]);
    }
    match &region {
        Some(r) => println!("region {r}, profile {}\n{t}", host.profile()),
        None => println!("all regions\n{t}"),
    }
    Ok(0)
}

fn show_instance(ctx: &Context, verb: &str, i: &InstanceRecord) {
    if ctx.json {
        print_json(i);
    } else {
        let reason = if i.state_reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", i.state_reason)
        };
        println!("{} {verb}: {} in {}{reason}", i.id, i.state, i.region);
    }
}

fn launch(ctx: &Context, host: &Host, args: LaunchArgs) -> Result<InstanceRecord, CliError> {
    let password = match &args.root_password {
        Some(text) => Some(super::params::secret_text(ctx, "--root-password", text)?),
        None => None,
    };
    let root_password_hash = match &password {
        Some(p) => Some(
            sha_crypt::sha512_simple(
                p,
                &sha_crypt::Sha512Params::new(5000).expect("5000 rounds is valid"),
            )
            .map_err(|e| CliError::failure(format!("cannot hash the password: {e:?}")))?,
        ),
        None => None,
    };
    let mut authorized_keys = Vec::new();
    for f in &args.ssh_keys {
        let key = drydock_runtime::input_file::read_to_string(
            f,
            drydock_runtime::input_file::InputKind::SshKey,
        )
        .map_err(|e| CliError::usage(e.to_string()))?;
        authorized_keys.push(key.trim().to_string());
    }
    let user_data = match &args.user_data {
        Some(f) => Some(
            drydock_runtime::input_file::read_to_string(
                f,
                drydock_runtime::input_file::InputKind::UserData,
            )
            .map_err(|e| CliError::usage(e.to_string()))?,
        ),
        None => None,
    };
    let mut tags = super::host_common::parse_tags(&args.tags)?;
    if args.allow_faults {
        tags.insert(
            drydock_host::faults::ALLOW_TAG.to_string(),
            "true".to_string(),
        );
    }
    let client_token = args
        .client_token
        .as_deref()
        .map(ClientToken::given)
        .transpose()?;
    let req = LaunchRequest {
        image_id: args.image,
        instance_type: args.instance_type,
        config: InstanceConfig {
            hostname: args.hostname.unwrap_or_default(),
            root_password_hash,
            authorized_keys,
            user_data,
            imds_v1: args.imds_v1,
        },
        root_delete_on_termination: !args.keep_root_volume,
        tags,
        client_token,
        after_host_failure: AfterHostFailure::parse(&args.after_host_failure)?,
        auto_recovery: on_off("--auto-recovery", &args.auto_recovery)?,
        subnet_id: args.subnet,
        security_group_ids: args.security_groups,
        network: !args.no_network,
    };
    if !ctx.json {
        eprintln!(
            "launching a {} from {} in {}",
            req.instance_type,
            req.image_id,
            host.region()
        );
    }
    Ok(host.launch(&req)?)
}

/// `on` or `off`.
fn on_off(flag: &str, value: &str) -> Result<bool, CliError> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(CliError::usage(format!(
            "{flag} takes on or off, not `{}`",
            super::shown(other)
        ))),
    }
}

/// `drydock instance …`.
pub fn instance(ctx: &Context, cmd: InstanceCommand) -> Result<i32, CliError> {
    let host = open_host(ctx)?;
    let (verb, rec) = match cmd {
        InstanceCommand::Launch(args) => ("launched", launch(ctx, &host, args)?),
        InstanceCommand::Start { instance } => ("started", host.start(&instance)?),
        InstanceCommand::Stop { instance, force } => ("stopped", host.stop(&instance, force)?),
        InstanceCommand::Reboot { instance } => ("rebooted", host.reboot(&instance)?),
        InstanceCommand::Terminate { instance } => ("terminated", host.terminate(&instance)?),
        InstanceCommand::Modify {
            instance,
            instance_type,
            after_host_failure,
            auto_recovery,
        } => {
            let auto_recovery = auto_recovery
                .as_deref()
                .map(|v| on_off("--auto-recovery", v))
                .transpose()?;
            let policy = after_host_failure
                .as_deref()
                .map(AfterHostFailure::parse)
                .transpose()?;
            let mut rec = None;
            if let Some(t) = &instance_type {
                rec = Some(host.modify_type(&instance, t)?);
            }
            if let Some(p) = policy {
                rec = Some(host.set_after_host_failure(&instance, p)?);
            }
            if let Some(on) = auto_recovery {
                rec = Some(host.set_auto_recovery(&instance, on)?);
            }
            let rec = match rec {
                Some(r) => r,
                None => host.store()?.instance(&instance)?,
            };
            ("modified", rec)
        }
    };
    show_instance(ctx, verb, &rec);
    Ok(0)
}

/// `drydock console-output`.
pub fn console_output(ctx: &Context, args: ConsoleOutputArgs) -> Result<i32, CliError> {
    let host = open_host(ctx)?;
    if let Some(since) = args.since {
        let (start, next, bytes) = host.console_since(&args.instance, args.boot, since)?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if ctx.json {
            print_json(
                &json!({ "instance": args.instance, "region": host.region(), "start": start, "next": next, "output": text }),
            );
        } else {
            print!("{text}");
            eprintln!("[next offset {next}; continue with --since {next}]");
        }
        return Ok(0);
    }
    let text = host.console_output(&args.instance, args.boot, args.tail)?;
    if ctx.json {
        print_json(&json!({ "instance": args.instance, "region": host.region(), "output": text }));
    } else {
        print!("{text}");
    }
    Ok(0)
}

/// `drydock regions`.
/// The machine's KVM, whether drydock's own VMM runs here, and the backend
/// each device generation gets.
pub fn host_info(ctx: &Context) -> Result<i32, CliError> {
    use drydock_host::backend::{choose_backend, DeviceGeneration};
    let kvm = drydock_vmm::probe::probe_kvm();
    let test_guest = drydock_vmm::probe::test_guest_halts();
    let backend = |_generation: DeviceGeneration| match choose_backend() {
        Ok(b) => b.name().to_string(),
        Err(e) => format!("error: {e}"),
    };
    let info = json!({
        "kvm": kvm,
        "test_guest": match &test_guest { Ok(()) => "halted as expected".to_string(), Err(e) => e.clone() },
        "backend_m1": backend(DeviceGeneration::Mmio),
        "backend_n2": backend(DeviceGeneration::Pci),
        "override": std::env::var("DRYDOCK_BACKEND").ok(),
    });
    if ctx.json {
        print_json(&info);
        return Ok(0);
    }
    let mut t = table(&["", "VALUE"]);
    for (k, label) in [
        ("kvm", "KVM"),
        ("test_guest", "test guest on /dev/kvm"),
        ("backend_m1", "backend for m1.* (virtio-mmio)"),
        ("backend_n2", "backend for n2.* (virtio-pci)"),
    ] {
        let v = info[k]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| info[k].to_string());
        t.add_row(vec![label.to_string(), v]);
    }
    println!("{t}");
    println!("(DRYDOCK_BACKEND=drydock|qemu overrides the choice)");
    Ok(0)
}

pub fn regions(ctx: &Context) -> Result<i32, CliError> {
    let host = open_host(ctx)?;
    let store = host.store()?;
    let instances = count_by_region(&store, "instances")?;
    let images = count_by_region(&store, "images")?;
    let volumes = count_by_region(&store, "volumes")?;
    let rows: Vec<_> = REGIONS
        .iter()
        .enumerate()
        .map(|(i, r)| {
            json!({
                "region": r, "current": *r == host.region(),
                "instances": instances[i].1, "running": instances[i].2,
                "images": images[i].1, "volumes": volumes[i].1,
            })
        })
        .collect();
    if ctx.json {
        print_json(&rows);
        return Ok(0);
    }
    let mut t = table(&["REGION", "INSTANCES", "RUNNING", "IMAGES", "VOLUMES", ""]);
    for r in &rows {
        t.add_row(vec![
            r["region"].as_str().unwrap_or("").to_string(),
            r["instances"].to_string(),
            r["running"].to_string(),
            r["images"].to_string(),
            r["volumes"].to_string(),
            if r["current"] == true {
                "← current".into()
            } else {
                String::new()
            },
        ]);
    }
    println!("{t}");
    Ok(0)
}

/// `drydock instance-types`.
pub fn instance_types(ctx: &Context) -> Result<i32, CliError> {
    if ctx.json {
        print_json(&INSTANCE_TYPES);
        return Ok(0);
    }
    let mut t = table(&[
        "TYPE",
        "VCPUS",
        "MEMORY",
        "DEVICES",
        "GUEST DRIVER NEEDED",
        "INSTANCE STORE",
    ]);
    for it in INSTANCE_TYPES {
        t.add_row(vec![
            it.name.to_string(),
            it.vcpus.to_string(),
            format!("{} MiB", it.memory_mib),
            format!("{:?}", it.generation).to_lowercase(),
            format!("{} + virtio_blk", it.generation.transport_driver()),
            if it.instance_store_mib > 0 {
                format!("{} MiB", it.instance_store_mib)
            } else {
                "-".into()
            },
        ]);
    }
    println!("{t}");
    Ok(0)
}
