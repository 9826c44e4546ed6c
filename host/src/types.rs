//! Instance types: vCPUs, memory and the device generation whose guest
//! driver an image must carry to boot on them.

use serde::Serialize;

use crate::backend::DeviceGeneration;

/// One instance type.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct InstanceType {
    pub name: &'static str,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub generation: DeviceGeneration,
    /// Instance-store (ephemeral) disk size, 0 for none.
    pub instance_store_mib: u64,
}

/// Every instance type, old generation (virtio-mmio) first.
pub const INSTANCE_TYPES: &[InstanceType] = &[
    InstanceType {
        name: "m1.small",
        vcpus: 1,
        memory_mib: 256,
        generation: DeviceGeneration::Mmio,
        instance_store_mib: 0,
    },
    InstanceType {
        name: "m1.medium",
        vcpus: 2,
        memory_mib: 512,
        generation: DeviceGeneration::Mmio,
        instance_store_mib: 64,
    },
    InstanceType {
        name: "n2.small",
        vcpus: 1,
        memory_mib: 256,
        generation: DeviceGeneration::Pci,
        instance_store_mib: 0,
    },
    InstanceType {
        name: "n2.medium",
        vcpus: 2,
        memory_mib: 512,
        generation: DeviceGeneration::Pci,
        instance_store_mib: 64,
    },
];

/// Looks a type up by name, with an error listing the valid ones.
pub fn instance_type(name: &str) -> Result<&'static InstanceType, String> {
    INSTANCE_TYPES
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = INSTANCE_TYPES.iter().map(|t| t.name).collect();
            format!(
                "unknown instance type `{name}`; choose one of {}",
                names.join(", ")
            )
        })
}
