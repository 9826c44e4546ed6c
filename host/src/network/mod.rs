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
//! /dev/net/tun; it needs CAP_NET_ADMIN (root).

pub mod firewall;
pub mod imds;
mod netns;
mod tap;

use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::store::{InterfaceRecord, SubnetRecord};
use crate::HostError;

pub use netns::{namespaces, NETNS_DIR};

/// The first part of every namespace name of `data_dir`'s VPCs:
/// `drydock-` and 8 hex digits of the data directory's path, so two data
/// directories on one machine never share a network.
pub fn namespace_prefix(data_dir: &Path) -> String {
    use sha2::Digest;
    let path = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let d = sha2::Sha256::digest(path.as_os_str().as_encoded_bytes());
    format!("drydock-{:02x}{:02x}{:02x}{:02x}-", d[0], d[1], d[2], d[3])
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
fn uplink_peer_name(vpc_id: &str) -> String {
    link_name("dd-", vpc_id)
}

/// The uplink's /30 out of 100.64.0.0/10 (shared address space, never a
/// VPC's): (the VPC's end, the outside's end).
fn uplink_addresses(vpc_id: &str) -> (std::net::Ipv4Addr, std::net::Ipv4Addr) {
    use sha2::Digest;
    let d = sha2::Sha256::digest(vpc_id.as_bytes());
    let block = u32::from_be_bytes([0, d[0], d[1], d[2]]) & 0x000f_ffff;
    let base = u32::from(std::net::Ipv4Addr::new(100, 64, 0, 0)) + block * 4;
    (
        std::net::Ipv4Addr::from(base + 2),
        std::net::Ipv4Addr::from(base + 1),
    )
}

/// Builds or removes the VPC's uplink as its record says (call holding the
/// VPC's lock, the namespace made). Returns the uplink's link name when
/// there is one.
fn plumb_uplink(ns: &str, vpc: &crate::store::VpcRecord) -> Result<Option<String>, HostError> {
    let inner = uplink_name(&vpc.id);
    // Read back from the database: checked again before it names a path.
    let uplink = vpc
        .uplink
        .as_ref()
        .filter(|u| crate::vpcs::check_uplink(u).is_ok());
    match uplink {
        Some(outside) if netns::namespace_exists(outside) => {
            let (mine, theirs) = uplink_addresses(&vpc.id);
            netns::ensure_uplink(
                ns,
                &inner,
                &format!("{mine}/30"),
                outside,
                &uplink_peer_name(&vpc.id),
                &format!("{theirs}/30"),
                &theirs.to_string(),
            )
            .map_err(needs_privilege)?;
            Ok(Some(inner))
        }
        Some(outside) => {
            tracing::warn!(vpc = %vpc.id, "the uplink namespace {outside} is not there: the VPC has no way out");
            netns::remove_link(ns, &inner).map_err(HostError::Vmm)?;
            Ok(None)
        }
        None => {
            netns::remove_link(ns, &inner).map_err(HostError::Vmm)?;
            Ok(None)
        }
    }
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
    let _lock = VpcLock::take(data_dir, &iface.vpc_id)?;
    let ns = namespace_name(data_dir, &iface.vpc_id);
    netns::ensure(&ns).map_err(needs_privilege)?;
    netns::enable_forwarding(&ns).map_err(needs_privilege)?;
    let bridge = bridge_name(&subnet.id);
    let gateway = format!("{}/{}", subnet.gateway(), subnet.net().prefix_len());
    netns::ensure_bridge(&ns, &bridge, &gateway).map_err(needs_privilege)?;
    let tap_name = tap_name(&iface.id);
    let tap = netns::in_namespace(&ns, || tap::open(&tap_name))
        .map_err(|e| needs_privilege(format!("cannot make TAP {tap_name} in {ns}: {e}")))?;
    netns::enslave(&ns, &tap_name, &bridge).map_err(needs_privilege)?;
    write_firewall(data_dir, &ns, &iface.vpc_id)?;
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

/// Writes the VPC's security groups into its namespace (call holding the
/// VPC's lock).
fn write_firewall(data_dir: &Path, ns: &str, vpc_id: &str) -> Result<(), HostError> {
    let store = crate::store::HostStore::open(data_dir)?;
    let vpc = store.vpc(vpc_id)?;
    let uplink = plumb_uplink(ns, &vpc)?;
    let routing = firewall::Routing {
        private: store
            .vpc_subnets(vpc_id)?
            .iter()
            .filter(|s| s.kind == crate::store::SubnetKind::Private)
            .map(|s| s.net())
            .collect(),
        uplink,
    };
    let mut members = Vec::new();
    // Interfaces attached to an instance (an available one has no TAP).
    for iface in store.vpc_interfaces(vpc_id)? {
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
    let groups = store.vpc_security_groups(vpc_id)?;
    firewall::apply(ns, &firewall::render(&members, &groups, &routing)).map_err(needs_privilege)
}

/// Rewrites a VPC's security groups, routes and uplink into its namespace
/// after a change of groups, rules, members, subnets or uplink; nothing to
/// do while no instance of the VPC runs (the next start writes them).
pub fn refresh_firewall(data_dir: &Path, vpc_id: &str) -> Result<(), HostError> {
    let _lock = VpcLock::take(data_dir, vpc_id)?;
    let ns = namespace_name(data_dir, vpc_id);
    if !Path::new(NETNS_DIR).join(&ns).exists() {
        return Ok(());
    }
    write_firewall(data_dir, &ns, vpc_id)
}

fn needs_privilege(detail: String) -> HostError {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        HostError::Invalid(format!(
            "instance networks need CAP_NET_ADMIN ({detail}): run drydock as root, or launch the instance with --no-network (only its serial console reaches it)"
        ))
    } else {
        HostError::Vmm(format!("cannot set up the instance network: {detail}"))
    }
}

/// Removes the VPC's namespace if no TAP is left in it (its last running
/// instance stopped). Returns whether it was removed.
pub fn release_if_idle(data_dir: &Path, vpc_id: &str) -> Result<bool, HostError> {
    let _lock = VpcLock::take(data_dir, vpc_id)?;
    let ns = namespace_name(data_dir, vpc_id);
    netns::remove_if_idle(&ns).map_err(HostError::Vmm)
}

/// Removes every namespace of `data_dir` that no running instance uses
/// (left by a crash: the TAPs went with their VMMs). Returns the names
/// removed.
pub fn sweep(data_dir: &Path) -> Result<Vec<String>, HostError> {
    let prefix = namespace_prefix(data_dir);
    let mut removed = Vec::new();
    for ns in namespaces().map_err(|e| HostError::io("list", Path::new(NETNS_DIR), e))? {
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
    let ns = namespace_name(data_dir, vpc_id);
    netns::in_namespace(&ns, || TcpStream::connect_timeout(&addr, timeout))
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
