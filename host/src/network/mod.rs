//! Instances' networks on this host. Every VPC lives in a network
//! namespace of its own (`drydock-<data dir>-<vpc id>`), never in the
//! machine's: each subnet is a bridge in it holding the subnet's router
//! address, each running interface a TAP on that bridge whose file
//! descriptor the VMM holds — the TAP goes when the VMM goes. A namespace
//! with no TAP left is removed (after the VPC's last instance stops, or by
//! [`sweep`] after a crash), so nothing stays behind. The host reaches its
//! guests by entering the namespace ([`connect`]), not by routes or
//! addresses on the machine's own interfaces.
//!
//! Plumbing goes through the kernel's own tool, iproute2's `ip`, and
//! /dev/net/tun; it needs CAP_NET_ADMIN (root). Every privileged step is
//! one of [`ops::NetworkOps`]: done here as root, or asked of the network
//! agent ([`agent`]) that `drydock host setup-network` starts for the
//! accounts root allows.

pub mod agent;
pub mod firewall;
pub mod imds;
mod netns;
pub mod ops;
mod tap;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::store::{InterfaceRecord, SubnetRecord};
use crate::HostError;

pub use netns::{namespaces, NETNS_DIR};
use ops::{FirewallRequest, NetworkOps, TapRequest, VpcRef};

/// The first part of every namespace name of `data_dir`'s VPCs:
/// `drydock-u<uid>-` and 16 hex digits of the data directory's path, so
/// two data directories on one machine never share a network, and no
/// account can name another's (or root's) namespaces: the network agent
/// names an account's from the uid the kernel reports for it. The uid is
/// this process's.
pub fn namespace_prefix(data_dir: &Path) -> String {
    let path = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    // SAFETY: geteuid has no preconditions.
    exact_namespace_prefix(&path, unsafe { libc::geteuid() })
}

/// [`namespace_prefix`] of a path taken as it is (already canonical), for
/// account `uid`: the network agent checks the path once and names from
/// what it checked and the caller's uid.
pub(crate) fn exact_namespace_prefix(path: &Path, uid: u32) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(path.as_os_str().as_encoded_bytes());
    let hex: String = d[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("drydock-u{uid}-{hex}-")
}

/// The namespace that holds a VPC.
pub fn namespace_name(data_dir: &Path, vpc_id: &str) -> String {
    format!("{}{vpc_id}", namespace_prefix(data_dir))
}

/// An interface name (at most 15 bytes) from a prefix and the id's tail.
fn link_name(prefix: &str, id: &str) -> String {
    let hex = id.rsplit('-').next().unwrap_or(id);
    let keep = 15 - prefix.len();
    let tail = &hex[hex.len().saturating_sub(keep)..];
    format!("{prefix}{tail}")
}

/// The bridge of a subnet, inside its VPC's namespace.
pub fn bridge_name(subnet_id: &str) -> String {
    link_name("br-", subnet_id)
}

/// The TAP of an interface, inside its VPC's namespace.
pub fn tap_name(interface_id: &str) -> String {
    link_name("tap-", interface_id)
}

/// The VPC's end of its uplink (inside its namespace).
pub fn uplink_name(vpc_id: &str) -> String {
    link_name("up-", vpc_id)
}

/// The uplink's other end, in the outside namespace.
pub(crate) fn uplink_peer_name(vpc_id: &str) -> String {
    link_name("dd-", vpc_id)
}

/// The uplink's /30 out of 100.64.0.0/10 (shared address space, never a
/// VPC's): (the VPC's end, the outside's end).
pub(crate) fn uplink_addresses(vpc_id: &str) -> (std::net::Ipv4Addr, std::net::Ipv4Addr) {
    use sha2::Digest;
    let d = sha2::Sha256::digest(vpc_id.as_bytes());
    let block = u32::from_be_bytes([0, d[0], d[1], d[2]]) & 0x000f_ffff;
    let base = u32::from(std::net::Ipv4Addr::new(100, 64, 0, 0)) + block * 4;
    (
        std::net::Ipv4Addr::from(base + 2),
        std::net::Ipv4Addr::from(base + 1),
    )
}

fn lock_path(data_dir: &Path, vpc_id: &str) -> PathBuf {
    data_dir.join("network").join(format!("{vpc_id}.lock"))
}

/// An exclusive lock on a VPC's plumbing: a start that builds it and a
/// stop that removes it never interleave.
struct VpcLock {
    _file: std::fs::File,
}

impl VpcLock {
    fn take(data_dir: &Path, vpc_id: &str) -> Result<Self, HostError> {
        use std::os::fd::AsRawFd;
        let path = lock_path(data_dir, vpc_id);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| HostError::io("create", dir, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| HostError::io("open", &path, e))?;
        // SAFETY: flock on a descriptor we own; it blocks until the lock
        // is ours and touches no memory.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(HostError::io(
                "lock",
                &path,
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Self { _file: file })
    }
}

