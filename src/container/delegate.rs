//! Cgroup delegation to a container with its own user namespace: the cgroup the container
//! was placed in (machined's scope, the service with --keep-unit, or berth's own cgroup)
//! becomes its namespace root's, as systemd's delegation rules say: the directory and its
//! cgroup.procs, cgroup.threads and cgroup.subtree_control. Its systemd can then build its
//! own tree below, and nothing above it.

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

/// The cgroup2 path of `pid` ("0::/machine.slice/machine-x.scope" in /proc/PID/cgroup).
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

pub fn delegate(pid: libc::pid_t, uid: u32, gid: u32) -> Result<(), DelegateError> {
    let cg = v2_path(pid)?;
    // SAFETY: getpid has no preconditions.
    let own = v2_path(unsafe { libc::getpid() })?;
    if cg == own {
        return Err(DelegateError::Shared(cg));
    }
    let dir = v2_mount().join(cg.trim_start_matches('/'));
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
