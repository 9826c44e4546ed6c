//! The privileged network operations, in one place: what needs
//! CAP_NET_ADMIN (namespaces, bridges, TAPs, uplinks, nftables) or
//! entering a namespace (sockets made inside it). [`Direct`] does them
//! itself (root); the network agent's client ([`super::agent::client`])
//! asks the agent, which checks the request and then runs [`Direct`]. The
//! rest of drydock holds a `dyn NetworkOps` and does not care which.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{firewall, netns, tap};
use crate::store::GroupRecord;

/// A VPC of a data directory: the agent derives the namespace's name from
/// it, a client never names a namespace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VpcRef {
    /// Canonical (absolute, no symbolic link).
    pub data_dir: PathBuf,
    pub vpc_id: String,
}

impl VpcRef {
    pub fn new(data_dir: &Path, vpc_id: &str) -> Self {
        Self {
            data_dir: std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf()),
            vpc_id: vpc_id.to_string(),
        }
    }

    pub fn namespace(&self) -> String {
        super::namespace_name(&self.data_dir, &self.vpc_id)
    }
}

/// A TAP to make on a subnet's bridge (the namespace and the bridge made
/// when missing).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TapRequest {
    pub vpc: VpcRef,
    pub bridge: String,
    /// The subnet's router address, CIDR form.
    pub gateway: String,
    pub tap: String,
}

/// A VPC's security groups, routes and uplink, as records: the side that
/// runs nft renders them ([`firewall::render`]), so no nft text crosses a
/// trust boundary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FirewallRequest {
    pub vpc: VpcRef,
    /// The namespace outside the VPC its uplink goes to, if it has one.
    pub uplink: Option<String>,
    /// The private subnets' CIDRs.
    pub private: Vec<String>,
    pub members: Vec<firewall::Member>,
    pub groups: Vec<GroupRecord>,
}

/// Everything privileged the network of instances needs.
pub trait NetworkOps: Send + Sync {
    /// Makes the TAP (and its namespace and bridge if missing); the TAP
    /// lives as long as the descriptor.
    fn make_tap(&self, req: &TapRequest) -> Result<OwnedFd, String>;
    /// Plumbs the uplink and swaps in the VPC's ruleset.
    fn write_firewall(&self, req: &FirewallRequest) -> Result<(), String>;
    /// Removes the VPC's namespace if no TAP is left; whether it did.
    fn release(&self, vpc: &VpcRef) -> Result<bool, String>;
    /// The namespaces of `data_dir`'s VPCs on this machine (the agent's:
    /// those it made for the caller).
    fn namespaces(&self, data_dir: &Path) -> Result<Vec<String>, String>;
    /// A TCP connection made inside the VPC's namespace.
    fn connect(
        &self,
        vpc: &VpcRef,
        addr: SocketAddr,
        timeout: Duration,
    ) -> std::io::Result<TcpStream>;
    /// A TCP listener bound inside the VPC's namespace.
    fn listen(&self, vpc: &VpcRef, addr: SocketAddr) -> std::io::Result<TcpListener>;
}

/// The operations done by this process (it has CAP_NET_ADMIN and
/// CAP_SYS_ADMIN): as root, or inside the network agent.
pub struct Direct;

/// The uplink's link names and addresses, from the VPC's id.
fn plumb_uplink(ns: &str, vpc_id: &str, outside: Option<&str>) -> Result<Option<String>, String> {
    let inner = super::uplink_name(vpc_id);
    match outside {
        Some(outside) if netns::namespace_exists(outside) => {
            let (mine, theirs) = super::uplink_addresses(vpc_id);
            netns::ensure_uplink(
                ns,
                &inner,
                &format!("{mine}/30"),
                outside,
                &super::uplink_peer_name(vpc_id),
                &format!("{theirs}/30"),
                &theirs.to_string(),
            )?;
            Ok(Some(inner))
        }
        Some(outside) => {
            tracing::warn!(vpc = %vpc_id, "the uplink namespace {outside} is not there: the VPC has no way out");
            netns::remove_link(ns, &inner)?;
            Ok(None)
        }
        None => {
            netns::remove_link(ns, &inner)?;
            Ok(None)
        }
    }
}

/// The operations on a namespace named by the caller: the network agent
/// names it once, from the data directory it checked, and acts on that
/// name (a path resolved again could have changed in between).
impl Direct {
    pub(crate) fn make_tap_in(&self, ns: &str, req: &TapRequest) -> Result<OwnedFd, String> {
        netns::ensure(ns)?;
        netns::enable_forwarding(ns)?;
        netns::ensure_bridge(ns, &req.bridge, &req.gateway)?;
        let tap = netns::in_namespace(ns, || tap::open(&req.tap))
            .map_err(|e| format!("cannot make TAP {} in {ns}: {e}", req.tap))?;
        netns::enslave(ns, &req.tap, &req.bridge)?;
        Ok(tap)
    }

    pub(crate) fn write_firewall_in(&self, ns: &str, req: &FirewallRequest) -> Result<(), String> {
        let uplink = plumb_uplink(ns, &req.vpc.vpc_id, req.uplink.as_deref())?;
        let routing = firewall::Routing {
            private: req.private.iter().filter_map(|c| c.parse().ok()).collect(),
            uplink,
        };
        firewall::apply(ns, &firewall::render(&req.members, &req.groups, &routing))
    }

    pub(crate) fn connect_in(
        &self,
        ns: &str,
        addr: SocketAddr,
        timeout: Duration,
    ) -> std::io::Result<TcpStream> {
        netns::in_namespace(ns, || TcpStream::connect_timeout(&addr, timeout))
    }

    pub(crate) fn listen_in(&self, ns: &str, addr: SocketAddr) -> std::io::Result<TcpListener> {
        netns::in_namespace(ns, || TcpListener::bind(addr))
    }
}

impl NetworkOps for Direct {
    fn make_tap(&self, req: &TapRequest) -> Result<OwnedFd, String> {
        self.make_tap_in(&req.vpc.namespace(), req)
    }

    fn write_firewall(&self, req: &FirewallRequest) -> Result<(), String> {
        self.write_firewall_in(&req.vpc.namespace(), req)
    }

    fn release(&self, vpc: &VpcRef) -> Result<bool, String> {
        netns::remove_if_idle(&vpc.namespace())
    }

    fn namespaces(&self, data_dir: &Path) -> Result<Vec<String>, String> {
        let prefix = super::namespace_prefix(data_dir);
        Ok(netns::namespaces()
            .map_err(|e| format!("cannot list {}: {e}", netns::NETNS_DIR))?
            .into_iter()
            .filter(|ns| ns.starts_with(&prefix))
            .collect())
    }

    fn connect(
        &self,
        vpc: &VpcRef,
        addr: SocketAddr,
        timeout: Duration,
    ) -> std::io::Result<TcpStream> {
        self.connect_in(&vpc.namespace(), addr, timeout)
    }

    fn listen(&self, vpc: &VpcRef, addr: SocketAddr) -> std::io::Result<TcpListener> {
        self.listen_in(&vpc.namespace(), addr)
    }
}

/// Whether this process may do the operations itself: CAP_NET_ADMIN (the
/// plumbing) and CAP_SYS_ADMIN (entering a namespace) are effective.
pub fn privileged() -> bool {
    const NET_ADMIN: u64 = 1 << 12;
    const SYS_ADMIN: u64 = 1 << 21;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        // SAFETY: geteuid has no preconditions.
        return unsafe { libc::geteuid() } == 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (NET_ADMIN | SYS_ADMIN) == NET_ADMIN | SYS_ADMIN)
}
