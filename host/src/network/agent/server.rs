//! The agent's side of the socket: who may ask (SO_PEERCRED), what they
//! may ask for (their own data directories' namespaces, checked names and
//! addresses), then [`Direct`] does it.

use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::protocol::{self, Reply, Request};
use super::Config;
use crate::network::ops::{Direct, FirewallRequest, TapRequest, VpcRef};

/// Connections served at once; more are closed at once.
const MAX_CLIENTS: usize = 32;
/// The longest connect a caller may ask for.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// The agent: what root allowed, and where it records namespaces' owners.
pub struct Agent {
    config: Config,
    owners: PathBuf,
    /// Namespaces are claimed and removed one request at a time.
    lock: Mutex<()>,
}

/// The caller's uid, as the kernel saw it connect.
pub fn peer_uid(stream: &UnixStream) -> std::io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes a struct ucred of `len` bytes into `cred`,
    // which lives across the call.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// `vpc-` and hex digits, as drydock makes VPC ids.
fn check_vpc_id(id: &str) -> Result<(), String> {
    match id.strip_prefix("vpc-") {
        Some(hex)
            if !hex.is_empty()
                && hex.len() <= 32
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) =>
        {
            Ok(())
        }
        _ => Err("the VPC id is not one drydock makes (vpc- and hex digits)".into()),
    }
}

/// `PREFIX` and 1..=`tail` hex digits: a bridge or TAP name as drydock
/// makes them.
fn check_link(name: &str, prefix: &str) -> Result<(), String> {
    let tail = 15 - prefix.len();
    match name.strip_prefix(prefix) {
        Some(hex)
            if !hex.is_empty()
                && hex.len() <= tail
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) =>
        {
            Ok(())
        }
        _ => Err(format!("`{name}` is not a link name drydock makes")),
    }
}

/// The namespace of `vpc` for account `uid`, named from its data
/// directory's path as given (checked canonical by [`check_data_dir`]),
/// not resolved again.
fn exact_namespace(vpc: &VpcRef, uid: u32) -> String {
    format!(
        "{}{}",
        crate::network::exact_namespace_prefix(&vpc.data_dir, uid),
        vpc.vpc_id
    )
}

/// The data directory must be the caller's: an absolute canonical path
/// (no symbolic link, `.` or `..` in it) to a directory `uid` owns. Every
/// failure reads the same, so the agent (root) tells nobody what exists
/// in directories they cannot read.
pub fn check_data_dir(dir: &Path, uid: u32) -> Result<(), String> {
    let ok = dir.is_absolute()
        && dir.as_os_str().len() <= 4096
        && std::fs::canonicalize(dir).is_ok_and(|c| c == dir)
        && std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir() && m.uid() == uid);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not a data directory of the caller (uid {uid}): the agent acts only on an absolute path without symbolic links, `.` or `..` to a directory the caller owns",
            dir.display()
        ))
    }
}

impl Agent {
    pub fn new(config: Config, owners: PathBuf) -> Self {
        Self {
            config,
            owners,
            lock: Mutex::new(()),
        }
    }

    fn owner_file(&self, ns: &str) -> PathBuf {
        self.owners.join(ns)
    }

