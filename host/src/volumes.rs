//! Volumes and snapshots: create, attach (to a stopped instance, or
//! hot-plugged into a running new-generation one), detach, delete;
//! snapshots that copy only allocated extents; volumes from snapshots.

use super::client_tokens::{ClientToken, CreatedKind, Creation};
use super::extents::{copy_allocated, ext_fs_mounted};
use super::store::{
    insert_snapshot, insert_volume, now_ms, InstanceState, SnapshotRecord, TagKind, Tags,
    VolumeKind, VolumeRecord,
};
use super::{supervisor, Host, HostError};
use crate::backend::Backend;
use crate::supervisor::ControlCommand;

/// Largest volume drydock creates (sparse files cost only what is written).
const MAX_VOLUME_MIB: u64 = 1 << 20;

impl Host {
    /// Creates a network volume: empty, formatted ext4 (`filesystem_label`),
    /// or restored from a snapshot; `tags` are written with its record.
    /// With a client token, a call made again returns the volume the first
    /// made (made again under the same id if that call died half way).
    pub fn create_volume(
        &self,
        size_mib: Option<u64>,
        snapshot: Option<&str>,
        filesystem_label: Option<&str>,
        tags: &Tags,
        token: Option<&ClientToken>,
    ) -> Result<VolumeRecord, HostError> {
        let mut store = self.store()?;
        let request = serde_json::json!({
            "region": self.region(),
            "size_mib": size_mib,
            "snapshot": snapshot,
            "ext4_label": filesystem_label,
            "tags": tags,
        });
        let id = match store.begin_creation(
            token,
            CreatedKind::Volume,
            &request,
            &serde_json::json!({}),
        )? {
            Creation::Done { id, .. } => return store.volume(&id),
            c => c.id().to_string(),
        };
        std::fs::create_dir_all(self.volumes_dir())
            .map_err(|e| HostError::io("create", &self.volumes_dir(), e))?;
        let path = self.volumes_dir().join(format!("{id}.raw"));
        // What a call cut off half way left under this id.
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(HostError::io("remove the unfinished volume", &path, e))
            }
            _ => {}
        }
        let size_mib = match snapshot {
            Some(snap_id) => {
                let snap = store.snapshot(snap_id)?;
                self.check_region(snap_id, &snap.region)?;
                let size = size_mib.unwrap_or(snap.size_mib);
                if size < snap.size_mib {
                    return Err(HostError::Invalid(format!(
                        "--size {size} is smaller than snapshot {snap_id} ({} MiB)",
                        snap.size_mib
                    )));
                }
                copy_allocated(&snap.path, &path)
                    .map_err(|e| HostError::io("restore snapshot to", &path, e))?;
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| HostError::io("open", &path, e))?;
                f.set_len(size << 20)
                    .map_err(|e| HostError::io("size", &path, e))?;
                size
            }
            None => {
                let size = size_mib.ok_or_else(|| {
                    HostError::Invalid("give --size MiB or --snapshot SNAP".into())
                })?;
                if size == 0 || size > MAX_VOLUME_MIB {
                    return Err(HostError::Invalid(format!(
                        "--size must be between 1 and {MAX_VOLUME_MIB} MiB, got {size}"
                    )));
                }
                match filesystem_label {
                    Some(label) => {
                        let tree = tempfile::tempdir().map_err(|e| {
                            HostError::io("create a temporary directory for", &path, e)
                        })?;
                        drydock_images::make_ext4(tree.path(), label, size, &path)?;
                    }
                    None => {
                        let f = std::fs::File::create(&path)
                            .map_err(|e| HostError::io("create", &path, e))?;
                        f.set_len(size << 20)
                            .map_err(|e| HostError::io("size", &path, e))?;
                    }
                }
                size
            }
        };
        let rec = VolumeRecord {
            id,
            region: self.region().to_string(),
            size_mib,
            kind: VolumeKind::Network,
            path,
            attached_to: None,
            attach_index: None,
            delete_on_termination: false,
            created_at: now_ms(),
        };
        store.commit_creation(token, Some((TagKind::Volume, &rec.id, tags)), |tx| {
            insert_volume(tx, &rec)
        })?;
        Ok(rec)
    }

    fn check_region(&self, id: &str, region: &str) -> Result<(), HostError> {
        if region == self.region() {
            Ok(())
        } else {
            Err(HostError::NotFound(format!(
                "`{id}` is in {region}, not in {} (use --region {region})",
                self.region()
            )))
        }
    }

    /// Attaches a volume to an instance: as a data disk, or (`as_root`, to
    /// a stopped instance without one) as its root volume.
    pub fn attach_volume(
        &self,
        vol_id: &str,
        instance_id: &str,
        as_root: bool,
    ) -> Result<VolumeRecord, HostError> {
        let mut store = self.store()?;
        let vol = store.volume(vol_id)?;
        self.check_region(vol_id, &vol.region)?;
        let inst = store.instance(instance_id)?;
        self.check_region(instance_id, &inst.region)?;
        if let Some(other) = vol.attached_to.as_deref().filter(|o| *o != instance_id) {
            return Err(HostError::Conflict(format!(
                "volume {vol_id} is attached to {other}; detach it first (`drydock volume detach {vol_id}`)"
            )));
        }
        if inst.state == InstanceState::Terminated {
            return Err(HostError::Conflict(format!(
                "instance {instance_id} is terminated"
            )));
        }
        let running = matches!(inst.state, InstanceState::Running | InstanceState::Pending);
        if running && !as_root {
            let itype = super::instance_type(&inst.instance_type).map_err(HostError::Invalid)?;
            // drydock's own VMM gives old-generation guests empty disk
            // slots; QEMU's microvm has no hot-plug.
            let hot_slots =
                supervisor::send_control(&self.instance_dir(instance_id), &ControlCommand::Status)
                    .is_ok_and(|status| status.contains(Backend::Drydock.name()));
            if itype.generation != crate::backend::DeviceGeneration::Pci && !hot_slots {
                return Err(HostError::Conflict(format!(
                    "instance {instance_id} is of an old-generation type ({}, virtio-mmio) running on QEMU, whose disks cannot change while it runs; stop it, attach, start — or use a new-generation type",
                    itype.name
                )));
            }
        }
        if as_root && inst.state != InstanceState::Stopped {
            return Err(HostError::Conflict(format!(
                "instance {instance_id} is {}; a root volume can only be attached to a stopped instance",
                inst.state
            )));
        }
        let again = vol.attached_to.as_deref() == Some(instance_id);
        if !again {
            // A lock held by any VM means the file is in use, whatever the records say.
            drop(supervisor::VolumeLock::acquire(&vol.path, vol_id)?);
        }
        // Recorded first, in one transaction (one winner among parallel
        // attaches), then plugged: a command cut between the two is
        // finished by running it again (the VM's side is idempotent).
        store.claim_attachment(vol_id, instance_id, as_root)?;
        if !as_root && running {
            if let Err(e) = supervisor::send_control(
                &self.instance_dir(instance_id),
                &ControlCommand::Attach(vol_id.to_string()),
            ) {
                if !again {
                    store.set_attachment(vol_id, None, None)?;
                }
                return Err(e);
            }
        }
        store.volume(vol_id)
    }

    /// Detaches a volume. The root volume only from a stopped instance;
    /// instance-store volumes never; a data volume of a running instance
    /// only when its file system is not mounted in the guest, unless `force`.
    pub fn detach_volume(&self, vol_id: &str, force: bool) -> Result<VolumeRecord, HostError> {
        let mut store = self.store()?;
        let vol = store.volume(vol_id)?;
        self.check_region(vol_id, &vol.region)?;
        if vol.kind == VolumeKind::InstanceStore {
            return Err(HostError::Conflict(format!(
                "volume {vol_id} is instance storage: it lives on the host running its instance and is wiped at stop, so it cannot be detached; copy its data to a network volume instead"
            )));
        }
        let Some(inst_id) = vol.attached_to.clone() else {
            // Already detached (perhaps by this very command, run again
            // after a crash): the state asked for holds.
            return Ok(vol);
        };
        let inst = store.instance(&inst_id)?;
        let running = inst.state.has_process();
        if vol.attach_index == Some(0) && running {
            return Err(HostError::Conflict(format!(
                "volume {vol_id} is the root volume of {inst_id}, which is {}; stop the instance first",
                inst.state
            )));
        }
        if running {
            if !force
                && ext_fs_mounted(&vol.path).map_err(|e| HostError::io("read", &vol.path, e))?
                    == Some(true)
            {
                return Err(HostError::Conflict(format!(
                    "the file system on {vol_id} is mounted in {inst_id}; unmount it in the guest first, or detach with --force (data not yet written may be lost)"
                )));
            }
            supervisor::send_control(
                &self.instance_dir(&inst_id),
                &ControlCommand::Detach(vol_id.to_string()),
            )?;
        }
        store.set_attachment(vol_id, None, None)?;
        store.volume(vol_id)
    }

    /// Deletes a volume that is not attached.
    pub fn delete_volume(&self, vol_id: &str) -> Result<(), HostError> {
        let mut store = self.store()?;
        let vol = store.volume(vol_id)?;
        self.check_region(vol_id, &vol.region)?;
        if let Some(i) = &vol.attached_to {
            return Err(HostError::Conflict(format!(
                "volume {vol_id} is attached to {i}; detach it before deleting it"
            )));
        }
        match std::fs::remove_file(&vol.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(HostError::io("delete", &vol.path, e)),
        }
        store.delete_volume_row(vol_id)
    }

    /// Sets whether a volume is deleted when its instance terminates.
    pub fn set_delete_on_termination(
        &self,
        vol_id: &str,
        delete: bool,
    ) -> Result<VolumeRecord, HostError> {
        let mut store = self.store()?;
        let vol = store.volume(vol_id)?;
        self.check_region(vol_id, &vol.region)?;
        store.set_delete_on_termination(vol_id, delete)?;
        store.volume(vol_id)
    }

    /// Runs `copy` with the VM of `instance` paused when it runs (a
    /// crash-consistent point: no guest write lands in the middle of the
    /// copy); returns how long the VM was paused. The VM is resumed
    /// whatever the copy does (and by its supervisor after a while should
    /// this command die).
    pub(crate) fn paused_for<T>(
        &self,
        instance: Option<&str>,
        copy: impl FnOnce() -> T,
    ) -> Result<(T, Option<std::time::Duration>), HostError> {
        let running = match instance {
            Some(i) => self.store()?.instance(i)?.state.has_process(),
            None => false,
        };
        let Some(instance) = instance.filter(|_| running) else {
            return Ok((copy(), None));
        };
        let dir = self.instance_dir(instance);
        supervisor::send_control(&dir, &ControlCommand::Pause)?;
        let start = std::time::Instant::now();
        let out = copy();
        let paused = start.elapsed();
        if let Err(e) = supervisor::send_control(&dir, &ControlCommand::Resume) {
            tracing::error!(instance, "cannot resume after the copy: {e}");
            return Err(e);
        }
        Ok((out, Some(paused)))
    }

    /// Snapshots a volume; the VM using it is paused during the copy.
    /// Returns the snapshot, the bytes copied and how long the VM was paused
    /// (nothing copied and no pause when a client token used before names
    /// a snapshot already made).
    pub fn create_snapshot(
        &self,
        vol_id: &str,
        token: Option<&ClientToken>,
    ) -> Result<(SnapshotRecord, u64, Option<std::time::Duration>), HostError> {
        let mut store = self.store()?;
        let vol = store.volume(vol_id)?;
        self.check_region(vol_id, &vol.region)?;
        let dir = self.data_dir.join("snapshots");
        std::fs::create_dir_all(&dir).map_err(|e| HostError::io("create", &dir, e))?;
        let request = serde_json::json!({ "volume": vol_id });
        let id = match store.begin_creation(
            token,
            CreatedKind::Snapshot,
            &request,
            &serde_json::json!({}),
        )? {
            Creation::Done { id, .. } => return Ok((store.snapshot(&id)?, 0, None)),
            c => c.id().to_string(),
        };
        let path = dir.join(format!("{id}.raw"));
        let (copied, paused) = self.paused_for(vol.attached_to.as_deref(), || {
            copy_allocated(&vol.path, &path)
        })?;
        let copied = copied.map_err(|e| HostError::io("snapshot", &vol.path, e))?;
        let rec = SnapshotRecord {
            id,
            region: vol.region.clone(),
            volume_id: vol.id.clone(),
            size_mib: vol.size_mib,
            path,
            bytes: copied,
            created_at: now_ms(),
        };
        store.commit_creation(token, None, |tx| insert_snapshot(tx, &rec))?;
        Ok((rec, copied, paused))
    }

    /// Deletes a snapshot.
    pub fn delete_snapshot(&self, snap_id: &str) -> Result<(), HostError> {
        let mut store = self.store()?;
        let snap = store.snapshot(snap_id)?;
        self.check_region(snap_id, &snap.region)?;
        let _ = std::fs::remove_file(&snap.path);
        store.delete_snapshot_row(snap_id)
    }
}