/// A running interface: the TAP's descriptor for the VMM, and what the
/// guest is told (the config disk's `network` file).
pub struct AttachedInterface {
    pub tap: OwnedFd,
    pub mac: String,
    /// `NET_MAC=… NET_ADDRESS=… NET_GATEWAY=…` lines for the guest.
    pub guest_config: String,
}

/// Makes the VPC's namespace and the subnet's bridge if they are missing,
/// and a TAP for `iface` on it; the TAP lives as long as the returned
/// descriptor (and its copies in the VMM).
pub fn attach(
    data_dir: &Path,
    iface: &InterfaceRecord,
    subnet: &SubnetRecord,
) -> Result<AttachedInterface, HostError> {
    let ops = operations()?;
    let _lock = VpcLock::take(data_dir, &iface.vpc_id)?;
    let vpc = VpcRef::new(data_dir, &iface.vpc_id);
    let tap = ops
        .make_tap(&TapRequest {
            vpc: vpc.clone(),
            bridge: bridge_name(&subnet.id),
            gateway: format!("{}/{}", subnet.gateway(), subnet.net().prefix_len()),
            tap: tap_name(&iface.id),
        })
        .map_err(needs_privilege)?;
    write_firewall(ops.as_ref(), data_dir, &vpc)?;
    let guest_config = format!(
        "NET_MAC={}\nNET_ADDRESS={}/{}\nNET_GATEWAY={}\n",
        iface.mac,
        iface.private_ip,
        subnet.net().prefix_len(),
        subnet.gateway()
    );
    Ok(AttachedInterface {
        tap,
        mac: iface.mac.clone(),
        guest_config,
    })
}

/// Who does the privileged operations: this process when it may (root),
/// else the network agent when `drydock host setup-network` started one;
/// without either, the error says how to get one.
pub fn operations() -> Result<Box<dyn NetworkOps>, HostError> {
    if ops::privileged() {
        return Ok(Box::new(ops::Direct));
    }
    if agent::client::available() {
        return Ok(Box::new(agent::client::AgentClient::default()));
    }
    Err(HostError::Invalid(no_privilege_message()))
}

/// Whether instances of `data_dir` can get networks here: checked by a
/// launch and a start before anything is made, so that an account without
/// privilege that the agent does not serve is told at once (exit 2).
pub fn check_available(data_dir: &Path) -> Result<(), HostError> {
    let ops = operations()?;
    if !ops::privileged() {
        ops.namespaces(data_dir).map_err(HostError::Invalid)?;
    }
    Ok(())
}

fn no_privilege_message() -> String {
    let user = current_user_name();
    format!(
        "instance networks need CAP_NET_ADMIN, and no network agent runs on this host: have root run `drydock host setup-network --user {user}` once (it starts the agent that makes networks for that account), run drydock as root, or launch the instance with --no-network (only its serial console reaches it)"
    )
}

/// The name of the account this process runs as (its uid if unknown).
fn current_user_name() -> String {
    // SAFETY: getuid has no preconditions; getpwuid returns a pointer to
    // static storage (or null), read at once and copied.
    unsafe {
        let uid = libc::getuid();
        let pw = libc::getpwuid(uid);
        if pw.is_null() || (*pw).pw_name.is_null() {
            return uid.to_string();
        }
        std::ffi::CStr::from_ptr((*pw).pw_name)
            .to_string_lossy()
            .into_owned()
    }
}

/// Writes the VPC's security groups into its namespace (call holding the
/// VPC's lock).
fn write_firewall(ops: &dyn NetworkOps, data_dir: &Path, vpc: &VpcRef) -> Result<(), HostError> {
    let store = crate::store::HostStore::open(data_dir)?;
    let record = store.vpc(&vpc.vpc_id)?;
    // Read back from the database: checked again before it names a path.
    let uplink = record
        .uplink
        .filter(|u| crate::vpcs::check_uplink(u).is_ok());
    let private = store
        .vpc_subnets(&vpc.vpc_id)?
        .iter()
        .filter(|s| s.kind == crate::store::SubnetKind::Private)
        .map(|s| s.net().to_string())
        .collect();
    let mut members = Vec::new();
    // Interfaces attached to an instance (an available one has no TAP).
    for iface in store.vpc_interfaces(&vpc.vpc_id)? {
        if iface.instance_id.is_none() {
            continue;
        }
        let Ok(ip) = iface.private_ip.parse() else {
            tracing::warn!(interface = %iface.id, "a stored address is damaged; left out of the firewall");
            continue;
        };
        members.push(firewall::Member {
            tap: tap_name(&iface.id),
            groups: store.groups_of(&iface.id)?,
            interface_id: iface.id,
            mac: iface.mac,
            ip,
        });
    }
    let groups = store.vpc_security_groups(&vpc.vpc_id)?;
    ops.write_firewall(&FirewallRequest {
        vpc: vpc.clone(),
        uplink,
        private,
        members,
        groups,
    })
    .map_err(needs_privilege)
}

