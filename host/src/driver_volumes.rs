//! Driver volumes: a driver pack ([`drydock_images::driver_pack`]) made into
//! a volume of the region, tagged with what it holds, to attach to an
//! instance (or to a helper instance holding its root volume) and install
//! from. Built from the Debian kernel package matching the guest's kernel
//! release, so the guest never needs a network.

use std::path::Path;

use super::client_tokens::{ClientToken, CreatedKind, Creation};
use super::store::{insert_volume, now_ms, TagKind, Tags, VolumeKind, VolumeRecord};
use super::{Host, HostError};
use drydock_images::driver_pack::{self, DriverPack};

/// Size of a driver volume: the modules are a few hundred KiB; ext4 needs
/// room for its journal.
const DRIVER_VOLUME_MIB: u64 = 16;

impl Host {
    /// Builds a driver volume for kernel `release` holding `drivers` and
    /// their dependencies. `images_dir` is where image builds keep their
    /// package cache (`images_dir/packages`).
    pub fn create_driver_volume(
        &self,
        release: &str,
        drivers: &[String],
        images_dir: &Path,
        token: Option<&ClientToken>,
    ) -> Result<(VolumeRecord, DriverPack), HostError> {
        let cache = images_dir.join("packages");
        std::fs::create_dir_all(&cache).map_err(|e| HostError::io("create", &cache, e))?;
        let tree = tempfile::tempdir()
            .map_err(|e| HostError::io("create a temporary directory in", Path::new("/tmp"), e))?;
        let pack = driver_pack::stage(&cache, release, drivers, tree.path())
            .map_err(|e| HostError::Invalid(e.to_string()))?;
        std::fs::create_dir_all(self.volumes_dir())
            .map_err(|e| HostError::io("create", &self.volumes_dir(), e))?;
        let mut drivers_sorted = drivers.to_vec();
        drivers_sorted.sort();
        let request = serde_json::json!({
            "region": self.region(),
            "kernel": release,
            "drivers": drivers_sorted,
        });
        let mut store = self.store()?;
        let id = match store.begin_creation(
            token,
            CreatedKind::Volume,
            &request,
            &serde_json::json!({}),
        )? {
            Creation::Done { id, .. } => return Ok((store.volume(&id)?, pack)),
            c => c.id().to_string(),
        };
        let path = self.volumes_dir().join(format!("{id}.raw"));
        // What a call cut off half way left under this id.
        let _ = std::fs::remove_file(&path);
        if let Err(e) = drydock_images::make_ext4(tree.path(), "drivers", DRIVER_VOLUME_MIB, &path)
        {
            let _ = std::fs::remove_file(&path);
            return Err(e.into());
        }
        let rec = VolumeRecord {
            id: id.clone(),
            region: self.region().to_string(),
            size_mib: DRIVER_VOLUME_MIB,
            kind: VolumeKind::Network,
            path,
            attached_to: None,
            attach_index: None,
            delete_on_termination: false,
            created_at: now_ms(),
        };
        let mut tags = Tags::new();
        tags.insert("drydock:drivers".into(), pack.drivers.join(","));
        tags.insert("drydock:kernel".into(), pack.release.clone());
        if let Err(e) = store.commit_creation(token, Some((TagKind::Volume, &id, &tags)), |tx| {
            insert_volume(tx, &rec)
        }) {
            let _ = std::fs::remove_file(&rec.path);
            return Err(e);
        }
        Ok((rec, pack))
    }
}

impl Host {
    /// The kernel release a volume boots (its boot configuration's first
    /// bootable entry, `/boot/vmlinuz-RELEASE`), read on the host — for an
    /// instance nobody can log into. The volume must not be in use by a
    /// running instance: its lock is held while it is read (an unclean
    /// stop's journal is replayed first, as a mount would).
    pub fn volume_kernel_release(&self, vol_id: &str) -> Result<String, HostError> {
        use drydock_images::boot_config::{BootConfig, CONFIG_PATH, MAX_CONFIG_BYTES};
        let vol = self.store()?.volume(vol_id)?;
        if vol.region != self.region() {
            return Err(HostError::NotFound(format!(
                "`{vol_id}` is in {}, not in {} (use --region {})",
                vol.region,
                self.region(),
                vol.region
            )));
        }
        let _lock = super::supervisor::VolumeLock::acquire(&vol.path, &vol.id)?;
        super::journal_replay::replay_if_needed(&vol.path).map_err(HostError::Conflict)?;
        let unreadable = |e: String| {
            HostError::Conflict(format!(
                "cannot read the boot configuration of {vol_id} ({e}); attach it to a rescue instance and check {CONFIG_PATH}"
            ))
        };
        let fs =
            ext4_view::Ext4::load_from_path(&vol.path).map_err(|e| unreadable(e.to_string()))?;
        let meta = fs
            .metadata(CONFIG_PATH)
            .map_err(|e| unreadable(e.to_string()))?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(unreadable(format!("{CONFIG_PATH} is too large")));
        }
        let text = fs
            .read_to_string(CONFIG_PATH)
            .map_err(|e| unreadable(e.to_string()))?;
        let config = BootConfig::parse(&text).map_err(unreadable)?;
        config
            .boot_order()
            .into_iter()
            .filter_map(|e| e.kernel.as_deref())
            .find_map(|k| k.strip_prefix("/boot/vmlinuz-"))
            .map(str::to_string)
            .filter(|r| driver_pack::check_release(r).is_ok())
            .ok_or_else(|| unreadable("no entry boots a /boot/vmlinuz-RELEASE kernel".into()))
    }
}
