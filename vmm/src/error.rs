//! The VMM's error for KVM setup and runs, low in the tree: the
//! architecture code (`arch`) and the KVM state (`vstate`) both report it,
//! and neither depends on the other for it.

/// Errors from KVM setup and runs, named for what failed.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot open /dev/kvm: {0} (is KVM available? `ls -l /dev/kvm`)")]
    OpenKvm(kvm_ioctls::Error),
    #[error("KVM {what} failed: {source}")]
    Kvm {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("guest memory: {0}")]
    Memory(String),
    #[error("VM setup: {0}")]
    Setup(String),
}

pub(crate) fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}
