//! Volumes plugged into and out of a running VM: into drydock's VMM's
//! empty disk slots (the supervisor opens the file and passes it), onto
//! QEMU's PCIe hot-plug ports; out again once the guest has released them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use super::locks::VolumeLock;
use super::running::Shared;
use crate::backend::{qemu, Backend, DeviceGeneration, DiskSpec};
use crate::HostError;

impl Shared {
    pub(super) fn hot_attach(&self, vol_id: &str) -> Result<String, HostError> {
        // Asked again (a command re-run after a crash): already done.
        if self.boot_volumes.contains(vol_id)
            || self.hotplugged.lock().unwrap().contains_key(vol_id)
        {
            return Ok(format!("attached {vol_id} (it already was)"));
        }
        if self.backend == Backend::Drydock {
            return self.drydock_attach(vol_id);
        }
        if self.generation != DeviceGeneration::Pci {
            return Err(HostError::Conflict(format!(
                "instance {} is of an old-generation type (virtio-mmio) whose disks cannot change while it runs; stop it, attach, start",
                self.id
            )));
        }
        let vol = self.store()?.volume(vol_id)?;
        let mut plugged = self.hotplugged.lock().unwrap();
        let slot = self.free_slot(&plugged)?;
        let lock = VolumeLock::acquire(&vol.path, &vol.id)?;
        let disk = DiskSpec {
            path: vol.path.clone(),
            serial: vol.id.clone(),
            read_only: false,
            hotplug: None,
        };
        for (cmd, args) in
            qemu::hotplug_commands(&disk, &device_id(&vol.id), &qemu::hotplug_port(slot))
        {
            self.qmp(cmd, args)?;
        }
        plugged.insert(vol.id.clone(), (slot, lock));
        Ok(format!("attached {}", vol.id))
    }

    /// drydock's VMM: the volume goes into an empty disk slot.
    fn drydock_attach(&self, vol_id: &str) -> Result<String, HostError> {
        let vol = self.store()?.volume(vol_id)?;
        let lock = VolumeLock::acquire(&vol.path, &vol.id)?;
        let reply = self.drydock_attach_disk(&absolute(&vol.path), &vol.id)?;
        let slot = reply["slot"].as_u64().unwrap_or_default() as u32;
        self.hotplugged
            .lock()
            .unwrap()
            .insert(vol.id.clone(), (slot, lock));
        Ok(format!("attached {}", vol.id))
    }

    /// drydock's VMM opens no file by path under its seccomp filter: the
    /// supervisor opens the volume and passes it with `attach-disk`
    /// (SCM_RIGHTS); the VMM checks it is that file of the volumes
    /// directory.
    fn drydock_attach_disk(
        &self,
        path: &Path,
        serial: &str,
    ) -> Result<serde_json::Value, HostError> {
        let file = drydock_vmm::machine::control::open_volume_for_attach(path, false)
            .map_err(|e| HostError::io("open", path, e))?;
        self.qmp_with_fd(
            "attach-disk",
            json!({ "path": path, "serial": serial, "read_only": false }),
            std::os::fd::AsFd::as_fd(&file),
        )
    }

    pub(super) fn hot_detach(&self, vol_id: &str) -> Result<String, HostError> {
        let dev = device_id(vol_id);
        if !self.hotplugged.lock().unwrap().contains_key(vol_id) {
            if self.boot_volumes.contains(vol_id) {
                return Err(HostError::Conflict(format!(
                    "volume {vol_id} was attached before {} started; stop the instance to detach it",
                    self.id
                )));
            }
            // Not in this VM (detached already, by a command cut short
            // before it recorded it, or never plugged): nothing to do.
            return Ok(format!("detached {vol_id} (it was not in the VM)"));
        }
        if self.backend == Backend::Drydock {
            let reply = self.qmp("detach-disk", json!({ "serial": vol_id }))?;
            self.hotplugged.lock().unwrap().remove(vol_id);
            return Ok(if reply["was_mounted"].as_bool().unwrap_or(false) {
                format!("detached {vol_id} (the guest still had its file system mounted)")
            } else {
                format!("detached {vol_id}")
            });
        }
        let finished_elsewhere = || !self.hotplugged.lock().unwrap().contains_key(vol_id);
        if !self.unplug(&dev, vol_id, finished_elsewhere)? {
            return Ok(format!("detached {vol_id} (a detach cut short finished)"));
        }
        self.qmp(
            "blockdev-del",
            json!({ "node-name": format!("node-{dev}") }),
        )?;
        self.hotplugged.lock().unwrap().remove(vol_id);
        Ok(format!("detached {vol_id}"))
    }
}

