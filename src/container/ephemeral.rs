//! -x/--ephemeral: the container's root becomes an overlay whose upper layer lives on a
//! tmpfs of this mount namespace only, over the tree (an image from the store or -D DIR).
//! Nothing the container writes reaches the tree, it all vanishes with the namespace, and
//! there is nothing to copy, so start is instant.

use super::error::{Ctx, SetupError};
use crate::sys;
use nix::mount::{MsFlags, mount};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

/// Stacks the overlay on the attached tree (the current directory, whose mount `tree`
/// refers to) and enters the overlay's root. The upper and work directories live on a
/// detached tmpfs, attached over the tree and entered by its fd: no path is looked up that a
/// user namespace could be refused.
pub fn overlay_here(tree: BorrowedFd<'_>) -> Result<(), SetupError> {
    // The lower layer: a detached copy of the tree, taken before the tmpfs hides it.
    let lower =
        sys::open_tree(tree.as_raw_fd(), c"", false).ctx("capturing the tree for the overlay")?;
    let tmpfs = sys::fsmount(
        c"tmpfs",
        &[(c"mode", c"0755")],
        sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
    )
    .ctx("creating the ephemeral tmpfs")?;
    sys::move_mount(tmpfs.as_fd(), c".").ctx("attaching the ephemeral tmpfs")?;
    nix::unistd::fchdir(&tmpfs).ctx("entering the ephemeral tmpfs")?;
    for d in ["upper", "work", "merged"] {
        std::fs::create_dir(d).ctx(format!("creating the overlay's {d} directory"))?;
    }
    // Relative layer paths: the container's mount table does not show host paths.
    let opts = format!(
        "lowerdir=/proc/self/fd/{},upperdir=upper,workdir=work",
        lower.as_raw_fd()
    );
    mount(
        Some("overlay"),
        "merged",
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .ctx("mounting the ephemeral overlay")?;
    // "merged" is now the overlay's root; pivot_root will make it "/".
    nix::unistd::chdir("merged").ctx("entering the ephemeral overlay")?;
    Ok(())
}
