//! Who is acting: the OS account of a process or of a socket's peer.
//!
//! drydock never asks the caller who they are. Locally the identity is the
//! account of the process's real uid; through a Unix socket it is the
//! account of the peer's credentials (`SO_PEERCRED`). Names come from the
//! system's user and group databases (NSS), so they are what `id` prints.

use std::ffi::{CStr, CString};

/// An OS account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    /// The account name, or `uid:N` for a uid without a passwd entry.
    pub name: String,
}

impl Identity {
    /// The account this process runs as (its real uid).
    pub fn current() -> Self {
        // SAFETY: getuid has no preconditions and cannot fail.
        Self::of_uid(unsafe { libc::getuid() })
    }

    /// The account of a uid.
    pub fn of_uid(uid: u32) -> Self {
        Self {
            uid,
            name: user_name(uid).unwrap_or_else(|| format!("uid:{uid}")),
        }
    }

    /// Whether this is the superuser.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Whether the account is a member of `group` (primary or
    /// supplementary).
    pub fn in_group(&self, group: &str) -> bool {
        let Some(gid) = group_id(group) else {
            return false;
        };
        groups_of(&self.name, self.uid).contains(&gid)
    }

    /// Whether this identity matches an entry of an approver list: a user
    /// name, `@group`, or `*` for anyone.
    pub fn matches(&self, entry: &str) -> bool {
        let entry = entry.trim();
        if entry == "*" {
            return true;
        }
        match entry.strip_prefix('@') {
            Some(group) => self.in_group(group),
            None => entry == self.name,
        }
    }
}

fn buffer_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_GETPW_R_SIZE_MAX) };
    if n > 0 {
        n as usize
    } else {
        16 * 1024
    }
}

/// Calls a `get*_r` lookup with a buffer that grows while the call asks
/// for more room (`ERANGE`), up to `limit` bytes. `call` returns the
/// errno-style code and, when found, the value read from the buffer.
fn lookup<T>(limit: usize, mut call: impl FnMut(&mut [u8]) -> (i32, Option<T>)) -> Option<T> {
    let mut buf = vec![0u8; buffer_size()];
    loop {
        match call(&mut buf) {
            (libc::ERANGE, _) if buf.len() < limit => {
                let n = buf.len() * 2;
                buf.resize(n, 0);
            }
            (0, found) => return found,
            _ => return None,
        }
    }
}

/// The passwd entry of a uid: its name and primary gid.
fn passwd_of(uid: u32) -> Option<(String, u32)> {
    lookup(1 << 20, |buf| {
        // SAFETY: zeroed passwd is a valid out-parameter for getpwuid_r.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call and buf's length is passed.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return (rc, None);
        }
        // SAFETY: pw_name points into buf, NUL-terminated by getpwuid_r.
        let name = unsafe { CStr::from_ptr(pwd.pw_name) };
        (0, Some((name.to_string_lossy().into_owned(), pwd.pw_gid)))
    })
}

/// The account name of a uid, from the passwd database.
pub fn user_name(uid: u32) -> Option<String> {
    passwd_of(uid).map(|(name, _)| name)
}

/// The uid of an account name.
pub fn user_id(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    lookup(1 << 20, |buf| {
        // SAFETY: zeroed passwd is a valid out-parameter for getpwnam_r.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call and buf's length is passed.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        (rc, (rc == 0 && !result.is_null()).then_some(pwd.pw_uid))
    })
}

/// The gid of a group name.
pub fn group_id(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    lookup(1 << 22, |buf| {
        // SAFETY: zeroed group is a valid out-parameter for getgrnam_r.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call and buf's length is passed.
        let rc = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &mut grp,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        (rc, (rc == 0 && !result.is_null()).then_some(grp.gr_gid))
    })
}

fn primary_gid(uid: u32) -> Option<u32> {
    passwd_of(uid).map(|(_, gid)| gid)
}

/// Every gid an account belongs to (primary first).
pub fn groups_of(name: &str, uid: u32) -> Vec<u32> {
    let Some(primary) = primary_gid(uid) else {
        return Vec::new();
    };
    let Ok(cname) = CString::new(name) else {
        return vec![primary];
    };
    let mut n: libc::c_int = 64;
    loop {
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let asked = n;
        // SAFETY: groups has room for n entries and n is passed by pointer.
        let rc =
            unsafe { libc::getgrouplist(cname.as_ptr(), primary, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            groups.truncate(n.max(0) as usize);
            return groups;
        }
        if n <= asked {
            n = asked * 2;
        }
        if n > 65536 {
            return vec![primary];
        }
    }
}

/// The uid of the process at the other end of a Unix socket.
pub use drydock_sockets::peer_uid;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_named_and_in_its_group() {
        let root = Identity::of_uid(0);
        assert_eq!(root.name, "root");
        assert!(root.is_root());
        assert!(root.in_group("root"));
        assert!(root.matches("root") && root.matches("@root") && root.matches("*"));
        assert!(!root.matches("alice") && !root.matches("@no-such-group-here"));
    }

    #[test]
    fn unknown_uid_gets_a_numeric_name() {
        assert_eq!(Identity::of_uid(3_999_999).name, "uid:3999999");
    }

    #[test]
    fn peer_of_a_socket_pair_is_this_process() {
        use std::os::fd::AsFd;
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        // SAFETY: getuid has no preconditions.
        assert_eq!(peer_uid(a.as_fd()).unwrap(), unsafe { libc::getuid() });
    }
}
