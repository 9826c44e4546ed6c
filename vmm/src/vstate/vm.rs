//! A KVM virtual machine and its memory.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::memory::create_guest_memory;
use super::{kvm_err, VmError};

/// Where KVM puts the TSS it needs for real mode on Intel (three pages
/// just below the 4 GiB boundary, as Firecracker does).
pub const KVM_TSS_ADDRESS: usize = crate::arch::layout::KVM_TSS_START;

/// A VM: the KVM handles and guest memory.
pub struct Vm {
    pub kvm: Kvm,
    pub fd: VmFd,
    pub memory: GuestMemoryMmap,
}

impl Vm {
    /// Creates a VM with `mem_size` bytes of memory at address 0.
    pub fn new(mem_size: usize) -> Result<Self, VmError> {
        Self::with_kvm(Kvm::new().map_err(VmError::OpenKvm)?, mem_size)
    }

    /// Creates a VM on `/dev/kvm` already open as `kvm` (a VMM under its
    /// seccomp filter opens nothing, so each boot takes a copy of the
    /// descriptor it opened at start).
    pub fn with_kvm(kvm: Kvm, mem_size: usize) -> Result<Self, VmError> {
        let fd = kvm.create_vm().map_err(kvm_err("create VM"))?;
        fd.set_tss_address(KVM_TSS_ADDRESS)
            .map_err(kvm_err("set TSS address"))?;
        let memory = create_guest_memory(mem_size)?;
        for region in memory.iter() {
            // Guest memory stays out of the VMM's core dumps (a crash must
            // not write the guest's data to disk); as a side effect its
            // mapping never merges with the VMM's own anonymous memory, so
            // /proc/PID/smaps shows guest RAM and VMM overhead apart.
            // SAFETY: madvise on a mapping this VM owns, with a flag that
            // changes no memory contents.
            let rc = unsafe {
                libc::madvise(
                    region.as_ptr().cast(),
                    region.len() as usize,
                    libc::MADV_DONTDUMP,
                )
            };
            if rc != 0 {
                tracing::warn!(
                    "madvise(MADV_DONTDUMP) on guest memory failed: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
        for (slot, region) in memory.iter().enumerate() {
            let mem_region = kvm_userspace_memory_region {
                slot: slot as u32,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
                flags: 0,
            };
            // The region's host mapping lives as long as `memory`, which the
            // Vm owns and which outlives every vCPU run; slots do not overlap.
            // SAFETY: see above.
            let mapped = unsafe { fd.set_user_memory_region(mem_region) };
            mapped.map_err(kvm_err("map guest memory"))?;
        }
        Ok(Self { kvm, fd, memory })
    }

    /// A VM for a Linux guest: the in-kernel irqchip (PIC, IOAPIC, local
    /// APICs) and PIT are created before any vCPU, and the identity-map
    /// page KVM needs is placed next to its TSS.
    pub fn new_for_linux(mem_size: usize) -> Result<Self, VmError> {
        Self::for_linux_with_kvm(Kvm::new().map_err(VmError::OpenKvm)?, mem_size)
    }

    /// [`Self::new_for_linux`] on `/dev/kvm` already open as `kvm`.
    pub fn for_linux_with_kvm(kvm: Kvm, mem_size: usize) -> Result<Self, VmError> {
        let vm = Self::with_kvm(kvm, mem_size)?;
        vm.fd
            .set_identity_map_address(crate::arch::layout::KVM_IDENTITY_MAP_START)
            .map_err(kvm_err("set identity map address"))?;
        vm.fd
            .create_irq_chip()
            .map_err(kvm_err("create in-kernel irqchip"))?;
        let pit = kvm_bindings::kvm_pit_config {
            flags: kvm_bindings::KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.fd.create_pit2(pit).map_err(kvm_err("create PIT"))?;
        Ok(vm)
    }
}
