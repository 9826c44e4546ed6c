//! Network namespaces, bridges and links, through iproute2's `ip`; and
//! running code inside a namespace (one thread enters it).

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;

/// Where iproute2 keeps named network namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Runs `ip ARGS`; its error output is the error.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` (iproute2): {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The named network namespaces on this machine.
pub fn namespaces() -> std::io::Result<Vec<String>> {
    match std::fs::read_dir(NETNS_DIR) {
        Ok(entries) => Ok(entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn exists(ns: &str) -> bool {
    Path::new(NETNS_DIR).join(ns).exists()
}

/// Makes namespace `ns` (with its loopback up) unless it exists.
pub fn ensure(ns: &str) -> Result<(), String> {
    if !exists(ns) {
        if let Err(e) = ip(&["netns", "add", ns]) {
            if !exists(ns) {
                return Err(e);
            }
        }
    }
    ip(&["-n", ns, "link", "set", "lo", "up"])?;
    // The metadata service's address (its listeners bind it).
    ip(&[
        "-n",
        ns,
        "addr",
        "replace",
        "169.254.169.254/32",
        "dev",
        "lo",
    ])?;
    // Bridged IPv4 goes through the inet hooks (and connection tracking),
    // where the security groups are: set in this namespace only.
    in_namespace(ns, || {
        std::fs::write("/proc/sys/net/bridge/bridge-nf-call-iptables", "1")
    })
    .map_err(|e| format!("cannot make {ns}'s bridges call netfilter: {e}"))
}

/// Makes bridge `bridge` in `ns` holding `address` (CIDR form), up.
pub fn ensure_bridge(ns: &str, bridge: &str, address: &str) -> Result<(), String> {
    if ip(&["-n", ns, "link", "show", "dev", bridge]).is_err() {
        ip(&["-n", ns, "link", "add", bridge, "type", "bridge"])?;
    }
    ip(&["-n", ns, "addr", "replace", address, "dev", bridge])?;
    ip(&["-n", ns, "link", "set", bridge, "up"]).map(drop)
}

/// Routes between the namespace's links (the VPC's subnets, its uplink).
pub fn enable_forwarding(ns: &str) -> Result<(), String> {
    in_namespace(ns, || std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))
        .map_err(|e| format!("cannot turn on forwarding in {ns}: {e}"))
}

/// Whether link `link` exists in `ns`.
pub fn has_link(ns: &str, link: &str) -> bool {
    ip(&["-n", ns, "link", "show", "dev", link]).is_ok()
}

/// A veth pair from `ns` (`inner`, address `inner_addr`) to `outside`
/// (`outer`, address `outer_addr`), both up, and `ns`'s default route
/// through it.
pub fn ensure_uplink(
    ns: &str,
    inner: &str,
    inner_addr: &str,
    outside: &str,
    outer: &str,
    outer_addr: &str,
    gateway: &str,
) -> Result<(), String> {
    if !has_link(ns, inner) {
        ip(&[
            "link", "add", inner, "netns", ns, "type", "veth", "peer", "name", outer, "netns",
            outside,
        ])?;
    }
    ip(&["-n", ns, "addr", "replace", inner_addr, "dev", inner])?;
    ip(&["-n", outside, "addr", "replace", outer_addr, "dev", outer])?;
    ip(&["-n", ns, "link", "set", inner, "up"])?;
    ip(&["-n", outside, "link", "set", outer, "up"])?;
    ip(&["-n", ns, "route", "replace", "default", "via", gateway]).map(drop)
}

/// Removes link `link` of `ns` (a veth takes its peer with it).
pub fn remove_link(ns: &str, link: &str) -> Result<(), String> {
    if has_link(ns, link) {
        ip(&["-n", ns, "link", "delete", link])?;
    }
    Ok(())
}

/// Whether namespace `ns` exists.
pub fn namespace_exists(ns: &str) -> bool {
    exists(ns)
}

/// Puts link `link` of `ns` on bridge `bridge` and brings it up.
pub fn enslave(ns: &str, link: &str, bridge: &str) -> Result<(), String> {
    ip(&["-n", ns, "link", "set", link, "master", bridge, "up"]).map(drop)
}

/// Deletes `ns` if no TAP is left in it; whether it was deleted.
pub fn remove_if_idle(ns: &str) -> Result<bool, String> {
    if !exists(ns) {
        return Ok(false);
    }
    let taps = ip(&["-n", ns, "-o", "link", "show", "type", "tun"])?;
    if !taps.trim().is_empty() {
        return Ok(false);
    }
    ip(&["netns", "delete", ns])?;
    Ok(true)
}

/// Runs `f` on a thread that has entered network namespace `ns`: sockets
/// and devices it makes belong to `ns`. The calling thread stays where it
/// is.
pub fn in_namespace<T: Send>(
    ns: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    let path = Path::new(NETNS_DIR).join(ns);
    let handle = std::fs::File::open(&path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("network namespace {} is not there: {e}", path.display()),
        )
    })?;
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns with a namespace file we opened; it changes the
            // network namespace of this thread only, which ends with `f`.
            if unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("a thread in the namespace panicked")))
    })
}
