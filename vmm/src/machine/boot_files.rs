//! The files a machine boots from, opened once before the seccomp filter
//! goes on and read again at every boot (a reboot rebuilds the VM in the
//! same process, which by then may not open anything by path).
//!
//! The loading itself is [`crate::arch::boot`]'s (ELF first, else bzImage;
//! the initrd at the top of low memory), on these descriptors.

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use kvm_ioctls::Kvm;
use linux_loader::loader;
use vm_memory::GuestMemoryMmap;

use crate::arch::boot::{self, BootError, KernelEntry};
use crate::vstate::VmError;

/// `/dev/kvm`, the kernel and the initrd, open.
pub(super) struct BootFiles {
    kvm: OwnedFd,
    kernel: File,
    kernel_path: PathBuf,
    initrd: Option<(File, PathBuf)>,
}

impl BootFiles {
    /// Opens `/dev/kvm`, the kernel and the initrd.
    pub(super) fn open(kernel: &Path, initrd: Option<&Path>) -> Result<Self, super::MachineError> {
        let raw = Kvm::open_with_cloexec(true).map_err(VmError::OpenKvm)?;
        // SAFETY: open_with_cloexec returned a descriptor of /dev/kvm that
        // nothing else owns.
        let kvm = unsafe { OwnedFd::from_raw_fd(raw) };
        let open = |p: &Path| {
            File::open(p).map_err(|source| BootError::Open {
                path: p.display().to_string(),
                source,
            })
        };
        Ok(Self {
            kvm,
            kernel: open(kernel)?,
            kernel_path: kernel.to_path_buf(),
            initrd: match initrd {
                Some(p) => Some((open(p)?, p.to_path_buf())),
                None => None,
            },
        })
    }

    /// A handle on `/dev/kvm` for one boot (a copy of the descriptor).
    pub(super) fn kvm(&self) -> Result<Kvm, VmError> {
        let fd = self
            .kvm
            .try_clone()
            .map_err(|e| VmError::Setup(format!("cannot duplicate /dev/kvm: {e}")))?;
        // SAFETY: `fd` is a fresh duplicate of the /dev/kvm descriptor,
        // owned by nobody else; Kvm takes ownership of it.
        Ok(unsafe { Kvm::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) })
    }

    /// Loads the kernel (ELF first, else bzImage) with
    /// [`crate::arch::boot::load_kernel`], from the descriptor opened at
    /// start.
    pub(super) fn load_kernel(
        &self,
        mem: &GuestMemoryMmap,
    ) -> Result<(KernelEntry, Option<loader::bootparam::setup_header>), BootError> {
        boot::load_kernel(mem, &self.kernel, &self.kernel_path)
    }

    /// Places the initrd at the top of low memory with
    /// [`crate::arch::boot::load_initrd`]; returns its address and size.
    pub(super) fn load_initrd(
        &self,
        mem: &GuestMemoryMmap,
    ) -> Result<Option<(u64, u64)>, BootError> {
        match &self.initrd {
            Some((file, path)) => boot::load_initrd(mem, file, path).map(Some),
            None => Ok(None),
        }
    }

    /// The raw descriptor of `/dev/kvm` (for tests).
    #[cfg(test)]
    fn kvm_fd(&self) -> i32 {
        std::os::fd::AsRawFd::as_raw_fd(&self.kvm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    /// The same bytes land in guest memory at every boot, from the files
    /// opened once, even after the paths are gone.
    #[test]
    fn boots_read_the_files_opened_at_start_again_and_again() {
        if !Path::new("/dev/kvm").exists() {
            eprintln!("no /dev/kvm here");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let initrd = dir.path().join("initrd");
        std::fs::write(&initrd, b"initrd bytes").unwrap();
        let kernel = dir.path().join("kernel");
        std::fs::write(&kernel, b"neither ELF nor bzImage").unwrap();
        let files = BootFiles::open(&kernel, Some(&initrd)).unwrap();
        assert!(files.kvm_fd() >= 0);
        std::fs::remove_file(&initrd).unwrap();
        std::fs::remove_file(&kernel).unwrap();
        for _ in 0..2 {
            let mem = crate::vstate::memory::create_guest_memory(64 << 20).unwrap();
            let (addr, size) = files.load_initrd(&mem).unwrap().unwrap();
            assert_eq!(size, 12);
            let mut got = [0u8; 12];
            vm_memory::Bytes::read_slice(&mem, &mut got, GuestAddress(addr)).unwrap();
            assert_eq!(&got, b"initrd bytes");
            let e = files.load_kernel(&mem).unwrap_err().to_string();
            assert!(e.contains("is neither an ELF vmlinux nor a bzImage"), "{e}");
            files.kvm().unwrap();
        }
    }
}
