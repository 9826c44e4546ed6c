//! The network agent: a root process that does the privileged network
//! operations ([`super::ops::NetworkOps`]) for the accounts root allowed,
//! as libvirt's bridge helper does for QEMU. `drydock host setup-network
//! --user NAME` (run as root) records the accounts and starts it
//! ([`setup`]); a drydock without CAP_NET_ADMIN then asks it over a Unix
//! socket ([`client`]), and gets TAPs and sockets made inside its VPCs'
//! namespaces back as file descriptors.
//!
//! The trust boundary is the socket ([`server`]): the caller's uid comes
//! from the kernel (SO_PEERCRED) and must be allowed; it acts only on
//! namespaces of data directories that uid owns (named by the agent from
//! the directory and a VPC id, never by the caller), and on a namespace
//! only if it made it for that uid; firewall rules arrive as records and
//! are rendered by the agent; uplinks go only to namespaces root named at
//! setup; requests are bounded.

pub mod client;
pub mod protocol;
pub mod server;
pub mod setup;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where the agent's socket, pid file and state live.
pub const RUN_DIR: &str = "/run/drydock";
/// The accounts and uplinks root allowed (root-owned, read at start).
pub const CONFIG: &str = "/etc/drydock/network-agent.json";

pub fn socket_path() -> PathBuf {
    PathBuf::from(RUN_DIR).join("network-agent.sock")
}

pub fn pid_path() -> PathBuf {
    PathBuf::from(RUN_DIR).join("network-agent.pid")
}

/// Root-only: which uid each namespace the agent made belongs to.
pub fn owners_dir() -> PathBuf {
    PathBuf::from(RUN_DIR).join("network-agent")
}

pub fn log_path() -> PathBuf {
    PathBuf::from(RUN_DIR).join("network-agent.log")
}

/// An account the agent serves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AllowedUser {
    pub name: String,
    pub uid: u32,
}

/// What root allowed at `setup-network`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Config {
    pub users: Vec<AllowedUser>,
    /// Namespaces outside drydock a VPC's uplink may go to.
    #[serde(default)]
    pub uplinks: Vec<String>,
}

impl Config {
    pub fn allows(&self, uid: u32) -> bool {
        self.users.iter().any(|u| u.uid == uid)
    }
}
