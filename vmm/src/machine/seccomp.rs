//! Seccomp filters for the VMM process, one per thread kind, as
//! Firecracker does (with the `seccompiler` crate): the process keeps only
//! the system calls it needs, and a call outside its filter kills the whole
//! VMM with SIGSYS (the supervisor records "VMM exited unexpectedly
//! (signal: 31 (SIGSYS))").
//!
//! - [`ThreadKind::Vmm`]: the main thread (it builds the VM at every boot:
//!   KVM ioctls, guest memory, kernel and initrd files), the control socket
//!   threads (hot attach opens volume files) and the console input threads.
//!   Installed on every thread of the process at once (TSYNC) before the
//!   first boot; threads started later inherit it. No exec, fork, ptrace,
//!   mount, namespaces, module loading, BPF, kexec, credentials changes.
//! - [`ThreadKind::Vcpu`]: stacked on top of it at the start of each vCPU
//!   thread: KVM ioctls only (`_IOC_TYPE == KVMIO`), read/write/pread/pwrite
//!   and fdatasync for the console and disks, futex, memory management for
//!   the allocator, signal return for kicks, exit. No open, socket or clone.
//!
//! Both set `PR_SET_NO_NEW_PRIVS` first.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Which filter a thread gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    Vmm,
    Vcpu,
}

/// The type byte of the KVM ioctls (`KVMIO`).
const KVMIO: u64 = 0xae;

/// System calls of every thread (the allocator, locks, signals, exit).
const COMMON: &[i64] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_close,
    libc::SYS_fcntl,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_getrandom,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// What the main, control and console threads need besides [`COMMON`].
const VMM: &[i64] = &[
    // Building a VM at each boot, and signalling MSIs / kicking vCPUs.
    libc::SYS_ioctl,
    libc::SYS_eventfd2,
    libc::SYS_tgkill,
    libc::SYS_tkill,
    libc::SYS_rt_sigaction,
    // Threads.
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_prctl,
    // vCPU threads stack their own filter (a filter can only narrow).
    libc::SYS_seccomp,
    libc::SYS_sched_getaffinity,
    libc::SYS_prlimit64,
    // Files: the kernel, initrd, disks and hot-attached volumes; logs.
    libc::SYS_openat,
    libc::SYS_lseek,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_access,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_readlink,
    libc::SYS_readlinkat,
    libc::SYS_getcwd,
    libc::SYS_getdents64,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_chmod,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_ftruncate,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    // The control and event sockets.
    libc::SYS_socket,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_shutdown,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    // Identity (peer checks) and time.
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_gettimeofday,
    libc::SYS_uname,
    libc::SYS_sysinfo,
];

fn rules(kind: ThreadKind) -> Result<BTreeMap<i64, Vec<SeccompRule>>, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for nr in COMMON {
        rules.insert(*nr, vec![]);
    }
    match kind {
        ThreadKind::Vmm => {
            for nr in VMM {
                rules.insert(*nr, vec![]);
            }
        }
        ThreadKind::Vcpu => {
            // ioctl(fd, request): only requests of type KVMIO (KVM_RUN,
            // KVM_SIGNAL_MSI, register reads on an internal error, …).
            let kvm_only = SeccompCondition::new(
                1,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::MaskedEq(0xff00),
                KVMIO << 8,
            )
            .map_err(|e| e.to_string())?;
            rules.insert(
                libc::SYS_ioctl,
                vec![SeccompRule::new(vec![kvm_only]).map_err(|e| e.to_string())?],
            );
        }
    }
    Ok(rules)
}

/// The BPF program of a thread kind.
pub fn program(kind: ThreadKind) -> Result<BpfProgram, String> {
    let filter = SeccompFilter::new(
        rules(kind)?,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| format!("seccomp filter: {e}"))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| format!("seccomp filter: {e}"))
}

fn no_new_privs() -> Result<(), String> {
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) takes no pointers and
    // only changes this task's attributes.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(format!(
            "PR_SET_NO_NEW_PRIVS: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Installs the filter of `kind`: for [`ThreadKind::Vmm`] on every thread
/// of the process, for [`ThreadKind::Vcpu`] on the calling thread.
pub fn install(kind: ThreadKind) -> Result<(), String> {
    let program = program(kind)?;
    no_new_privs()?;
    match kind {
        ThreadKind::Vmm => seccompiler::apply_filter_all_threads(&program),
        ThreadKind::Vcpu => seccompiler::apply_filter(&program),
    }
    .map_err(|e| format!("seccomp ({kind:?} threads): {e}"))
}

/// TEST HOOK ONLY (`MachineConfig::test_hook_forbidden_syscall_in_vcpu`):
/// a system call no filter allows, made from a vCPU thread, so that a test
/// can see the VMM die of it.
pub fn test_hook_forbidden_syscall() {
    // SAFETY: getppid takes no arguments and has no effect; under the vCPU
    // filter it kills the process.
    unsafe {
        libc::syscall(libc::SYS_getppid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_filters_compile_and_the_vcpu_one_is_narrower() {
        let vmm = rules(ThreadKind::Vmm).unwrap();
        let vcpu = rules(ThreadKind::Vcpu).unwrap();
        assert!(vcpu.keys().all(|k| vmm.contains_key(k)));
        for nr in [libc::SYS_openat, libc::SYS_socket, libc::SYS_clone3] {
            assert!(vmm.contains_key(&nr) && !vcpu.contains_key(&nr));
        }
        for nr in [libc::SYS_execve, libc::SYS_ptrace, libc::SYS_getppid] {
            assert!(!vmm.contains_key(&nr));
        }
        assert!(!program(ThreadKind::Vmm).unwrap().is_empty());
        assert!(!program(ThreadKind::Vcpu).unwrap().is_empty());
    }
}