    fn owner_of(&self, ns: &str) -> Option<u32> {
        std::fs::read_to_string(self.owner_file(ns))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Checks `vpc` for `uid`; whether its namespace is not there (nothing
    /// to do for a release or a firewall).
    fn gone(&self, uid: u32, vpc: &VpcRef) -> Result<bool, String> {
        check_vpc_id(&vpc.vpc_id)?;
        check_data_dir(&vpc.data_dir, uid)?;
        Ok(!Path::new(crate::network::NETNS_DIR)
            .join(exact_namespace(vpc, uid))
            .exists())
    }

    /// Checks `vpc` for `uid` and returns its namespace's name. With
    /// `claim`, a namespace that does not exist yet is recorded as the
    /// caller's (it is about to be made); an existing one must be the
    /// caller's by that record (a namespace made by root or for another
    /// account never is, whatever its name).
    fn namespace_for(&self, uid: u32, vpc: &VpcRef, claim: bool) -> Result<String, String> {
        check_vpc_id(&vpc.vpc_id)?;
        check_data_dir(&vpc.data_dir, uid)?;
        let ns = exact_namespace(vpc, uid);
        let exists = Path::new(crate::network::NETNS_DIR).join(&ns).exists();
        match (exists, self.owner_of(&ns)) {
            (true, Some(owner)) if owner == uid => Ok(ns),
            (true, Some(_)) => Err(format!("namespace {ns} is another account's")),
            (true, None) => Err(format!(
                "namespace {ns} was not made by the network agent for this account"
            )),
            // Gone (a record left by a crash is stale): the caller's now.
            (false, _) if claim => {
                std::fs::write(self.owner_file(&ns), uid.to_string())
                    .map_err(|e| format!("cannot record the owner of {ns}: {e}"))?;
                Ok(ns)
            }
            (false, _) => Err(format!("namespace {ns} is not there")),
        }
    }

    fn check_firewall(&self, req: &FirewallRequest) -> Result<(), String> {
        if let Some(up) = &req.uplink {
            if up.starts_with("drydock-") || !self.config.uplinks.iter().any(|u| u == up) {
                return Err(format!(
                    "the uplink namespace {up} is not one root allowed (`drydock host setup-network --uplink {up}`)"
                ));
            }
        }
        for c in &req.private {
            c.parse::<ipnet::Ipv4Net>()
                .map_err(|_| format!("`{c}` is not a CIDR"))?;
        }
        // Bounded work: the ruleset grows with members times their
        // groups' rules.
        let rules: usize = req.groups.iter().map(|g| g.rules.len()).sum();
        let per_member: usize = req
            .members
            .iter()
            .map(|m| {
                req.groups
                    .iter()
                    .filter(|g| m.groups.contains(&g.id))
                    .map(|g| g.rules.len())
                    .sum::<usize>()
            })
            .sum();
        if req.members.len() > MAX_MEMBERS
            || req.groups.len() > MAX_GROUPS
            || rules > MAX_RULES
            || per_member > MAX_RENDERED_RULES
            || req.private.len() > MAX_GROUPS
        {
            return Err(format!(
                "a firewall of {} members, {} groups and {rules} rules ({per_member} rendered) is over the agent's limits ({MAX_MEMBERS} members, {MAX_GROUPS} groups, {MAX_RULES} rules, {MAX_RENDERED_RULES} rendered)",
                req.members.len(),
                req.groups.len()
            ));
        }
        Ok(())
    }

    /// Does `req` for `uid` if it may: the reply, and the descriptor made.
    pub fn handle(&self, uid: u32, req: Request) -> (Reply, Option<OwnedFd>) {
        match self.execute(uid, req) {
            Ok(done) => done,
            Err(e) => (
                Reply {
                    errno: e.raw_os_error(),
                    error: Some(e.to_string()),
                    ..Reply::default()
                },
                None,
            ),
        }
    }

    fn execute(&self, uid: u32, req: Request) -> std::io::Result<(Reply, Option<OwnedFd>)> {
        let refused = |e: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e);
        if !self.config.allows(uid) {
            return Err(refused(format!(
                "uid {uid} may not use the network agent: root allows an account with `drydock host setup-network --user NAME`"
            )));
        }
        match req {
            Request::MakeTap(TapRequest {
                vpc,
                bridge,
                gateway,
                tap,
            }) => {
                check_link(&bridge, "br-").map_err(refused)?;
                check_link(&tap, "tap-").map_err(refused)?;
                let net: ipnet::Ipv4Net = gateway
                    .parse()
                    .map_err(|_| refused(format!("`{gateway}` is not an address in CIDR form")))?;
                let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                let ns = self.namespace_for(uid, &vpc, true).map_err(refused)?;
                let fd = Direct
                    .make_tap_in(
                        &ns,
                        &TapRequest {
                            vpc,
                            bridge,
                            gateway: net.to_string(),
                            tap,
                        },
                    )
                    .map_err(std::io::Error::other)?;
                Ok((Reply::default(), Some(fd)))
            }
            Request::WriteFirewall(req) => {
                self.check_firewall(&req).map_err(refused)?;
                let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                // No instance of the VPC runs: the next start writes it.
                if self.gone(uid, &req.vpc).map_err(refused)? {
                    return Ok((Reply::default(), None));
                }
                let ns = self.namespace_for(uid, &req.vpc, false).map_err(refused)?;
                Direct
                    .write_firewall_in(&ns, &req)
                    .map_err(std::io::Error::other)?;
                Ok((Reply::default(), None))
            }
            Request::Release { vpc } => {
                let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                if self.gone(uid, &vpc).map_err(refused)? {
                    return Ok((Reply::default(), None));
                }
                let ns = self.namespace_for(uid, &vpc, false).map_err(refused)?;
                let released =
                    crate::network::netns::remove_if_idle(&ns).map_err(std::io::Error::other)?;
                if released || !Path::new(crate::network::NETNS_DIR).join(&ns).exists() {
                    let _ = std::fs::remove_file(self.owner_file(&ns));
                }
                Ok((
                    Reply {
                        released,
                        ..Reply::default()
                    },
                    None,
                ))
            }
            Request::Namespaces { data_dir } => {
                check_data_dir(&data_dir, uid).map_err(refused)?;
                let prefix = crate::network::exact_namespace_prefix(&data_dir, uid);
                let mine = crate::network::namespaces()?
                    .into_iter()
                    .filter(|ns| ns.starts_with(&prefix) && self.owner_of(ns) == Some(uid))
                    .collect();
                Ok((
                    Reply {
                        namespaces: mine,
                        ..Reply::default()
                    },
                    None,
                ))
            }
            Request::Connect {
                vpc,
                addr,
                timeout_ms,
            } => {
                let ns = self.namespace_for(uid, &vpc, false).map_err(refused)?;
                let timeout = Duration::from_millis(timeout_ms.max(1)).min(MAX_CONNECT_TIMEOUT);
                let stream = Direct.connect_in(&ns, addr, timeout)?;
                Ok((Reply::default(), Some(OwnedFd::from(stream))))
            }
            Request::Listen { vpc, addr } => {
                if addr.ip() != IpAddr::V4(crate::network::imds::ADDRESS) || addr.port() == 0 {
                    return Err(refused(format!("{addr} is not a metadata service address")));
                }
                let ns = self.namespace_for(uid, &vpc, false).map_err(refused)?;
                let listener = Direct.listen_in(&ns, addr)?;
                Ok((Reply::default(), Some(OwnedFd::from(listener))))
            }
        }
    }

    /// Namespaces the agent made that no TAP uses any more are removed
    /// (at `setup-network --remove`); returns those left in use.
    pub fn release_all(owners: &Path) -> Vec<String> {
        let mut left = Vec::new();
        let Ok(entries) = std::fs::read_dir(owners) else {
            return left;
        };
        for e in entries.flatten() {
            let ns = e.file_name().to_string_lossy().into_owned();
            if !ns.starts_with("drydock-") {
                continue;
            }
            match crate::network::netns::remove_if_idle(&ns) {
                Ok(_) if !Path::new(crate::network::NETNS_DIR).join(&ns).exists() => {
                    let _ = std::fs::remove_file(e.path());
                }
                _ => left.push(ns),
            }
        }
        left
    }
}

fn serve_one(agent: &Agent, uid: u32, mut stream: UnixStream) {
    let _ = stream.set_write_timeout(Some(REQUEST_TIME));
    let deadline = std::time::Instant::now() + REQUEST_TIME;
    let (reply, fd) = match protocol::read_request_by(&mut stream, deadline) {
        Err(e) => (Reply::refused(e), None),
        Ok(req) => {
            let (reply, fd) = agent.handle(uid, req);
            // Refusals and failures of the plumbing, not a guest that
            // does not answer yet; cut short and escaped (a caller's text
            // in it fills no log and forges no line).
            if let (Some(e), None) = (&reply.error, reply.errno) {
                let e: String = e.chars().take(300).collect();
                tracing::warn!(uid, "network agent: {}", e.escape_debug());
            }
            (reply, fd)
        }
    };
    let _ = protocol::write_reply(&mut stream, &reply, fd.as_ref().map(|f| f.as_fd()));
}

/// How long a client has to send its whole request.
const REQUEST_TIME: Duration = Duration::from_secs(10);

/// Requests one account may have in progress at once (no account can take
/// every slot of [`MAX_CLIENTS`]).
const PER_ACCOUNT: usize = 4;

/// Bounds on one firewall request.
const MAX_MEMBERS: usize = 1024;
const MAX_GROUPS: usize = 256;
const MAX_RULES: usize = 4096;
const MAX_RENDERED_RULES: usize = 65536;

/// Serves requests on `listener` until the process is stopped.
pub fn serve(agent: Agent, listener: UnixListener) -> std::io::Result<()> {
    let agent = Arc::new(agent);
    let active = Arc::new(AtomicUsize::new(0));
    let by_account = Arc::new(Mutex::new(std::collections::HashMap::<u32, usize>::new()));
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        // Who asks decides everything else: an account root did not allow
        // is answered at once, without reading what it sends.
        let uid = match peer_uid(&stream) {
            Ok(uid) if agent.config.allows(uid) => uid,
            Ok(uid) => {
                let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
                let _ = protocol::write_reply(
                    &mut stream,
                    &Reply::refused(format!(
                        "uid {uid} may not use the network agent; root allows an account with `drydock host setup-network --user NAME`"
                    )),
                    None,
                );
                continue;
            }
            Err(_) => continue,
        };
        {
            let mut counts = by_account.lock().unwrap_or_else(|e| e.into_inner());
            let mine = counts.entry(uid).or_default();
            if *mine >= PER_ACCOUNT || active.load(Ordering::SeqCst) >= MAX_CLIENTS {
                continue;
            }
            *mine += 1;
            active.fetch_add(1, Ordering::SeqCst);
        }
        let agent = agent.clone();
        let done = active.clone();
        let counts = by_account.clone();
        let release = move || {
            done.fetch_sub(1, Ordering::SeqCst);
            let mut c = counts.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = c.get_mut(&uid) {
                *n = n.saturating_sub(1);
            }
        };
        let release2 = release.clone();
        let spawned = std::thread::Builder::new()
            .name("network-agent".into())
            .spawn(move || {
                serve_one(&agent, uid, stream);
                release();
            });
        if spawned.is_err() {
            release2();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(uid: u32) -> (Agent, tempfile::TempDir) {
        let owners = tempfile::tempdir().unwrap();
        let config = Config {
            users: vec![super::super::AllowedUser {
                name: "someone".into(),
                uid,
            }],
            uplinks: vec!["outside".into()],
        };
        (Agent::new(config, owners.path().to_path_buf()), owners)
    }

    fn error_of(reply: (Reply, Option<OwnedFd>)) -> String {
        assert!(reply.1.is_none());
        reply.0.error.expect("refused")
    }

    #[test]
    fn names_are_checked() {
        assert!(check_vpc_id("vpc-0a1b").is_ok());
        for bad in [
            "vpc-",
            "vpc-../x",
            "vpc-0A",
            "x-01",
            "vpc-0a\n",
            "vpc-0a/..",
        ] {
            assert!(check_vpc_id(bad).is_err(), "{bad}");
        }
        assert!(check_link("tap-0123456789a", "tap-").is_ok());
        for bad in ["tap-0123456789ab", "eth0", "tap-", "br-00", "tap-;x"] {
            assert!(check_link(bad, "tap-").is_err(), "{bad}");
        }
    }

    #[test]
    fn only_allowed_accounts_and_their_own_data_directories() {
        // SAFETY: getuid has no preconditions.
        let me = unsafe { libc::getuid() };
        let dir = tempfile::tempdir().unwrap();
        let data = std::fs::canonicalize(dir.path()).unwrap();
        let vpc = VpcRef {
            data_dir: data.clone(),
            vpc_id: "vpc-0a".into(),
        };
        let release = Request::Release { vpc: vpc.clone() };

        // Not an allowed account.
        let (a, _o) = agent(me + 1);
        let e = error_of(a.handle(me, release.clone()));
        assert!(e.contains("may not use the network agent"), "{e}");

        // Another account's data directory (here: the caller is someone
        // else than the directory's owner).
        let (a, _o) = agent(me + 1);
        let e = error_of(a.handle(
            me + 1,
            Request::Connect {
                vpc: vpc.clone(),
                addr: "10.0.0.1:22".parse().unwrap(),
                timeout_ms: 10,
            },
        ));
        assert!(e.contains("not a data directory of the caller"), "{e}");

        // A symbolic link to one's own directory is refused too.
        let (a, _o) = agent(me);
        let link = data.join("link");
        std::fs::create_dir(data.join("real")).unwrap();
        std::os::unix::fs::symlink(data.join("real"), &link).unwrap();
        let e = error_of(a.handle(
            me,
            Request::Release {
                vpc: VpcRef {
                    data_dir: link,
                    vpc_id: "vpc-0a".into(),
                },
            },
        ));
        assert!(e.contains("not a data directory of the caller"), "{e}");
        let e = error_of(a.handle(
            me,
            Request::Release {
                vpc: VpcRef {
                    data_dir: data.join("real/../real/."),
                    vpc_id: "vpc-0a".into(),
                },
            },
        ));
        assert!(e.contains("not a data directory of the caller"), "{e}");

        // A namespace that is not there: nothing to release.
        let (reply, fd) = a.handle(me, release);
        assert!(
            reply.error.is_none() && !reply.released && fd.is_none(),
            "{reply:?}"
        );

        // Hostile names and addresses.
        let e = error_of(a.handle(
            me,
            Request::MakeTap(TapRequest {
                vpc: vpc.clone(),
                bridge: "eth0".into(),
                gateway: "10.0.0.1/24".into(),
                tap: "tap-01".into(),
            }),
        ));
        assert!(e.contains("not a link name"), "{e}");
        let e = error_of(a.handle(
            me,
            Request::Listen {
                vpc: vpc.clone(),
                addr: "0.0.0.0:22".parse().unwrap(),
            },
        ));
        assert!(e.contains("not a metadata service address"), "{e}");
        let e = error_of(a.handle(
            me,
            Request::WriteFirewall(FirewallRequest {
                vpc,
                uplink: Some("drydock-12345678-vpc-1".into()),
                private: vec![],
                members: vec![],
                groups: vec![],
            }),
        ));
        assert!(e.contains("not one root allowed"), "{e}");
    }
}
