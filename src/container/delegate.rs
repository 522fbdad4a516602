//! Cgroup delegation to a booted system: the cgroup the container was placed in (machined's
//! scope, `payload/` of the unit with --keep-unit, or berth's own cgroup) becomes its
//! user namespace root's, as systemd's delegation rules say: the directory and its
//! cgroup.procs, cgroup.threads and cgroup.subtree_control. Its systemd can then build its
//! own tree below, and nothing above it. Where the container lives is Placement's decision
//! (src/place.rs); this only checks it has a cgroup of its own and hands that over.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DelegateError {
    #[error("reading the container's cgroup: {0}")]
    Read(std::io::Error),
    #[error(
        "the container shares berth's own cgroup {0}; it needs a cgroup of its own to be delegated"
    )]
    Shared(String),
    #[error("delegating {path} to the container: {source}")]
    Chown {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The cgroup2 path of `pid` ("0::/machine.slice/machine-x.scope" in /proc/PID/cgroup),
/// relative to our cgroup namespace. Paths, not cgroup::hierarchies(): berth's own cgroup
/// may lie outside the namespace (berth entered with nsenter), where that finds nothing.
fn v2_path(pid: libc::pid_t) -> Result<String, DelegateError> {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(DelegateError::Read)?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/")
        .to_string())
}

/// Where the cgroup2 hierarchy is mounted: /sys/fs/cgroup on unified hosts, its "unified"
/// subdirectory on hybrid ones.
fn v2_mount() -> &'static Path {
    let unified = Path::new("/sys/fs/cgroup/unified");
    if unified.join("cgroup.procs").exists() {
        unified
    } else {
        Path::new("/sys/fs/cgroup")
    }
}

/// The container's cgroup2 directory, whether it is berth's own, and whether that is the
/// hierarchy's root (which is never split).
fn container_cgroup(pid: libc::pid_t) -> Result<(PathBuf, bool, bool), DelegateError> {
    let cg = v2_path(pid)?;
    // SAFETY: getpid has no preconditions.
    let shared = cg == v2_path(unsafe { libc::getpid() })?;
    Ok((
        v2_mount().join(cg.trim_start_matches('/')),
        shared,
        cg == "/",
    ))
}

/// Whether the container still sits in berth's own cgroup below the root, and so needs
/// Placement's split.
pub fn shares_berths_cgroup(pid: libc::pid_t) -> Result<bool, DelegateError> {
    let (_, shared, root) = container_cgroup(pid)?;
    Ok(shared && !root)
}

/// Checks the container has a cgroup of its own and, with a user namespace (`owner`), chowns
/// it to the namespace's root.
pub fn delegate(pid: libc::pid_t, owner: Option<(u32, u32)>) -> Result<(), DelegateError> {
    let (dir, shared, _) = container_cgroup(pid)?;
    if shared {
        return Err(DelegateError::Shared(dir.display().to_string()));
    }
    let Some((uid, gid)) = owner else {
        return Ok(());
    };
    for p in [
        dir.clone(),
        dir.join("cgroup.procs"),
        dir.join("cgroup.threads"),
        dir.join("cgroup.subtree_control"),
    ] {
        match std::os::unix::fs::chown(&p, Some(uid), Some(gid)) {
            Ok(()) => {}
            // cgroup.threads is absent on older kernels.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && p != dir => {}
            Err(source) => return Err(DelegateError::Chown { path: p, source }),
        }
    }
    Ok(())
}
