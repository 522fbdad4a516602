//! The container's cgroup when systemd does not make one (no systemd on the host, or
//! `--register=no` with `--keep-unit`):
//! like nspawn-cgroup.c, berth creates `machine-NAME-PID.scope` below its own cgroup in every
//! hierarchy (cgroup2, and each v1 one on legacy/hybrid hosts), applies the `--property` limits
//! (cgroup v2 files first, v1 files of the same meaning where the controller lives in v1), puts
//! the container in before it execs (CLONE_INTO_CGROUP for cgroup2), and removes it all when the
//! container ends, killing what is left first. The container's cgroup namespace is rooted there.

mod limits;

pub use limits::{Limit, plan};

use crate::property::Property;
use std::fs;
use std::io::ErrorKind;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{0}")]
    Unsupported(String),
    #[error("a cgroup for machine {0:?} exists already at {1} (is it running?)")]
    Exists(String, PathBuf),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no cgroup hierarchy berth sits in is visible here, so --property limits cannot be applied"
    )]
    NoHierarchy,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError::Io { what, path, source }
}

/// One mounted cgroup hierarchy and where berth itself sits in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Mount point, e.g. /sys/fs/cgroup/memory or /sys/fs/cgroup (pure v2).
    pub mount: PathBuf,
    /// None for cgroup2; the v1 controllers (and "name=..." for named ones) otherwise.
    pub v1: Option<Vec<String>>,
    /// berth's own cgroup in it, as a directory path.
    pub own: PathBuf,
}

impl Hierarchy {
    pub fn is_v2(&self) -> bool {
        self.v1.is_none()
    }
    pub fn has_v1(&self, ctrl: &str) -> bool {
        self.v1
            .as_ref()
            .is_some_and(|c| c.iter().any(|x| x == ctrl))
    }
}

/// The hierarchies this process is in, with their mount points (from /proc/self/cgroup and
/// /proc/self/mountinfo).
pub fn hierarchies() -> Result<Vec<Hierarchy>, CgroupError> {
    let cg = fs::read_to_string("/proc/self/cgroup")
        .map_err(io("reading", Path::new("/proc/self/cgroup")))?;
    let mi = fs::read_to_string("/proc/self/mountinfo")
        .map_err(io("reading", Path::new("/proc/self/mountinfo")))?;
    // (mount root, mount point, fstype, super options) of every cgroup mount.
    let mounts: Vec<(String, String, String, Vec<String>)> = mi
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let f: Vec<&str> = pre.split(' ').collect();
            let p: Vec<&str> = post.split(' ').collect();
            let fstype = *p.first()?;
            if fstype != "cgroup" && fstype != "cgroup2" {
                return None;
            }
            Some((
                unescape(f.get(3)?),
                unescape(f.get(4)?),
                fstype.to_string(),
                p.get(2)?.split(',').map(str::to_string).collect(),
            ))
        })
        .collect();
    let mut out = Vec::new();
    for line in cg.lines() {
        let mut it = line.splitn(3, ':');
        let (_, ctrls, path) = match (it.next(), it.next(), it.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => continue,
        };
        let want: Vec<String> = ctrls
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        // The last matching mount that is still reachable: one mounted over (a cgroup2
        // mount on /sys/fs/cgroup hides the v1 ones below it) stays in mountinfo.
        let found = mounts.iter().rev().find(|(_, mp, t, opts)| {
            let kind = if want.is_empty() {
                t == "cgroup2"
            } else {
                t == "cgroup" && want.iter().all(|w| opts.contains(w))
            };
            kind && is_cgroupfs(Path::new(mp), want.is_empty())
        });
        let Some((root, mp, _, _)) = found else {
            continue;
        };
        // The mount may show a subtree only (a cgroup namespace, a bind mount).
        let rel = Path::new(path)
            .strip_prefix(root)
            .unwrap_or_else(|_| Path::new(path.trim_start_matches('/')));
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        // A process in a v1 hierarchy's cgroup "/.." (outside its namespace root) has no usable
        // place there.
        if rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            continue;
        }
        out.push(Hierarchy {
            mount: PathBuf::from(mp),
            v1: (!want.is_empty()).then_some(want),
            own: Path::new(mp).join(rel),
        });
    }
    if out.is_empty() {
        return Err(CgroupError::NoHierarchy);
    }
    Ok(out)
}

