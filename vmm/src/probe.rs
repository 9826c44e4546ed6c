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
