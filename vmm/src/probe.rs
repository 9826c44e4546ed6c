//! Which kind of KVM a machine offers, read from the kernel: hardware
//! (`kvm_intel` / `kvm_amd`), the software nested `kvm_pvm` that cannot
//! boot an ordinary Linux guest, or none.

use std::path::Path;

/// The KVM a machine offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KvmKind {
    /// `kvm_intel` or `kvm_amd`: drydock's own VMM can boot Linux guests.
    Hardware,
    /// `kvm_pvm`: simple guest code runs, Linux guests do not.
    SoftwareNested,
    /// `/dev/kvm` is missing or no KVM module is loaded.
    Unavailable,
}

/// Reads the loaded modules under `sys_module` (normally `/sys/module`)
/// and whether `dev_kvm` exists.
pub fn probe_kvm_at(sys_module: &Path, dev_kvm: &Path) -> KvmKind {
    if !dev_kvm.exists() {
        return KvmKind::Unavailable;
    }
    let loaded = |m: &str| sys_module.join(m).exists();
    if loaded("kvm_intel") || loaded("kvm_amd") {
        KvmKind::Hardware
    } else if loaded("kvm_pvm") {
        KvmKind::SoftwareNested
    } else {
        KvmKind::Unavailable
    }
}

/// Probes this machine.
pub fn probe_kvm() -> KvmKind {
    probe_kvm_at(Path::new("/sys/module"), Path::new("/dev/kvm"))
}

/// Whether drydock's own VMM can run Linux guests here: KVM is
/// hardware-backed and a test guest (real-mode code that halts) runs on it.
pub fn own_vmm_usable() -> bool {
    probe_kvm() == KvmKind::Hardware && test_guest_halts().is_ok()
}

/// Runs a one-instruction guest (`hlt`) on /dev/kvm.
pub fn test_guest_halts() -> Result<(), String> {
    use vm_memory::{Bytes, GuestAddress};
    let vm = crate::vstate::vm::Vm::new(0x10000).map_err(|e| e.to_string())?;
    vm.memory
        .write_slice(&[0xf4], GuestAddress(0x1000))
        .map_err(|e| e.to_string())?;
    let mut vcpu = crate::vstate::vcpu::Vcpu::new(&vm, 0).map_err(|e| e.to_string())?;
    vcpu.set_real_mode_entry(0x1000)
        .map_err(|e| e.to_string())?;
    struct NoMmio;
    impl crate::vstate::vcpu::MmioHandler for NoMmio {
        fn read(&mut self, _: u64, data: &mut [u8]) {
            data.fill(0xff)
        }
        fn write(&mut self, _: u64, _: &[u8]) {}
    }
    let mut bus = crate::devices::bus::PioBus::default();
    match vcpu.run(&mut bus, &mut NoMmio).map_err(|e| e.to_string())? {
        crate::vstate::vcpu::ExitReason::Halted => Ok(()),
        other => Err(format!("the test guest ended with {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_loaded_module() {
        let root = std::env::temp_dir().join(format!("drydock-probe-{}", std::process::id()));
        let modules = root.join("module");
        let dev = root.join("kvm");
        std::fs::create_dir_all(&modules).unwrap();
        assert_eq!(probe_kvm_at(&modules, &dev), KvmKind::Unavailable);
        std::fs::write(&dev, "").unwrap();
        std::fs::create_dir_all(modules.join("kvm_pvm")).unwrap();
        assert_eq!(probe_kvm_at(&modules, &dev), KvmKind::SoftwareNested);
        std::fs::create_dir_all(modules.join("kvm_amd")).unwrap();
        assert_eq!(probe_kvm_at(&modules, &dev), KvmKind::Hardware);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
