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

fn write_pid(dir: &Path, pid: libc::pid_t) -> Result<(), DelegateError> {
    let procs = dir.join("cgroup.procs");
    std::fs::write(&procs, pid.to_string()).map_err(|source| DelegateError::Chown {
        path: procs,
        source,
    })
}

/// Gives the container a cgroup subtree of its own, owned by `owner` (the user namespace's
/// root) when it has one. Under --keep-unit the container was registered in berth's own
/// service cgroup: as nspawn does, the service's cgroup is split into `payload` (the
/// container's, delegated) and `supervisor` (berth), since a cgroup with processes in it
/// cannot hand out controllers to children.
pub fn delegate(pid: libc::pid_t, owner: Option<(u32, u32)>) -> Result<(), DelegateError> {
    let cg = v2_path(pid)?;
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let mut dir = v2_mount().join(cg.trim_start_matches('/'));
    if cg == v2_path(me)? {
        if cg == "/" {
            return Err(DelegateError::Shared(cg));
        }
        // After a reboot berth already sits in the split's supervisor half.
        if cg.ends_with("/supervisor") {
            dir.pop();
        }
        for sub in ["supervisor", "payload"] {
            match std::fs::create_dir(dir.join(sub)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(DelegateError::Chown {
                        path: dir.join(sub),
                        source,
                    });
                }
            }
        }
        write_pid(&dir.join("supervisor"), me)?;
        dir = dir.join("payload");
        write_pid(&dir, pid)?;
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
