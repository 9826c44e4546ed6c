//! Network interfaces of their own (anchor: EC2's elastic network
//! interfaces): made in a subnet with an address and security groups,
//! attached to an instance as its second (or third) interface — into the
//! running VM on QEMU's new generation, else at its next start —,
//! detached, deleted. A primary interface comes and goes with its
//! instance. The guest configures an interface attached while it runs
//! from the metadata service (`meta-data/network/interfaces/macs/…`).

use crate::store::{InstanceState, InterfaceRecord};
use crate::supervisor::{self, ControlCommand};
use crate::{Host, HostError};

/// Device indexes an instance's interfaces may take (0 is the primary).
pub const MAX_INTERFACES: u32 = 3;

impl Host {
    /// The region's interfaces, attached or available.
    pub fn network_interfaces(&self) -> Result<Vec<InterfaceRecord>, HostError> {
        self.store()?.region_interfaces(&self.region)
    }

    /// One interface of this region.
    pub fn network_interface(&self, id: &str) -> Result<InterfaceRecord, HostError> {
        let store = self.store()?;
        let eni = store.interface(id)?;
        let subnet = store.subnet(&eni.subnet_id)?;
        self.in_region(id, &subnet.region, eni)
    }

    /// Makes an available interface in `subnet_id` (this region's default
    /// subnet when `None`), in `groups` (the VPC's default group when
    /// empty).
    pub fn create_network_interface(
        &self,
        subnet_id: Option<&str>,
        groups: &[String],
    ) -> Result<InterfaceRecord, HostError> {
        let mut store = self.store()?;
        let subnet = match subnet_id {
            Some(sid) => {
                let subnet = store.subnet(sid)?;
                self.in_region(sid, &subnet.region.clone(), subnet)?
            }
            None => store.default_subnet(&self.region)?,
        };
        let groups = self.groups_for(&mut store, &subnet, groups)?;
        store.create_interface(&subnet, &groups)
    }

    /// Attaches available interface `id` to `instance_id` at the lowest
    /// free device index. Its subnet must be in the VPC of the instance's
    /// primary interface. A running instance gets it at once (QEMU, n2)
    /// or the call fails saying to stop it first; a stopped one at its
    /// next start.
    pub fn attach_network_interface(
        &self,
        id: &str,
        instance_id: &str,
    ) -> Result<InterfaceRecord, HostError> {
        let mut store = self.store()?;
        let eni = self.network_interface(id)?;
        let inst = store.instance(instance_id)?;
        let inst = self.in_region(instance_id, &inst.region.clone(), inst)?;
        if eni.instance_id.as_deref() == Some(instance_id) {
            // Asked again (a command re-run after a crash): make sure the
            // running VM has it.
            if inst.state == InstanceState::Running {
                supervisor::send_control(
                    &self.instance_dir(instance_id),
                    &ControlCommand::AttachNic(id.to_string()),
                )?;
            }
            return store.interface(id);
        }
        if let Some(other) = &eni.instance_id {
            return Err(HostError::Conflict(format!(
                "interface {id} is attached to {other}; detach it first (`drydock network-interface detach {id}`)"
            )));
        }
        let current = store.interfaces(instance_id)?;
        let Some(primary) = current.iter().find(|i| i.device_index == 0) else {
            return Err(HostError::Conflict(format!(
                "instance {instance_id} has no network (launched with --no-network): it takes no other interface"
            )));
        };
        if primary.vpc_id != eni.vpc_id {
            return Err(HostError::Invalid(format!(
                "interface {id} is in {}, instance {instance_id} in {}: an instance's interfaces share its VPC",
                eni.vpc_id, primary.vpc_id
            )));
        }
        let index = (1..MAX_INTERFACES)
            .find(|n| !current.iter().any(|i| i.device_index == *n))
            .ok_or_else(|| {
                HostError::Conflict(format!(
                    "instance {instance_id} has {MAX_INTERFACES} interfaces, the most it may have"
                ))
            })?;
        match inst.state {
            InstanceState::Running | InstanceState::Stopped => {}
            other => {
                return Err(HostError::Conflict(format!(
                    "instance {instance_id} is {other}; attach an interface to a running or stopped instance"
                )))
            }
        }
        // Recorded first (one winner among parallel attaches), then
        // plugged; undone when the VM refuses it.
        if !store.attach_interface(id, instance_id, index)? {
            return Err(HostError::Conflict(format!(
                "interface {id} or device index {index} of {instance_id} was taken meanwhile; try again"
            )));
        }
        if inst.state == InstanceState::Running {
            if let Err(e) = supervisor::send_control(
                &self.instance_dir(instance_id),
                &ControlCommand::AttachNic(id.to_string()),
            ) {
                store.detach_interface(id)?;
                let _ = crate::network::refresh_firewall(&self.data_dir, &eni.vpc_id);
                return Err(e);
            }
        }
        store.interface(id)
    }

    /// Detaches interface `id` from its instance (out of the running VM
    /// first); never a primary interface.
    pub fn detach_network_interface(&self, id: &str) -> Result<InterfaceRecord, HostError> {
        let mut store = self.store()?;
        let eni = self.network_interface(id)?;
        let Some(instance_id) = eni.instance_id.clone() else {
            // Already available (perhaps by this very command, run again).
            return Ok(eni);
        };
        if eni.device_index == 0 {
            return Err(HostError::Conflict(format!(
                "interface {id} is the primary interface of {instance_id}; it goes when the instance is terminated"
            )));
        }
        let inst = store.instance(&instance_id)?;
        if inst.state.has_process() {
            supervisor::send_control(
                &self.instance_dir(&instance_id),
                &ControlCommand::DetachNic(id.to_string()),
            )?;
        }
        store.detach_interface(id)?;
        crate::network::refresh_firewall(&self.data_dir, &eni.vpc_id)?;
        store.interface(id)
    }

    /// Deletes available interface `id`.
    pub fn delete_network_interface(&self, id: &str) -> Result<(), HostError> {
        let eni = self.network_interface(id)?;
        if let Some(instance) = &eni.instance_id {
            return Err(HostError::Conflict(format!(
                "interface {id} is attached to {instance}; detach it first (`drydock network-interface detach {id}`)"
            )));
        }
        if !self.store()?.delete_interface(id)? {
            return Err(HostError::Conflict(format!(
                "interface {id} was attached meanwhile; detach it first"
            )));
        }
        Ok(())
    }
}