/// Whether `path` is (still) the root of a cgroup file system of the given version.
fn is_cgroupfs(path: &Path, v2: bool) -> bool {
    use nix::sys::statfs::{CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC, statfs};
    let want = if v2 {
        CGROUP2_SUPER_MAGIC
    } else {
        CGROUP_SUPER_MAGIC
    };
    statfs(path).is_ok_and(|s| s.filesystem_type() == want)
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The container's cgroup, one directory per hierarchy. Dropping it kills whatever is left
/// in it and removes it.
#[derive(Debug)]
pub struct Cgroup {
    dirs: Vec<(Hierarchy, PathBuf)>,
    /// The cgroup2 directory, opened for CLONE_INTO_CGROUP.
    v2_fd: Option<OwnedFd>,
}

impl Cgroup {
    /// Creates `machine-NAME-PID.scope` (PID: berth's) below berth's own cgroup in every hierarchy and applies
    /// `props`. Everything it could not apply is an error, and nothing is left behind then.
    pub fn create(name: &str, props: &[Property]) -> Result<Cgroup, CgroupError> {
        let hs = hierarchies()?;
        let writes = plan(&hs, props)?;
        // Unregistered containers may share a name (nothing claims it): the supervisor's PID
        // keeps their cgroups apart.
        let leaf = format!("machine-{name}-{}.scope", std::process::id());
        let mut cg = Cgroup {
            dirs: Vec::new(),
            v2_fd: None,
        };
        for h in &hs {
            collect_stale(&h.own);
        }
        for h in hs {
            // Named v1 hierarchies (name=systemd) belong to a v1 systemd; not ours to use.
            if h.v1
                .as_ref()
                .is_some_and(|c| c.iter().all(|x| x.starts_with("name=")))
            {
                continue;
            }
            let dir = h.own.join(&leaf);
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    return Err(CgroupError::Exists(name.to_string(), dir));
                }
                // A read-only or foreign hierarchy we cannot use: only an error if a limit
                // needs it (checked below).
                Err(e)
                    if h.v1.is_some()
                        && matches!(
                            e.raw_os_error(),
                            Some(libc::EROFS | libc::EACCES | libc::EPERM)
                        ) =>
                {
                    continue;
                }
                Err(e) => return Err(io("creating cgroup", &dir)(e)),
            }
            if h.has_v1("cpuset") {
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    let v =
                        fs::read_to_string(h.own.join(f)).map_err(io("reading", &h.own.join(f)))?;
                    let _ = fs::write(dir.join(f), v.trim());
                }
            }
            cg.dirs.push((h, dir));
        }
        if let Some((_, d)) = cg.dirs.iter().find(|(h, _)| h.is_v2()) {
            let f = fs::File::open(d).map_err(io("opening cgroup", d))?;
            cg.v2_fd = Some(f.into());
        }
        for w in &writes {
            cg.write_limit(w)?;
        }
        Ok(cg)
    }

    fn write_limit(&self, w: &Limit) -> Result<(), CgroupError> {
        let (h, dir) = self
            .dirs
            .iter()
            .find(|(h, _)| *h == w.hierarchy)
            .ok_or_else(|| {
                CgroupError::Unsupported(format!(
                    "{}: cgroup {} not available",
                    w.assignment,
                    w.hierarchy.mount.display()
                ))
            })?;
        if h.is_v2() {
            // Controllers must be enabled from the parent down.
            let ctrl = w.file.split('.').next().unwrap_or_default();
            enable_v2_controller(&h.own, ctrl, &w.assignment)?;
        }
        let path = dir.join(&w.file);
        fs::write(&path, &w.value).map_err(|e| {
            CgroupError::Unsupported(format!(
                "{}: writing {:?} to {}: {e}",
                w.assignment,
                w.value,
                path.display()
            ))
        })
    }

    /// The cgroup2 directory for clone3's CLONE_INTO_CGROUP, if there is a cgroup2 hierarchy.
    pub fn v2_fd(&self) -> Option<BorrowedFd<'_>> {
        self.v2_fd.as_ref().map(|f| f.as_fd())
    }

    /// Moves `pid` into the cgroup in every hierarchy (the cgroup2 one too unless the process
    /// was born there through CLONE_INTO_CGROUP).
    pub fn attach(&self, pid: libc::pid_t, born_in_v2: bool) -> Result<(), CgroupError> {
        for (h, dir) in &self.dirs {
            if h.is_v2() && born_in_v2 {
                continue;
            }
            let p = dir.join("cgroup.procs");
            fs::write(&p, pid.to_string()).map_err(io("moving the container into", &p))?;
        }
        Ok(())
    }

    /// Kills every process left in the cgroup and removes it (deepest first: a booted
    /// systemd inside makes its own subtree).
    pub fn remove(&mut self) {
        for (h, dir) in &self.dirs {
            if h.is_v2() && dir.join("cgroup.kill").exists() {
                let _ = fs::write(dir.join("cgroup.kill"), "1");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut left = false;
            for (_, dir) in &self.dirs {
                for sub in subtree(dir) {
                    if let Ok(procs) = fs::read_to_string(sub.join("cgroup.procs")) {
                        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                            // SAFETY: kill with a pid read from our own cgroup.
                            unsafe { libc::kill(pid, libc::SIGKILL) };
                            left = true;
                        }
                    }
                    if fs::remove_dir(&sub).is_err() && sub.exists() {
                        left = true;
                    }
                }
            }
            if !left || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.dirs.retain(|(_, d)| d.exists());
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.v2_fd = None;
        self.remove();
    }
}

