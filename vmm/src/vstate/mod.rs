//! KVM state of drydock's own VMM: the VM with its guest memory, and vCPUs.

pub mod memory;
pub mod vcpu;
pub mod vm;

pub(crate) use crate::error::kvm_err;
pub use crate::error::VmError;
