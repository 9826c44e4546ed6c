//! Images made from instances, copied between regions, shared with other
//! profiles, deregistered.

use super::client_tokens::{ClientToken, CreatedKind, Creation};
use super::extents::copy_allocated;
use super::store::{insert_image, now_ms, ImageRecord, InstanceState};
use super::{check_region, Host, HostError};

impl Host {
    fn images_dir(&self) -> std::path::PathBuf {
        self.data_dir.join("images").join("created")
    }

    fn own_image(&self, id: &str) -> Result<ImageRecord, HostError> {
        let image = self.store()?.image(id)?;
        let image = self.in_region(id, &image.region.clone(), image)?;
        if image.owner != self.profile() {
            return Err(HostError::Conflict(format!(
                "image {id} belongs to profile {}; only its owner can change it (you are {})",
                image.owner,
                self.profile()
            )));
        }
        Ok(image)
    }

    /// Makes an image from an instance's root volume. A running instance is
    /// stopped first (so the file system is clean) and started again
    /// afterwards, unless `no_stop` is set (then it is paused for the copy).
    ///
    /// With a client token, safe to call again after a crash at any point:
    /// whether the instance was running is recorded with the token before
    /// it is stopped, so a call made again finishes the image under the
    /// same id and starts the instance again as the first call would have.
    pub fn create_image(
        &self,
        instance_id: &str,
        name: &str,
        no_stop: bool,
        token: Option<&ClientToken>,
    ) -> Result<ImageRecord, HostError> {
        let mut store = self.store()?;
        let inst = store.instance(instance_id)?;
        let inst = self.in_region(instance_id, &inst.region.clone(), inst)?;
        if inst.state == InstanceState::Terminated {
            return Err(HostError::Conflict(format!(
                "instance {instance_id} is terminated"
            )));
        }
        let source = store.image(&inst.image_id)?;
        let request = serde_json::json!({
            "region": self.region(),
            "instance": instance_id,
            "name": name,
            "no_stop": no_stop,
        });
        let running_now = inst.state.has_process();
        let creation = store.begin_creation(
            token,
            CreatedKind::Image,
            &request,
            &serde_json::json!({ "was_running": running_now }),
        )?;
        drop(store);
        let recorded_running = |d: &serde_json::Value| {
            d.get("was_running")
                .and_then(|v| v.as_bool())
                .unwrap_or(running_now)
        };
        let (id, was_running) = match creation {
            Creation::Done { id, detail } => {
                let image = self.store()?.image(&id)?;
                if recorded_running(&detail) && !no_stop {
                    self.ensure_started_again(instance_id)?;
                }
                return Ok(image);
            }
            Creation::Unfinished { id, detail } => {
                let was = recorded_running(&detail);
                (id, was)
            }
            Creation::Fresh { id } => (id, running_now),
        };
        let running_now = self.store()?.instance(instance_id)?.state.has_process();
        if running_now && !no_stop {
            self.stop(instance_id, false)?;
        }
        let root = self.store()?.volume(&inst.root_volume)?;
        let dir = self.images_dir();
        std::fs::create_dir_all(&dir).map_err(|e| HostError::io("create", &dir, e))?;
        let template = dir.join(format!("{id}.root.raw"));
        // --no-stop: the VM is paused for the copy (crash-consistent).
        let copied = if running_now && no_stop {
            self.paused_for(Some(instance_id), || copy_allocated(&root.path, &template))?
                .0
        } else {
            copy_allocated(&root.path, &template)
        };
        if let Err(e) = copied {
            if was_running && !no_stop {
                self.ensure_started_again(instance_id)?;
            }
            return Err(HostError::io("copy the root volume to", &template, e));
        }
        let rec = ImageRecord {
            id,
            region: self.region().to_string(),
            name: name.to_string(),
            boot_dir: source.boot_dir.clone(),
            root_template: template,
            drivers: source.drivers.clone(),
            created_at: now_ms(),
            owner: self.profile().to_string(),
            public: false,
            shared_with: Vec::new(),
            owns_root: true,
            source: format!("instance {instance_id}"),
        };
        self.store()?
            .commit_creation(token, None, |tx| insert_image(tx, &rec))?;
        if was_running && !no_stop {
            self.ensure_started_again(instance_id)?;
        }
        Ok(rec)
    }

    /// Starts an instance an image creation stopped, unless it runs.
    fn ensure_started_again(&self, instance_id: &str) -> Result<(), HostError> {
        let state = self.store()?.instance(instance_id)?.state;
        if matches!(state, InstanceState::Stopped | InstanceState::Pending) {
            self.start(instance_id)?;
        }
        Ok(())
    }

    /// Copies an image into another region (a new id there). With a client
    /// token, a call made again returns the copy the first made.
    pub fn copy_image(
        &self,
        image_id: &str,
        to_region: &str,
        token: Option<&ClientToken>,
    ) -> Result<ImageRecord, HostError> {
        check_region(to_region)?;
        let mut store = self.store()?;
        let image = store.image(image_id)?;
        let image = self.in_region(image_id, &image.region.clone(), image)?;
        if !image.launchable_by(self.profile()) {
            return Err(HostError::Conflict(format!(
                "profile {} may not use image {image_id}",
                self.profile()
            )));
        }
        let request = serde_json::json!({ "image": image_id, "to_region": to_region });
        let id = match store.begin_creation(
            token,
            CreatedKind::Image,
            &request,
            &serde_json::json!({}),
        )? {
            Creation::Done { id, .. } => return store.image(&id),
            c => c.id().to_string(),
        };
        drop(store);
        let dir = self.images_dir();
        std::fs::create_dir_all(&dir).map_err(|e| HostError::io("create", &dir, e))?;
        let template = dir.join(format!("{id}.root.raw"));
        copy_allocated(&image.root_template, &template)
            .map_err(|e| HostError::io("copy the image to", &template, e))?;
        let rec = ImageRecord {
            id,
            region: to_region.to_string(),
            name: image.name.clone(),
            boot_dir: image.boot_dir.clone(),
            root_template: template,
            drivers: image.drivers.clone(),
            created_at: now_ms(),
            owner: self.profile().to_string(),
            public: false,
            shared_with: Vec::new(),
            owns_root: true,
            source: format!("image {image_id} ({})", image.region),
        };
        self.store()?
            .commit_creation(token, None, |tx| insert_image(tx, &rec))?;
        Ok(rec)
    }

    /// Removes an image; instances launched from it keep running.
    pub fn deregister_image(&self, image_id: &str) -> Result<(), HostError> {
        let image = self.own_image(image_id)?;
        if image.owns_root {
            let _ = std::fs::remove_file(&image.root_template);
        }
        self.store()?.delete_image_row(image_id)
    }

    /// Sets launch permissions: public or private, plus profiles to add or remove.
    pub fn set_image_permissions(
        &self,
        image_id: &str,
        public: Option<bool>,
        add: &[String],
        remove: &[String],
    ) -> Result<ImageRecord, HostError> {
        let image = self.own_image(image_id)?;
        let mut shared = image.shared_with.clone();
        for p in add {
            if !shared.contains(p) {
                shared.push(p.clone());
            }
        }
        shared.retain(|p| !remove.contains(p));
        let mut store = self.store()?;
        store.set_image_permissions(image_id, public.unwrap_or(image.public), &shared)?;
        store.image(image_id)
    }
}
