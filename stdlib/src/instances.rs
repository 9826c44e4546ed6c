//! Instances, volumes, snapshots and images of drydock's host in Rhai, for
//! runbooks that repair machines:
//!
//! ```rhai
//! instance::stop(params.instance);
//! let root = instance::describe(params.instance).root_volume;
//! volume::detach(root);
//! volume::attach(root, params.rescue);            // a data disk on the rescue instance
//! // ... fix files through the rescue instance's console ...
//! volume::detach(root);
//! volume::attach_root(root, params.instance);
//! instance::start(params.instance);
//! ```
//!
//! Every call acts in the execution's region and profile.
//!
//! Tags: `instance::tag(id, #{ role: "web" })`, `instance::untag(id, "role")`,
//! `instance::list()` / `instance::list(#{ tag: "role=web" })` (each as
//! `describe` shows it, with `tags`); the same for volumes.
//!
//! `volume::attach(vol, id, #{ delete_on_termination: false })` and
//! `volume::attach_root(vol, id, #{ delete_on_termination: true })` set the
//! volume's DeleteOnTermination flag first, then attach (as EC2's block
//! device mapping carries it with the attachment): a root volume lent to a
//! rescue instance is not deleted with it.
//!
//! `instance::describe(id)` shows the instance's configuration without its
//! secrets: `config.root_password` is `"set"` or `"not set"` and
//! `config.user_data` is `#{ bytes, sha256 }` (or `()`).
//! `instance::describe(id, #{ secrets: true })` adds `secrets: #{
//! root_password_hash, user_data }`; both values are then masked (`****`)
//! in everything the execution writes, like a secret parameter.

use drydock_host::{
    instance_program, ClientToken, Host, HostError, InstanceConfig, InstanceRecord, LaunchRequest,
    TagKind, Tags, VolumeRecord,
};
use drydock_runtime::executor::CallSites;
use drydock_runtime::RunContext;
use rhai::{Array, Dynamic, Engine, EvalAltResult, Map, Module, Position};

use crate::doc::doc;

type R<T> = Result<T, Box<EvalAltResult>>;

fn fail(e: HostError) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(e.to_string().into(), Position::NONE).into()
}

fn to_map<T: serde::Serialize>(v: &T) -> Map {
    rhai::serde::to_dynamic(v)
        .ok()
        .and_then(|d| d.try_cast::<Map>())
        .unwrap_or_default()
}

fn describe(host: &Host, i: &InstanceRecord) -> R<Map> {
    let mut m = to_map(i);
    let vols: Array = host
        .store()
        .map_err(fail)?
        .attached(&i.id)
        .map_err(fail)?
        .iter()
        .map(|v| Dynamic::from(to_map(v)))
        .collect();
    m.insert("volumes".into(), vols.into());
    let interfaces = host
        .store()
        .map_err(fail)?
        .interfaces(&i.id)
        .map_err(fail)?;
    m.insert(
        "private_ip".into(),
        interfaces
            .first()
            .map(|e| Dynamic::from(e.private_ip.clone()))
            .unwrap_or(Dynamic::UNIT),
    );
    let interfaces: Array = interfaces
        .iter()
        .map(|e| Dynamic::from(to_map(e)))
        .collect();
    m.insert("network_interfaces".into(), interfaces.into());
    m.insert("tags".into(), tags_map(host, &i.id)?.into());
    Ok(m)
}

fn tags_map(host: &Host, id: &str) -> R<Map> {
    Ok(host
        .tags(id)
        .map_err(fail)?
        .into_iter()
        .map(|(k, v)| (k.into(), Dynamic::from(v)))
        .collect())
}

fn tags_from(what: &str, map: &Map) -> R<Tags> {
    map.iter()
        .map(|(k, v)| {
            let v = v.clone().into_string().map_err(|t| {
                fail(HostError::Invalid(format!(
                    "{what}: the value of tag `{k}` must be a string, not {t}"
                )))
            })?;
            Ok((k.to_string(), v))
        })
        .collect()
}