impl Shared {
    /// A hot-plug port slot no volume (`plugged`, held locked by the
    /// caller) or network interface uses.
    pub(super) fn free_slot(
        &self,
        plugged: &std::collections::HashMap<String, (u32, VolumeLock)>,
    ) -> Result<u32, HostError> {
        let mut used: Vec<u32> = plugged.values().map(|(s, _)| *s).collect();
        used.extend(self.hot_nics.lock().unwrap().values().copied());
        (0..qemu::HOTPLUG_SLOTS)
            .find(|s| !used.contains(s))
            .ok_or_else(|| {
                HostError::Conflict(format!(
                    "instance {} has no free hot-plug slot ({} in use by volumes and network interfaces)",
                    self.id,
                    qemu::HOTPLUG_SLOTS
                ))
            })
    }

    /// Asks QEMU to unplug device `dev` (of `what`, a volume or an
    /// interface) and waits for the guest to release it. A detach whose
    /// command was cut short may still be under way in another thread
    /// here (the guest releasing the device, or QEMU done with it and its
    /// event being handled): QEMU then says the device is not found or
    /// already being unplugged, and this call waits for that detach to
    /// finish instead of failing. `Ok(false)`: `done_elsewhere` says that
    /// other thread finished it.
    pub(super) fn unplug(
        &self,
        dev: &str,
        what: &str,
        done_elsewhere: impl Fn() -> bool + Copy,
    ) -> Result<bool, HostError> {
        match self.qmp("device_del", json!({ "id": dev })) {
            Ok(_) => {}
            Err(e)
                if e.to_string().contains("not found")
                    || e.to_string().contains("process of unplug") =>
            {
                tracing::warn!(instance = %self.id, "{what}: finishing a detach cut short");
            }
            Err(e) => return Err(e),
        }
        if self.wait_deleted(dev, Duration::from_secs(20), done_elsewhere) {
            return Ok(true);
        }
        if done_elsewhere() {
            return Ok(false);
        }
        Err(HostError::Vmm(format!(
            "the guest did not release {what} within 20 s; it may still be using it"
        )))
    }

    /// Waits up to `limit` for QEMU's DEVICE_DELETED of `dev` (the guest
    /// released it) and takes it; `false` when it did not come, or when
    /// `done_elsewhere` says another thread finished the unplug.
    pub(super) fn wait_deleted(
        &self,
        dev: &str,
        limit: Duration,
        done_elsewhere: impl Fn() -> bool,
    ) -> bool {
        let (set, cond) = &self.deleted_devices;
        let deadline = std::time::Instant::now() + limit;
        let mut deleted = set.lock().unwrap();
        while !deleted.contains(dev) {
            if done_elsewhere() {
                return false;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            deleted = cond
                .wait_timeout(deleted, left.min(Duration::from_millis(100)))
                .unwrap()
                .0;
        }
        deleted.remove(dev);
        true
    }
}

/// `path` made absolute against the working directory (a relative
/// `--data-dir`): drydock's VMM attaches only absolute paths.
pub(super) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

pub(super) fn device_id(vol_id: &str) -> String {
    format!("disk-{vol_id}")
}
