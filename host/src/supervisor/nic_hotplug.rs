//! Network interfaces plugged into and out of a running VM: a TAP made in
//! the VPC's namespace, handed to QEMU (`getfd`), a tap netdev on it and a
//! virtio-net-pci device on a free PCIe hot-plug port — the same ports the
//! volumes use. Out again: the device deleted once the guest released it,
//! then the netdev (QEMU closes the TAP, and the kernel removes it).
//! Only QEMU's new generation (n2) can: drydock's VMM has no network card
//! slots to fill, and virtio-mmio no hot-plug.

use serde_json::json;

use super::running::Shared;
use crate::backend::{qemu, Backend, DeviceGeneration};
use crate::HostError;

fn device_id(eni: &str) -> String {
    format!("nic-{eni}")
}

fn netdev_id(eni: &str) -> String {
    format!("net-{eni}")
}

impl Shared {
    fn can_hotplug_nics(&self) -> Result<(), HostError> {
        let stop_first = "stop it, attach (or detach) the interface, and start it";
        if self.backend == Backend::Drydock {
            return Err(HostError::Conflict(format!(
                "instance {} runs on drydock's own VMM, which cannot add or remove a network card while the VM runs; {stop_first}",
                self.id
            )));
        }
        if self.generation != DeviceGeneration::Pci {
            return Err(HostError::Conflict(format!(
                "instance {} is of an old-generation type (virtio-mmio) whose devices cannot change while it runs; {stop_first}",
                self.id
            )));
        }
        Ok(())
    }

    pub(super) fn hot_attach_nic(&self, eni_id: &str) -> Result<String, HostError> {
        if self.boot_nics.contains(eni_id) || self.hot_nics.lock().unwrap().contains_key(eni_id) {
            return Ok(format!("attached {eni_id} (it already was)"));
        }
        self.can_hotplug_nics()?;
        let store = self.store()?;
        let eni = store.interface(eni_id)?;
        if eni.instance_id.as_deref() != Some(self.id.as_str()) {
            return Err(HostError::Conflict(format!(
                "interface {eni_id} is not recorded as attached to {}",
                self.id
            )));
        }
        let subnet = store.subnet(&eni.subnet_id)?;
        // Volumes' lock first, then the interfaces' (as volumes take them).
        let plugged = self.hotplugged.lock().unwrap();
        let slot = self.free_slot(&plugged)?;
        let attached = crate::network::attach(&self.data_dir, &eni, &subnet)?;
        let fd_name = format!("tap-{eni_id}");
        self.qmp_with_fd(
            "getfd",
            json!({ "fdname": fd_name }),
            std::os::fd::AsFd::as_fd(&attached.tap),
        )?;
        // QEMU holds its own copy now; ours closes when `attached` goes.
        self.qmp(
            "netdev_add",
            json!({ "type": "tap", "id": netdev_id(eni_id), "fd": fd_name, "vhost": false }),
        )?;
        if let Err(e) = self.qmp(
            "device_add",
            json!({
                "driver": "virtio-net-pci",
                "id": device_id(eni_id),
                "netdev": netdev_id(eni_id),
                "mac": attached.mac,
                "bus": qemu::hotplug_port(slot),
            }),
        ) {
            let _ = self.qmp("netdev_del", json!({ "id": netdev_id(eni_id) }));
            return Err(e);
        }
        self.hot_nics
            .lock()
            .unwrap()
            .insert(eni_id.to_string(), slot);
        drop(plugged);
        tracing::info!(instance = %self.id, "hot-attached {eni_id} on port {slot}");
        Ok(format!("attached {eni_id}"))
    }

    pub(super) fn hot_detach_nic(&self, eni_id: &str) -> Result<String, HostError> {
        if !self.hot_nics.lock().unwrap().contains_key(eni_id) {
            if self.boot_nics.contains(eni_id) {
                return Err(HostError::Conflict(format!(
                    "interface {eni_id} was attached before {} started; stop the instance to detach it",
                    self.id
                )));
            }
            return Ok(format!("detached {eni_id} (it was not in the VM)"));
        }
        let gone = || !self.hot_nics.lock().unwrap().contains_key(eni_id);
        if !self.unplug(&device_id(eni_id), eni_id, gone)? {
            return Ok(format!("detached {eni_id} (a detach cut short finished)"));
        }
        // The TAP goes with QEMU's descriptor.
        self.qmp("netdev_del", json!({ "id": netdev_id(eni_id) }))?;
        self.hot_nics.lock().unwrap().remove(eni_id);
        Ok(format!("detached {eni_id}"))
    }
}