/// The `tag` filter of a listing's options (`#{ tag: "role=web" }`).
fn list_filter(what: &str, opts: &Map) -> R<Option<String>> {
    for key in opts.keys() {
        if key.as_str() != "tag" {
            return Err(fail(HostError::Invalid(format!(
                "{what}: unknown option `{key}`; the only option is `tag` (\"KEY=VALUE\" or \"KEY\")"
            ))));
        }
    }
    match opts.get("tag") {
        None => Ok(None),
        Some(v) => v.clone().into_string().map(Some).map_err(|t| {
            fail(HostError::Invalid(format!(
                "{what}: `tag` must be a string \"KEY=VALUE\", not {t}"
            )))
        }),
    }
}

/// The `delete_on_termination` option of an attach (`#{ delete_on_termination: bool }`).
fn attach_options(what: &str, opts: &Map) -> R<Option<bool>> {
    for key in opts.keys() {
        if key.as_str() != "delete_on_termination" {
            return Err(fail(HostError::Invalid(format!(
                "{what}: unknown option `{key}`; the only option is `delete_on_termination` (true or false)"
            ))));
        }
    }
    match opts.get("delete_on_termination") {
        None => Ok(None),
        Some(v) => v.as_bool().map(Some).map_err(|t| {
            fail(HostError::Invalid(format!(
                "{what}: `delete_on_termination` must be true or false, not {t}"
            )))
        }),
    }
}

/// The client token of a create call: `client_token` in its options when
/// given, else the one derived from the execution, step and call
/// ([`CallSites::next`]), so that a step run again after a crash gets what
/// its first run created. None in the REPL.
pub(crate) fn token_for(
    what: &str,
    sites: &CallSites,
    kind: &str,
    opts: Option<&Map>,
) -> R<Option<ClientToken>> {
    if let Some(v) = opts.and_then(|o| o.get("client_token")) {
        let text = v.clone().into_string().map_err(|t| {
            fail(HostError::Invalid(format!(
                "{what}: `client_token` must be a string, not {t}"
            )))
        })?;
        return ClientToken::given(&text)
            .map(Some)
            .map_err(|e| fail(HostError::Invalid(format!("{what}: {e}"))));
    }
    Ok(sites
        .next(kind)
        .map(|c| ClientToken::of_call(&c.token, &c.execution, &c.step_path)))
}

/// The keys an options map may have, or an error naming the unknown one.
fn known_options(what: &str, opts: &Map, known: &[&str]) -> R<()> {
    for key in opts.keys() {
        if !known.contains(&key.as_str()) {
            return Err(fail(HostError::Invalid(format!(
                "{what}: unknown option `{key}`; the options are {}",
                known.join(", ")
            ))));
        }
    }
    Ok(())
}

/// The `tags` option of a create call (`#{ tags: #{ Name: "x" } }`).
fn tags_option(what: &str, opts: &Map) -> R<Tags> {
    match opts.get("tags") {
        None => Ok(Tags::new()),
        Some(v) => {
            let map = v.clone().try_cast::<Map>().ok_or_else(|| {
                fail(HostError::Invalid(format!(
                    "{what}: `tags` must be a map of strings (#{{ Name: \"web\" }})"
                )))
            })?;
            tags_from(what, &map)
        }
    }
}

fn volume_map(host: &Host, v: &VolumeRecord) -> R<Map> {
    let mut m = to_map(v);
    m.insert("tags".into(), tags_map(host, &v.id)?.into());
    Ok(m)
}

/// Opens the host for the runbook's data directory, region and profile
/// (every primitive that acts on the host opens it through this).
pub(crate) fn host_opener(
    ctx: &RunContext,
) -> impl Fn() -> Result<Host, HostError> + Clone + Send + Sync + 'static {
    let (data_dir, region, profile) = (
        ctx.data_dir.clone(),
        ctx.region.clone(),
        ctx.profile.clone(),
    );
    move || Host::open(&data_dir, &region, &profile, instance_program(&data_dir))
}

