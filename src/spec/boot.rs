//! `-b/--boot`: the tree's own init as PID 1, found and checked through the tree's root handle.

use crate::sys;
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};

/// Where nspawn looks for an init, in its order.
pub const INITS: &[&str] = &[
    "/usr/lib/systemd/systemd",
    "/lib/systemd/systemd",
    "/sbin/init",
];

fn regular(root: &OwnedFd, path: &str) -> Option<nix::sys::stat::FileStat> {
    let c = CString::new(path).ok()?;
    let fd = sys::open_in_root(root.as_fd(), &c, libc::O_PATH).ok()?;
    nix::sys::stat::fstat(fd.as_fd())
        .ok()
        .filter(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
}

/// The first init that exists as an executable file in the tree (symlinks followed inside it).
pub fn find_init(root: &OwnedFd) -> Option<&'static str> {
    INITS
        .iter()
        .copied()
        .find(|p| regular(root, p).is_some_and(|st| st.st_mode & 0o111 != 0))
}

/// systemd's container interface needs an OS tree; nspawn refuses to boot without os-release.
pub fn has_os_release(root: &OwnedFd) -> bool {
    ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .any(|p| regular(root, p).is_some())
}
