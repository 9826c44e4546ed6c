//! The TAP device a network card sends through. The VMM never makes one
//! (that takes CAP_NET_ADMIN and the VPC's network namespace): the host
//! opens it and the VMM inherits the descriptor. Before the card uses it,
//! the descriptor is checked to be a TAP that gives plain frames (no
//! packet information, no virtio-net header), and made non-blocking and
//! close-on-exec.

use std::fs::File;
use std::os::fd::FromRawFd;

/// `TUNGETIFF`: `_IOR('T', 210, unsigned int)`.
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// Takes the inherited descriptor `fd` as a TAP.
///
/// The caller names each descriptor once (two cards on one descriptor
/// would close it twice); `fd` must not be owned by anything else in
/// this process.
pub fn inherited_tap(fd: i32) -> Result<File, String> {
    if fd < 3 {
        return Err(format!(
            "descriptor {fd} cannot be a TAP (0-2 are the standard streams)"
        ));
    }
    // SAFETY: F_GETFD takes no pointer; a closed descriptor fails EBADF.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(format!(
            "descriptor {fd} is not open: the TAP must be passed to the VMM open, at the number the spec names"
        ));
    }
    // SAFETY: `ifreq` is plain data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    // TUNGETIFF writes at most one `ifreq` into `ifr`, which lives for the
    // call; on another kind of descriptor it fails with EBADFD or ENOTTY.
    // SAFETY: a valid pointer to one `ifreq`; nothing written otherwise.
    let rc = unsafe { libc::ioctl(fd, TUNGETIFF as _, &mut ifr as *mut libc::ifreq) };
    if rc < 0 {
        return Err(format!(
            "descriptor {fd} is not a TAP device ({})",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: TUNGETIFF filled in `ifr_flags`.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    let want = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    if flags & want != want || flags & (libc::IFF_TUN as libc::c_short) != 0 {
        return Err(format!(
            "descriptor {fd} is a TUN/TAP device with flags {flags:#x}: drydock's VMM needs a TAP opened with IFF_TAP|IFF_NO_PI"
        ));
    }
    if flags & IFF_VNET_HDR != 0 {
        return Err(format!(
            "descriptor {fd} is a TAP with IFF_VNET_HDR: drydock's VMM sends plain frames; open it without"
        ));
    }
    // SAFETY: fcntl with integer arguments only changes descriptor flags.
    let ok = unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        fl >= 0
            && libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) >= 0
            && libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) >= 0
    };
    if !ok {
        return Err(format!(
            "cannot make TAP descriptor {fd} non-blocking: {}",
            std::io::Error::last_os_error()
        ));
    }
    // The descriptor is open (checked above) and, by this function's
    // contract, owned by nothing else.
    // SAFETY: the File becomes the descriptor's only owner.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    #[test]
    fn descriptors_that_are_not_a_tap_are_refused_with_why() {
        let e = inherited_tap(1).unwrap_err();
        assert!(e.contains("standard streams"), "{e}");
        let e = inherited_tap(987_654).unwrap_err();
        assert!(e.contains("not open"), "{e}");
        let f = tempfile::tempfile().unwrap().into_raw_fd();
        let e = inherited_tap(f).unwrap_err();
        assert!(e.contains("not a TAP device"), "{e}");
        // SAFETY: `f` was just made and refused, so nothing else owns it.
        unsafe { libc::close(f) };
    }
}