/// Registers the `instance`, `volume`, `snapshot` and `image` modules.
pub fn install(engine: &mut Engine, ctx: &RunContext) {
    let open = {
        let open_host = host_opener(ctx);
        move || -> R<Host> { open_host().map_err(fail) }
    };

    let mut inst = Module::new();
    let o = open.clone();
    doc("instance::describe(id)", &[
        "An instance's record: `state`, `instance_type`, `image_id`, `root_volume`, `volumes` (attached), `private_ip`, `network_interfaces`, `tags`, `config` (without secrets: `root_password` is `\"set\"` or `\"not set\"`)….",
        "Fails when there is no such instance in the region. Example: `instance::describe(params.instance).state`",
    ])
    .set_in(&mut inst, move |id: &str| -> R<Map> {
        let h = o()?;
        let i = h.store().map_err(fail)?.instance(id).map_err(fail)?;
        describe(&h, &i)
    });
    let o = open.clone();
    doc("instance::status(id)", &[
        "Both status checks of an instance, run now: `#{ status, system, instance_check, system_reason, instance_reason, state }`; `status` is `ok`, `impaired`, `initializing` or `insufficient-data` (the worse of the two checks). The system check: its instance process and VMM run, its vCPUs make progress (the VMM answers a status query within 3 s, the VM is not paused by an error, no vCPU is held up in a device), its volumes are reachable (a stop the instance did not ask for is impaired). The instance check: the guest answers at its private address (or, without a network, reached its login prompt); a kernel panic or a boot stuck at a prompt on its console is impaired, with that line as the reason.",
        "Example: `if instance::status(id).status == \"impaired\" { … }`",
    ])
    .set_in(&mut inst, move |id: &str| -> R<Map> {
        let r = o()?.status_checks(id).map_err(fail)?;
        let mut m = Map::new();
        m.insert("status".into(), r.status.as_str().into());
        m.insert("state".into(), r.state.clone().into());
        m.insert("system".into(), r.system.status.as_str().into());
        m.insert("system_reason".into(), r.system.reason.clone().into());
        m.insert("instance_check".into(), r.guest.status.as_str().into());
        m.insert("instance_reason".into(), r.guest.reason.clone().into());
        Ok(m)
    });
    let o = open.clone();
    let secrets = ctx.secrets.clone();
    doc("instance::describe(id, options)", &[
        "An instance's record; `#{ secrets: true }` adds `secrets: #{ root_password_hash, user_data }`, masked (`****`) in everything the execution writes from then on.",
    ])
    .set_in(&mut inst, move |id: &str, opts: Map| -> R<Map> {
        for key in opts.keys() {
            if key.as_str() != "secrets" {
                return Err(fail(HostError::Invalid(format!(
                    "instance::describe: unknown option `{key}`; the only option is `secrets`"
                ))));
            }
        }
        let want = match opts.get("secrets") {
            None => false,
            Some(v) => v.as_bool().map_err(|t| {
                fail(HostError::Invalid(format!(
                    "instance::describe: `secrets` must be true or false, not {t}"
                )))
            })?,
        };
        let h = o()?;
        let i = h.store().map_err(fail)?.instance(id).map_err(fail)?;
        let mut m = describe(&h, &i)?;
        if want {
            let c = &i.config;
            for v in [&c.root_password_hash, &c.user_data].into_iter().flatten() {
                secrets.add(v);
            }
            let value = |v: &Option<String>| v.clone().map_or(Dynamic::UNIT, Dynamic::from);
            let mut s = Map::new();
            s.insert("root_password_hash".into(), value(&c.root_password_hash));
            s.insert("user_data".into(), value(&c.user_data));
            m.insert("secrets".into(), s.into());
        }
        Ok(m)
    });
    let o = open.clone();
    let sites = ctx.call_sites.clone();
    doc("instance::launch(options)", &[
        "Launches an instance; returns its id (idempotent within a step: a step run again after a crash gets the same instance).",
        "Options: `image` (required), `type` (default m1.small), `hostname`, `root_password`, `user_data`, `tags` (`#{ KEY: \"value\" }`), `client_token`, `subnet` (default: the region's default subnet), `security_groups` (an array of ids; default: the VPC's default group), `network` (false: no network interface), `auto_recovery` (true: `drydock serve` starts it again when its system check fails).",
        "Example: `instance::launch(#{ image: \"img-…\", type: \"n2.small\", tags: #{ role: \"web\" } })`",
    ])
    .set_in(&mut inst, move |opts: Map| -> R<String> {
        known_options(
            "instance::launch",
            &opts,
            &[
                "image",
                "type",
                "hostname",
                "root_password",
                "user_data",
                "tags",
                "client_token",
                "subnet",
                "security_groups",
                "network",
                "auto_recovery",
            ],
        )?;
        for (key, value) in &opts {
            if !["tags", "client_token", "security_groups", "network", "auto_recovery"]
                .contains(&key.as_str())
                && !value.is_string()
            {
                return Err(fail(HostError::Invalid(format!(
                    "instance::launch: `{key}` must be a string, not {}",
                    value.type_name()
                ))));
            }
        }
        let tags = tags_option("instance::launch", &opts)?;
        let security_group_ids: Vec<String> = match opts.get("security_groups") {
            None => Vec::new(),
            Some(v) => v
                .clone()
                .into_typed_array::<rhai::ImmutableString>()
                .map_err(|_| {
                    fail(HostError::Invalid(
                        "instance::launch: `security_groups` is an array of group ids, e.g. [\"sg-…\"]".into(),
                    ))
                })?
                .into_iter()
                .map(|s| s.to_string())
                .collect(),
        };
        let client_token = token_for("instance::launch", &sites, "launch", Some(&opts))?;
        let get = |k: &str| opts.get(k).and_then(|v| v.clone().into_string().ok());
        let image = get("image")
            .ok_or_else(|| fail(HostError::Invalid("instance::launch needs `image`".into())))?;
        let root_password_hash = match get("root_password") {
            Some(p) => Some(
                sha_crypt::sha512_simple(
                    &p,
                    &sha_crypt::Sha512Params::new(5000).expect("valid rounds"),
                )
                .map_err(|e| {
                    fail(HostError::Invalid(format!(
                        "cannot hash the password: {e:?}"
                    )))
                })?,
            ),
            None => None,
        };
        let req = LaunchRequest {
            image_id: image,
            instance_type: get("type").unwrap_or_else(|| "m1.small".into()),
            config: InstanceConfig {
                hostname: get("hostname").unwrap_or_default(),
                root_password_hash,
                authorized_keys: Vec::new(),
                user_data: get("user_data"),
                imds_v1: false,
            },
            root_delete_on_termination: true,
            tags,
            client_token,
            after_host_failure: Default::default(),
            auto_recovery: match opts.get("auto_recovery") {
                None => false,
                Some(v) => v.as_bool().map_err(|t| {
                    fail(HostError::Invalid(format!(
                        "instance::launch: `auto_recovery` is true or false, not {t}"
                    )))
                })?,
            },
            subnet_id: get("subnet"),
            security_group_ids,
            network: match opts.get("network") {
                None => true,
                Some(v) => v.as_bool().map_err(|t| {
                    fail(HostError::Invalid(format!(
                        "instance::launch: `network` is true or false, not {t}"
                    )))
                })?,
            },
        };
        Ok(o()?.launch(&req).map_err(fail)?.id)
    });
    for (op, d) in [
        (
            0u8,
            doc("instance::start(id)", &[
                "Starts a stopped instance; returns its record.",
            ]),
        ),
        (
            1,
            doc("instance::stop(id)", &[
                "Stops an instance cleanly (SysRq sync, file systems remounted read-only, power off); returns its record.",
            ]),
        ),
        (2, doc("instance::reboot(id)", &["Reboots a running instance; returns its record."])),
        (
            3,
            doc("instance::terminate(id)", &[
                "Terminates an instance (its delete-on-termination volumes are deleted); returns its record.",
            ]),
        ),
        (
            4,
            doc("instance::force_stop(id)", &[
                "Pulls the plug on an instance (no clean shutdown); returns its record.",
            ]),
        ),
    ] {
        let o = open.clone();
        d.set_in(&mut inst, move |id: &str| -> R<Map> {
            let h = o()?;
            let rec = match op {
                0 => h.start(id),
                1 => h.stop(id, false),
                2 => h.reboot(id),
                3 => h.terminate(id),
                _ => h.stop(id, true),
            }
            .map_err(fail)?;
            describe(&h, &rec)
        });
    }
    // Preconditions after a crash or a host outage: a step that needs an
    // instance running says so, and a resumed step starts it again.
    let o = open.clone();
    let interrupt = ctx.interrupt.clone();
    let ensure = move |id: &str, opts: &Map| -> R<Map> {
        known_options(
            "instance::ensure_running",
            opts,
            &["boot_timeout", "after_outage_only"],
        )?;
        let after_outage_only = match opts.get("after_outage_only") {
            None => false,
            Some(v) => v.as_bool().map_err(|t| {
                fail(HostError::Invalid(format!(
                    "instance::ensure_running: `after_outage_only` must be true or false, not {t}"
                )))
            })?,
        };
        let boot_timeout = match opts.get("boot_timeout") {
            None => None,
            Some(d) => Some(
                drydock_runtime::executor::duration_value("boot_timeout", d).map_err(|e| {
                    fail(HostError::Invalid(format!("instance::ensure_running: {e}")))
                })?,
            ),
        };
        let h = o()?;
        let before = h.store().map_err(fail)?.instance(id).map_err(fail)?;
        // `after_outage_only`: start only an instance whose process was
        // found gone (a host outage or a crash), not one a person stopped.
        let outage = before.state == drydock_host::InstanceState::Stopped
            && before.state_reason == drydock_host::RECONCILE_REASON;
        let started =
            before.state != drydock_host::InstanceState::Running && (!after_outage_only || outage);
        let rec = if started {
            tracing::info!(instance = id, state = %before.state, "ensure_running: starting it");
            h.start(id).map_err(fail)?
        } else {
            before
        };
        if let (true, Some(limit)) = (started, boot_timeout) {
            let deadline = std::time::Instant::now() + limit;
            let mut offset = 0u64;
            let mut seen = Vec::new();
            loop {
                let (_, next, bytes) =
                    h.console_since(id, Some(rec.boots), offset).map_err(fail)?;
                offset = next;
                seen.extend_from_slice(&bytes);
                if seen.windows(7).any(|w| w == b"login: ") {
                    break;
                }
                if seen.len() > 64 * 1024 {
                    seen.drain(..seen.len() - 64);
                }
                let now = h.store().map_err(fail)?.instance(id).map_err(fail)?;
                if now.state != drydock_host::InstanceState::Running {
                    return Err(fail(HostError::Conflict(format!(
                        "instance::ensure_running: {id} stopped while booting: {} ({})",
                        now.state, now.state_reason
                    ))));
                }
                if std::time::Instant::now() > deadline {
                    return Err(fail(HostError::Vmm(format!(
                        "instance::ensure_running: {id} was started but showed no login prompt within {}; see `drydock console-output {id}`",
                        drydock_runtime::duration::format_duration(limit)
                    ))));
                }
                interrupt
                    .sleep(std::time::Duration::from_millis(200))
                    .map_err(|i| i.into_rhai(Position::NONE))?;
            }
            // The boot goes on printing for a moment after the first login
            // prompt (services, disks announced); a login typed into that
            // answered a prompt already gone and had its password refused
            // (found by the power-loss soak). Done when the console has
            // been quiet for 1.5 s (at most 20 s more).
            let settle = std::time::Instant::now();
            let mut quiet_since = std::time::Instant::now();
            while quiet_since.elapsed() < std::time::Duration::from_millis(1500)
                && settle.elapsed() < std::time::Duration::from_secs(20)
            {
                interrupt
                    .sleep(std::time::Duration::from_millis(250))
                    .map_err(|i| i.into_rhai(Position::NONE))?;
                let (_, next, bytes) =
                    h.console_since(id, Some(rec.boots), offset).map_err(fail)?;
                offset = next;
                if !bytes.is_empty() {
                    quiet_since = std::time::Instant::now();
                }
            }
        }
        let mut m = describe(&h, &rec)?;
        m.insert("started".into(), started.into());
        Ok(m)
    };
    let e = ensure.clone();
    doc("instance::ensure_running(id)", &[
        "Starts the instance unless it runs (a step's precondition after a host outage); returns its record with `started` (whether it was started).",
    ])
    .set_in(&mut inst, move |id: &str| -> R<Map> {
        e(id, &Map::new())
    });
    doc("instance::ensure_running(id, options)", &[
        "Starts the instance unless it runs, with options: `boot_timeout` (then waits for its login prompt and a quiet console), `after_outage_only: true` (starts only an instance a host outage or a crash stopped, never one a person stopped).",
        "Fails when it stops while booting or shows no login prompt in time. Example: `instance::ensure_running(id, #{ boot_timeout: \"5m\" })`",
    ])
    .set_in(&mut inst, move |id: &str, opts: Map| -> R<Map> {
        ensure(id, &opts)
    });
    let o = open.clone();
    doc(
        "instance::modify_type(id, instance_type)",
        &["Changes the type of a stopped instance; returns its record."],
    )
    .set_in(&mut inst, move |id: &str, t: &str| -> R<Map> {
        let h = o()?;
        let rec = h.modify_type(id, t).map_err(fail)?;
        describe(&h, &rec)
    });
    let o = open.clone();
    doc(
        "instance::list()",
        &["The region's instances, each as `describe` shows it (with `tags`)."],
    )
    .set_in(&mut inst, move || -> R<Array> {
        let h = o()?;
        let list = h.instances_tagged(None).map_err(fail)?;
        list.iter()
            .map(|i| describe(&h, i).map(Dynamic::from))
            .collect()
    });
    let o = open.clone();
    doc(
        "instance::list(options)",
        &[
            "The region's instances with a tag: `#{ tag: \"KEY=VALUE\" }` (or `\"KEY\"`).",
            "Example: `instance::list(#{ tag: \"role=web\" })`",
        ],
    )
    .set_in(&mut inst, move |opts: Map| -> R<Array> {
        let filter = list_filter("instance::list", &opts)?;
        let h = o()?;
        let list = h.instances_tagged(filter.as_deref()).map_err(fail)?;
        list.iter()
            .map(|i| describe(&h, i).map(Dynamic::from))
            .collect()
    });
    let o = open.clone();
    doc(
        "instance::tag(id, tags)",
        &[
            "Sets tags on an instance; returns all its tags.",
            "Example: `instance::tag(id, #{ role: \"web\" })`",
        ],
    )
    .set_in(&mut inst, move |id: &str, tags: Map| -> R<Map> {
        let tags = tags_from("instance::tag", &tags)?;
        let h = o()?;
        h.set_tags(TagKind::Instance, id, &tags).map_err(fail)?;
        tags_map(&h, id)
    });
    let o = open.clone();
    doc(
        "instance::untag(id, key)",
        &["Removes a tag from an instance; returns the tags left."],
    )
    .set_in(&mut inst, move |id: &str, key: &str| -> R<Map> {
        let h = o()?;
        h.remove_tag(TagKind::Instance, id, key).map_err(fail)?;
        tags_map(&h, id)
    });
    engine.register_static_module("instance", inst.into());

    let mut vol = Module::new();
    let o = open.clone();
    let sites = ctx.call_sites.clone();
    doc("volume::create(options)", &[
        "Creates a volume; returns its id (idempotent within a step).",
        "Options: `size_mib`, `snapshot` (to restore), `ext4_label` (formats it), `tags`, `client_token`.",
        "Example: `volume::create(#{ size_mib: 1024, ext4_label: \"data\" })`",
    ])
    .set_in(&mut vol, move |opts: Map| -> R<String> {
        const WHAT: &str = "volume::create";
        known_options(
            WHAT,
            &opts,
            &["size_mib", "snapshot", "ext4_label", "tags", "client_token"],
        )?;
        let size = match opts.get("size_mib") {
            None => None,
            Some(v) => match v.as_int() {
                Ok(n) if n > 0 => Some(n as u64),
                _ => {
                    return Err(fail(HostError::Invalid(format!(
                        "{WHAT}: `size_mib` must be a positive whole number of MiB, not {v}"
                    ))))
                }
            },
        };
        let text = |k: &str| -> R<Option<String>> {
            match opts.get(k) {
                None => Ok(None),
                Some(v) => v.clone().into_string().map(Some).map_err(|t| {
                    fail(HostError::Invalid(format!(
                        "{WHAT}: `{k}` must be a string, not {t}"
                    )))
                }),
            }
        };
        let snap = text("snapshot")?;
        let label = text("ext4_label")?;
        let tags = tags_option(WHAT, &opts)?;
        let token = token_for(WHAT, &sites, "volume", Some(&opts))?;
        Ok(o()?
            .create_volume(
                size,
                snap.as_deref(),
                label.as_deref(),
                &tags,
                token.as_ref(),
            )
            .map_err(fail)?
            .id)
    });
    let o = open.clone();
    doc("volume::attach(volume, instance)", &[
        "Attaches a data volume to an instance (hot-plugged into a running n2 instance); returns the volume's record.",
        "Attaching where it is already is a no-op.",
    ])
    .set_in(&mut vol, move |v: &str, i: &str| -> R<Map> {
        let h = o()?;
        let rec = h.attach_volume(v, i, false).map_err(fail)?;
        volume_map(&h, &rec)
    });
    let o = open.clone();
    doc(
        "volume::attach_root(volume, instance)",
        &["Attaches a volume as a stopped instance's root; returns the volume's record."],
    )
    .set_in(&mut vol, move |v: &str, i: &str| -> R<Map> {
        let h = o()?;
        let rec = h.attach_volume(v, i, true).map_err(fail)?;
        volume_map(&h, &rec)
    });
    for (name, as_root, d) in [
        (
            "attach",
            false,
            doc("volume::attach(volume, instance, options)", &[
                "Sets the volume's DeleteOnTermination flag (`#{ delete_on_termination: bool }`), then attaches it as a data volume.",
            ]),
        ),
        (
            "attach_root",
            true,
            doc("volume::attach_root(volume, instance, options)", &[
                "Sets the volume's DeleteOnTermination flag (`#{ delete_on_termination: bool }`), then attaches it as the root: a root lent to a rescue instance is not deleted with it.",
            ]),
        ),
    ] {
        let o = open.clone();
        d.set_in(&mut vol, move |v: &str, i: &str, opts: Map| -> R<Map> {
            let delete = attach_options(&format!("volume::{name}"), &opts)?;
            let h = o()?;
            if let Some(delete) = delete {
                h.set_delete_on_termination(v, delete).map_err(fail)?;
            }
            let rec = h.attach_volume(v, i, as_root).map_err(fail)?;
            volume_map(&h, &rec)
        });
    }
    let o = open.clone();
    doc("volume::detach(volume)", &[
        "Detaches a volume; returns its record. Refused while the guest has it mounted; a detached volume is a no-op.",
    ])
    .set_in(&mut vol, move |v: &str| -> R<Map> {
        let h = o()?;
        let rec = h.detach_volume(v, false).map_err(fail)?;
        volume_map(&h, &rec)
    });
    let o = open.clone();
    doc(
        "volume::force_detach(volume)",
        &["Detaches a volume even if the guest uses it; returns its record."],
    )
    .set_in(&mut vol, move |v: &str| -> R<Map> {
        let h = o()?;
        let rec = h.detach_volume(v, true).map_err(fail)?;
        volume_map(&h, &rec)
    });
    let o = open.clone();
    doc("volume::delete(volume)", &["Deletes a detached volume."])
        .set_in(&mut vol, move |v: &str| -> R<()> {
            o()?.delete_volume(v).map_err(fail)
        });
    let o = open.clone();
    doc("volume::describe(volume)", &[
        "A volume's record: size, kind, attachment (`attached_to`), DeleteOnTermination, `tags`.",
    ])
    .set_in(&mut vol, move |v: &str| -> R<Map> {
        let h = o()?;
        let rec = h.store().map_err(fail)?.volume(v).map_err(fail)?;
        volume_map(&h, &rec)
    });
    let o = open.clone();
    doc(
        "volume::list()",
        &["The region's volumes, each as `describe` shows it (with `tags`)."],
    )
    .set_in(&mut vol, move || -> R<Array> {
        let h = o()?;
        let list = h.volumes_tagged(None).map_err(fail)?;
        list.iter()
            .map(|v| volume_map(&h, v).map(Dynamic::from))
            .collect()
    });
    let o = open.clone();
    doc(
        "volume::list(options)",
        &["The region's volumes with a tag: `#{ tag: \"KEY=VALUE\" }` (or `\"KEY\"`)."],
    )
    .set_in(&mut vol, move |opts: Map| -> R<Array> {
        let filter = list_filter("volume::list", &opts)?;
        let h = o()?;
        let list = h.volumes_tagged(filter.as_deref()).map_err(fail)?;
        list.iter()
            .map(|v| volume_map(&h, v).map(Dynamic::from))
            .collect()
    });
    let o = open.clone();
    doc(
        "volume::tag(id, tags)",
        &["Sets tags on a volume; returns all its tags."],
    )
    .set_in(&mut vol, move |id: &str, tags: Map| -> R<Map> {
        let tags = tags_from("volume::tag", &tags)?;
        let h = o()?;
        h.set_tags(TagKind::Volume, id, &tags).map_err(fail)?;
        tags_map(&h, id)
    });
    let o = open.clone();
    doc(
        "volume::untag(id, key)",
        &["Removes a tag from a volume; returns the tags left."],
    )
    .set_in(&mut vol, move |id: &str, key: &str| -> R<Map> {
        let h = o()?;
        h.remove_tag(TagKind::Volume, id, key).map_err(fail)?;
        tags_map(&h, id)
    });
    engine.register_static_module("volume", vol.into());

    let mut snap = Module::new();
    let o = open.clone();
    let sites = ctx.call_sites.clone();
    doc(
        "snapshot::create(volume)",
        &["Snapshots a volume; returns the snapshot's id (idempotent within a step)."],
    )
    .set_in(&mut snap, move |v: &str| -> R<String> {
        let token = token_for("snapshot::create", &sites, "snapshot", None)?;
        Ok(o()?.create_snapshot(v, token.as_ref()).map_err(fail)?.0.id)
    });
    engine.register_static_module("snapshot", snap.into());

    let mut img = Module::new();
    let o = open.clone();
    let sites = ctx.call_sites.clone();
    doc("image::create(instance, name)", &[
        "Makes an image of an instance (a running one is stopped for the copy and started again); returns the image's id (idempotent within a step).",
    ])
    .set_in(&mut img, move |i: &str, name: &str| -> R<String> {
        let token = token_for("image::create", &sites, "image", None)?;
        Ok(o()?
            .create_image(i, name, false, token.as_ref())
            .map_err(fail)?
            .id)
    });
    let o = open.clone();
    let sites = ctx.call_sites.clone();
    doc("image::create(instance, name, options)", &[
        "Makes an image of an instance, with options: `no_stop: true` (a running instance is paused for the copy, crash-consistent, instead of stopped), `client_token`.",
    ])
    .set_in(
        &mut img,
        move |i: &str, name: &str, opts: Map| -> R<String> {
            let mut no_stop = false;
            for (key, value) in &opts {
                match key.as_str() {
                    "no_stop" => {
                        no_stop = value.as_bool().map_err(|t| {
                            fail(HostError::Invalid(format!(
                                "image::create: `no_stop` must be true or false, not {t}"
                            )))
                        })?
                    }
                    "client_token" => {}
                    other => {
                        return Err(fail(HostError::Invalid(format!(
                            "image::create: unknown option `{other}`; the options are no_stop, client_token"
                        ))))
                    }
                }
            }
            let token = token_for("image::create", &sites, "image", Some(&opts))?;
            Ok(o()?
                .create_image(i, name, no_stop, token.as_ref())
                .map_err(fail)?
                .id)
        },
    );
    let o = open.clone();
    let sites = ctx.call_sites.clone();
    doc(
        "image::copy(image, region)",
        &["Copies an image to another region; returns the copy's id (idempotent within a step)."],
    )
    .set_in(&mut img, move |id: &str, region: &str| -> R<String> {
        let token = token_for("image::copy", &sites, "image-copy", None)?;
        Ok(o()?
            .copy_image(id, region, token.as_ref())
            .map_err(fail)?
            .id)
    });
    let o = open.clone();
    doc("image::deregister(image)", &["Removes an image."])
        .set_in(&mut img, move |id: &str| -> R<()> {
            o()?.deregister_image(id).map_err(fail)
        });
    let o = open;
    doc(
        "image::describe(image)",
        &["An image's `#{ id, name, region, source }`."],
    )
    .set_in(&mut img, move |id: &str| -> R<Map> {
        let h = o()?;
        let i = h.store().map_err(fail)?.image(id).map_err(fail)?;
        let mut m = Map::new();
        m.insert("id".into(), i.id.clone().into());
        m.insert("name".into(), i.name.clone().into());
        m.insert("region".into(), i.region.clone().into());
        m.insert("source".into(), i.source.clone().into());
        Ok(m)
    });
    engine.register_static_module("image", img.into());
}
