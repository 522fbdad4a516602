//! -x/--ephemeral: the container's root becomes an overlay whose upper layer lives on a
//! tmpfs of this mount namespace only, over the tree (an image from the store or -D DIR).
//! Nothing the container writes reaches the tree, it all vanishes with the namespace, and
//! there is nothing to copy, so start is instant.

use super::error::{Ctx, SetupError};
use crate::sys;
use nix::mount::{MsFlags, mount};
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Stacks the overlay on `root` (in the child's own mount namespace, from `mount::prepare`,
/// once the tree is attached there): afterwards `root` shows the merged view.
pub fn overlay_root(root: &Path) -> Result<(), SetupError> {
    let r = root
        .to_str()
        .ok_or_else(|| SetupError::msg("root path is not UTF-8"))?;
    // Nothing mounted from here on may propagate to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx("making / a slave mount")?;
    // The lower layer: a detached copy of the tree, taken before the tmpfs hides it.
    let c = CString::new(r).map_err(|_| SetupError::msg("root path has a NUL byte"))?;
    let lower = sys::open_tree(libc::AT_FDCWD, &c, false).ctx(format!("capturing {r}"))?;
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .ctx("mounting the ephemeral tmpfs")?;
    // relative layer paths: the container's mount table does not show host paths
    nix::unistd::chdir(root).ctx("entering the ephemeral tmpfs")?;
    for d in ["upper", "work", "merged"] {
        std::fs::create_dir(d).ctx(format!("creating the overlay's {d} directory"))?;
    }
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
    mount(
        Some("merged"),
        root,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .ctx("binding the ephemeral overlay onto the root")?;
    Ok(())
}
