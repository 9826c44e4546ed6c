//! Guest memory: anonymous mappings registered with KVM.

use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::VmError;

/// One region of `size` bytes at guest physical address 0.
pub fn create_guest_memory(size: usize) -> Result<GuestMemoryMmap, VmError> {
    if size == 0 || size % 4096 != 0 {
        return Err(VmError::Memory(format!(
            "size {size} is not a positive multiple of 4 KiB"
        )));
    }
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)])
        .map_err(|e| VmError::Memory(e.to_string()))
}
