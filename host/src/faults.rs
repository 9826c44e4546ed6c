//! Fault injection: real, named faults put on the root volume of a
//! stopped instance, the way they happen in life, to practise recoveries
//! and run drills on. Each fault records what it changed before changing
//! it (the files' earlier contents, the instance settings), so `revert`
//! puts everything back — also after a crash in the middle. Only
//! instances tagged `allow-faults=true` (set by `--allow-faults` at
//! launch) can be broken: a drill never breaks the wrong machine.

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::store::{new_id, now_ms, InstanceConfig};
use super::supervisor::VolumeLock;
use super::volume_files::{self, Previous};
use super::{Host, HostError, InstanceState};

/// The tag that allows faults on an instance.
pub const ALLOW_TAG: &str = "allow-faults";

/// A fault drydock knows how to put into an instance.
pub struct FaultKind {
    pub name: &'static str,
    pub description: &'static str,
    /// What the console shows when the instance starts with it.
    pub symptom: &'static str,
}

/// Every fault, by name.
pub const CATALOG: &[FaultKind] = &[
    FaultKind {
        name: "fstab-missing-disk",
        description: "an /etc/fstab entry for a disk that is not there",
        symptom: "Press S to skip mounting or M for manual recovery",
    },
    FaultKind {
        name: "fstab-bad-option",
        description: "an /etc/fstab entry with a mount option the file system rejects",
        symptom: "Press S to skip mounting or M for manual recovery",
    },
    FaultKind {
        name: "lost-password",
        description: "root's console password no longer works (locked in /etc/shadow, no password in the instance's settings)",
        symptom: "Login incorrect",
    },
    FaultKind {
        name: "lost-ssh-key",
        description: "root's authorized SSH keys are gone (file and instance settings)",
        symptom: "",
    },
    FaultKind {
        name: "disk-full",
        description: "the root file system has no free block left",
        symptom: "",
    },
    FaultKind {
        name: "bad-init",
        description: "/sbin/init is missing: the boot stops before userspace",
        symptom: "has no /sbin/init",
    },
    FaultKind {
        name: "missing-driver",
        description: "the initramfs lacks the disk driver the instance's type needs (virtio_mmio on m1, virtio_pci on n2), and /etc/initramfs/modules no longer lists it",
        symptom: "did not appear after 5s; the instance type may need a driver this image lacks",
    },
    FaultKind {
        name: "stop-service",
        description: "a guest service (give its name: stop-service syslogd) is disabled: not started at boot, `service NAME status` says stopped",
        symptom: "drydock: service NAME is disabled",
    },
    FaultKind {
        name: "broken-shell-profile",
        description: "root's ~/.profile ends every login shell at once",
        symptom: "",
    },
    FaultKind {
        name: "network-config-broken",
        description: "a hand-written /etc/network.local gives the interface an address outside its subnet: nothing reaches the instance over the network",
        symptom: "drydock: network: eth0=192.168.254.10/24",
    },
    FaultKind {
        name: "sshd-broken",
        description: "the SSH server's host key file is damaged: the server does not start (SSH refused)",
        symptom: "drydock: service sshd failed to start",
    },
    FaultKind {
        name: "nic-driver-missing",
        description: "the network driver (virtio_net) is gone from the root volume's modules: the instance has no interface",
        symptom: "drydock: network: none",
    },
];

/// What `network-config-broken` writes.
const BROKEN_NETWORK_LOCAL: &str =
    "# written by hand\nNET_ADDRESS=192.168.254.10/24\nNET_GATEWAY=192.168.254.1\n";
/// The SSH server's host key (and the instance it was made for).
const SSH_HOST_KEY: &str = "/etc/dropbear/dropbear_ed25519_host_key";