/// Rewrites a VPC's security groups, routes and uplink into its namespace
/// after a change of groups, rules, members, subnets or uplink; nothing to
/// do while no instance of the VPC runs (the next start writes them).
pub fn refresh_firewall(data_dir: &Path, vpc_id: &str) -> Result<(), HostError> {
    let ns = namespace_name(data_dir, vpc_id);
    // Without privilege /run/netns may be unreadable: the agent knows (and
    // does nothing for a namespace that is not there); without an agent
    // there is no namespace of ours to update.
    let Some(ops) = operations_if_any() else {
        return Ok(());
    };
    let _lock = VpcLock::take(data_dir, vpc_id)?;
    if ops::privileged() && !Path::new(NETNS_DIR).join(&ns).exists() {
        return Ok(());
    }
    write_firewall(ops.as_ref(), data_dir, &VpcRef::new(data_dir, vpc_id))
}

/// [`operations`], or none when neither root nor the agent is there.
fn operations_if_any() -> Option<Box<dyn NetworkOps>> {
    operations().ok()
}

fn needs_privilege(detail: String) -> HostError {
    if ops::privileged() {
        HostError::Vmm(format!("cannot set up the instance network: {detail}"))
    } else {
        HostError::Invalid(format!("cannot set up the instance network: {detail}"))
    }
}

/// Removes the VPC's namespace if no TAP is left in it (its last running
/// instance stopped). Returns whether it was removed.
pub fn release_if_idle(data_dir: &Path, vpc_id: &str) -> Result<bool, HostError> {
    let ns = namespace_name(data_dir, vpc_id);
    if ops::privileged() && !Path::new(NETNS_DIR).join(&ns).exists() {
        return Ok(false);
    }
    let Some(ops) = operations_if_any() else {
        return Ok(false);
    };
    let _lock = VpcLock::take(data_dir, vpc_id)?;
    ops.release(&VpcRef::new(data_dir, vpc_id))
        .map_err(HostError::Vmm)
}

/// Removes every namespace of `data_dir` that no running instance uses
/// (left by a crash: the TAPs went with their VMMs). Returns the names
/// removed.
pub fn sweep(data_dir: &Path) -> Result<Vec<String>, HostError> {
    let prefix = namespace_prefix(data_dir);
    let mut removed = Vec::new();
    let Some(ops) = operations_if_any() else {
        return Ok(removed);
    };
    for ns in ops.namespaces(data_dir).map_err(HostError::Vmm)? {
        let Some(vpc_id) = ns.strip_prefix(&prefix) else {
            continue;
        };
        if release_if_idle(data_dir, vpc_id)? {
            removed.push(ns);
        }
    }
    Ok(removed)
}

/// A TCP connection from the host to `addr` inside a VPC (SSH to a guest,
/// a health check): made from within the VPC's namespace; the socket
/// stays there, the caller uses it as any other.
pub fn connect(
    data_dir: &Path,
    vpc_id: &str,
    addr: SocketAddr,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let ops = operations()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e.to_string()))?;
    ops.connect(&VpcRef::new(data_dir, vpc_id), addr, timeout)
}

/// A TCP listener bound to `addr` inside a VPC's namespace (the metadata
/// service's).
pub fn listen(data_dir: &Path, vpc_id: &str, addr: SocketAddr) -> std::io::Result<TcpListener> {
    let ops = operations()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e.to_string()))?;
    ops.listen(&VpcRef::new(data_dir, vpc_id), addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_fit_the_kernels_limit_and_keep_the_ids_tail() {
        assert_eq!(bridge_name("subnet-0123456789ab"), "br-0123456789ab");
        assert_eq!(tap_name("eni-0123456789ab"), "tap-123456789ab");
        assert!(tap_name("eni-0123456789ab").len() <= 15);
        assert!(bridge_name("x").len() <= 15);
    }

    #[test]
    fn namespaces_are_named_after_the_data_directory_and_the_vpc() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let na = namespace_name(a.path(), "vpc-1");
        assert!(na.starts_with("drydock-") && na.ends_with("-vpc-1"), "{na}");
        assert_ne!(na, namespace_name(b.path(), "vpc-1"));
        assert_eq!(na, namespace_name(a.path(), "vpc-1"));
    }
}
