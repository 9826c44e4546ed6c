//! Seccomp filters for the VMM process, one per thread kind, as
//! Firecracker does (with the `seccompiler` crate): the process keeps only
//! the system calls it needs, and a call outside its filter kills the whole
//! VMM with SIGSYS (the supervisor records "VMM exited unexpectedly
//! (signal: 31 (SIGSYS))").
//!
//! - [`ThreadKind::Vmm`]: the main thread (it builds the VM at every boot:
//!   KVM ioctls, guest memory, the kernel and initrd read again through the
//!   descriptors opened at start), the control socket threads (a
//!   hot-attached volume arrives open, passed over the socket) and the
//!   console input threads. Installed on every thread of the process at
//!   once (TSYNC) before the first boot; threads started later inherit it.
//!   Only its own files: no open of any kind, no new sockets, no unlink;
//!   `ioctl` of type KVMIO only, signals only to its own threads, `prctl`
//!   only to name threads and set no-new-privileges. No exec, ptrace,
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

/// What the main, control and console threads need besides [`COMMON`]
/// (`ioctl`, `tgkill` and `prctl` are added with conditions in [`rules`]).
///
/// No `open`/`openat`/`creat`: everything the VMM reads or writes is open
/// before the filter goes on (`/dev/kvm`, kernel, initrd, boot disks, the
/// volumes directory as a path handle, the sockets, stdio) or arrives open
/// (a hot-attached volume, passed with `attach-disk`). No `socket`,
/// `bind`, `listen`, `connect`: the control sockets listen already. No
/// `unlink`, `chmod`, `truncate`, `dup`, `pipe`, `readlink`, `access`.
/// `statx`/`newfstatat` stay, to check a passed volume against its entry
/// in the volumes directory (metadata only: nothing opened).
const VMM: &[i64] = &[
    // Building a VM at each boot (irqfds), and kicking vCPUs.
    libc::SYS_eventfd2,
    libc::SYS_rt_sigaction,
    // Threads.
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    // vCPU threads stack their own filter (a filter can only narrow).
    libc::SYS_seccomp,
    libc::SYS_sched_getaffinity,
    // Files already open: kernel and initrd read again at every boot.
    libc::SYS_lseek,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_newfstatat,
    // The control and event sockets (already listening).
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_shutdown,
    libc::SYS_poll,
    libc::SYS_ppoll,
    // Identity (peer checks) and time.
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_gettimeofday,
    libc::SYS_uname,
    libc::SYS_sysinfo,
];

/// `ioctl(fd, request)` with a request of type KVMIO only (`KVM_RUN`,
/// `KVM_CREATE_VM`, `KVM_IRQFD`, `KVM_SIGNAL_MSI`, register reads on an
/// internal error, …): no terminal, socket or file ioctls.
fn kvm_ioctls_only() -> Result<Vec<SeccompRule>, String> {
    let kvm_only = SeccompCondition::new(
        1,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(0xff00),
        KVMIO << 8,
    )
    .map_err(|e| e.to_string())?;
    Ok(vec![
        SeccompRule::new(vec![kvm_only]).map_err(|e| e.to_string())?
    ])
}

/// One rule per allowed value of argument `arg`.
fn arg_in(arg: u8, values: &[u64]) -> Result<Vec<SeccompRule>, String> {
    values
        .iter()
        .map(|v| {
            let c = SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, *v)
                .map_err(|e| e.to_string())?;
            SeccompRule::new(vec![c]).map_err(|e| e.to_string())
        })
        .collect()
}

fn rules(kind: ThreadKind) -> Result<BTreeMap<i64, Vec<SeccompRule>>, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for nr in COMMON {
        rules.insert(*nr, vec![]);
    }
    rules.insert(libc::SYS_ioctl, kvm_ioctls_only()?);
    if kind == ThreadKind::Vmm {
        for nr in VMM {
            rules.insert(*nr, vec![]);
        }
        // Signals only to this process's own threads (kicks of vCPUs,
        // abort): tgkill(pid, tid, sig) with pid = this process.
        rules.insert(
            libc::SYS_tgkill,
            arg_in(0, &[u64::from(std::process::id())])?,
        );
        // Thread names, and no-new-privileges before a vCPU's filter.
        rules.insert(
            libc::SYS_prctl,
            arg_in(
                0,
                &[libc::PR_SET_NAME as u64, libc::PR_SET_NO_NEW_PRIVS as u64],
            )?,
        );
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
        for nr in [libc::SYS_accept4, libc::SYS_clone3, libc::SYS_tgkill] {
            assert!(vmm.contains_key(&nr) && !vcpu.contains_key(&nr));
        }
        // Nothing opened, created, removed or connected by path, no new
        // sockets, no processes run or traced, by any thread.
        for nr in [
            libc::SYS_open,
            libc::SYS_openat,
            libc::SYS_openat2,
            libc::SYS_creat,
            libc::SYS_open_by_handle_at,
            libc::SYS_unlink,
            libc::SYS_unlinkat,
            libc::SYS_rename,
            libc::SYS_chmod,
            libc::SYS_truncate,
            libc::SYS_socket,
            libc::SYS_connect,
            libc::SYS_bind,
            libc::SYS_sendmsg,
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_ptrace,
            libc::SYS_kill,
            libc::SYS_tkill,
            libc::SYS_getppid,
            libc::SYS_mount,
        ] {
            assert!(!vmm.contains_key(&nr), "{nr}");
        }
        // ioctl, tgkill and prctl only with conditions.
        assert_eq!(vmm[&libc::SYS_ioctl].len(), 1);
        assert_eq!(vcpu[&libc::SYS_ioctl].len(), 1);
        assert_eq!(vmm[&libc::SYS_tgkill].len(), 1);
        assert_eq!(vmm[&libc::SYS_prctl].len(), 2);
        assert!(!program(ThreadKind::Vmm).unwrap().is_empty());
        assert!(!program(ThreadKind::Vcpu).unwrap().is_empty());
    }
}
