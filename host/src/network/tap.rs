//! TAP devices through /dev/net/tun: made by the descriptor that opens
//! them (not persistent), so a TAP is gone once every copy of its
//! descriptor is closed — when its VMM exits, whatever the reason.

use std::os::fd::{FromRawFd, OwnedFd};

/// struct ifreq as TUNSETIFF reads it: the name, then the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Makes TAP `name` (in the calling thread's network namespace) and
/// returns its descriptor: Ethernet frames without the packet-info header.
pub fn open(name: &str) -> std::io::Result<OwnedFd> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('/') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("`{name}` is not an interface name"),
        ));
    }
    // SAFETY: opening a path with a NUL-terminated literal; the result is
    // checked before use.
    let fd = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nothing else.
    let tap = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads a struct ifreq, which `req` is laid out as
    // (#[repr(C)], 40 bytes); it lives across the call.
    let rc = unsafe { libc::ioctl(fd, libc::TUNSETIFF as _, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(tap)
}