/// The fault of that name.
pub fn kind(name: &str) -> Result<&'static FaultKind, HostError> {
    CATALOG.iter().find(|k| k.name == name).ok_or_else(|| {
        HostError::Invalid(format!(
            "unknown fault `{}`; known: {}",
            name.escape_debug(),
            CATALOG
                .iter()
                .map(|k| k.name)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// What a fault changed, to undo it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Undo {
    /// Files to put back as they were (path, earlier state), in order.
    pub files: Vec<(String, Previous)>,
    /// Entries renamed (from, to): renamed back.
    pub renames: Vec<(String, String)>,
    /// The instance's settings before the fault.
    pub config: Option<InstanceConfig>,
}

/// One fault put into an instance.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    pub id: String,
    pub instance: String,
    pub fault: String,
    /// What was changed, for people.
    pub detail: String,
    pub injected_by: String,
    pub injected_at: i64,
    pub reverted_at: Option<i64>,
    #[serde(skip)]
    pub undo: Undo,
}

fn from_row(r: &rusqlite::Row) -> rusqlite::Result<FaultRecord> {
    let undo: String = r.get("undo")?;
    Ok(FaultRecord {
        id: r.get("id")?,
        instance: r.get("instance")?,
        fault: r.get("fault")?,
        detail: r.get("detail")?,
        injected_by: r.get("injected_by")?,
        injected_at: r.get("injected_at")?,
        reverted_at: r.get("reverted_at")?,
        undo: serde_json::from_str(&undo).unwrap_or_default(),
    })
}

/// Lines appended to /etc/fstab by the fstab faults.
const MISSING_DISK_LINE: &str = "LABEL=drydock-fault-data /data ext4 defaults 0 2\n";
const BAD_OPTION_LINE: &str = "LABEL=cidata /mnt/config ext4 ro,drydock-fault-no-such-option 0 2\n";
const FILL_FILE: &str = "/var/drydock-fault-fill";

impl Host {
    /// The faults of one instance (or all of this region's), newest last.
    pub fn faults(&self, instance: Option<&str>) -> Result<Vec<FaultRecord>, HostError> {
        let store = self.store()?;
        let mut stmt = store.conn.prepare(
            "SELECT * FROM faults WHERE (?1 IS NULL OR instance = ?1) ORDER BY injected_at, id",
        )?;
        let rows = stmt.query_map(params![instance], from_row)?;
        let mut out = Vec::new();
        for f in rows {
            let f = f?;
            // Only this region's instances.
            if let Ok(i) = store.instance(&f.instance) {
                if i.region == self.region() {
                    out.push(f);
                }
            }
        }
        Ok(out)
    }

    /// The stopped instance's root volume, locked; refuses instances not
    /// allowed to be broken.
    fn fault_target(
        &self,
        id: &str,
        doing: &str,
    ) -> Result<(super::InstanceRecord, std::path::PathBuf, VolumeLock), HostError> {
        let store = self.store()?;
        let i = store.instance(id)?;
        let i = self.in_region(id, &i.region.clone(), i)?;
        let allowed = store
            .tags(id)?
            .get(ALLOW_TAG)
            .is_some_and(|v| v == "true" || v == "yes");
        if !allowed {
            return Err(HostError::Conflict(format!(
                "instance {id} is not allowed to be broken; faults only go into instances launched with --allow-faults or tagged {ALLOW_TAG}=true (`drydock tag {id} {ALLOW_TAG}=true`)"
            )));
        }
        if i.state != InstanceState::Stopped {
            return Err(HostError::Conflict(format!(
                "instance {id} is {}; faults are {doing} on the root volume of a stopped instance: stop it first (`drydock instance stop {id}`)",
                i.state
            )));
        }
        let root = store
            .attached(id)?
            .into_iter()
            .find(|v| v.attach_index == Some(0))
            .ok_or_else(|| HostError::Conflict(format!("instance {id} has no root volume")))?;
        let lock = VolumeLock::acquire(&root.path, &root.id)?;
        // debugfs reads what is on disk, not what the journal holds: a
        // volume stopped uncleanly is replayed first, as a mount would.
        super::journal_replay::replay_if_needed(&root.path).map_err(|e| {
            HostError::Conflict(format!(
                "{e}; attach the volume to a rescue instance and run e2fsck on it"
            ))
        })?;
        Ok((i, root.path, lock))
    }

    /// Puts the fault `name` into the stopped instance `id`.
    ///
    /// With a client token (a runbook step's, see
    /// [`super::client_tokens`]), a call made again after its runner died
    /// — perhaps half way through changing the volume — reverts what the
    /// first call put in (its undo was recorded before anything changed)
    /// and injects again: one fault, whole, never "already injected".
    pub fn inject_fault(
        &self,
        id: &str,
        name: &str,
        arg: Option<&str>,
        token: Option<&str>,
    ) -> Result<FaultRecord, HostError> {
        let kind = kind(name)?;
        if let Some(t) = token {
            let earlier: Option<String> = self
                .store()?
                .conn
                .query_row(
                    "SELECT id FROM faults WHERE client_token = ?1 AND instance = ?2 AND reverted_at IS NULL",
                    params![t, id],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(earlier) = earlier {
                tracing::warn!(instance = id, fault = %earlier, "the same call injected this fault before (cut off?): reverting it to inject it whole");
                self.revert_faults(id, Some(&earlier))?;
            }
        }
        match (kind.name, arg) {
            ("stop-service", None) => {
                return Err(HostError::Invalid(
                    "stop-service needs the service's name (e.g. `drydock fault inject i-… stop-service syslogd`)".into(),
                ))
            }
            ("stop-service", Some(service)) => check_service_name(service)?,
            (other, Some(extra)) => {
                return Err(HostError::Invalid(format!(
                    "fault {other} takes no argument (got `{}`)",
                    extra.escape_debug()
                )))
            }
            (_, None) => {}
        }
        let (inst, volume, _lock) = self.fault_target(id, "put")?;
        if let Some(active) = self
            .faults(Some(id))?
            .into_iter()
            .find(|f| f.fault == kind.name && f.reverted_at.is_none())
        {
            return Err(HostError::Conflict(format!(
                "instance {id} already has {} ({}); revert it first (`drydock fault revert {id} {}`)",
                kind.name, active.id, active.id
            )));
        }
        let mut undo = Undo::default();
        let detail;
        // The plan: what changes, and what it was before (recorded before
        // anything changes).
        enum Change {
            Write(String, Vec<u8>, u32),
            Rename(String, String),
            Fill(String),
            Remove(String),
            Config(InstanceConfig),
        }
        let mut changes = Vec::new();
        let append = |line: &str| -> Result<Vec<u8>, HostError> {
            let mut fstab = volume_files::read(&volume, "/etc/fstab")?.unwrap_or_default();
            if !fstab.is_empty() && !fstab.ends_with(b"\n") {
                fstab.push(b'\n');
            }
            fstab.extend_from_slice(line.as_bytes());
            Ok(fstab)
        };
        match kind.name {
            "fstab-missing-disk" | "fstab-bad-option" => {
                let line = if kind.name == "fstab-missing-disk" {
                    MISSING_DISK_LINE
                } else {
                    BAD_OPTION_LINE
                };
                undo.files.push((
                    "/etc/fstab".into(),
                    volume_files::previous(&volume, "/etc/fstab")?,
                ));
                changes.push(Change::Write("/etc/fstab".into(), append(line)?, 0o644));
                detail = format!("/etc/fstab: added `{}`", line.trim_end());
            }
            "lost-password" => {
                let shadow = volume_files::read(&volume, "/etc/shadow")?.ok_or_else(|| {
                    HostError::Conflict(format!("instance {id}'s root volume has no /etc/shadow"))
                })?;
                let text = String::from_utf8_lossy(&shadow);
                let locked: String = text
                    .lines()
                    .map(|l| match l.strip_prefix("root:") {
                        Some(rest) => {
                            let after = rest.split_once(':').map(|(_, a)| a).unwrap_or("");
                            format!("root:!drydock-fault-lost-password:{after}\n")
                        }
                        None => format!("{l}\n"),
                    })
                    .collect();
                undo.files.push((
                    "/etc/shadow".into(),
                    volume_files::previous(&volume, "/etc/shadow")?,
                ));
                undo.config = Some(inst.config.clone());
                changes.push(Change::Write(
                    "/etc/shadow".into(),
                    locked.into_bytes(),
                    0o600,
                ));
                let mut config = inst.config.clone();
                config.root_password_hash = None;
                changes.push(Change::Config(config));
                detail = "root's password locked in /etc/shadow; the instance's settings no longer set one at boot".into();
            }
            "lost-ssh-key" => {
                let keys = "/root/.ssh/authorized_keys";
                undo.files
                    .push((keys.into(), volume_files::previous(&volume, keys)?));
                undo.config = Some(inst.config.clone());
                changes.push(Change::Remove(keys.into()));
                let mut config = inst.config.clone();
                config.authorized_keys.clear();
                changes.push(Change::Config(config));
                detail = format!("{keys} removed; the instance's settings hold no key");
            }
            "disk-full" => {
                let (free, block) = volume_files::free_blocks(&volume)?;
                undo.files.push((
                    FILL_FILE.into(),
                    volume_files::previous(&volume, FILL_FILE)?,
                ));
                changes.push(Change::Fill(FILL_FILE.into()));
                detail = format!(
                    "{FILL_FILE} takes the {} MiB that were free (all but part of root's reserve)",
                    (free * block) >> 20
                );
            }
            "bad-init" => {
                let moved = "/sbin/init.drydock-fault";
                undo.renames.push(("/sbin/init".into(), moved.into()));
                changes.push(Change::Rename("/sbin/init".into(), moved.into()));
                detail = format!("/sbin/init moved to {moved}");
            }
            "missing-driver" => {
                let (initrd, bytes, driver) = self.default_initrd(&inst, &volume)?;
                let module = format!("lib/modules/{driver}.ko");
                let listed = |text: &[u8]| -> Vec<u8> {
                    String::from_utf8_lossy(text)
                        .lines()
                        .filter(|l| l.trim() != driver)
                        .map(|l| format!("{l}\n"))
                        .collect::<String>()
                        .into_bytes()
                };
                let found = std::cell::Cell::new(false);
                let broken = drydock_images::cpio::rewrite(&bytes, |name, data| {
                    use drydock_images::cpio::Rewrite;
                    if name == module {
                        found.set(true);
                        Rewrite::Drop
                    } else if name == "etc/drydock-drivers" {
                        // The list the initramfs's init loads.
                        Rewrite::Replace(listed(data))
                    } else {
                        Rewrite::Keep
                    }
                })
                .map_err(|e| HostError::Conflict(format!("{initrd} on instance {id}'s root volume is not an initramfs drydock can change: {e}")))?;
                if !found.get() {
                    return Err(HostError::Conflict(format!(
                        "{initrd} on instance {id}'s root volume does not hold {driver}: the driver is already missing"
                    )));
                }
                let modules = "/etc/initramfs/modules";
                undo.files
                    .push((initrd.clone(), volume_files::previous(&volume, &initrd)?));
                undo.files
                    .push((modules.into(), volume_files::previous(&volume, modules)?));
                changes.push(Change::Write(initrd.clone(), broken, 0o644));
                if let Some(text) = volume_files::read(&volume, modules)? {
                    changes.push(Change::Write(modules.into(), listed(&text), 0o644));
                }
                detail = format!("{driver} removed from {initrd} and from {modules}");
            }
            "stop-service" => {
                let service = arg.unwrap_or_default();
                let script = volume_files::list(&volume, "/etc/init.d")?
                    .into_iter()
                    .find(|n| {
                        n.len() == service.len() + 3
                            && n.starts_with('S')
                            && n[1..3].bytes().all(|b| b.is_ascii_digit())
                            && &n[3..] == service
                    })
                    .map(|n| format!("/etc/init.d/{n}"))
                    .ok_or_else(|| {
                        HostError::Invalid(format!(
                            "instance {id} has no service {service} (no /etc/init.d/S<NN>{service} on its root volume)"
                        ))
                    })?;
                let bytes = volume_files::read(&volume, &script)?.unwrap_or_default();
                let previous = volume_files::previous(&volume, &script)?;
                if let volume_files::Previous::File { mode, .. } = &previous {
                    if mode & 0o111 == 0 {
                        return Err(HostError::Conflict(format!(
                            "service {service} of instance {id} is already disabled ({script} is not executable)"
                        )));
                    }
                }
                undo.files.push((script.clone(), previous));
                changes.push(Change::Write(script.clone(), bytes, 0o644));
                detail = format!("service {service} disabled ({script} no longer executable)");
            }
            "broken-shell-profile" => {
                let profile = "/root/.profile";
                undo.files
                    .push((profile.into(), volume_files::previous(&volume, profile)?));
                changes.push(Change::Write(
                    profile.into(),
                    b"# drydock fault: broken-shell-profile\nexit 1\n".to_vec(),
                    0o644,
                ));
                detail = format!("{profile} ends every login shell");
            }
            "network-config-broken" => {
                let local = "/etc/network.local";
                undo.files
                    .push((local.into(), volume_files::previous(&volume, local)?));
                changes.push(Change::Write(
                    local.into(),
                    BROKEN_NETWORK_LOCAL.as_bytes().to_vec(),
                    0o644,
                ));
                detail = format!("{local} sets 192.168.254.10/24 via 192.168.254.1");
            }
            "sshd-broken" => {
                let marker = format!("{SSH_HOST_KEY}.instance");
                undo.files.push((
                    SSH_HOST_KEY.into(),
                    volume_files::previous(&volume, SSH_HOST_KEY)?,
                ));
                undo.files
                    .push((marker.clone(), volume_files::previous(&volume, &marker)?));
                changes.push(Change::Write(
                    SSH_HOST_KEY.into(),
                    b"drydock fault: not a host key\n".to_vec(),
                    0o600,
                ));
                // Marked as this instance's: the service keeps it.
                changes.push(Change::Write(marker, format!("{id}\n").into_bytes(), 0o644));
                detail = format!("{SSH_HOST_KEY} damaged");
            }
            "nic-driver-missing" => {
                let mut found = None;
                for release in volume_files::list(&volume, "/lib/modules")? {
                    let path = format!("/lib/modules/{release}/kernel/drivers/net/virtio_net.ko");
                    if volume_files::read(&volume, &path)?.is_some() {
                        found = Some(path);
                        break;
                    }
                }
                let path = found.ok_or_else(|| {
                    HostError::Conflict(format!(
                        "instance {id}'s root volume has no virtio_net module: the driver is already missing (or built into its kernel)"
                    ))
                })?;
                let moved = format!("{path}.drydock-fault");
                undo.renames.push((path.clone(), moved.clone()));
                changes.push(Change::Rename(path.clone(), moved.clone()));
                detail = format!("{path} moved to {moved}");
            }
            other => return Err(HostError::Invalid(format!("fault `{other}` has no recipe"))),
        }
        let rec = FaultRecord {
            id: new_id("fault"),
            instance: id.to_string(),
            fault: kind.name.to_string(),
            detail,
            injected_by: drydock_runtime::identity::Identity::current().name,
            injected_at: now_ms(),
            reverted_at: None,
            undo,
        };
        let undo_json =
            serde_json::to_string(&rec.undo).map_err(|e| HostError::Vmm(e.to_string()))?;
        self.store()?.conn.execute(
            "INSERT INTO faults (id, instance, fault, detail, undo, injected_by, injected_at, client_token)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                rec.id,
                rec.instance,
                rec.fault,
                rec.detail,
                undo_json,
                rec.injected_by,
                rec.injected_at,
                token
            ],
        )?;
        tracing::info!(
            instance = id,
            fault = kind.name,
            "injecting: {}",
            rec.detail
        );
        for change in changes {
            match change {
                Change::Write(path, bytes, mode) => {
                    volume_files::write(&volume, &path, &bytes, mode)?
                }
                Change::Rename(from, to) => volume_files::rename(&volume, &from, &to)?,
                Change::Fill(path) => {
                    volume_files::fill(&volume, &path)?;
                }
                Change::Remove(path) => volume_files::remove(&volume, &path)?,
                Change::Config(config) => self.set_config(id, &config)?,
            }
        }
        Ok(rec)
    }

    /// The default boot entry's initrd on a root volume, its bytes, and
    /// the disk driver the instance's type needs.
    fn default_initrd(
        &self,
        inst: &super::store::InstanceRecord,
        volume: &std::path::Path,
    ) -> Result<(String, Vec<u8>, &'static str), HostError> {
        use drydock_images::boot_config::{BootConfig, CONFIG_PATH};
        let driver = match super::types::instance_type(&inst.instance_type)
            .map_err(HostError::Invalid)?
            .generation
        {
            crate::backend::DeviceGeneration::Mmio => "virtio_mmio",
            crate::backend::DeviceGeneration::Pci => "virtio_pci",
        };
        let conf = volume_files::read(volume, CONFIG_PATH)?.ok_or_else(|| {
            HostError::Conflict(format!(
                "instance {}'s root volume has no {CONFIG_PATH}",
                inst.id
            ))
        })?;
        let config = BootConfig::parse(&String::from_utf8_lossy(&conf))
            .map_err(|e| HostError::Conflict(format!("{CONFIG_PATH}: {e}")))?;
        let initrd = config
            .boot_order()
            .first()
            .and_then(|e| e.initrd.clone())
            .ok_or_else(|| HostError::Conflict(format!("{CONFIG_PATH} has no INITRD to break")))?;
        volume_files::check_path(&initrd)?;
        let bytes = volume_files::read(volume, &initrd)?
            .ok_or_else(|| HostError::Conflict(format!("{initrd} is not on the root volume")))?;
        Ok((initrd, bytes, driver))
    }

    fn set_config(&self, id: &str, config: &InstanceConfig) -> Result<(), HostError> {
        let text = serde_json::to_string(config).map_err(|e| HostError::Vmm(e.to_string()))?;
        self.store()?.conn.execute(
            "UPDATE instances SET config = ?1 WHERE id = ?2",
            params![text, id],
        )?;
        Ok(())
    }

    /// Reverts one fault (by id or name) or, with None, every fault still
    /// in the stopped instance, newest first. Safe to run again.
    pub fn revert_faults(
        &self,
        id: &str,
        which: Option<&str>,
    ) -> Result<Vec<FaultRecord>, HostError> {
        let (_inst, volume, _lock) = self.fault_target(id, "reverted")?;
        let mut active: Vec<FaultRecord> = self
            .faults(Some(id))?
            .into_iter()
            .filter(|f| f.reverted_at.is_none())
            .filter(|f| which.is_none_or(|w| f.id == w || f.fault == w))
            .collect();
        if active.is_empty() {
            return match which {
                Some(w) => {
                    let known = self
                        .faults(Some(id))?
                        .into_iter()
                        .any(|f| f.id == w || f.fault == w);
                    if known {
                        Ok(Vec::new())
                    } else {
                        Err(HostError::NotFound(format!(
                            "instance {id} has no fault `{}` (`drydock fault list {id}`)",
                            w.escape_debug()
                        )))
                    }
                }
                None => Ok(Vec::new()),
            };
        }
        active.reverse();
        let mut done = Vec::new();
        for mut f in active {
            for (path, before) in f.undo.files.iter().rev() {
                match before {
                    Previous::Absent => volume_files::remove(&volume, path)?,
                    Previous::File { bytes, mode } => {
                        volume_files::write(&volume, path, bytes, *mode)?
                    }
                }
            }
            for (from, to) in f.undo.renames.iter().rev() {
                // Renamed back unless that already happened (a revert cut short).
                if volume_files::mode(&volume, to)?.is_some()
                    && volume_files::mode(&volume, from)?.is_none()
                {
                    volume_files::rename(&volume, to, from)?;
                }
            }
            if let Some(config) = &f.undo.config {
                self.set_config(id, config)?;
            }
            let at = now_ms();
            self.store()?.conn.execute(
                "UPDATE faults SET reverted_at = ?1 WHERE id = ?2",
                params![at, f.id],
            )?;
            f.reverted_at = Some(at);
            tracing::info!(instance = id, fault = %f.fault, "reverted");
            done.push(f);
        }
        Ok(done)
    }
}

/// A service name as the guest's scripts are named.
fn check_service_name(name: &str) -> Result<(), HostError> {
    if !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(HostError::Invalid(format!(
            "`{}` is not a service name (lowercase letters, digits, - and _)",
            name.escape_debug()
        )))
    }
}
