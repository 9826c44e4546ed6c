//! Guest memory: anonymous mappings registered with KVM.

use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::VmError;

/// `size` bytes of guest RAM: from address 0 up to the MMIO gap below
/// 4 GiB, the rest above it.
pub fn create_guest_memory(size: usize) -> Result<GuestMemoryMmap, VmError> {
    if size == 0 || size % 4096 != 0 {
        return Err(VmError::Memory(format!(
            "size {size} is not a positive multiple of 4 KiB"
        )));
    }
    let ranges: Vec<(GuestAddress, usize)> = crate::arch::layout::ram_ranges(size as u64)
        .into_iter()
        .map(|(start, len)| (GuestAddress(start), len as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges).map_err(|e| VmError::Memory(e.to_string()))
}