/// Removes the empty cgroups that SIGKILLed berths left below `own`: `machine-*-PID.scope`
/// whose PID is gone. (A killed berth's container dies with it, but nobody removes its
/// cgroup.) Cgroups that still hold processes are never touched.
fn collect_stale(own: &Path) {
    let Ok(rd) = fs::read_dir(own) else { return };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(n) = name.to_str() else { continue };
        let Some(pid) = n
            .strip_prefix("machine-")
            .and_then(|r| r.strip_suffix(".scope"))
            .and_then(|r| r.rsplit_once('-'))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        for sub in subtree(&e.path()) {
            let _ = fs::remove_dir(&sub);
        }
    }
}

/// `dir` and all cgroups below it, deepest first.
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(subtree(&e.path()));
            }
        }
    }
    if dir.exists() {
        out.push(dir.to_path_buf());
    }
    out
}

/// Enables a cgroup2 controller in `parent`'s subtree_control (and above it, as needed).
fn enable_v2_controller(parent: &Path, ctrl: &str, assignment: &str) -> Result<(), CgroupError> {
    let enabled = fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
    if enabled.split_whitespace().any(|c| c == ctrl) {
        return Ok(());
    }
    let available = fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
    if !available.split_whitespace().any(|c| c == ctrl) {
        return Err(CgroupError::Unsupported(format!(
            "{assignment}: the cgroup2 {ctrl} controller is not available in {}",
            parent.display()
        )));
    }
    fs::write(parent.join("cgroup.subtree_control"), format!("+{ctrl}")).map_err(|e| {
        CgroupError::Unsupported(format!(
            "{assignment}: cannot enable the {ctrl} controller below {} ({e}); run berth in a cgroup \
             of its own or with systemd (--register=yes)",
            parent.display()
        ))
    })
}

/// Moves the calling process into the cgroup it is in already, on one hierarchy, for the side
/// effect alone: a migration between cgroups takes the kernel's cgroup_threadgroup_rwsem for
/// writing, and the first writer after a quiet spell waits for an RCU grace period (5-15 ms
/// on an idle host, measured here; back-to-back migrations cost 0.05 ms). Started while
/// berth sets the container up, that wait is under way or over by the time systemd moves the
/// container's PID 1 into its scope, which then need not start a grace period of its own.
/// (Kernels that favor dynamic cgroup changes, the cgroup2 mount option favordynmods, skip
/// the wait, and this costs nothing there.) Blocks for the grace period; best effort (no
/// cgroup of its own in sight: nothing).
pub fn prime_migration() {
    // One hierarchy is enough, the lock is shared by all. Where the cgroup2 one is mounted
    // where systemd mounts it, it is found without reading the mount table: this runs first
    // thing, and every 0.1 ms it starts later is waited for.
    let me = std::process::id().to_string();
    let write = |procs: &Path| {
        fs::OpenOptions::new()
            .write(true)
            .open(procs)
            .and_then(|mut f| std::io::Write::write_all(&mut f, me.as_bytes()))
            .is_ok()
    };
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    if let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::"))
        // "/..": outside berth's cgroup namespace; that root's cgroup.procs is not berth's.
        && !path.starts_with("/..")
        && ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .iter()
            .any(|m| {
                write(
                    &Path::new(m)
                        .join(path.trim_start_matches('/'))
                        .join("cgroup.procs"),
                )
            })
    {
        return;
    }
    if let Some(h) = hierarchies()
        .unwrap_or_default()
        .iter()
        .find(|h| h.own.join("cgroup.procs").exists())
    {
        write(&h.own.join("cgroup.procs"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_own_hierarchies() {
        let hs = hierarchies().unwrap();
        assert!(
            hs.iter()
                .all(|h| h.own.starts_with(&h.mount) && h.own.is_dir()),
            "{hs:?}"
        );
    }
}
